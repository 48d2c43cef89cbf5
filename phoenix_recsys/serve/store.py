"""The embedded store: one SQLite file (WAL, synchronous=FULL) holding posts, engagements and the social graph.

Design choices, written down once:

* Durability: `journal_mode=WAL` + `synchronous=FULL`, so a write whose call has returned is in the
  fsynced WAL and survives kill -9 (and power loss). Foreign keys are on for every connection.
* Threads: one connection per thread (`threading.local`), so WAL readers never wait on each other
  or on a writer. Writers serialise in SQLite itself: every write runs in `BEGIN IMMEDIATE ...
  COMMIT`, taking the write lock up front (a deferred transaction that reads, then writes, can fail
  with SQLITE_BUSY instead of waiting), and the 30 s busy timeout makes the others queue.
  Connections are made with `isolation_level=None` so that Python's implicit transactions never
  interleave with ours; `Store.transaction()` groups several writes into one atomic unit.
  A thread's connection stays open until `close()`, even after the thread ends (fine for a
  server's bounded thread pool; a program spawning unbounded threads should share fewer stores).
* Engagements: one row per (user, post, time) event, its actions a JSON object of the non-zero
  actions by NAME (`{"favorite": 1, "dwell_time": 12.5}`). Names, not positions, because
  vocabularies are data; one row per event because the history token is one multi-hot per event.
  `event_id` (insertion order) breaks timestamp ties, the stable order SPEC 8 asks for.
* Seen: `seen_posts(user)` = posts the user engaged with plus posts reported as impressions
  (`mark_seen`, or seeded impression rows). Merely being served does not make a post seen: the
  client did not necessarily show it; `served_posts` covers pagination instead.
* Schema: versioned migrations (`MIGRATIONS`) applied in order at open and recorded in
  `schema_migrations`; a database newer than the code is refused.

Timestamps are int seconds. Ids are non-negative int64.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from phoenix_recsys.actions import ActionVocabulary
from phoenix_recsys.serve.filters import Candidates

_INT64_MIN = -(2**63)


# --------------------------------------------------------------------------------------------
# Migrations
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Migration:
    """One schema step. `sql` may hold several statements; it runs inside one transaction."""

    version: int
    name: str
    sql: str


_SCHEMA_V1 = """
CREATE TABLE posts (
    post_id INTEGER PRIMARY KEY,
    author_id INTEGER NOT NULL CHECK (author_id >= 0),
    created_at INTEGER NOT NULL,
    text TEXT,
    repost_of INTEGER,
    video_duration_s REAL
);
CREATE INDEX idx_posts_author_created ON posts (author_id, created_at DESC, post_id DESC);
CREATE INDEX idx_posts_created ON posts (created_at DESC, post_id DESC);

CREATE TABLE engagements (
    event_id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    post_id INTEGER NOT NULL REFERENCES posts (post_id),
    timestamp INTEGER NOT NULL,
    actions TEXT NOT NULL CHECK (json_valid(actions)),
    product_surface INTEGER NOT NULL DEFAULT 0 CHECK (product_surface >= 0)
);
CREATE INDEX idx_engagements_user_time ON engagements (user_id, timestamp, event_id, post_id);
CREATE INDEX idx_engagements_post ON engagements (post_id);
CREATE INDEX idx_engagements_time_post ON engagements (timestamp, post_id);

CREATE TABLE follows (
    user_id INTEGER NOT NULL,
    author_id INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, author_id)
) WITHOUT ROWID;
CREATE TABLE blocks (
    user_id INTEGER NOT NULL,
    author_id INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, author_id)
) WITHOUT ROWID;
CREATE TABLE mutes (
    user_id INTEGER NOT NULL,
    author_id INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, author_id)
) WITHOUT ROWID;

