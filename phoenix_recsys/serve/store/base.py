"""The store interface every backend implements, and the types its queries return.

`Store` lists only what the feed service calls, grouped by the path that calls it: the READ path
(history, graph, sources, hydration, the post sequence the index follows) and the WRITE path
(events, posts, edges, served/seen marks, seeding), plus lifecycle. Nothing above `store/` knows
which backend it holds; `Store.open(url_or_path)` (= `open_store`) picks one once.

Promises every backend keeps:

* Atomicity: each public write is one transaction; `transaction()` groups several into one
  (nested use is a savepoint), and an exception anywhere undoes the whole group.
* Durability: a write whose call has returned survives kill -9 of the process.
* The post sequence: every change of a post (upsert, delete, takedown) gets a number from one
  increasing sequence, and a number becomes visible only after every smaller one, so a follower
  that has applied every change up to N never misses one below N (`posts_since`).

Timestamps are int seconds. Ids are non-negative int64.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from phoenix_recsys.actions import ActionVocabulary
from phoenix_recsys.serve.filters import Candidates


class SchemaVersionError(RuntimeError):
    """The database was written by a newer schema than this code knows."""


class StoreUnavailableError(RuntimeError):
    """The store cannot be reached now (database down or restarting, connection lost, pool exhausted).

    Transient: the same call may succeed later, without reopening the store. A write that raised
    it may or may not have committed (the connection went away under it); retry it with the
    same client event ids.
    """


class StoreLockedError(RuntimeError):
    """Another process already writes this store (SQLite has one writer process; see the message)."""


class PostOp:
    """What a post-sequence entry did to its post."""

    UPSERT = "upsert"
    DELETE = "delete"
    TAKEDOWN = "takedown"
    ALL = (UPSERT, DELETE, TAKEDOWN)


class PostState:
    """Whether a stored post is served: LIVE, DELETED (by its author; final) or TAKEN_DOWN (reversible)."""

    LIVE = "live"
    DELETED = "deleted"
    TAKEN_DOWN = "taken_down"


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
    def unknown(cls, post_ids: np.ndarray) -> PostRows:
        """Rows for posts not found, as `Store.get_posts` returns them: author -1, created_at -1, text
        None, repost_of -1, video NaN (`post_ids` copied, so `put` may overwrite them)."""
        n = post_ids.shape[0]
        return cls(
            post_ids=np.array(post_ids, np.int64),
            author_ids=np.full(n, -1, np.int64),
            created_at=np.full(n, -1, np.int64),
            text=np.full(n, None, object),
            repost_of=np.full(n, -1, np.int64),
            video_duration_s=np.full(n, np.nan, np.float64),
        )

    def put(self, where: np.ndarray, src: PostRows, at: np.ndarray) -> None:
        """Write rows `at` of `src` into these rows at `where` (a mask or positions), every column."""
        for f in dataclasses.fields(self):
            getattr(self, f.name)[where] = getattr(src, f.name)[at]

    def take(self, sel: np.ndarray) -> PostRows:
        """The rows `sel` selects (a mask or positions), in that order."""
        return PostRows(*(getattr(self, f.name)[sel] for f in dataclasses.fields(self)))

    @classmethod
    def concat(cls, parts: Sequence[PostRows]) -> PostRows:
        """The parts' rows one after another."""
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)))

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


@dataclasses.dataclass(frozen=True, slots=True)
class PostChanges:
    """Entries of the post sequence, ascending, each column `[N]`.

    Attributes:
      seqs: int64 sequence numbers (strictly increasing).
      post_ids: int64.
      ops: object array of `PostOp` values.
    """

    seqs: np.ndarray
    post_ids: np.ndarray
    ops: np.ndarray

    def __len__(self) -> int:
        return int(self.seqs.shape[0])

    @property
    def last_seq(self) -> int | None:
        """The highest sequence number here, None when empty."""
        return int(self.seqs[-1]) if len(self) else None

    def latest(self) -> tuple[np.ndarray, np.ndarray]:
        """`(post_ids, ops)`: each post once, with its newest op here, ascending post id."""
        if not len(self):
            return np.zeros(0, np.int64), np.zeros(0, dtype=object)
        # The last occurrence of each post: unique over the reversed arrays.
        ids, first_rev = np.unique(self.post_ids[::-1], return_index=True)
        return ids, self.ops[::-1][first_rev]

    @classmethod
    def _from_rows(cls, rows: Sequence[tuple]) -> PostChanges:
        cols = list(zip(*rows, strict=True)) if rows else [(), (), ()]
        return cls(
            seqs=np.array(cols[0], dtype=np.int64),
            post_ids=np.array(cols[1], dtype=np.int64),
            ops=np.array(cols[2], dtype=object) if rows else np.zeros(0, dtype=object),
        )


