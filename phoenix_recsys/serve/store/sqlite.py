"""The embedded default backend: one SQLite file (WAL, synchronous=FULL, one writer).

* Durability: `journal_mode=WAL` + `synchronous=FULL`, so a write whose call has returned is in the
  fsynced WAL and survives kill -9 (and power loss). Foreign keys are on for every connection.
* Threads: one connection per thread (`threading.local`), so WAL readers never wait on each other
  or on a writer. Writers serialise in SQLite itself: every write runs in `BEGIN IMMEDIATE ...
  COMMIT`, taking the write lock up front, and the 30 s busy timeout makes the others queue.
  Connections use `isolation_level=None` so Python's implicit transactions never interleave
  with ours. A thread's connection stays open until `close()`.
* The single writer makes post-sequence insertion order the commit order.
* Schema: the numbered files of `migrations/sqlite/`, applied in order at open, each in one
  transaction together with its `schema_migrations` row (statement by statement: `executescript`
  would commit), so a kill -9 mid-migration rolls it back whole and the next open reapplies it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from phoenix_recsys.serve.store import _validate as v
from phoenix_recsys.serve.store.base import SchemaVersionError, StoreLockedError
from phoenix_recsys.serve.store.migrations import Migration, check_migrations, load_migrations
from phoenix_recsys.serve.store.sql import SQLStore
from phoenix_recsys.testing.crash import crash_point

MIGRATIONS: tuple[Migration, ...] = load_migrations("sqlite")


def _split_sql(script: str) -> list[str]:
    """Statements of `script` (one by one: `executescript` would COMMIT our transaction)."""
    out, buf = [], ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \t\r\n;"):
                out.append(buf.strip())
            buf = ""
    if buf.strip(" \t\r\n;"):
        raise ValueError(f"migration SQL ends with an incomplete statement: {buf.strip()[:80]!r}")
    return out


class _WriterLock:
    """The one-writer-process lock: `flock` on the sidecar `<db>.writer.lock`.

    A writer takes it exclusively (and records its pid in it, for the refusal message); multi-writer
    openers take it shared, so they admit each other but not a plain writer. One per (file, process):
    opens of the same file within one process share it (threads of one process already serialise
    in SQLite), and the kernel drops it when the process dies, so a kill -9 leaves nothing stale.
    """

    _held: dict[tuple[str, bool], tuple[int, int]] = {}  # (lock path, shared) -> (fd, refcount)
    _guard = threading.Lock()

    @classmethod
    def acquire(cls, db: Path, *, shared: bool) -> tuple[str, bool]:
        lock_path = str(db.resolve()) + ".writer.lock"
        key = (lock_path, shared)
        with cls._guard:
            if key in cls._held:
                fd, n = cls._held[key]
                cls._held[key] = (fd, n + 1)
                return key
            if (lock_path, not shared) in cls._held:
                raise StoreLockedError(
                    f"{db} is already open in this process as a {'single' if shared else 'multi'}-writer store"
                )
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise StoreLockedError(
                    f"{db} is already being written by another process (pid {holder}, lock {lock_path}); "
                    "SQLite has one writer process: stop it, open read_only=True, or open every writer "
                    "with multi_writer=True (store_multi_writer)"
                ) from None
            if not shared:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            cls._held[key] = (fd, 1)
            return key

    @classmethod
    def release(cls, key: tuple[str, bool]) -> None:
        with cls._guard:
            fd, n = cls._held[key]
            if n > 1:
                cls._held[key] = (fd, n - 1)
                return
            del cls._held[key]
            os.close(fd)  # closing the last descriptor releases the flock


class SQLiteStore(SQLStore):
    """Thread-safe handle on one SQLite store file; see the module docstring."""

    backend = "sqlite"

    def __init__(self, path: Path, migrations: Sequence[Migration], *, read_only: bool = False) -> None:
        """Use `SQLiteStore.open`."""
        self._path = path
        self.read_only = read_only
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        self.multi_writer = False  # set by `open`; the one-writer file lock honours it
        try:
            if read_only:
                self._check_version(len(migrations))
            else:
                self._migrate(migrations)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(  # type: ignore[override]
        cls,
        path: str | Path,
        *,
        migrations: Sequence[Migration] = MIGRATIONS,
        multi_writer: bool = False,
        read_only: bool = False,
    ) -> SQLiteStore:
        """Open (creating if needed) the store file at `path` and bring its schema up to date.

        Args:
          path: the database file (its directory must exist). `:memory:` is refused: each thread
            has its own connection, which would each see a different empty database.
          migrations: the schema history; tests pass extra ones.
          multi_writer: several processes will write this file (workers or replicas, each following
            the post sequence); the one-writer file lock then lets them in.
          read_only: open without the writer lock and without migrating (the file must exist and be
            current); every write then fails.

        Raises:
          SchemaVersionError: the file has migrations this code does not know.
          StoreLockedError: another process writes the file (the message names it and its pid).
        """
        if str(path) == ":memory:" or str(path).startswith("file:"):
            raise ValueError("Store.open path must be a file path (per-thread connections need one shared file)")
        check_migrations(migrations)
        if read_only:
            if not Path(path).is_file():
                raise FileNotFoundError(f"read-only store {path} does not exist")
            return cls(Path(path), tuple(migrations), read_only=True)
        lock = _WriterLock.acquire(Path(path), shared=bool(multi_writer))
        try:
            store = cls(Path(path), tuple(migrations))
        except BaseException:
            _WriterLock.release(lock)
            raise
        store._lock = lock
        store.multi_writer = bool(multi_writer)
        return store

    def close(self) -> None:
        """Close every thread's connection. Call once the threads using the store are done."""
        with self._conns_lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for c in conns:
            c.close()
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            _WriterLock.release(lock)

    @property
    def path(self) -> Path:
        return self._path

    def engagements_version(self) -> int | None:
        """The newest engagement's `event_id`: SQLite has one writer at a time and assigns the next
        rowid at insert, and engagements are never deleted, so it grows with every write."""
        return int(self._fetchone("SELECT COALESCE(MAX(event_id), 0) FROM engagements")[0])

    @property
    def location(self) -> str:
        return str(self._path)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if self._closed:
            raise RuntimeError("Store is closed")
        if conn is None:
            # check_same_thread=False only so that close() may close it from another thread.
            target = f"file:{self._path.resolve()}?mode=ro" if self.read_only else self._path
            conn = sqlite3.connect(
                target, timeout=30.0, isolation_level=None, check_same_thread=False, uri=self.read_only
            )
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                conn.close()
                raise RuntimeError(f"could not switch {self._path} to WAL (journal_mode={mode})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            with self._conns_lock:
                if self._closed:
                    conn.close()
                    raise RuntimeError("Store is closed")
                self._conns.append(conn)
            self._local.conn = conn
        return conn

    def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._conn().execute(sql, tuple(params)).fetchall()

    def _engagements_since(self) -> str:
        # Without ANALYZE statistics SQLite answers the popular query (`timestamp >= ? GROUP BY
        # post_id`) by walking idx_engagements_post, i.e. the whole table, to skip the GROUP BY
        # sort: at 1.4M engagements 4.0 s for a 7-day window of 0.8M rows, 3.8 s for one day's
        # 0.2M, every refresh in every worker. The covering time index reads only the window:
        # 0.57 s / 0.18 s, same rows.
        return "engagements INDEXED BY idx_engagements_time_post"

    def _is_missing_post_error(self, e: BaseException) -> bool:
        return isinstance(e, sqlite3.IntegrityError)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An atomic unit of writes: all of them commit, or (on any exception) none do.

        Nested use becomes a SAVEPOINT inside the outer transaction.

        Yields:
          This thread's connection, inside `BEGIN IMMEDIATE` (or a savepoint when nested).
        """
        conn = self._conn()
        depth = getattr(self._local, "depth", 0)
        savepoint = f"phoenix_sp{depth}"
        conn.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT {savepoint}")
        self._local.depth = depth + 1
        try:
            yield conn
            conn.execute("COMMIT" if depth == 0 else f"RELEASE {savepoint}")
        except BaseException:
            if depth == 0:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            else:
                conn.execute(f"ROLLBACK TO {savepoint}")
                conn.execute(f"RELEASE {savepoint}")
            raise
        finally:
            self._local.depth = depth

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        conn = self._conn()
        with self.transaction():
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
            )
        for m in migrations:
            # One transaction per step, re-reading the version inside it.
            with self.transaction():
                if m.version <= self.schema_version():
                    continue
                for i, stmt in enumerate(_split_sql(m.sql), 1):
                    conn.execute(stmt)
                    crash_point("migration-after-statement", m.version, i)  # test-only: testing/crash.py
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (m.version, m.name, v.now()),
                )
                crash_point("migration-before-commit", m.version)
        self._check_version(len(migrations))

    def _check_version(self, known: int) -> None:
        have = self.schema_version()
        if self.read_only and have < known:
            raise SchemaVersionError(f"{self._path} has schema version {have}, older than {known}; open it writable once")
        if have > known:
            raise SchemaVersionError(
                f"{self._path} has schema version {have}, newer than this code's {known}; upgrade phoenix-recsys"
            )