CREATE TABLE served (
    user_id INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    post_id INTEGER NOT NULL REFERENCES posts (post_id),
    served_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, session_id, post_id)
) WITHOUT ROWID;
CREATE TABLE seen (
    user_id INTEGER NOT NULL,
    post_id INTEGER NOT NULL REFERENCES posts (post_id),
    seen_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, post_id)
) WITHOUT ROWID;
"""

#: The schema history. Append `Migration(version=2, ...)` here to evolve it; never edit a shipped one.
MIGRATIONS: tuple[Migration, ...] = (Migration(version=1, name="initial schema", sql=_SCHEMA_V1),)


class SchemaVersionError(RuntimeError):
    """The database was written by a newer schema than this code knows."""


def _split_sql(script: str) -> list[str]:
    # `executescript` would COMMIT our open transaction first, so statements run one by one;
    # `complete_statement` knows about semicolons inside strings and trigger bodies.
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


def _check_migrations(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1..n in order, got versions {versions}")


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------
def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "to_numpy") and not isinstance(x, np.ndarray):  # pyarrow Array / ChunkedArray
        return x.to_numpy(zero_copy_only=False)
    return np.asarray(x)


def _int_array(name: str, x: Any, n: int | None = None, *, nonneg: bool = True) -> np.ndarray:
    """1-D int64 array from ints or integral floats; ValueError naming `name` otherwise."""
    arr = _to_numpy(x)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} must have length {n}, got {arr.shape[0]}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.floor(arr)):
            raise ValueError(f"{name} must hold integers (no NaN / null or fractions)")
    out = arr.astype(np.int64)
    if nonneg and out.min() < 0:
        raise ValueError(f"{name} must be >= 0, got {int(out.min())}")
    return out


def _scalar_int(name: str, x: Any, *, nonneg: bool = True) -> int:
    if isinstance(x, bool) or not isinstance(x, int | np.integer):
        raise ValueError(f"{name} must be an int, got {x!r}")
    if nonneg and x < 0:
        raise ValueError(f"{name} must be >= 0, got {x}")
    return int(x)


def _now() -> int:
    return int(time.time())


def _json_number(v: float) -> float | int:
    # Binary actions are stored as 1, not 1.0: a third of the bytes per action in the file.
    return int(v) if float(v).is_integer() else float(v)


def _actions_json_from_matrix(names: Sequence[str], values: np.ndarray) -> list[str]:
    """One compact JSON object of the non-zero actions per row of `values [N, A]`."""
    if values.shape[0] == 0:
        return []
    # Rows repeat a lot (multi-hot patterns), so encode each distinct row once.
    uniq, inverse = np.unique(values, axis=0, return_inverse=True)
    encoded = [
        json.dumps({names[j]: _json_number(row[j]) for j in np.flatnonzero(row)}, separators=(",", ":"))
        for row in uniq
    ]
    return [encoded[i] for i in inverse.ravel().tolist()]


def _check_action_matrix(names: Sequence[str], values: np.ndarray, field: str) -> None:
    if values.ndim != 2 or values.shape[1] != len(names):
        raise ValueError(
            f"{field} must be [N, {len(names)}] (one column per action name), got {values.shape}"
        )
    if not np.all(np.isfinite(values)) or (values.size and values.min() < 0):
        raise ValueError(f"{field} must be finite and >= 0")
    for n in names:
        if not isinstance(n, str) or not n:
            raise ValueError(f"action names must be non-empty strings, got {n!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"action names must be unique, got {list(names)}")


def _columns(table: Any, what: str) -> dict[str, Any]:
    """Column name -> column for a pyarrow Table or a mapping of columns."""
    if hasattr(table, "column_names") and hasattr(table, "column"):
        return {n: table.column(n) for n in table.column_names}
    if isinstance(table, Mapping):
        return dict(table)
    raise ValueError(
        f"{what} must be a pyarrow Table or a mapping of column name -> array, got {type(table).__name__}"
    )


def _require(cols: Mapping[str, Any], names: Sequence[str], what: str) -> None:
    missing = [n for n in names if n not in cols]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; it has {sorted(cols)}")


def _action_column(name: str, col: Any) -> np.ndarray:
    """A bool/number action column as float64; nulls mean 'not done' (0)."""
    if hasattr(col, "fill_null"):  # pyarrow: cast first, so bool columns can take the 0.0 fill
        try:
            col = col.cast("float64")
        except (TypeError, ValueError, NotImplementedError):
            raise ValueError(f"events.{name} must be bool or numeric, got type {col.type}") from None
        col = col.fill_null(0.0) if col.null_count else col
    arr = _to_numpy(col)
    if arr.dtype == object:
        arr = np.array([0.0 if v is None else v for v in arr], dtype=np.float64)
    try:
        out = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"events.{name} must be bool or numeric, got dtype {arr.dtype}") from None
    if out.ndim != 1:
        raise ValueError(f"events.{name} must be 1-D")
    return out


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class PostRows:
    """Posts as columns, each `[P]`.

    Attributes:
      post_ids, author_ids, created_at: int64 (author -1 / created_at -1 for a post `get_posts`
        did not find).
      text: object array of str or None.
      repost_of: int64, -1 = not a repost.
      video_duration_s: float64, NaN = no video.
    """

    post_ids: np.ndarray
    author_ids: np.ndarray
    created_at: np.ndarray
    text: np.ndarray
    repost_of: np.ndarray
    video_duration_s: np.ndarray

    def __len__(self) -> int:
        return int(self.post_ids.shape[0])

    @classmethod
    def _from_rows(cls, rows: Sequence[tuple]) -> PostRows:
        # rows: (post_id, author_id, created_at, text, repost_of, video_duration_s)
        n = len(rows)
        cols = list(zip(*rows, strict=True)) if n else [()] * 6
        return cls(
            post_ids=np.array(cols[0], dtype=np.int64),
            author_ids=np.array(cols[1], dtype=np.int64),
            created_at=np.array(cols[2], dtype=np.int64),
            text=np.array(cols[3], dtype=object) if n else np.zeros(0, dtype=object),
            repost_of=np.array([-1 if r is None else r for r in cols[4]], dtype=np.int64),
            video_duration_s=np.array([np.nan if v is None else v for v in cols[5]], dtype=np.float64),
        )

    def to_candidates(self, source: str) -> Candidates:
        """These posts as filter/scoring candidates from `source` (text / repost / video kept)."""
        return Candidates(
            post_ids=self.post_ids,
            author_ids=self.author_ids,
            created_at=self.created_at,
            source=np.full(len(self), source, dtype=object),
            repost_of=self.repost_of,
            text=self.text,
            video_duration_s=self.video_duration_s,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class History:
    """A user's engagements, oldest first (ties in insertion order), each column `[S]`.

    Attributes:
      post_ids, author_ids, timestamps, product_surface: int64.
      actions: per event, action name -> value (only non-zero actions).
    """

    post_ids: np.ndarray
    author_ids: np.ndarray
    timestamps: np.ndarray
    actions: tuple[dict[str, float], ...]
    product_surface: np.ndarray

    def __len__(self) -> int:
        return int(self.post_ids.shape[0])

    def action_matrix(self, vocab: ActionVocabulary | Sequence[str]) -> np.ndarray:
        """`[S, A]` float32 action values on `vocab`'s axis; actions it lacks are dropped."""
        names = vocab.names if isinstance(vocab, ActionVocabulary) else tuple(vocab)
        col = {n: j for j, n in enumerate(names)}
        out = np.zeros((len(self), len(names)), dtype=np.float32)
        for i, acts in enumerate(self.actions):
            for n, v in acts.items():
                j = col.get(n)
                if j is not None:
                    out[i, j] = v
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class SeedReport:
    """Row counts written by `Store.seed_from_tables`."""

    posts: int
    derived_posts: int
    engagements: int
    impressions: int
    follows: int


