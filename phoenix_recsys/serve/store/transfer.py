"""Copy a whole store from one backend to another (`phoenix-recsys store migrate SRC DST`).

Both stores are brought to the same schema by their own migrations at open, so the copy is by
table and column name. Tables go posts first (others reference it), in primary-key batches; after
the copy each table's row count and an order-independent checksum (the sum of a 64-bit hash of
every row, mod 2^64, so SQLite's and PostgreSQL's differing text orders do not matter) must match.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

from phoenix_recsys.serve.store.base import Store
from phoenix_recsys.serve.store.sql import SQLStore


@dataclasses.dataclass(frozen=True, slots=True)
class TableCopy:
    """One copied table: its row count and checksum (equal on both sides)."""

    table: str
    rows: int
    checksum: int


def _tables(store: SQLStore) -> list[str]:
    if store.backend == "sqlite":
        rows = store._fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    else:
        rows = store._fetchall("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    names = sorted(r[0] for r in rows if r[0] != "schema_migrations")
    return sorted(names, key=lambda n: n != "posts")  # posts first: the others reference it


def _columns(store: SQLStore, table: str) -> list[str]:
    if store.backend == "sqlite":
        return [r[1] for r in store._fetchall(f"PRAGMA table_info({table})")]
    rows = store._fetchall(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = ? ORDER BY ordinal_position",
        (table,),
    )
    return [r[0] for r in rows]


def _row_hash(row: tuple) -> int:
    text = "\x1f".join(
        "\x00" if x is None else repr(float(x)) if isinstance(x, float) else str(x) for x in row
    )
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def table_checksum(
    store: SQLStore, table: str, columns: list[str], batch_size: int = 50_000
) -> tuple[int, int]:
    """`(rows, checksum)` of `table` over `columns` (order-independent)."""
    total, n = 0, 0
    for chunk in _scan(store, table, columns, batch_size):
        n += len(chunk)
        total = (total + sum(_row_hash(r) for r in chunk)) % (1 << 64)
    return n, total


def _scan(store: SQLStore, table: str, columns: list[str], batch_size: int):
    # OFFSET paging over the first column's order plus all columns: simple and stable for a
    # store nobody writes while it is migrated (the command requires that).
    cols = ", ".join(columns)
    order = ", ".join(str(i + 1) for i in range(len(columns)))
    offset = 0
    while True:
        rows = store._fetchall(
            f"SELECT {cols} FROM {table} ORDER BY {order} LIMIT ? OFFSET ?", (batch_size, offset)
        )
        if not rows:
            return
        yield rows
        offset += len(rows)


def copy_store(
    src: Store,
    dst: Store,
    *,
    force: bool = False,
    batch_size: int = 10_000,
    progress: Callable[[str, int], None] | None = None,
) -> list[TableCopy]:
    """Copy every table of `src` into `dst`, then verify counts and checksums.

    Args:
      src, dst: open SQL stores at the same schema version.
      force: empty a non-empty target first (otherwise refuse it).
      batch_size: rows per read and write.
      progress: called `(table, rows_just_copied)` after each batch.

    Raises:
      ValueError: schema versions differ, the target is not empty (without `force`), or a table's
        count or checksum differs after the copy.
    """
    if not isinstance(src, SQLStore) or not isinstance(dst, SQLStore):
        raise ValueError("store migrate copies between SQL stores")
    if src.schema_version() != dst.schema_version():
        raise ValueError(
            f"schema versions differ: source {src.schema_version()}, target {dst.schema_version()}"
        )
    tables = _tables(src)
    missing = set(tables) - set(_tables(dst))
    if missing:
        raise ValueError(f"target lacks tables {sorted(missing)}")
    busy = [t for t in tables if dst._fetchone(f"SELECT COUNT(*) FROM {t}")[0]]
    if busy and not force:
        raise ValueError(f"target is not empty (tables {busy} hold rows); pass --force to replace them")
    with dst.transaction() as conn:
        for t in reversed(tables):  # children before posts
            dst._execute(conn, f"DELETE FROM {t}")
        for t in tables:
            cols = _columns(src, t)
            override = ""
            if dst.backend == "postgres" and dst._fetchall(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = ? AND identity_generation = 'ALWAYS'",
                (t,),
            ):
                override = " OVERRIDING SYSTEM VALUE"  # post_log.seq: keep the source's numbers
            sql = f"INSERT INTO {t} ({', '.join(cols)}){override} VALUES ({', '.join('?' for _ in cols)})"
            for chunk in _scan(src, t, cols, batch_size):
                dst._executemany(conn, sql, chunk)
                if progress is not None:
                    progress(t, len(chunk))
        if dst.backend == "postgres":
            # Identity columns were written explicitly: move their sequences past the copied values.
            for t in tables:
                for (col,) in dst._fetchall(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND table_name = ? AND is_identity = 'YES'",
                    (t,),
                ):
                    dst._fetchall(
                        f"SELECT setval(pg_get_serial_sequence('{t}', '{col}'), "
                        f"GREATEST(COALESCE(MAX({col}), 0), 1), MAX({col}) IS NOT NULL) FROM {t}"
                    )
    dst._after_bulk_load(tables)
    out = []
    for t in tables:
        cols = _columns(src, t)
        a, b = table_checksum(src, t, cols, batch_size), table_checksum(dst, t, cols, batch_size)
        if a != b:
            raise ValueError(f"table {t}: source has {a[0]} rows (checksum {a[1]}), target {b[0]} ({b[1]})")
        out.append(TableCopy(t, a[0], a[1]))
    return out
