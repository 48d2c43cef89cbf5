"""`phoenix-recsys serve` (HTTP API) and `phoenix-recsys feed` (one feed, no server): thin over `phoenix_recsys.serve`.

`serve_app` is merged into the top-level app (its commands are top-level commands, not a group).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from phoenix_recsys.cli._common import JsonFlag, LogLevel, console, domain_errors, err_console, print_json
from phoenix_recsys.serve.logs import LogFormat, configure_logging

serve_app = typer.Typer(help="Serve the feed over HTTP, or print one feed.")

BundleArg = Annotated[
    Path, typer.Argument(help="Model bundle directory (ranker, and retrieval for out-of-network posts).", metavar="BUNDLE")
]
DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="Dataset directory that seeds an empty store (ignored once the store has posts)."),
]
# Defaults that live in the settings (not in the signature) are shown with `show_default=`: a literal
# "[default: ...]" in help text would be parsed as Rich markup and vanish.
StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="SQLite store file, or a postgresql:// URL.", show_default="BUNDLE/store.sqlite"),
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="JSON file of settings (PHOENIX_* environment variables override it).")
]


def run_server(app: Any, *, host: str, port: int, log_level: str) -> None:
    """Run uvicorn in this process until it is stopped (one worker; `--workers N` uses `serve.workers`).

    uvicorn's logging setup is off (`log_config=None`): `serve.logs.configure_logging` already routes
    its records through ours, and the app's middleware writes the access log (`access_log=False`).
    """
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1, log_config=None, access_log=False)


def _notifier(json_logs: bool) -> Any:
    """Start-up notes: a log record in JSON mode (every stderr line stays JSON), else a Rich line."""
    import logging

    log = logging.getLogger("phoenix_recsys.serve")

    def note(msg: str) -> None:
        if json_logs:
            log.info(msg)
        else:
            err_console.print(escape(msg), highlight=False)

    return note


@serve_app.command("serve")
@domain_errors
def serve(
    bundle: BundleArg,
    data: DataOpt = None,
    host: Annotated[str | None, typer.Option("--host", help="Bind address.", show_default="127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port.", show_default="8000")] = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="Disable every write endpoint (403).")] = False,
    insecure_dev: Annotated[
        bool, typer.Option("--insecure-dev", help="With no key configured, accept every request (local development only).")
    ] = False,
    public_reads: Annotated[
        bool,
        typer.Option("--public-reads", help="Read endpoints need no key (off by default: reads need the read scope)."),
    ] = False,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="Log level (the app's and uvicorn's).")] = LogLevel.INFO,
    log_format: Annotated[
        LogFormat | None,
        typer.Option("--log-format", help="text, or json: one JSON object per log line, access log included.",
                     show_default="text"),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", min=1, help="Worker processes on one port and store, each with its own index kept current."
        ),
    ] = 1,
) -> None:
    """Serve the feed API (POST /v1/feed, /v1/rank, /v1/retrieve, /v1/events, /v1/posts ...; docs at /docs).

    Every endpoint but /healthz and /readyz needs `Authorization: Bearer <key>` with its scope
    (read, write, admin): PHOENIX_API_KEY (every scope) or named keys in PHOENIX_API_KEYS / the
    --config file. --public-reads opens the reads. The server refuses to start with writes enabled
    and no write key unless --insecure-dev. SIGHUP (or POST /v1/admin/reload-keys) reloads the keys.
    Pass keys in the environment or the config file, never as a flag.
    """
    from phoenix_recsys.serve.api import create_app
    from phoenix_recsys.serve.pipeline import FeedService, apply_process_settings
    from phoenix_recsys.serve.settings import load_settings

    def reload_settings() -> Any:
        return load_settings(
            config_file=config,
            host=host,
            port=port,
            store_path=store,
            writes_enabled=False if read_only else None,
            insecure_dev=True if insecure_dev else None,
            public_reads=True if public_reads else None,
            log_format=log_format,
        )

    # Settings first: a missing key fails in milliseconds, before the models load.
    settings = reload_settings()
    # Logging next, before the models load, so their warnings come out in the chosen format too.
    restore_logging = configure_logging(settings.log_format, log_level.value)
    try:
        note = _notifier(settings.log_format is LogFormat.JSON)
        if not settings.keys() and settings.insecure_dev:
            note("warning: --insecure-dev: every request is accepted without a key")
        if workers > 1:
            _serve_workers(bundle, data, config, workers, log_level.value, settings, host=host, port=port, store=store,
                           read_only=read_only, insecure_dev=insecure_dev, public_reads=public_reads,
                           log_format=log_format)  # fmt: skip
            return
        note(f"loading {bundle} ...")
        apply_process_settings(settings)
        service = FeedService.open(bundle, settings=settings, data_dir=data)
        info = service.index_info
        note(
            f"store {service.store.location}; index: "
            + ("none (no retrieval model)" if info is None else f"{info.size:,} posts ({info.source}, {info.directory})")
            + ("" if service.warmup_s is None else f"; warm-up {service.warmup_s:.1f} s")
        )
        note(f"feed explorer: http://{settings.host}:{settings.port}/ui  (API docs at /docs)")
        app = create_app(service, reload_settings=reload_settings)
        _reload_keys_on_sighup(app, note)
        try:
            run_server(app, host=settings.host, port=settings.port, log_level=log_level.value)
        finally:
            service.close()
    finally:
        restore_logging()


def _reload_keys_on_sighup(app: Any, note: Any) -> None:
    """SIGHUP reloads the keys (rotation without downtime); a broken settings file keeps the old ring."""
    import signal

    if not hasattr(signal, "SIGHUP"):  # not on Windows
        return

    def on_hup(_signum: int, _frame: Any) -> None:
        try:
            ring = app.state.reload_keys()
        except Exception as e:  # noqa: BLE001 - a bad reload must never take the server down
            note(f"key reload failed, keeping the old keys: {e}")
        else:
            note(f"keys reloaded: {', '.join(ring.names) or 'none'}")

    signal.signal(signal.SIGHUP, on_hup)


def _serve_workers(
    bundle: Path, data: Path | None, config: Path | None, workers: int, log_level: str, settings: Any, **flags: Any
) -> None:
    """`serve --workers N`: seed and index once here, then N uvicorn workers (see `serve.workers`)."""
    import os

    import uvicorn

    from phoenix_recsys.serve.workers import SPEC_ENV, WorkerSpec, prepare_in_child

    overrides = {
        "host": flags["host"], "port": flags["port"],
        "store_path": None if flags["store"] is None else str(Path(flags["store"]).resolve()),
        "writes_enabled": False if flags["read_only"] else None, "insecure_dev": True if flags["insecure_dev"] else None,
        "public_reads": True if flags["public_reads"] else None,
        "log_format": None if flags["log_format"] is None else flags["log_format"].value,
    }  # fmt: skip
    spec = WorkerSpec(
        bundle=str(bundle.resolve()), workers=workers, data=None if data is None else str(data.resolve()),
        config=None if config is None else str(config.resolve()),
        overrides={k: v for k, v in overrides.items() if v is not None},
    )  # fmt: skip
    _notifier(settings.log_format is LogFormat.JSON)(f"loading {bundle} (seeding and indexing once for {workers} workers) ...")
    prepare_in_child(spec)
    os.environ[SPEC_ENV] = spec.to_env()
    if settings.cursor_secret is None:
        # One random secret for this server's workers (inherited through the environment, never in the
        # spec), so a feed cursor issued by one worker is accepted by the others; not across restarts.
        import secrets

        os.environ["PHOENIX_CURSOR_SECRET"] = secrets.token_urlsafe(32)
        _notifier(settings.log_format is LogFormat.JSON)(
            "cursor_secret not set: feed cursors use a random secret shared by these workers only"
        )
    os.environ["PHOENIX_WORKER_LOG_LEVEL"] = log_level  # read by each worker's app_factory
    uvicorn.run(
        "phoenix_recsys.serve.workers:app_factory", factory=True, host=settings.host, port=settings.port,
        log_level=log_level, workers=workers, log_config=None, access_log=False,
    )  # fmt: skip


@serve_app.command("feed")
@domain_errors
def feed(
    bundle: BundleArg,
    user: Annotated[int, typer.Option("--user", help="The viewer's user id (unknown users get a cold-start feed).")],
    data: DataOpt = None,
    k: Annotated[int, typer.Option("-k", "--top-k", "--k", help="Number of posts.", min=1)] = 20,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Print the feed of one user through the serving pipeline, with why each post is there."""
    from phoenix_recsys.serve.pipeline import FeedService, apply_process_settings
    from phoenix_recsys.serve.settings import load_settings

    # Read-only and no warm-up: one request compiles only what it uses, and needs no key.
    settings = load_settings(config_file=config, store_path=store, writes_enabled=False, warmup=False)
    apply_process_settings(settings)
    with FeedService.open(bundle, settings=settings, data_dir=data) as service:
        result = service.feed(user, k)
    if json_out:
        print_json(result.to_json())
    else:
        print_feed(result)


