"""Versioned schemas, one folder of numbered SQL files per backend.

`sqlite/0001_initial_schema.sql`, `sqlite/0002_post_sequence.sql`, ... and the same numbers under
`postgres/`: a schema change is one new file in each folder, with the next number, and both
backends reach the same logical schema at every version (`store migrate` relies on that). A
shipped file is never edited. The file name's words are the step's recorded name
(`0002_post_sequence.sql` -> "post sequence"); each step runs in one transaction and is recorded
in `schema_migrations (version, name, applied_at)`.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import re
from collections.abc import Sequence

BACKENDS = ("sqlite", "postgres")
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Migration:
    """One schema step. `sql` may hold several statements; it runs inside one transaction."""

    version: int
    name: str
    sql: str


def check_migrations(migrations: Sequence[Migration]) -> None:
    """Raise ValueError unless versions are exactly 1..n in order."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1..n in order, got versions {versions}")


def load_migrations(backend: str) -> tuple[Migration, ...]:
    """The shipped schema history of `backend` ("sqlite" or "postgres"), oldest first."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    folder = importlib.resources.files(__name__) / backend
    out = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        m = _FILE.match(entry.name)
        if m is None:
            continue
        sql = entry.read_text(encoding="utf-8")
        name = m.group(2).replace("_", " ")
        out.append(Migration(version=int(m.group(1)), name=name, sql=sql))
    migrations = tuple(out)
    check_migrations(migrations)
    return migrations
