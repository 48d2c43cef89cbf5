"""`phoenix-recsys store ...`: store maintenance (copy a SQLite store into PostgreSQL)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

store_app = typer.Typer(help="Store maintenance.", no_args_is_help=True)
_err = Console(stderr=True)


@store_app.command("migrate")
def migrate_cmd(
    src: Annotated[str, typer.Argument(help="Source store: a SQLite file (or a postgresql:// URL).")],
    dst: Annotated[str, typer.Argument(help="Target store: a postgresql:// URL (or a SQLite file).")],
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty target's rows.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Rows per batch.")] = 10_000,
) -> None:
    """Copy every table from SRC to DST in batches, then verify row counts and checksums."""
    from phoenix_recsys.serve.store import Store
    from phoenix_recsys.serve.store.transfer import _tables, copy_store

    src_kw = {"read_only": True} if not src.startswith(("postgresql://", "postgres://")) else {}
    try:
        with Store.open(src, **src_kw) as s, Store.open(dst) as d:
            totals = {t: s._fetchone(f"SELECT COUNT(*) FROM {t}")[0] for t in _tables(s)}
            with Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=_err
            ) as bar:
                tasks = {t: bar.add_task(t, total=n) for t, n in totals.items()}
                report = copy_store(
                    s, d, force=force, batch_size=batch_size, progress=lambda t, n: bar.advance(tasks[t], n)
                )
    except ValueError as e:
        _err.print(f"[red]store migrate: {e}[/red]")
        raise typer.Exit(1) from None
    for r in report:
        typer.echo(f"{r.table}: {r.rows} rows, checksum {r.checksum:016x} (verified)")
