"""The store: posts, engagements and the social graph behind one interface (`base.Store`).

`open_store(target)` picks the backend once, at open: a `postgresql://` URL is a server store
(not in this version yet), anything else a SQLite file path (the embedded default). The public
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
    SchemaVersionError,
    SeedReport,
    Store,
    StoreLockedError,
)
from phoenix_recsys.serve.store.migrations import Migration, load_migrations
from phoenix_recsys.serve.store.sqlite import MIGRATIONS, SQLiteStore, _split_sql


def open_store(target: str | Path, **kwargs: Any) -> Store:
    """Open the store at `target`: a SQLite file path (created if needed).

    Args:
      target: a path; `postgresql://` URLs are refused until that backend lands.
      kwargs: passed to the backend's `open` (e.g. `migrations`).
    """
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        raise ValueError("the PostgreSQL store backend is not available in this version")
    return SQLiteStore.open(target, **kwargs)


__all__ = [
    "MIGRATIONS", "History", "Migration", "PostChanges", "PostOp", "PostRows", "SQLiteStore", "SchemaVersionError",
    "SeedReport", "Store", "StoreLockedError", "_split_sql", "load_migrations", "open_store",
]  # fmt: skip