def print_feed(result: Any, out: Console | None = None) -> None:
    """Render a `FeedResult` as a table plus one line of pipeline bookkeeping."""
    out = console if out is None else out
    table = Table(
        title=f"For You: user {result.user_id}" + (" (cold start)" if result.cold_start else ""),
        box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1), collapse_padding=True,
    )
    for col, justify in (
        ("#", "right"), ("post", "right"), ("by", "right"), ("src", "left"), ("age", "right"),
        ("score", "right"), ("xdiv", "right"), ("xoon", "right"),
    ):  # fmt: skip
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    table.add_column("why: weight x p", no_wrap=True)
    # Only the explanation gives way on a narrow terminal (the other columns need ~56 characters).
    room = max(12, min(60, out.width - 56))
    for it in result.items:
        why = " ".join(f"{a}{c:+.2f}" for a, c in it.top_contributions[:2]) or "-"
        why = why if len(why) <= room else why[: room - 1] + "…"
        table.add_row(
            str(it.rank), str(it.post_id), str(it.author_id), _SOURCE_SHORT.get(it.source, it.source)
            + ("*" if it.in_network else ""), _age(it.age_s), f"{it.final_score:.3g}",
            f"{it.diversity_multiplier:.2f}", f"{it.oon_multiplier:.2f}", why,
        )  # fmt: skip
    out.print(table)
    removed = ", ".join(f"{k} {v}" for k, v in result.filtered.items() if v) or "none"
    sources = ", ".join(f"{k} {v}" for k, v in result.sources.items()) or "none"
    out.print(
        "source: in = in-network, oon = retrieval, pop = popular, new = fresh; * = author followed; "
        "score = weighted (offset) x xdiv x xoon",
        highlight=False,
    )
    out.print(
        f"history {result.history_length} events; sources: {sources}; "
        f"filtered: {removed}; ranked {result.ranked}; {result.timings_ms.get('total', 0.0):.1f} ms",
        highlight=False,
    )


