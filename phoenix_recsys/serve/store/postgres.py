"""The server backend: PostgreSQL through a psycopg 3 connection pool; the same promises as SQLite.

* Atomicity: every public write is one server-side transaction on one pooled connection;
  `transaction()` groups several (nested use is a SAVEPOINT, psycopg's nested `transaction()`),
  and reads inside it run on that connection, so they see its uncommitted rows.
* Durability: COMMIT returns after the WAL is flushed (the server's default
  `synchronous_commit=on`); a write whose call returned survives kill -9 of either process.
* Several writers (servers) at once: constraints and the identity column do what SQLite's single
  writer did. The post sequence (`post_log.seq`, an identity = a sequence) never hands a number out
  twice; to keep numbers visible in order, each writer takes a transaction-scoped advisory lock
  just before appending to post_log (`_before_post_log`), so post-log appends commit one after
  another, in number order (other writes are not serialised). A trigger NOTIFYs `phoenix_posts` at
  commit; `wait_for_posts` LISTENs on it.
* Schema: the numbered files of `migrations/postgres/`, applied at open under a session advisory
  lock, so two servers opening a blank database at once apply each step exactly once.
* Reads outside a transaction run on a pooled autocommit connection (each is its own snapshot).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from phoenix_recsys.serve.store import _validate as v
from phoenix_recsys.serve.store.base import SchemaVersionError, StoreUnavailableError
from phoenix_recsys.serve.store.migrations import Migration, check_migrations, load_migrations
from phoenix_recsys.serve.store.sql import POST_COLS, SQLStore
from phoenix_recsys.testing.crash import crash_point

MIGRATIONS: tuple[Migration, ...] = load_migrations("postgres")

#: Channel the post_log trigger notifies (migration 0002).
POSTS_CHANNEL = "phoenix_posts"
# Advisory lock keys (any two distinct bigints; these spell "phx" + a role).
_MIGRATE_LOCK = 0x706878_0001
_POST_LOG_LOCK = 0x706878_0002
# A plain multi-row insert (no ON CONFLICT / RETURNING) is the same as COPY, which is ~10x faster.
_PLAIN_INSERT = re.compile(r"^\s*INSERT INTO (\w+) \(([\w, ]+)\) VALUES \([?, ]+\)\s*$", re.IGNORECASE)
_COPY_MIN_ROWS = 500
# Errors that mean "the server is gone", not "this statement is wrong": SQLSTATE class 08
# (connection exception), admin / crash shutdown, "cannot connect now" (starting up), and
# client-side failures without a SQLSTATE (socket closed, connection refused).
_GONE_SQLSTATES = ("57P01", "57P02", "57P03")
#: While the database is known to be down, a checkout waits this long at most (then 503), so
#: requests fail fast instead of each holding a thread for the full pool timeout.
_DOWN_CHECKOUT_S = 0.25
# libpq settings for every connection unless the URL sets them: give up a connect after 5 s, and
# detect a peer that vanished without closing (host down, network partition) within ~1 min
# instead of the kernel's ~2 h keepalive default.
_CONNECT_DEFAULTS = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                     "keepalives_count": 3}  # fmt: skip


def _connect_kwargs(url: str) -> dict[str, Any]:
    """`_CONNECT_DEFAULTS` minus what `url` already sets (the URL wins)."""
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(url)
    return {k: val for k, val in _CONNECT_DEFAULTS.items() if k not in given}
_P_COLS = ", ".join("p." + c for c in POST_COLS)
_Q_COLS = ", ".join("q." + c for c in POST_COLS)


def redact_url(url: str) -> str:
    """`url` without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


