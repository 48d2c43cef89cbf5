"""`phoenix-recsys train ranker|retrieval|all` and `phoenix-recsys evaluate`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from phoenix_recsys.cli._common import (
    JsonFlag,
    Split,
    SplitProtocol,
    console,
    domain_errors,
    err_console,
    print_json,
)

train_app = typer.Typer(
    help=(
        "Train models on a dataset directory (see `data synth` / `data import`) into a model bundle.\n\n"
        "Examples:\n\n"
        "  phoenix-recsys train all --data ./world --out ./bundle --steps 600\n\n"
        "  phoenix-recsys train ranker --data ./world --out ./bundle --config job.json --resume\n\n"
        "Recipes (--recipe): 'sequential' is the next-item recipe `bench ml1m` trains with (causal user tower, "
        "every position predicting the next interaction, every interaction a positive, S = 200, full corpus "
        "softmax, embedding dropout 0.2, best validation NDCG@10); 'default' uses the defaults and --config "
        "alone; 'auto' (the default) picks sequential when every event of the data is an interaction (a "
        "ratings / interaction log such as MovieLens) and default on impression logs, and says which it chose. "
        "--config fields override the recipe's.\n\n"
        "  phoenix-recsys train retrieval --data ./ml-1m --out ./bundle --protocol loo\n\n"
        "Every field is described in docs/learning.md."
    ),
    no_args_is_help=True,
)

DataOpt = Annotated[Path, typer.Option("--data", help="Dataset directory (manifest.json + Parquet files).")]
OutOpt = Annotated[Path, typer.Option("--out", help="Bundle directory to write (created if absent).")]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help='JSON file: {"model": {...}, "train": {...}, "ranker": {...}, "retrieval": {...}}.'),
]
StepsOpt = Annotated[int | None, typer.Option("--steps", help="Optimizer steps (default 1000).")]
EpochsOpt = Annotated[float | None, typer.Option("--epochs", help="Passes over the training examples (instead of --steps).")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the run's latest checkpoint (same config only).")]
ProtocolOpt = Annotated[
    SplitProtocol, typer.Option("--protocol", help="Split: time (global 80/10/10 by time) or loo (leave-one-out).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
MeshOpt = Annotated[str | None, typer.Option(
    "--mesh", help="Train on a device mesh: data=N[,model=M][,transformer=tensor] (batch over data, hash tables "
                   "row-sharded over model; N*M devices in all). See docs/scaling.md.")]
CoordinatorOpt = Annotated[str | None, typer.Option(
    "--coordinator", help="HOST:PORT of process 0, for a multi-process run (with --num-processes, --process-id).")]
NumProcessesOpt = Annotated[int, typer.Option("--num-processes", help="Processes of a multi-process run.")]
ProcessIdOpt = Annotated[int, typer.Option("--process-id", help="This process's index, 0 .. --num-processes - 1.")]


class Recipe(StrEnum):
    """Training recipe: auto (from the data), default, or sequential (next-item)."""

    AUTO = "auto"
    DEFAULT = "default"
    SEQUENTIAL = "sequential"


RecipeOpt = Annotated[Recipe, typer.Option(
    "--recipe", help="auto: sequential on a ratings / interaction log, default otherwise (stated in the output); "
                     "default; sequential (next-item, as `bench ml1m`). --config overrides its fields.")]


def _mesh_plan(mesh: str | None, coordinator: str | None, num_processes: int, process_id: int):
    """Join the multi-process job (before JAX touches a device) and build the mesh; None: one device."""
    if coordinator is None and (num_processes != 1 or process_id != 0):
        raise ValueError("--num-processes / --process-id need --coordinator HOST:PORT")
    if coordinator is None and mesh is None:
        return None
    from phoenix_recsys.train.mesh import MeshPlan, MeshSpec, init_distributed

    spec = MeshSpec.parse(mesh) if mesh is not None else None  # a bad --mesh fails before connecting
    if coordinator is not None:
        init_distributed(coordinator, num_processes, process_id)
    import jax

    return MeshPlan(spec or MeshSpec(data=jax.device_count()))


def _run(kinds: list[str], data: Path, out: Path, config: Path | None, steps: int | None, epochs: float | None,
         resume: bool, protocol: str, quiet: bool, mesh: str | None = None, coordinator: str | None = None,
         num_processes: int = 1, process_id: int = 0, as_json: bool = False, recipe: str = "auto") -> None:
    from phoenix_recsys.data.schema import load_dataset
    from phoenix_recsys.train.run import JobConfig, resolve_recipe, train_job

    if steps is not None and epochs is not None:
        raise ValueError("give --steps or --epochs, not both")
    job_config = JobConfig.load(config)
    chosen, why = resolve_recipe(load_dataset(data), recipe)
    plan = _mesh_plan(mesh, coordinator, num_processes, process_id)
    if plan is None or plan.is_primary:
        (err_console if as_json else console).print(f"recipe: {chosen} ({why})")
    results = train_job(data, out, kinds, config=job_config, steps=steps, epochs=epochs, resume=resume,
                        protocol=protocol, progress=not quiet and (plan is None or plan.is_primary), mesh=plan,
                        recipe=chosen)
    if plan is not None and not plan.is_primary:
        return
    if as_json:
        print_json({kind: {"steps": r.steps, "best_step": r.best_step, "metric": r.metric_name,
                           "best_metric": r.best_metric, "stopped_early": r.stopped_early}
                    for kind, r in results.items()})
        return
    table = Table(title=f"trained into {out}")
    for col in ("model", "steps", "best step", "validation metric", "early stop"):
        table.add_column(col)
    for kind, r in results.items():
        table.add_row(kind, str(r.steps), str(r.best_step), f"{r.metric_name} = {r.best_metric:.4f}", str(r.stopped_early))
    console.print(table)


def _train_command(kinds: list[str], doc: str):
    """One `train` subcommand: the shared options, then `_run` on `kinds`."""

    @domain_errors
    def cmd(data: DataOpt, out: OutOpt, config: ConfigOpt = None, steps: StepsOpt = None, epochs: EpochsOpt = None,
            resume: ResumeOpt = False, protocol: ProtocolOpt = SplitProtocol.TIME, quiet: QuietOpt = False,
            mesh: MeshOpt = None, coordinator: CoordinatorOpt = None, num_processes: NumProcessesOpt = 1,
            process_id: ProcessIdOpt = 0, as_json: JsonFlag = False, recipe: RecipeOpt = Recipe.AUTO) -> None:
        _run(kinds, data, out, config, steps, epochs, resume, protocol.value, quiet or as_json, mesh, coordinator,
             num_processes, process_id, as_json, recipe.value)

    cmd.__doc__ = doc
    return cmd


train_app.command("ranker")(_train_command(
    ["ranker"], "Train the ranker: per-action masked BCE (+ regression for continuous actions)."))
train_app.command("retrieval")(_train_command(
    ["retrieval"], "Train the two-tower retriever: in-batch sampled softmax with log-Q correction, or a full "
                   "corpus softmax; one target per example or every history position (see --help of `train`)."))
train_app.command("all")(_train_command(
    ["ranker", "retrieval"], "Train both models into one bundle (what `serve` loads)."))


def print_report(report: dict) -> None:
    """The metrics tables: model beside baselines (and the oracle on synthetic data)."""
    from phoenix_recsys.train.evaluate import scorers

    rows = scorers(report)
    console.print(f"[bold]protocol[/]: {report['protocol']['description']} ({report['protocol']['split']} split)")
    if "ranker" in report["model"]:
        t = Table(title="ranker: AUROC per action (" + report["protocol"].get("ranker", "") + ")")
        t.add_column("action")
        t.add_column("positives", justify="right")
        for name, _ in rows:
            t.add_column(name, justify="right")
        t.add_column("model RCE %", justify="right")
        t.add_column("model calib.", justify="right")
        for action, m in report["model"]["ranker"].items():
            vals = []
            for _, sec in rows:
                v = sec.get("ranker", {}).get(action, {}).get("auroc")
                vals.append("n/a" if v is None else f"{v:.4f}")
            rce, cal = m.get("rce"), m.get("calibration")
            t.add_row(action, str(m["positives"]), *vals, "n/a" if rce is None else f"{rce:.2f}",
                      "n/a" if cal is None else f"{cal:.3f}")
        console.print(t)
    if "retrieval" in report["model"]:
        rows = [(n, sec) for n, sec in rows if "retrieval" in sec]
        t = Table(title="retrieval, full corpus (" + report["protocol"].get("retrieval", "") + ")")
        t.add_column("metric")
        for name, _ in rows:
            t.add_column(name, justify="right")
        for k in report["model"]["retrieval"]:
            if k == "queries" or k.startswith("recall@"):
                continue
            t.add_row(k, *[f"{sec.get('retrieval', {}).get(k, float('nan')):.4f}" for _, sec in rows])
        console.print(t)


class SeenRule(StrEnum):
    """Which earlier items full-corpus retrieval evaluation excludes."""

    ALL = "all"
    WINDOW = "window"


def bundle_protocol(meta: dict) -> SplitProtocol | None:
    """The split protocol a bundle was trained with (None: unknown, e.g. imported weights)."""
    from phoenix_recsys.train.evaluate import trained_protocol

    name = trained_protocol(meta)
    return None if name is None else SplitProtocol(name)


@domain_errors
def evaluate_cmd(
    bundle: Annotated[Path, typer.Argument(help="Bundle (or run) directory written by `train`.")],
    data: DataOpt,
    split: Annotated[Split, typer.Option("--split", help="Which split to evaluate.")] = Split.TEST,
    protocol: Annotated[SplitProtocol | None, typer.Option(
        "--protocol", help="Split protocol: time (global 80/10/10 by time) or loo (leave-one-out).",
        show_default="the bundle's, else time")] = None,
    max_examples: Annotated[int | None, typer.Option("--max-examples", help="Cap examples per task (speed).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Where report.md/eval.json/PNG go (default: the bundle).")] = None,
    seen_rule: Annotated[SeenRule, typer.Option(
        "--seen-rule", help="Retrieval: which earlier items are excluded from the ranking: all (every earlier "
                            "engagement) or window (only the S items of the input window, as HSTU's code).")] = SeenRule.ALL,
    peers: Annotated[str, typer.Option(
        "--peers", help="Comma-separated peers trained on the same training split and scored beside popularity: "
                        "ease, bpr, sasrec (one-negative BCE), sasrec_ce (full softmax).")] = "",
    ignore_dataset_mismatch: Annotated[bool, typer.Option(
        "--ignore-dataset-mismatch", help="Evaluate even if --data is not the dataset the bundle was trained on.")] = False,
    quiet: QuietOpt = False,
    as_json: JsonFlag = False,
) -> None:
    """Evaluate a bundle: per-action AUROC/PR-AUC/log-loss/RCE/calibration and full-corpus retrieval
    HR/NDCG/MRR@{10,50,100,1000}, beside popularity baselines and (synthetic data) the oracle ceiling.

    Uses the split protocol the bundle was trained with unless --protocol says otherwise, and refuses
    a dataset other than the training one (by content hash) unless --ignore-dataset-mismatch.
    Writes report.md, eval.json and roc_calibration.png. Example:

        phoenix-recsys evaluate ./bundle --data ./world --split test
    """
    from phoenix_recsys.data.schema import load_dataset
    from phoenix_recsys.train.bundle import load_bundle
    from phoenix_recsys.train.evaluate import check_bundle_dataset, evaluate_bundle, write_report
    from phoenix_recsys.train.run import make_protocol

    ds = load_dataset(data)
    b = load_bundle(bundle)
    if not ignore_dataset_mismatch:
        check_bundle_dataset(b.meta, ds.name, ds.manifest.get("content_sha256"))
    trained = bundle_protocol(b.meta)
    if protocol is None:
        protocol = trained or SplitProtocol.TIME
    elif trained is not None and protocol != trained:
        err_console.print(f"[yellow]warning:[/] the bundle was trained with --protocol {trained.value}; "
                          f"evaluating with {protocol.value}", highlight=False)
    names = tuple(p.strip() for p in peers.split(",") if p.strip())
    # Bars on stderr, so `--json` output on stdout stays clean.
    report, raw = evaluate_bundle(b, ds, split=split.value, protocol=make_protocol(ds, protocol.value),
                                  max_examples=max_examples, seen_rule=str(seen_rule), peers=names, progress=not quiet)
    path = write_report(report, raw, out or bundle)
    if as_json:
        print_json(report)
        return
    print_report(report)
    console.print(f"report: {path}")


@train_app.command("config-schema")
def config_schema_cmd() -> None:
    """Print the JSON schema of the --config job file (every section, field, type and default)."""
    from phoenix_recsys.train.jobfile import job_schema

    print_json(job_schema())


@domain_errors
def tune_cmd(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="Directory for the trials' bundles and study.db.")],
    config: Annotated[Path, typer.Option("--config", help='Job file with a "tune" section (search space).')],
    trials: Annotated[int, typer.Option("--trials", help="Trials to add to the study this run.")] = 10,
    study: Annotated[str | None, typer.Option(
        "--study", help="Optuna storage URL, e.g. sqlite:///study.db (default: OUT/study.db); rerun to resume.")] = None,
    study_name: Annotated[str, typer.Option("--study-name", help="Study within the storage.")] = "phoenix-tune",
    steps: StepsOpt = None,
    epochs: EpochsOpt = None,
    protocol: ProtocolOpt = "time",
    seed: Annotated[int, typer.Option("--seed", help="Sampler seed.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Search hyper-parameters with Optuna over the job file's "tune" section, optimising a validation
    metric; prints the best trial and its job config. Example job.json:

        {"train": {"eval_every": 100}, "tune": {"kind": "ranker", "metric": "mean_auroc",
         "params": {"train.learning_rate": {"low": 1e-4, "high": 1e-2, "log": true},
                    "model.model.num_layers": {"choices": [1, 2]}}}}
    """
    from phoenix_recsys.train.run import JobConfig
    from phoenix_recsys.train.tune import tune

    if steps is not None and epochs is not None:
        raise ValueError("give --steps or --epochs, not both")
    res = tune(data, out, JobConfig.load(config), trials=trials, storage=study, study_name=study_name, steps=steps,
               epochs=epochs, protocol=protocol, seed=seed, progress=False)
    if as_json:
        print_json(res.to_json())
        return
    console.print(f"study {res.study} ({res.storage}): {res.trials} trials; best trial {res.best_trial}: "
                  f"{res.metric} = {res.best_value:.4f}")
    console.print("best config (save as a --config job file):")
    console.print_json(data=res.best_config)