_POST_COLS = "post_id, author_id, created_at, text, repost_of, video_duration_s"


# --------------------------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------------------------
class Store:
    """Thread-safe handle on one SQLite store file; see the module docstring for the design.

    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as d, Store.open(os.path.join(d, "s.db")) as s:
    ...     s.add_posts([10, 11], author_ids=[1, 2], created_at=[100, 200])
    ...     s.follow(7, 2)
    ...     s.recent_posts_by_authors(s.followed_authors(7), limit_total=5, per_author_cap=5).post_ids.tolist()
    2
    True
    [11]
    """

    def __init__(self, path: Path, migrations: Sequence[Migration]) -> None:
        """Use `Store.open`."""
        self._path = path
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        try:
            self._migrate(migrations)
        except BaseException:
            self.close()  # do not leak the connection of a store nobody will hold
            raise

    # -- lifecycle ------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, *, migrations: Sequence[Migration] = MIGRATIONS) -> Store:
        """Open (creating if needed) the store at `path` and bring its schema up to date.

        Args:
          path: the database file (its directory must exist). `:memory:` is refused: each thread
            has its own connection, which would each see a different empty database.
          migrations: the schema history; tests pass extra ones.

        Returns:
          An open `Store`.

        Raises:
          SchemaVersionError: the file has migrations this code does not know.
        """
        if str(path) == ":memory:" or str(path).startswith("file:"):
            raise ValueError(
                "Store.open path must be a file path (per-thread connections need one shared file)"
            )
        _check_migrations(migrations)
        return cls(Path(path), tuple(migrations))

    def close(self) -> None:
        """Close every thread's connection. Call once the threads using the store are done."""
        with self._conns_lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for c in conns:
            c.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self._path

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if self._closed:
            raise RuntimeError("Store is closed")
        if conn is None:
            # check_same_thread=False only so that close() may close it from another thread; each
            # connection is still used by its own thread alone.
            conn = sqlite3.connect(self._path, timeout=30.0, isolation_level=None, check_same_thread=False)
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

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An atomic unit of writes: all of them commit, or (on any exception) none do.

        Nested use becomes a SAVEPOINT inside the outer transaction: an exception caught between
        the two levels undoes only the inner block, and nothing is durable before the outer COMMIT.
        The public write methods use this, so they compose inside one caller's transaction.

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
            # One transaction per step, re-reading the version inside it: a second process opening
            # the same file at the same time waits on the lock, then sees the step done.
            with self.transaction():
                if m.version <= self.schema_version():
                    continue
                for stmt in _split_sql(m.sql):
                    conn.execute(stmt)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (m.version, m.name, _now()),
                )
        have = self.schema_version()
        if have > len(migrations):
            raise SchemaVersionError(
                f"{self._path} has schema version {have}, newer than this code's {len(migrations)}; upgrade phoenix-recsys"
            )

    def schema_version(self) -> int:
        """The highest applied migration version (0 for a blank file)."""
        row = self._conn().execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
        return int(row[0])

    def applied_migrations(self) -> list[tuple[int, str]]:
        """`(version, name)` of every applied migration, in order."""
        return [
            (int(v), str(n))
            for v, n in self._conn().execute("SELECT version, name FROM schema_migrations ORDER BY version")
        ]

    # -- posts ----------------------------------------------------------------------------------
    def add_posts(
        self,
        post_ids: Any,
        author_ids: Any,
        created_at: Any,
        *,
        text: Sequence[str | None] | None = None,
        repost_of: Any = None,
        video_duration_s: Any = None,
    ) -> int:
        """Insert posts in bulk; an existing post id is updated (upsert: the latest write wins).

        Args:
          post_ids: `[P]` int ids, unique within the call.
          author_ids: `[P]` int >= 0.
          created_at: `[P]` int seconds.
          text: optional `[P]` str or None.
          repost_of: optional `[P]` int, negative = not a repost.
          video_duration_s: optional `[P]` float seconds, NaN = no video.

        Returns:
          The number of rows written (P).
        """
        pid = _int_array("post_ids", post_ids)
        n = pid.shape[0]
        if np.unique(pid).shape[0] != n:
            raise ValueError("post_ids must be unique within one add_posts call")
        aid = _int_array("author_ids", author_ids, n)
        cat = _int_array("created_at", created_at, n, nonneg=False)
        txt: list[str | None] = [None] * n
        if text is not None:
            txt = list(_to_numpy(text).tolist()) if not isinstance(text, list) else list(text)
            if len(txt) != n:
                raise ValueError(f"text must have length {n}, got {len(txt)}")
            if any(t is not None and not isinstance(t, str) for t in txt):
                raise ValueError("text must hold str or None")
        rep: list[int | None] = [None] * n
        if repost_of is not None:
            r = _int_array("repost_of", repost_of, n, nonneg=False)
            rep = [None if v < 0 else v for v in r.tolist()]
        vid: list[float | None] = [None] * n
        if video_duration_s is not None:
            v = _to_numpy(video_duration_s).astype(np.float64)
            if v.shape != (n,):
                raise ValueError(f"video_duration_s must be [{n}], got {v.shape}")
            if np.any(v[~np.isnan(v)] < 0):
                raise ValueError("video_duration_s must be >= 0 (NaN = no video)")
            vid = [None if math.isnan(x) else x for x in v.tolist()]
        rows = zip(pid.tolist(), aid.tolist(), cat.tolist(), txt, rep, vid, strict=True)
        with self.transaction() as conn:
            conn.executemany(
                f"INSERT INTO posts ({_POST_COLS}) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (post_id) DO UPDATE SET author_id = excluded.author_id, "
                "created_at = excluded.created_at, text = excluded.text, "
                "repost_of = excluded.repost_of, video_duration_s = excluded.video_duration_s",
                rows,
            )
        return n

    def get_posts(self, post_ids: Any) -> PostRows:
        """Look posts up by id, aligned to the input.

        Args:
          post_ids: `[P]` int ids (repeats allowed).

        Returns:
          `PostRows` in input order; unknown ids get author -1 and created_at -1 (so the
          missing-author filter drops them), text None, repost_of -1, video NaN.
        """
        pid = _int_array("post_ids", post_ids, nonneg=False)
        uniq = np.unique(pid)
        rows = (
            self._conn()
            .execute(
                f"SELECT {', '.join('p.' + c.strip() for c in _POST_COLS.split(','))} "
                "FROM json_each(?) AS j JOIN posts AS p ON p.post_id = j.value ORDER BY p.post_id",
                (json.dumps(uniq.tolist()),),
            )
            .fetchall()
        )
        found = PostRows._from_rows(rows)
        pos = np.searchsorted(found.post_ids, pid)
        pos_c = np.minimum(pos, max(len(found) - 1, 0))
        hit = (pos < len(found)) & (found.post_ids[pos_c] == pid) if len(found) else np.zeros(pid.shape, bool)

        def pick(col: np.ndarray, fill: Any, dtype: Any) -> np.ndarray:
            out = np.full(pid.shape[0], fill, dtype=dtype)
            if len(found):
                out[hit] = col[pos_c[hit]]
            return out

        return PostRows(
            post_ids=pid,
            author_ids=pick(found.author_ids, -1, np.int64),
            created_at=pick(found.created_at, -1, np.int64),
            text=pick(found.text, None, object),
            repost_of=pick(found.repost_of, -1, np.int64),
            video_duration_s=pick(found.video_duration_s, np.nan, np.float64),
        )

    def num_posts(self) -> int:
        """Number of posts in the store."""
        return int(self._conn().execute("SELECT COUNT(*) FROM posts").fetchone()[0])

    def latest_timestamp(self) -> int | None:
        """The newest engagement time or post creation time, None for an empty store.

        Both columns are indexed, so this is two index look-ups (the serving "data" clock).
        """
        row = (
            self._conn()
            .execute(
                "SELECT MAX(t) FROM (SELECT MAX(timestamp) AS t FROM engagements "
                "UNION ALL SELECT MAX(created_at) FROM posts)"
            )
            .fetchone()
        )
        return None if row[0] is None else int(row[0])

    def iter_posts(self, batch_size: int = 10_000) -> Iterator[PostRows]:
        """All posts in post-id order, `batch_size` at a time (e.g. to embed the corpus).

        Yields:
          `PostRows` chunks of at most `batch_size` posts.
        """
        batch_size = _scalar_int("batch_size", batch_size)
        if batch_size == 0:
            raise ValueError("batch_size must be > 0")
        last = _INT64_MIN
        while True:
            # Keyset pagination: stable and O(batch) per page, unlike OFFSET.
            rows = (
                self._conn()
                .execute(
                    f"SELECT {_POST_COLS} FROM posts WHERE post_id > ? ORDER BY post_id LIMIT ?",
                    (last, batch_size),
                )
                .fetchall()
            )
            if not rows:
                return
            yield PostRows._from_rows(rows)
            last = rows[-1][0]

    def recent_posts_by_authors(
        self, author_ids: Any, limit_total: int, per_author_cap: int, since: int | None = None
    ) -> PostRows:
        """The in-network source: newest posts of the given authors.

        Args:
          author_ids: `[F]` author ids (e.g. `followed_authors(viewer)`).
          limit_total: at most this many posts overall (1,200 in production).
          per_author_cap: at most this many per author, so a prolific author cannot fill the source.
          since: only posts with created_at >= since.

        Returns:
          `PostRows`, newest first (ties: higher post id first).
        """
        aid = np.unique(_int_array("author_ids", author_ids))
        limit_total = _scalar_int("limit_total", limit_total)
        per_author_cap = _scalar_int("per_author_cap", per_author_cap)
        if aid.size == 0 or limit_total == 0 or per_author_cap == 0:
            return PostRows._from_rows([])
        # The correlated sub-select walks idx_posts_author_created for each author and stops after
        # `per_author_cap` rows, so cost is O(authors x cap), not O(all posts of those authors).
        rows = (
            self._conn()
            .execute(
                f"SELECT {', '.join('p.' + c.strip() for c in _POST_COLS.split(','))} "
                "FROM json_each(?1) AS a JOIN posts AS p ON p.post_id IN ("
                "  SELECT q.post_id FROM posts AS q WHERE q.author_id = a.value AND q.created_at >= ?2"
                "  ORDER BY q.created_at DESC, q.post_id DESC LIMIT ?3) "
                "ORDER BY p.created_at DESC, p.post_id DESC LIMIT ?4",
                (
                    json.dumps(aid.tolist()),
                    _INT64_MIN if since is None else int(since),
                    per_author_cap,
                    limit_total,
                ),
            )
            .fetchall()
        )
        return PostRows._from_rows(rows)

    def popular_posts(self, limit: int, since: int | None = None) -> PostRows:
        """Posts with the most engagement events.

        Args:
          limit: at most this many posts.
          since: count only engagements with timestamp >= since (a trending window); None = all.

        Returns:
          `PostRows`, most engaged first (ties: newer post, then higher id).
        """
        limit = _scalar_int("limit", limit)
        rows = (
            self._conn()
            .execute(
                f"SELECT {', '.join('p.' + c.strip() for c in _POST_COLS.split(','))} FROM ("
                "  SELECT post_id, COUNT(*) AS n FROM engagements WHERE timestamp >= ? GROUP BY post_id"
                ") AS c JOIN posts AS p ON p.post_id = c.post_id "
                "ORDER BY c.n DESC, p.created_at DESC, p.post_id DESC LIMIT ?",
                (_INT64_MIN if since is None else int(since), limit),
            )
            .fetchall()
        )
        return PostRows._from_rows(rows)

    def fresh_posts(self, limit: int) -> PostRows:
        """The newest posts overall (ties: higher id first).

        Returns:
          `PostRows` of at most `limit` posts, newest first.
        """
        limit = _scalar_int("limit", limit)
        rows = (
            self._conn()
            .execute(
                f"SELECT {_POST_COLS} FROM posts ORDER BY created_at DESC, post_id DESC LIMIT ?", (limit,)
            )
            .fetchall()
        )
        return PostRows._from_rows(rows)

    # -- engagements ----------------------------------------------------------------------------
    def add_engagements(
        self,
        user_ids: Any,
        post_ids: Any,
        timestamps: Any,
        actions: Sequence[Mapping[str, float]] | np.ndarray,
        *,
        action_names: Sequence[str] | None = None,
        product_surface: Any = None,
    ) -> int:
        """Record engagement events in bulk (all or nothing).

        Args:
          user_ids, post_ids, timestamps: `[E]` ints; every post must already be in the store.
          actions: per event either a mapping action name -> value, or an `[E, A]` array whose
            columns are `action_names`. Values are >= 0 (binary as 0/1, continuous as amounts);
            each event needs at least one positive action (impressions go to `mark_seen`).
          action_names: column names for an array `actions`.
          product_surface: optional `[E]` int >= 0 (default 0).

        Returns:
          The number of events written (E).
        """
        uid = _int_array("user_ids", user_ids)
        n = uid.shape[0]
        pid = _int_array("post_ids", post_ids, n)
        ts = _int_array("timestamps", timestamps, n, nonneg=False)
        surf = (
            np.zeros(n, np.int64)
            if product_surface is None
            else _int_array("product_surface", product_surface, n)
        )
        if isinstance(actions, np.ndarray):
            if action_names is None:
                raise ValueError("action_names is required when actions is an array")
            vals = actions.astype(np.float64)
            _check_action_matrix(action_names, vals, "actions")
            if vals.shape[0] != n:
                raise ValueError(f"actions must have {n} rows, got {vals.shape[0]}")
            empty = np.flatnonzero(~(vals > 0).any(axis=1))
            if empty.size:
                raise ValueError(
                    f"actions[{int(empty[0])}] has no positive action; record impressions with mark_seen"
                )
            encoded = _actions_json_from_matrix(action_names, vals)
        else:
            if len(actions) != n:
                raise ValueError(f"actions must have length {n}, got {len(actions)}")
            encoded = []
            for i, acts in enumerate(actions):
                if not isinstance(acts, Mapping):
                    raise ValueError(f"actions[{i}] must be a mapping of action name -> value, got {acts!r}")
                clean: dict[str, float | int] = {}
                for k, v in acts.items():
                    if not isinstance(k, str) or not k:
                        raise ValueError(f"actions[{i}] has a bad action name {k!r}")
                    fv = float(v)
                    if not math.isfinite(fv) or fv < 0:
                        raise ValueError(f"actions[{i}][{k!r}] must be finite and >= 0, got {v!r}")
                    if fv > 0:
                        clean[k] = _json_number(fv)
                if not clean:
                    raise ValueError(
                        f"actions[{i}] has no positive action; record impressions with mark_seen"
                    )
                encoded.append(json.dumps(clean, separators=(",", ":")))
        self._insert_engagements(uid, pid, ts, encoded, surf)
        return n

    def _insert_engagements(
        self, uid: np.ndarray, pid: np.ndarray, ts: np.ndarray, encoded: list[str], surf: np.ndarray
    ) -> None:
        try:
            with self.transaction() as conn:
                conn.executemany(
                    "INSERT INTO engagements (user_id, post_id, timestamp, actions, product_surface) "
                    "VALUES (?, ?, ?, ?, ?)",
                    zip(uid.tolist(), pid.tolist(), ts.tolist(), encoded, surf.tolist(), strict=True),
                )
        except sqlite3.IntegrityError as e:
            raise ValueError(f"post_ids: {self._missing_posts_message(pid)} ({e})") from None

    def _missing_posts_message(self, pid: np.ndarray) -> str:
        known = self.get_posts(np.unique(pid)).author_ids >= 0
        missing = np.unique(pid)[~known]
        return f"{missing.size} post id(s) not in the store, e.g. {missing[:5].tolist()}"

    def get_history(self, user_id: int, limit: int, *, before: int | None = None) -> History:
        """The user's most recent `limit` engagements, returned oldest first.

        Args:
          user_id: the user.
          limit: at most this many events (the newest ones).
          before: only events with timestamp < before (no leakage when replaying the past).

        Returns:
          `History` of `[S]` columns, S <= limit, ordered by (timestamp, insertion order).
        """
        user_id = _scalar_int("user_id", user_id)
        limit = _scalar_int("limit", limit)
        rows = (
            self._conn()
            .execute(
                "SELECT e.post_id, p.author_id, e.timestamp, e.actions, e.product_surface "
                "FROM engagements AS e JOIN posts AS p ON p.post_id = e.post_id "
                "WHERE e.user_id = ? AND e.timestamp < ? ORDER BY e.timestamp DESC, e.event_id DESC LIMIT ?",
                (user_id, 2**63 - 1 if before is None else int(before), limit),
            )
            .fetchall()
        )
        rows.reverse()
        cols = list(zip(*rows, strict=True)) if rows else [()] * 5
        return History(
            post_ids=np.array(cols[0], dtype=np.int64),
            author_ids=np.array(cols[1], dtype=np.int64),
            timestamps=np.array(cols[2], dtype=np.int64),
            actions=tuple(json.loads(a) for a in cols[3]),
            product_surface=np.array(cols[4], dtype=np.int64),
        )

    # -- social graph ---------------------------------------------------------------------------
    def _edge_add(self, table: str, user_id: int, author_id: int, at: int | None) -> bool:
        user_id = _scalar_int("user_id", user_id)
        author_id = _scalar_int("author_id", author_id)
        if user_id == author_id:
            raise ValueError(f"user_id {user_id} cannot {table[:-1]} themselves")
        with self.transaction() as conn:
            cur = conn.execute(
                f"INSERT OR IGNORE INTO {table} (user_id, author_id, created_at) VALUES (?, ?, ?)",
                (user_id, author_id, _now() if at is None else int(at)),
            )
        return cur.rowcount == 1

    def _edge_remove(self, table: str, user_id: int, author_id: int) -> bool:
        user_id = _scalar_int("user_id", user_id)
        author_id = _scalar_int("author_id", author_id)
        with self.transaction() as conn:
            cur = conn.execute(
                f"DELETE FROM {table} WHERE user_id = ? AND author_id = ?", (user_id, author_id)
            )
        return cur.rowcount == 1

    def _edges(self, sql: str, params: tuple) -> np.ndarray:
        return np.array([r[0] for r in self._conn().execute(sql, params)], dtype=np.int64)

    def follow(self, user_id: int, author_id: int, *, at: int | None = None) -> bool:
        """User follows author. Returns True if new, False if already followed."""
        return self._edge_add("follows", user_id, author_id, at)

    def unfollow(self, user_id: int, author_id: int) -> bool:
        """Remove a follow. Returns True if it existed."""
        return self._edge_remove("follows", user_id, author_id)

    def block(self, user_id: int, author_id: int, *, at: int | None = None) -> bool:
        """User blocks author. Returns True if new."""
        return self._edge_add("blocks", user_id, author_id, at)

    def unblock(self, user_id: int, author_id: int) -> bool:
        """Remove a block. Returns True if it existed."""
        return self._edge_remove("blocks", user_id, author_id)

    def mute(self, user_id: int, author_id: int, *, at: int | None = None) -> bool:
        """User mutes author. Returns True if new."""
        return self._edge_add("mutes", user_id, author_id, at)

    def unmute(self, user_id: int, author_id: int) -> bool:
        """Remove a mute. Returns True if it existed."""
        return self._edge_remove("mutes", user_id, author_id)

    def followed_authors(self, user_id: int) -> np.ndarray:
        """`[F]` int64 authors the user follows, ascending."""
        uid = _scalar_int("user_id", user_id)
        return self._edges("SELECT author_id FROM follows WHERE user_id = ? ORDER BY author_id", (uid,))

    def blocked_or_muted_authors(self, user_id: int) -> np.ndarray:
        """`[K]` int64 authors the user blocked or muted (union), ascending."""
        uid = _scalar_int("user_id", user_id)
        return self._edges(
            "SELECT author_id FROM blocks WHERE user_id = ?1 UNION SELECT author_id FROM mutes WHERE user_id = ?1 "
            "ORDER BY author_id",
            (uid,),
        )

    # -- served / seen --------------------------------------------------------------------------
    def mark_served(
        self, user_id: int, post_ids: Any, session_id: str, *, served_at: int | None = None
    ) -> int:
        """Record that these posts were served to the user in this session (for pagination).

        Re-serving a post in the same session keeps its first `served_at`.

        Returns:
          Number of new (user, session, post) rows.
        """
        uid = _scalar_int("user_id", user_id)
        pid = _int_array("post_ids", post_ids)
        if not isinstance(session_id, str) or not session_id:
            raise ValueError(f"session_id must be a non-empty string, got {session_id!r}")
        at = _now() if served_at is None else int(served_at)
        return self._insert_or_ignore(
            "INSERT OR IGNORE INTO served (user_id, session_id, post_id, served_at) VALUES (?, ?, ?, ?)",
            [(uid, session_id, p, at) for p in pid.tolist()],
            pid,
        )

    def served_posts(self, user_id: int, session_id: str | None = None) -> np.ndarray:
        """`[K]` int64 posts served to the user (in `session_id`, or in any session), ascending."""
        uid = _scalar_int("user_id", user_id)
        if session_id is None:
            return self._edges(
                "SELECT DISTINCT post_id FROM served WHERE user_id = ? ORDER BY post_id", (uid,)
            )
        return self._edges(
            "SELECT post_id FROM served WHERE user_id = ? AND session_id = ? ORDER BY post_id",
            (uid, session_id),
        )

    def mark_seen(self, user_id: int, post_ids: Any, *, seen_at: int | None = None) -> int:
        """Record impressions: the client showed these posts. Keeps the first `seen_at`.

        Returns:
          Number of new (user, post) rows.
        """
        uid = _scalar_int("user_id", user_id)
        pid = _int_array("post_ids", post_ids)
        at = _now() if seen_at is None else int(seen_at)
        return self._insert_or_ignore(
            "INSERT OR IGNORE INTO seen (user_id, post_id, seen_at) VALUES (?, ?, ?)",
            [(uid, p, at) for p in pid.tolist()],
            pid,
        )

    def _insert_or_ignore(self, sql: str, rows: list[tuple], pid: np.ndarray) -> int:
        try:
            with self.transaction() as conn:
                before = conn.total_changes
                conn.executemany(sql, rows)
                return conn.total_changes - before
        except sqlite3.IntegrityError as e:
            raise ValueError(f"post_ids: {self._missing_posts_message(pid)} ({e})") from None

    def seen_posts(self, user_id: int) -> np.ndarray:
        """`[K]` int64 posts the user has seen: engaged with, or reported as impressions. Ascending."""
        uid = _scalar_int("user_id", user_id)
        return self._edges(
            "SELECT post_id FROM seen WHERE user_id = ?1 UNION SELECT post_id FROM engagements WHERE user_id = ?1 "
            "ORDER BY post_id",
            (uid,),
        )

    # -- bulk seeding ---------------------------------------------------------------------------
    def seed_from_tables(
        self,
        events: Any,
        posts: Any = None,
        follows: Any = None,
        *,
        action_names: Sequence[str],
        impressions_as_seen: bool = True,
    ) -> SeedReport:
        """Bulk-load a dataset in one transaction (all or nothing).

        Args:
          events: pyarrow Table or column mapping with `user_id, post_id, timestamp`, one bool or
            numeric column per name in `action_names` (null = not done), optional `product_surface`
            (default 0) and `author_id` (needed for posts absent from `posts`). Rows with a positive
            action become engagements in row order (row order breaks timestamp ties); rows with
            none are impressions.
          posts: optional table with `post_id, author_id, created_at` and optional `text`,
            `repost_of`, `video_duration_s`. Posts only in `events` are derived from them, with
            created_at = their earliest event (the best a log without post times can say).
          follows: optional table with `user_id, author_id`.
          action_names: the action columns, e.g. `vocab.names`.
          impressions_as_seen: record impression rows as seen (the seen filter then skips them);
            they never enter the history, which holds only engagements.

        Returns:
          `SeedReport` of row counts.
        """
        if isinstance(action_names, str) or not action_names:
            raise ValueError("action_names must be a non-empty list of action column names")
        action_names = list(action_names)
        ev = _columns(events, "events")
        _require(ev, ["user_id", "post_id", "timestamp", *action_names], "events")
        uid = _int_array("events.user_id", ev["user_id"])
        n = uid.shape[0]
        pid = _int_array("events.post_id", ev["post_id"], n)
        ts = _int_array("events.timestamp", ev["timestamp"], n, nonneg=False)
        surf = (
            _int_array("events.product_surface", ev["product_surface"], n)
            if "product_surface" in ev
            else np.zeros(n, np.int64)
        )
        vals = (
            np.stack([_action_column(a, ev[a]) for a in action_names], axis=1)
            if n
            else np.zeros((0, len(action_names)))
        )
        if vals.shape[0] != n:
            raise ValueError(f"events action columns must have {n} rows")
        _check_action_matrix(action_names, vals, "events action columns")
        engaged = (vals > 0).any(axis=1)

        n_posts = 0
        with self.transaction():
            if posts is not None:
                pc = _columns(posts, "posts")
                _require(pc, ["post_id", "author_id", "created_at"], "posts")
                text = pc.get("text")
                n_posts = self.add_posts(
                    _int_array("posts.post_id", pc["post_id"]),
                    _int_array("posts.author_id", pc["author_id"]),
                    _int_array("posts.created_at", pc["created_at"], nonneg=False),
                    text=None if text is None else list(_to_numpy(text).tolist()),
                    repost_of=None
                    if "repost_of" not in pc
                    else np.nan_to_num(_to_numpy(pc["repost_of"]).astype(np.float64), nan=-1.0),
                    video_duration_s=None
                    if "video_duration_s" not in pc
                    else _to_numpy(pc["video_duration_s"]).astype(np.float64),
                )
            derived = self._derive_posts(ev, pid, ts, n)
            self._insert_engagements(
                uid[engaged],
                pid[engaged],
                ts[engaged],
                _actions_json_from_matrix(action_names, vals[engaged]),
                surf[engaged],
            )
            n_imp = 0
            if impressions_as_seen and (~engaged).any():
                imp = ~engaged
                n_imp = self._insert_or_ignore(
                    "INSERT OR IGNORE INTO seen (user_id, post_id, seen_at) VALUES (?, ?, ?)",
                    list(zip(uid[imp].tolist(), pid[imp].tolist(), ts[imp].tolist(), strict=True)),
                    pid[imp],
                )
            n_follows = 0
            if follows is not None:
                fc = _columns(follows, "follows")
                _require(fc, ["user_id", "author_id"], "follows")
                fu = _int_array("follows.user_id", fc["user_id"])
                fa = _int_array("follows.author_id", fc["author_id"], fu.shape[0])
                if np.any(fu == fa):
                    raise ValueError("follows has rows with user_id == author_id")
                conn = self._conn()
                before = conn.total_changes
                at = _now()
                conn.executemany(
                    "INSERT OR IGNORE INTO follows (user_id, author_id, created_at) VALUES (?, ?, ?)",
                    zip(fu.tolist(), fa.tolist(), [at] * fu.shape[0], strict=True),
                )
                n_follows = conn.total_changes - before
        return SeedReport(
            posts=n_posts,
            derived_posts=derived,
            engagements=int(engaged.sum()),
            impressions=n_imp,
            follows=n_follows,
        )

    def _derive_posts(self, ev: Mapping[str, Any], pid: np.ndarray, ts: np.ndarray, n: int) -> int:
        """Insert posts seen only in events (author from events, created_at = earliest event)."""
        if n == 0:
            return 0
        uniq = np.unique(pid)
        missing = uniq[self.get_posts(uniq).author_ids < 0]
        if missing.size == 0:
            return 0
        if "author_id" not in ev:
            raise ValueError(
                f"events reference {missing.size} post(s) absent from posts (e.g. {missing[:5].tolist()}) "
                "and have no author_id column to derive them from"
            )
        aid = _int_array("events.author_id", ev["author_id"], n)
        # Earliest event per post: sort by (post, time), take each post's first row.
        order = np.lexsort((ts, pid))
        p_sorted = pid[order]
        first = np.r_[True, p_sorted[1:] != p_sorted[:-1]]
        rows_p, rows_a, rows_t = p_sorted[first], aid[order][first], ts[order][first]
        want = np.isin(rows_p, missing)
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO posts (post_id, author_id, created_at) VALUES (?, ?, ?)",
                zip(rows_p[want].tolist(), rows_a[want].tolist(), rows_t[want].tolist(), strict=True),
            )
        return int(want.sum())
