"""`phoenix-recsys data ...`: make synthetic worlds, import logs, inspect datasets (thin over phoenix_recsys.data)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from phoenix_recsys.data.importers import ImportFormat, import_dataset
from phoenix_recsys.data.schema import load_dataset
from phoenix_recsys.data.stats import compute_stats, plot_stats, render_stats
from phoenix_recsys.data.synth import SynthConfig, synthesize

data_app = typer.Typer(
    help="Create, import and inspect datasets (Parquet + manifest.json).", no_args_is_help=True
)
_out = Console()
_err = Console(stderr=True)

OutDir = Annotated[Path, typer.Option("--out", "-o", help="Dataset directory to write (created if missing).")]
SkipBad = Annotated[
    bool,
    typer.Option("--skip-bad", help="Skip malformed lines (counted in the manifest) instead of failing."),
]


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _print_written(ds, out: Path, t0: float) -> None:
    """`--json` of the commands that write a dataset: where, what, and how long."""
    typer.echo(json.dumps({
        "path": str(out), "name": ds.name, "events": int(ds.num_events), "posts": int(ds.posts.num_rows),
        "actions": list(ds.actions.names), "content_sha256": ds.manifest.get("content_sha256"),
        "skipped_lines": ds.manifest.get("import", {}).get("skipped_lines", 0),
        "seconds": round(time.perf_counter() - t0, 3),
    }, indent=2))


def _fail(err: Exception) -> typer.Exit:
    _err.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True)
    return typer.Exit(code=1)


@data_app.command("synth")
def synth(
    out: OutDir,
    users: Annotated[int, typer.Option("--users", help="Number of users.")] = 1000,
    posts: Annotated[int, typer.Option("--posts", help="Number of posts.")] = 5000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the dataset is a function of it.")] = 0,
    impressions_per_user: Annotated[
        float, typer.Option("--impressions-per-user", help="Mean impressions per user.")
    ] = 20.0,
    topics: Annotated[int, typer.Option("--topics", help="Number of latent topics.")] = 16,
    authors: Annotated[
        int | None, typer.Option("--authors", help="Number of authors (default posts // 20).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate a synthetic world with known action probabilities (p_<action> columns, world.npz)."""
    t0 = time.perf_counter()
    try:
        cfg = SynthConfig(
            num_users=users,
            num_posts=posts,
            seed=seed,
            impressions_per_user=impressions_per_user,
            num_topics=topics,
            num_authors=authors,
        )
        ds = synthesize(out, cfg, progress=not as_json)
    except ValueError as e:
        raise _fail(e) from None
    if as_json:
        _print_written(ds, out, t0)
        return
    _out.print(
        f"wrote [bold]{escape(str(out))}[/bold]: {ds.num_events:,} impressions, {users:,} users, "
        f"{posts:,} posts in {time.perf_counter() - t0:.1f} s (content sha256 {ds.manifest['content_sha256'][:12]}…)",
        soft_wrap=True,
    )


@data_app.command("scale")
def scale(
    out: OutDir,
    users: Annotated[int, typer.Option("--users", help="Number of users.")] = 100_000,
    posts: Annotated[int, typer.Option("--posts", help="Number of posts.")] = 1_000_000,
    events: Annotated[int, typer.Option("--events", help="Number of impressions (events rows).")] = 10_000_000,
    heavy_users: Annotated[int, typer.Option("--heavy-users", help="Users with --heavy-events events each.")] = 20,
    heavy_events: Annotated[int, typer.Option("--heavy-events", help="Lifetime events of a heavy user.")] = 100_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the dataset is a function of it.")] = 0,
) -> None:
    """Stream a large skewed world (heavy users, popular authors) to Parquet in bounded memory (load tests)."""
    from phoenix_recsys.data.scale import ScaleConfig, generate_scale_world

    t0 = time.perf_counter()
    try:
        cfg = ScaleConfig(users=users, posts=posts, events=events, heavy_users=heavy_users, heavy_events=heavy_events, seed=seed)
        stats = generate_scale_world(out, cfg, load=False)
    except ValueError as e:
        raise _fail(e) from None
    stats["seconds"] = round(time.perf_counter() - t0, 2)
    typer.echo(json.dumps({"path": str(out), **stats}, indent=2))


@data_app.command("import")
def import_(
    fmt: Annotated[ImportFormat, typer.Argument(help="Source format.", metavar="FORMAT")],
    path: Annotated[Path, typer.Argument(help="Source file (.gz is read directly).")],
    out: OutDir,
    skip_bad: SkipBad = False,
    movies: Annotated[
        Path | None, typer.Option("--movies", help="movielens: movies file (default: the one beside PATH).")
    ] = None,
    video_features: Annotated[
        Path | None, typer.Option("--video-features", help="kuairand: video-features CSV giving authors.")
    ] = None,
    mapping: Annotated[
        Path | None, typer.Option("--mapping", help="generic: JSON/TOML column-mapping file.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Dataset name for the manifest.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Import a MovieLens / KuaiRand / Taobao / sequence / generic log into the dataset format."""
    t0 = time.perf_counter()
    try:
        ds = import_dataset(
            fmt,
            path,
            out,
            skip_bad=skip_bad,
            name=name,
            movies=movies,
            video_features=video_features,
            mapping=mapping,
        )
    except ValueError as e:
        raise _fail(e) from None
    skipped = ds.manifest.get("import", {}).get("skipped_lines", 0)
    if as_json:
        _print_written(ds, out, t0)
        return
    _out.print(
        f"wrote [bold]{escape(str(out))}[/bold]: {ds.num_events:,} events, {ds.posts.num_rows:,} posts, "
        f"actions {list(ds.actions.names)} in {time.perf_counter() - t0:.1f} s",
        soft_wrap=True,
    )
    if skipped:
        _err.print(
            f"[yellow]skipped {skipped:,} malformed line(s)[/yellow] (listed in manifest.json 'import')",
            soft_wrap=True,
        )


@data_app.command("stats")
def stats(
    directory: Annotated[Path, typer.Argument(help="Dataset directory.", metavar="DIR")],
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also write a PNG of action rates and history lengths.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Counts, per-action positive rates and the history-length histogram of a dataset."""
    try:
        st = compute_stats(load_dataset(directory))
    except ValueError as e:
        raise _fail(e) from None
    if as_json:
        typer.echo(json.dumps(st.to_json(), indent=2))
    else:
        render_stats(st, _out)
    if plot is not None:
        plot_stats(st, plot)
        if not as_json:
            _out.print(f"plot written to {escape(str(plot))}")
