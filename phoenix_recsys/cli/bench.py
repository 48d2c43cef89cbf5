"""`phoenix-recsys bench NAME`: quality benchmarks (train + evaluate with a stated protocol)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from phoenix_recsys.cli._common import JsonFlag, console, domain_errors, print_json

bench_app = typer.Typer(
    help=(
        "Quality benchmarks: import or synthesise the data, train, evaluate on the held-out split, and print "
        "the headline numbers beside baselines (and the oracle on synthetic data). Real datasets are read from "
        "../shared/data (or $PHOENIX_SHARED_DATA); nothing is downloaded.\n\n"
        "  phoenix-recsys bench run synthetic\n\n  phoenix-recsys bench run ml1m --steps 8000"
    ),
    no_args_is_help=True,
)


#: Long system benchmarks that live in the source checkout's `benchmarks/` (not in the installed
#: package): the HTTP load runs (issues 13, 15) and the 1M-post ANN sweep.
_SOURCE_BENCHMARKS = ("scale", "replicas", "ann")


def _source_benchmarks(name: str) -> Callable[[list[str]], None]:
    """`benchmarks.run.main` from the source checkout this package is installed from (or the
    working directory), since `benchmarks/` is not part of the installed package."""
    import sys

    try:
        from benchmarks.run import main
    except ModuleNotFoundError:
        roots = [Path(__file__).resolve().parents[2], Path.cwd()]
        root = next((r for r in roots if (r / "benchmarks" / "run.py").is_file()), None)
        if root is None:
            raise typer.BadParameter(
                f"`bench run {name}` needs a source checkout of phoenix-recsys (its benchmarks/ folder): "
                "run it from the repository root", param_hint="NAME") from None
        sys.path.insert(0, str(root))
        from benchmarks.run import main
    return main


@bench_app.command("list")
def list_cmd(as_json: JsonFlag = False) -> None:
    """The benchmarks and their protocols."""
    from phoenix_recsys.train.quality import jobs

    if as_json:
        print_json({name: {"description": job.description, "models": list(job.kinds), "steps": job.steps}
                    for name, job in jobs().items()})
        return
    for name, job in jobs().items():
        console.print(f"[bold]{name}[/]: {job.description} (models: {', '.join(job.kinds)}, {job.steps} steps)")
    console.print(f"System benchmarks (from a source checkout, long): {', '.join(_SOURCE_BENCHMARKS)}; "
                  "see BENCHMARKS.md.")


@bench_app.command("run")
@domain_errors
def run_cmd(
    name: Annotated[str, typer.Argument(help="Benchmark name (see `bench list`).")],
    work: Annotated[Path | None, typer.Option("--work", help="Work directory (default ./runs/bench-NAME).")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Override the training steps.")] = None,
    results: Annotated[Path | None, typer.Option("--results", help="Also write the summary JSON here.")] = None,
    size: Annotated[
        str | None, typer.Option("--size", help="scale / replicas only: USERSxPOSTSxEVENTS (defaults 100000x1000000x10000000 / 20000x100000x1000000).")
    ] = None,
    as_json: JsonFlag = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore the work directory's seed records and checkpoints "
                                        "(default: a stopped job resumes where it stopped).")] = False,
) -> None:
    """Run one quality benchmark end to end and print its summary (`scale`: the HTTP load benchmark).

    A stopped job rerun on the same --work resumes: finished seeds (and each seed's finished stages) are
    read back when their fingerprint (job config + data) matches, unfinished training continues from
    its last checkpoint."""
    from phoenix_recsys.cli.train import print_report
    from phoenix_recsys.train.quality import jobs, run_job

    if name in _SOURCE_BENCHMARKS:
        import os

        if size is not None and name == "ann":
            raise typer.BadParameter("--size applies to scale and replicas; the ANN sweep's size is "
                                     "PHOENIX_ANN_POSTS", param_hint="--size")  # fmt: skip
        bench_main = _source_benchmarks(name)
        if size is not None:
            os.environ["PHOENIX_SCALE_SIZE" if name == "scale" else "PHOENIX_REPLICAS_SIZE"] = size
        bench_main([name])
        return
    all_jobs = jobs()
    if name not in all_jobs:
        raise ValueError(f"unknown benchmark {name!r}; known: {sorted(all_jobs)}")
    summary = run_job(all_jobs[name], work or Path("runs") / f"bench-{name}", steps=steps, progress=not as_json,
                      fresh=fresh)
    if results is not None:
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(summary, indent=2) + "\n")
    if as_json:
        print_json(summary["summary"])
        return
    print_report(summary["report"])
    if "seeds" in summary:
        console.print(f"(the table above is seed {summary['seeds'][0]}; over seeds {summary['seeds']}:)")
        for section, rows in summary["summary"].items():
            for key, row in rows.items():
                if "model_sd" in row:
                    console.print(f"  {section} {key}: model {row['model']:.4f} ± {row['model_sd']:.4f} "
                                  f"(per seed {row['model_per_seed']})")
    console.print(f"{name}: {summary['seconds']} s ({summary['train_seconds']} s training)")


@bench_app.command("report")
@domain_errors
def report_cmd(
    name: Annotated[str, typer.Argument(help="Benchmark name (see `bench list`).")],
    work: Annotated[Path | None, typer.Option("--work", help="Work directory (default ./runs/bench-NAME).")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="The --steps the job was run with.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """What a running or stopped job has finished so far (read from its seed records; trains nothing)."""
    from phoenix_recsys.train.quality import finished_stages, jobs

    all_jobs = jobs()
    if name not in all_jobs:
        raise ValueError(f"unknown benchmark {name!r}; known: {sorted(all_jobs)}")
    out = finished_stages(all_jobs[name], work or Path("runs") / f"bench-{name}", steps=steps)
    if as_json:
        print_json(out)
        return
    for e in out["seeds"]:
        m = e.get("models", {}).get("retrieval", {})
        console.print(f"seed {e['seed']}: stages {', '.join(e['stages']) or 'none'}"
                      + (f"; best step {m['best_step']} (val {m['selection_metric']} {m['best_val']:.4f})" if m else ""))
    for key, cols in out["retrieval"].items():
        cells = ", ".join(f"{c} {v['mean']:.4f} ± {v['sd']:.4f} (n={v['n']})" for c, v in cols.items())
        console.print(f"  {key}: {cells}")


def _named(job_name: str):
    def cmd(
        work: Annotated[Path | None, typer.Option("--work", help="Work directory (default ./runs/bench-NAME).")] = None,
        steps: Annotated[int | None, typer.Option("--steps", help="Override the training steps.")] = None,
        results: Annotated[Path | None, typer.Option("--results", help="Also write the summary JSON here.")] = None,
        as_json: JsonFlag = False,
        fresh: Annotated[bool, typer.Option("--fresh", help="Ignore seed records and checkpoints.")] = False,
    ) -> None:
        run_cmd(job_name, work, steps, results, None, as_json, fresh)

    return cmd


def _register_named() -> None:
    from phoenix_recsys.train.quality import jobs

    for name, job in jobs().items():
        bench_app.command(name, help=f"Shortcut for `bench run {name}`: {job.description}.")(_named(name))


_register_named()