# --------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------
class Store(abc.ABC):
    """A handle on one store (thread-safe). `Store.open(url_or_path)` picks the backend.

    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as d, Store.open(os.path.join(d, "s.db")) as s:
    ...     s.add_posts([10, 11], author_ids=[1, 2], created_at=[100, 200])
    ...     s.follow(7, 2)
    ...     s.recent_posts_by_authors(s.followed_authors(7), limit_total=5, per_author_cap=5).post_ids.tolist()
    2
    True
    [11]
    """

    #: "sqlite" or "postgres".
    backend: str = ""

    # -- lifecycle ------------------------------------------------------------------------------
    @classmethod
    def open(cls, target: str | Path, **kwargs: Any) -> Store:
        """Open the store at `target`: a SQLite path, or a `postgresql://` URL (see `open_store`).

        Backends override this with their own `open`; on `Store` itself it dispatches.
        """
        from phoenix_recsys.serve.store import open_store  # the dispatcher lives beside the backends

        return open_store(target, **kwargs)

    @abc.abstractmethod
    def close(self) -> None:
        """Release every connection. Call once the threads using the store are done."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the store lives, for logs (a path, or a URL without its password)."""

    @property
    def path(self) -> Path | None:
        """The SQLite file (None for a server-backed store)."""
        return None

    @abc.abstractmethod
    def schema_version(self) -> int:
        """The highest applied migration version (0 for a blank store)."""

    @abc.abstractmethod
    def applied_migrations(self) -> list[tuple[int, str]]:
        """`(version, name)` of every applied migration, in order."""

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        """An atomic unit of writes (nested use is a savepoint); yields the backend's connection."""

    # -- read path: the viewer ------------------------------------------------------------------
    @abc.abstractmethod
    def get_history(self, user_id: int, limit: int, *, before: int | None = None) -> History:
        """The user's most recent `limit` engagements (timestamp < before), oldest first."""

    @abc.abstractmethod
    def followed_authors(self, user_id: int) -> np.ndarray:
        """`[F]` int64 authors the user follows, ascending."""

    @abc.abstractmethod
    def blocked_or_muted_authors(self, user_id: int) -> np.ndarray:
        """`[K]` int64 authors the user blocked or muted (union), ascending."""

    @abc.abstractmethod
    def authors_blocking(self, user_id: int) -> np.ndarray:
        """`[K]` int64 users who blocked `user_id` (reverse blocks), ascending."""

    @abc.abstractmethod
    def claim_event_ids(self, user_ids: Any, event_ids: Sequence[str]) -> np.ndarray:
        """Record client event ids in the open write transaction; `[E]` bool, True where new."""

    @abc.abstractmethod
    def list_users(self, limit: int, *, after: int | None = None) -> np.ndarray:
        """`[K]` int64 ids of users with stored engagements, ascending, greater than `after`, K <= limit."""

    @abc.abstractmethod
    def recent_users(self, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Users with the newest engagements: (`[K]` user ids, `[K]` their latest timestamp), newest first."""

    @abc.abstractmethod
    def seen_posts(self, user_id: int, *, since: int | None = None, limit: int | None = None) -> np.ndarray:
        """`[K]` int64 posts the user engaged with or reported as impressions, ascending.

        `since` / `limit`: only events at or after `since`, at most `limit` most recent of each kind.
        """

    @abc.abstractmethod
    def served_posts(self, user_id: int, session_id: str | None = None, *, limit: int | None = None) -> np.ndarray:
        """`[K]` int64 posts served to the user (in `session_id`, or in any session), ascending.

        `limit`: only the most recently served ones.
        """

    @abc.abstractmethod
    def prune_served(self, before: int) -> int:
        """Delete served rows older than `before`. Returns the number deleted."""

    # -- read path: sources and hydration -------------------------------------------------------
    @abc.abstractmethod
    def recent_posts_by_authors(
        self, author_ids: Any, limit_total: int, per_author_cap: int, since: int | None = None
    ) -> PostRows:
        """In-network source: newest posts of these authors, capped per author, newest first."""

    @abc.abstractmethod
    def popular_posts(self, limit: int, since: int | None = None) -> PostRows:
        """Posts with the most engagement events (since `since`), most engaged first."""

    @abc.abstractmethod
    def fresh_posts(self, limit: int) -> PostRows:
        """The newest posts overall, newest first."""

    @abc.abstractmethod
    def get_posts(self, post_ids: Any) -> PostRows:
        """Posts by id, aligned to the input (unknown ids: author -1, created_at -1)."""

    @abc.abstractmethod
    def num_posts(self) -> int:
        """Number of posts in the store."""

    @abc.abstractmethod
    def latest_timestamp(self) -> int | None:
        """The newest engagement or post time (the serving "data" clock), None when empty."""

    # -- read path: the corpus index and its follower ------------------------------------------
    @abc.abstractmethod
    def iter_posts(self, batch_size: int = 10_000) -> Iterator[PostRows]:
        """All posts in post-id order, `batch_size` at a time."""

    @abc.abstractmethod
    def post_seq(self) -> int:
        """The newest post-sequence number (0 when no post was ever written)."""

    def engagements_version(self) -> int | None:
        """A number that changes whenever an engagement is written, or None when the backend has none.

        Readers of derived engagement data (the cold-start popular list) skip recomputing it when
        this and `post_seq()` are unchanged. None (the default, and PostgreSQL, whose identity
        values may commit out of order) = unknown: always recompute.
        """
        return None

    @abc.abstractmethod
    def posts_since(self, seq: int, limit: int = 10_000) -> PostChanges:
        """Post-sequence entries with number > `seq`, ascending, at most `limit`."""

    def wait_for_posts(self, seq: int, timeout: float) -> int:
        """Block until the post sequence passes `seq` or `timeout` seconds pass; the newest number.

        The follower's wake-up call: `while True: new = store.wait_for_posts(done, 5.0); if new >
        done: apply(store.posts_since(done))`. It never returns entries, only tells that there
        are some, so a spurious or late wake-up costs one `posts_since` and loses nothing.

        Default (SQLite, any backend without push): poll `post_seq()` every 50 ms, which sees
        posts written by other processes too. PostgreSQL overrides it with LISTEN phoenix_posts
        (NOTIFY at commit from the post_log trigger), falling back to the same poll.

        Args:
          seq: the number the caller has applied up to.
          timeout: seconds to wait at most (>= 0; 0 checks once).

        Returns:
          `post_seq()` at return; `> seq` means new entries, `<= seq` means the timeout passed.
        """
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0, got {timeout}")
        deadline = time.monotonic() + timeout
        while True:
            now_seq = self.post_seq()
            left = deadline - time.monotonic()
            if now_seq > seq or left <= 0:
                return now_seq
            time.sleep(min(0.05, left))

    # -- write path -----------------------------------------------------------------------------
    @abc.abstractmethod
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
        """Upsert posts in bulk (each gets a post-sequence entry); returns the count."""

    @abc.abstractmethod
    def post_states(self, post_ids: Any) -> np.ndarray:
        """`[P]` object array: each post's `PostState` value, None where the store has no such post."""

    @abc.abstractmethod
    def delete_posts(self, post_ids: Any, *, at: int | None = None) -> np.ndarray:
        """Delete posts (final; rows kept, text erased; DELETE entries); `[P]` bool changed."""

    @abc.abstractmethod
    def set_takedown(self, post_ids: Any, active: bool, *, at: int | None = None) -> np.ndarray:
        """Take posts down or lift it (TAKEDOWN / UPSERT entries); `[P]` bool changed."""

    @abc.abstractmethod
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
        """Record engagement events in bulk (all or nothing); returns the count."""

    @abc.abstractmethod
    def mark_seen(self, user_id: int, post_ids: Any, *, seen_at: int | None = None) -> int:
        """Record impressions; returns the number of new (user, post) rows."""

    @abc.abstractmethod
    def mark_served(self, user_id: int, post_ids: Any, session_id: str, *, served_at: int | None = None) -> int:
        """Record posts served in a session (pagination); returns the number of new rows."""

    @abc.abstractmethod
    def follow(self, user_id: int, author_id: int, *, at: int | None = None) -> bool:
        """User follows author; True if new."""

    @abc.abstractmethod
    def unfollow(self, user_id: int, author_id: int) -> bool:
        """Remove a follow; True if it existed."""

    @abc.abstractmethod
    def block(self, user_id: int, author_id: int, *, at: int | None = None) -> bool:
        """User blocks author; True if new."""

    @abc.abstractmethod
    def unblock(self, user_id: int, author_id: int) -> bool:
        """Remove a block; True if it existed."""

    @abc.abstractmethod
    def mute(self, user_id: int, author_id: int, *, at: int | None = None) -> bool:
        """User mutes author; True if new."""

    @abc.abstractmethod
    def unmute(self, user_id: int, author_id: int) -> bool:
        """Remove a mute; True if it existed."""

    @abc.abstractmethod
    def seed_from_tables(
        self,
        events: Any,
        posts: Any = None,
        follows: Any = None,
        *,
        action_names: Sequence[str],
        impressions_as_seen: bool = True,
    ) -> SeedReport:
        """Bulk-load a dataset in one transaction (all or nothing)."""