_SOURCE_SHORT = {"in_network": "in", "out_of_network": "oon", "popular": "pop", "fresh": "new"}


def _age(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds}s"


def print_feed_details(
    result: Any, n: int = 3, *, continuous: frozenset[str] = frozenset(), out: Console | None = None
) -> None:
    """Per-action bars of the first `n` items: what the model expects the viewer to do with each.

    Binary actions are probabilities (bars); `continuous` ones are expected values (e.g. seconds
    of dwell), printed as numbers.
    """
    from phoenix_recsys.cli._common import bar

    out = console if out is None else out
    for it in result.items[:n]:
        out.print(
            f"[bold]#{it.rank} post {it.post_id}[/] by {it.author_id} ({it.source}"
            f"{', followed' if it.in_network else ''}): final {it.final_score:.4f} = offset {it.offset_score:.4f}"
            f" x diversity {it.diversity_multiplier:.2f} x out-of-network {it.oon_multiplier:.2f}",
            highlight=False,
        )
        probs = {a: p for a, p in it.probabilities.items() if a not in continuous}
        for name, p in sorted(probs.items(), key=lambda kv: -kv[1])[:5]:
            out.print(f"    {name:<20} {bar(p, 24)} {p:.3f}", highlight=False)
        for name in sorted(continuous & set(it.probabilities)):
            out.print(f"    {name:<20} expected {it.probabilities[name]:.2f}", highlight=False)


def print_feed_for_demo(bundle_dir: Path, data_dir: Path, store_path: Path, k: int = 10) -> None:
    """`make demo`'s last step: the feed of the first user with a history, with explanations."""
    from phoenix_recsys.serve.pipeline import FeedService, apply_process_settings
    from phoenix_recsys.serve.settings import ServeSettings

    # Synthetic authors are not users (author 3 is not user 3), so "own post" means nothing there.
    settings = ServeSettings(writes_enabled=False, warmup=False, store_path=store_path, disabled_filters=("own_post",))
    apply_process_settings(settings)
    with FeedService.open(bundle_dir, settings=settings, data_dir=data_dir) as service:
        user = next((u for u in range(1000) if len(service.user_model_history(u))), 0)
        result = service.feed(user, k)
        continuous = frozenset(service.vocab.names[i] for i in service.vocab.continuous_indices)
    print_feed(result)
    print_feed_details(result, continuous=continuous)
