"""The store: posts, engagements and the social graph behind one interface (`base.Store`).

`open_store(target)` picks the backend once, at open: a `postgresql://` URL is a server store
(`postgres.py`), anything else a SQLite file path (the embedded default). The public
names of the former single module are re-exported, so
`from phoenix_recsys.serve.store import Store, History, PostRows` keeps working.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from phoenix_recsys.serve.store.base import (
    History,
    PostChanges,
    PostOp,
    PostRows,
    PostState,
    SchemaVersionError,
    SeedReport,
    Store,
    StoreLockedError,
    StoreUnavailableError,
)
from phoenix_recsys.serve.store.migrations import Migration, load_migrations
from phoenix_recsys.serve.store.sqlite import MIGRATIONS, SQLiteStore, _split_sql


def open_store(target: str | Path, **kwargs: Any) -> Store:
    """Open the store at `target`: a `postgresql://` URL (PostgresStore) or a SQLite file path.

    Args:
      target: a `postgresql://user@host:port/db` URL, or a file path (created if needed).
      kwargs: passed to the backend's `open` (e.g. `migrations`).
    """
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        from phoenix_recsys.serve.store.postgres import PostgresStore  # psycopg only when asked for

        return PostgresStore.open(text, **kwargs)
    return SQLiteStore.open(target, **kwargs)


__all__ = [
    "MIGRATIONS", "History", "Migration", "PostChanges", "PostOp", "PostRows", "PostState", "SQLiteStore", "SchemaVersionError",
    "SeedReport", "Store", "StoreLockedError", "StoreUnavailableError", "_split_sql", "load_migrations", "open_store",
]  # fmt: skip
