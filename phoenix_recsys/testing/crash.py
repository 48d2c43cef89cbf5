"""Test-only crash points: kill this process with SIGKILL at a named place, without timing races.

A fault test sets `PHOENIX_TEST_CRASH_AT` in a child process's environment (a real `serve`
process, or any process that opens a store) to the name of one point; when the child reaches it,
it sends itself SIGKILL, exactly as `kill -9` from outside would, but at a known instant (say,
after two of a snapshot's four files are written, or inside a migration's transaction). The
points are:

* `snapshot-after-files:N`: `write_snapshot_blobs`, after N files are written and fsynced into
  the snapshot's temporary directory, before the directory is renamed into place.
* `migration-after-statement:V:N`: SQLite, inside migration V's transaction, after its N-th
  statement ran (1-based).
* `migration-before-commit:V`: both backends, after migration V's statements ran and its
  `schema_migrations` row was inserted, before its transaction commits.

The variable is read once, at import: with it unset (always, outside tests) a crash point costs
one comparison with None. Never set it in production.
"""

from __future__ import annotations

import os
import signal

ENV = "PHOENIX_TEST_CRASH_AT"
_ARMED: str | None = os.environ.get(ENV) or None


def crash_point(point: str, *at: int) -> None:
    """SIGKILL this process if `PHOENIX_TEST_CRASH_AT` is `point` followed by `:`-joined `at`.

    Example: `crash_point("migration-after-statement", 5, 1)` fires on
    `PHOENIX_TEST_CRASH_AT=migration-after-statement:5:1`.
    """
    if _ARMED is None:
        return
    if ":".join((point, *map(str, at))) == _ARMED:
        # SIGKILL cannot be caught: no finally block, atexit hook or buffered write runs, as with kill -9.
        os.kill(os.getpid(), signal.SIGKILL)