class PostgresStore(SQLStore):
    """Thread-safe handle on one PostgreSQL database; see the module docstring."""

    backend = "postgres"

    def __init__(
        self,
        url: str,
        migrations: Sequence[Migration],
        *,
        min_size: int,
        max_size: int,
        pool_timeout_s: float = 10.0,
        reconnect_timeout_s: float = 5.0,
    ) -> None:
        """Use `PostgresStore.open`."""
        import psycopg
        from psycopg_pool import ConnectionPool, PoolTimeout

        self._psycopg = psycopg
        self._pool_timeout_error = PoolTimeout
        self._url = url
        self._local = threading.local()
        self._closed = False
        self._listen_lock = threading.Lock()
        self._listener: Any = None
        self._pool_timeout_s = float(pool_timeout_s)
        # Set when a connection was lost, cleared by the next statement that succeeds.
        self._down = False
        self._connect_kwargs = _connect_kwargs(url)
        self._pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True, **self._connect_kwargs},
            open=False,
            name="phoenix-store",
            timeout=self._pool_timeout_s,
            # The pool retries a failed connect with exponential backoff until this many seconds,
            # then gives up until the next request asks for a connection. Kept short so that after
            # a database restart a connection is back within a few seconds (psycopg_pool's
            # default of 5 min lets the backoff grow to minutes).
            reconnect_timeout=reconnect_timeout_s,
        )
        try:
            self._pool.open(wait=True, timeout=30.0)
            self._migrate(migrations)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(  # type: ignore[override]
        cls,
        url: str,
        *,
        migrations: Sequence[Migration] = MIGRATIONS,
        min_size: int = 1,
        max_size: int = 10,
        pool_timeout_s: float = 10.0,
        read_only: bool = False,
        multi_writer: bool = True,
    ) -> PostgresStore:
        """Connect to the database at `url` (`postgresql://user[:pw]@host[:port]/db`) and migrate it.

        Args:
          url: a libpq URL.
          migrations: the schema history; tests pass extra ones.
          min_size, max_size: connection pool bounds (max_size = concurrent queries).
          pool_timeout_s: a statement waits at most this long for a pooled connection, then
            raises `StoreUnavailableError` (HTTP 503); 0.25 s while the database is known down.
          read_only, multi_writer: accepted for symmetry with SQLite; PostgreSQL always has many
            writers and needs no writer lock.

        Raises:
          SchemaVersionError: the database has migrations this code does not know.
        """
        del read_only, multi_writer
        if not str(url).startswith(("postgresql://", "postgres://")):
            raise ValueError(f"url must start with postgresql://, got {redact_url(str(url))!r}")
        if not 1 <= min_size <= max_size:
            raise ValueError(f"pool sizes need 1 <= min_size <= max_size, got {min_size}, {max_size}")
        if not pool_timeout_s > 0:
            raise ValueError(f"pool_timeout_s must be > 0, got {pool_timeout_s}")
        check_migrations(migrations)
        return cls(str(url), tuple(migrations), min_size=min_size, max_size=max_size, pool_timeout_s=pool_timeout_s)

    def close(self) -> None:
        """Close the pool and the listener connection."""
        self._closed = True
        with contextlib.suppress(Exception):
            if self._listener is not None:
                self._listener.close()
        self._pool.close()

    @property
    def location(self) -> str:
        return redact_url(self._url)

    # -- the dialect --------------------------------------------------------------------------------
    def _q(self, sql: str) -> str:
        # Shared SQL holds no literal '?' or '%', so this rewrite is exact.
        return sql.replace("?", "%s")

    def _join_ints_sql(self, column: str) -> str:
        return f"string_agg(({column})::text, ',')"

    def _ids_table(self, alias: str) -> str:
        return f"unnest(%s::bigint[]) AS {alias}(value)"

    def _ids_param(self, ids: np.ndarray) -> Any:
        return ids.tolist()

    def _recent_posts_sql(self) -> str:
        # PostgreSQL cannot turn the shared query's correlated `p.post_id IN (sub-select ... LIMIT)`
        # into a join: it walks every post newest first, crosses it with every author and runs the
        # sub-select per pair as a join filter (posts x authors sub-selects: 210k for 21 authors on
        # 10k posts, ~1 s of CPU per feed, with or without ANALYZE). LATERAL leaves one way to run
        # it: per author, the newest `cap` posts from idx_posts_author_created, then one top-N sort,
        # so the cost is O(authors x cap) whatever the statistics say. Same parameters and result.
        return (
            f"SELECT {_P_COLS} FROM {self._ids_table('a')} CROSS JOIN LATERAL ("
            f"  SELECT {_Q_COLS} FROM posts AS q WHERE q.author_id = a.value AND q.created_at >= ?"
            "  AND q.deleted_at IS NULL AND q.taken_down_at IS NULL"
            "  ORDER BY q.created_at DESC, q.post_id DESC LIMIT ?) AS p "
            "ORDER BY p.created_at DESC, p.post_id DESC LIMIT ?"
        )

    def _before_post_log(self, conn: Any) -> None:
        # Held to COMMIT: post-log appends commit in the order their numbers were drawn.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_POST_LOG_LOCK,))

    def _after_bulk_load(self, tables: Sequence[str]) -> None:
        # Freshly COPYed tables have no statistics (the planner guesses row counts) and no
        # visibility map (index-only scans visit the heap for every row) until autovacuum gets
        # to them, up to a minute or more later. VACUUM cannot run inside a transaction: skip it
        # when the caller still holds one (autovacuum then does it after that commits).
        if self._closed or getattr(self._local, "conn", None) is not None or not tables:
            return
        if not all(t.isidentifier() for t in tables):
            raise ValueError(f"tables must be identifiers, got {list(tables)}")
        with self._pool.connection() as c:
            c.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")

    def _is_missing_post_error(self, e: BaseException) -> bool:
        return isinstance(e, self._psycopg.errors.ForeignKeyViolation)

    def _executemany(self, conn: Any, sql: str, rows: Sequence[tuple]) -> int:
        if not rows:
            return 0
        plain = _PLAIN_INSERT.match(sql)
        if plain is not None and len(rows) >= _COPY_MIN_ROWS:
            # Same rows, same constraints (FKs and checks still fire), one round trip.
            with conn.cursor() as cur, cur.copy(f"COPY {plain.group(1)} ({plain.group(2)}) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)
            return len(rows)
        with conn.cursor() as cur:
            cur.executemany(self._q(sql), rows)
            return int(cur.rowcount)

    def _execute(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> int:
        with conn.cursor() as cur:
            cur.execute(self._q(sql), tuple(params))
            return int(cur.rowcount)

    # -- connections and transactions ---------------------------------------------------------------
    def _is_gone(self, e: BaseException) -> bool:
        """Whether `e` says the database (or the way to it) is gone, rather than the statement failed."""
        if isinstance(e, self._pool_timeout_error):
            return True
        if not isinstance(e, self._psycopg.OperationalError):
            return False
        state = getattr(e, "sqlstate", None)
        return state is None or state.startswith("08") or state in _GONE_SQLSTATES

    def _unavailable(self, e: BaseException) -> StoreUnavailableError:
        self._down = True
        if isinstance(e, self._pool_timeout_error):
            why = "no database connection could be had in time (database down, or every connection busy)"
        else:
            why = f"the database connection failed: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
        return StoreUnavailableError(f"store {self.location} is unavailable: {why}")

    def _checkout(self) -> contextlib.AbstractContextManager[Any]:
        # Fail fast while the database is known to be down; a reconnect finished in the meantime
        # still hands its connection over within the short wait.
        return self._pool.connection(timeout=_DOWN_CHECKOUT_S if self._down else self._pool_timeout_s)

    def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        if self._closed:
            raise RuntimeError("Store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is not None:  # inside transaction(), which maps a lost connection itself
            return conn.execute(self._q(sql), tuple(params)).fetchall()
        for attempt in (1, 2):
            try:
                with self._checkout() as c:
                    rows = c.execute(self._q(sql), tuple(params)).fetchall()
                self._down = False
                return rows
            except self._psycopg.OperationalError as e:
                if not self._is_gone(e):
                    raise
                if attempt == 1 and not isinstance(e, self._pool_timeout_error):
                    # A pooled connection died under us (the database restarted): drop the other
                    # dead idle ones too, then retry a read once on a live or fresh connection,
                    # waiting only briefly for it (the database may still be down).
                    self._down = True
                    self._pool.check()
                    continue
                raise self._unavailable(e) from e
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """An atomic unit of writes: all commit, or (on any exception) none do; nested = savepoint.

        Yields:
          The psycopg connection the transaction runs on (this thread's, until it ends).
        """
        if self._closed:
            raise RuntimeError("Store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with conn.transaction():
                yield conn
            return
        try:
            with self._checkout() as conn:
                self._local.conn = conn
                try:
                    with conn.transaction():
                        yield conn
                finally:
                    self._local.conn = None
        except self._psycopg.OperationalError as e:
            # Writes are not retried here: a lost COMMIT may have applied. The caller gets a
            # StoreUnavailableError (HTTP 503) and retries with its event ids.
            if not self._is_gone(e):
                raise
            raise self._unavailable(e) from e
        self._down = False

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        with self._pool.connection() as conn:
            # Session lock, not transaction lock: it must span every step's own transaction.
            conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATE_LOCK,))
            try:
                with conn.transaction():
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_migrations ("
                        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
                    )
                for m in migrations:
                    with conn.transaction():
                        have = conn.execute(
                            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
                        ).fetchone()[0]
                        if m.version <= have:
                            continue
                        conn.execute(m.sql)  # no parameters: psycopg sends the script as one simple query
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                            (m.version, m.name, v.now()),
                        )
                        crash_point("migration-before-commit", m.version)  # test-only: testing/crash.py
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATE_LOCK,))
        have = self.schema_version()
        if have > len(migrations):
            raise SchemaVersionError(
                f"{self.location} has schema version {have}, newer than this code's {len(migrations)}; "
                "upgrade phoenix-recsys"
            )

    # -- the follower's wake-up --------------------------------------------------------------------
    def wait_for_posts(self, seq: int, timeout: float) -> int:
        """Like `Store.wait_for_posts`, woken by NOTIFY phoenix_posts instead of a 50 ms poll.

        One thread at a time listens; a concurrent caller falls back to the poll.
        """
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0, got {timeout}")
        now_seq = self.post_seq()
        if now_seq > seq or timeout == 0:
            return now_seq
        if not self._listen_lock.acquire(blocking=False):
            return super().wait_for_posts(seq, timeout)
        try:
            deadline = time.monotonic() + timeout
            if self._listener is None or self._listener.closed:
                self._listener = self._psycopg.connect(self._url, autocommit=True, **self._connect_kwargs)
                self._listener.execute(f"LISTEN {POSTS_CHANNEL}")
            while True:
                # Re-read after LISTEN is active, so a commit between the first read and LISTEN is seen.
                now_seq = self.post_seq()
                left = deadline - time.monotonic()
                if now_seq > seq or left <= 0:
                    return now_seq
                for _ in self._listener.notifies(timeout=min(left, 5.0), stop_after=1):
                    pass
        except (self._psycopg.OperationalError, StoreUnavailableError):
            if self._listener is not None:
                with contextlib.suppress(Exception):
                    self._listener.close()
            self._listener = None  # reconnect next time; poll for what is left now
            return super().wait_for_posts(seq, max(0.0, deadline - time.monotonic()))
        finally:
            self._listen_lock.release()
