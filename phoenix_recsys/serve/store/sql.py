"""Every store query, written once in the SQL both backends speak, over a small dialect.

`SQLStore` holds the queries, the input checks and the post sequence; a backend subclass supplies
only what differs (`sqlite.py`, `postgres.py`):

* connections and transactions: `_fetchall(sql, params)` for reads, `transaction()` for writes
  (reads inside an open transaction see its uncommitted rows);
* the dialect: parameter placeholders (`?` here; `_q` rewrites them), how an id list is passed
  as a table (`_ids_table` / `_ids_param`: JSON + `json_each` on SQLite, an array + `unnest`
  on PostgreSQL), and `_before_post_log`, the hook that keeps post-sequence numbers in commit
  order when several processes write.

Shared SQL sticks to what SQLite >= 3.24 and PostgreSQL >= 12 both accept: `ON CONFLICT ... DO
NOTHING / DO UPDATE`, `UNION`, sub-selects with aliases, no numbered parameters.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from phoenix_recsys.serve.store import _validate as v
from phoenix_recsys.serve.store.base import History, PostChanges, PostOp, PostRows, PostState, Store

POST_COLS = ("post_id", "author_id", "created_at", "text", "repost_of", "video_duration_s")
_COLS = ", ".join(POST_COLS)
_P_COLS = ", ".join("p." + c for c in POST_COLS)
_EDGE_TABLES = ("follows", "blocks", "mutes")
#: A post is served (hydrated, a source candidate, indexed) only when neither deleted nor taken down.
SERVABLE = "deleted_at IS NULL AND taken_down_at IS NULL"


def _page_limit(limit: Any) -> int:
    """A listing's page size: an int >= 1."""
    limit = v.scalar_int("limit", limit)
    if limit < 1:
        raise ValueError(f"limit: must be >= 1, got {limit}")
    return limit


class SQLStore(Store):
    """The queries of `Store` in shared SQL; backends subclass it (see the module docstring)."""

    # -- what a backend supplies ----------------------------------------------------------------
    @abc.abstractmethod
    def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one read (on the open transaction's connection if this thread has one)."""

    def _q(self, sql: str) -> str:
        """`sql` with `?` placeholders in the backend's style (SQLite: as is)."""
        return sql

    def _ids_table(self, alias: str) -> str:
        """A FROM item of one `value` column holding the ids passed as one parameter."""
        return f"json_each(?) AS {alias}"

    def _ids_param(self, ids: np.ndarray) -> Any:
        """The parameter `_ids_table` reads."""
        return json.dumps(ids.tolist())

    def _before_post_log(self, conn: Any) -> None:
        """Called in the writing transaction just before post-sequence rows are appended."""

    def _after_bulk_load(self, tables: Sequence[str]) -> None:
        """Called after a bulk load (seeding, `store migrate`) has committed rows into `tables`.

        SQLite: nothing (its planner needs no statistics for these queries). PostgreSQL refreshes
        planner statistics and the visibility map at once instead of after autovacuum's next round.
        """

    def _executemany(self, conn: Any, sql: str, rows: Sequence[tuple]) -> int:
        """Run `sql` once per row in `conn`'s transaction; the number of rows changed."""
        if not rows:
            return 0
        cur = conn.cursor()
        cur.executemany(self._q(sql), rows)
        return int(cur.rowcount)

    def _execute(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write in `conn`'s transaction; the number of rows changed."""
        cur = conn.execute(self._q(sql), tuple(params))
        return int(cur.rowcount)

    def _fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple:
        rows = self._fetchall(sql, params)
        return rows[0]

    def _scalar_ints(self, sql: str, params: Sequence[Any]) -> np.ndarray:
        return np.array([r[0] for r in self._fetchall(sql, params)], dtype=np.int64)

    def _join_ints_sql(self, column: str) -> str:
        """An aggregate joining the int `column` into one comma-separated text (order unspecified)."""
        return f"group_concat({column})"

    def _joined_ints(self, sql: str, params: Sequence[Any]) -> np.ndarray:
        """`[K]` int64 of the one-column (`post_id`) query `sql`, fetched as one joined string.

        For reads of thousands of ids (a heavy user's seen set): the database joins them and NumPy
        parses the text in C, about 3x faster than one Python tuple per row (0.5 vs 1.5 ms per
        5,000 ids on SQLite). Order is not kept: callers take the set.
        """
        text = self._fetchone(f"SELECT {self._join_ints_sql('s.post_id')} FROM ({sql}) AS s", params)[0]
        if not text:
            return np.zeros(0, np.int64)
        return np.fromstring(text, dtype=np.int64, sep=",")

    # -- schema ---------------------------------------------------------------------------------
    def schema_version(self) -> int:
        """The highest applied migration version (0 for a blank store)."""
        return int(self._fetchone("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")[0])

    def applied_migrations(self) -> list[tuple[int, str]]:
        """`(version, name)` of every applied migration, in order."""
        rows = self._fetchall("SELECT version, name FROM schema_migrations ORDER BY version")
        return [(int(a), str(b)) for a, b in rows]

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

        Every post written gets a post-sequence entry (`posts_since`) in the same transaction.

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
        rows = v.post_columns(post_ids, author_ids, created_at, text, repost_of, video_duration_s)
        with self.transaction() as conn:
            self._executemany(
                conn,
                f"INSERT INTO posts ({_COLS}) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (post_id) DO UPDATE SET author_id = excluded.author_id, "
                "created_at = excluded.created_at, text = excluded.text, "
                "repost_of = excluded.repost_of, video_duration_s = excluded.video_duration_s",
                rows,
            )
            self._log_posts(conn, [r[0] for r in rows], PostOp.UPSERT)
        return len(rows)

    def _log_posts(self, conn: Any, post_ids: Sequence[int], op: str) -> None:
        """Append one post-sequence entry per post, in `conn`'s open transaction.

        Backends that add post deletion or takedown call this with `PostOp.DELETE` / `TAKEDOWN`.
        """
        if op not in PostOp.ALL:
            raise ValueError(f"op must be one of {PostOp.ALL}, got {op!r}")
        if not post_ids:
            return
        self._before_post_log(conn)
        at = v.now()
        self._executemany(
            conn, "INSERT INTO post_log (post_id, op, at) VALUES (?, ?, ?)", [(int(p), op, at) for p in post_ids]
        )

    def post_states(self, post_ids: Any) -> np.ndarray:
        """`[P]` object array aligned to the input: `PostState` value of each post, None if unknown."""
        pid = v.int_array("post_ids", post_ids, nonneg=False)
        rows = self._fetchall(
            f"SELECT p.post_id, p.deleted_at, p.taken_down_at FROM {self._ids_table('j')} "
            "JOIN posts AS p ON p.post_id = j.value",
            (self._ids_param(np.unique(pid)),),
        )
        state = {
            int(r[0]): PostState.DELETED if r[1] is not None else PostState.TAKEN_DOWN if r[2] is not None else PostState.LIVE
            for r in rows
        }
        return np.array([state.get(int(p)) for p in pid.tolist()], dtype=object)

    def delete_posts(self, post_ids: Any, *, at: int | None = None) -> np.ndarray:
        """Delete posts (final): they leave every read that serves posts; their rows stay.

        The row is kept (engagements, served and seen rows reference it, and engagement history is
        kept), with `deleted_at` set and its text erased; each post deleted now gets a DELETE entry
        in the post sequence, so every index follower removes it.

        Returns:
          `[P]` bool, True where the post was deleted by this call (False: unknown or already deleted).
        """
        pid = v.int_array("post_ids", post_ids)
        when = v.now() if at is None else int(at)
        changed = np.zeros(pid.shape[0], dtype=bool)
        with self.transaction() as conn:
            for i, p in enumerate(pid.tolist()):
                changed[i] = self._execute(
                    conn, "UPDATE posts SET deleted_at = ?, text = NULL WHERE post_id = ? AND deleted_at IS NULL", (when, p)
                ) == 1
            self._log_posts(conn, pid[changed].tolist(), PostOp.DELETE)
        return changed

    def set_takedown(self, post_ids: Any, active: bool, *, at: int | None = None) -> np.ndarray:
        """Take posts down (active) or lift the takedown; reversible, unlike deletion.

        A takedown logs a TAKEDOWN entry (followers remove the post); lifting it logs an UPSERT
        (followers embed it again). A deleted post stays deleted either way.

        Returns:
          `[P]` bool, True where this call changed the post's state.
        """
        pid = v.int_array("post_ids", post_ids)
        when = v.now() if at is None else int(at)
        changed = np.zeros(pid.shape[0], dtype=bool)
        sql = (
            "UPDATE posts SET taken_down_at = ? WHERE post_id = ? AND taken_down_at IS NULL AND deleted_at IS NULL"
            if active
            else "UPDATE posts SET taken_down_at = NULL WHERE post_id = ? AND taken_down_at IS NOT NULL AND deleted_at IS NULL"
        )
        with self.transaction() as conn:
            for i, p in enumerate(pid.tolist()):
                changed[i] = self._execute(conn, sql, (when, p) if active else (p,)) == 1
            self._log_posts(conn, pid[changed].tolist(), PostOp.TAKEDOWN if active else PostOp.UPSERT)
        return changed

    def post_seq(self) -> int:
        """The newest post-sequence number (0 when no post was ever written)."""
        return int(self._fetchone("SELECT COALESCE(MAX(seq), 0) FROM post_log")[0])

    def posts_since(self, seq: int, limit: int = 10_000) -> PostChanges:
        """Post-sequence entries numbered above `seq`, ascending, at most `limit` of them.

        A follower that has applied everything up to `seq` calls this with it, applies the
        result, and continues from `result.last_seq`; numbers below a visible one are never
        added later, so nothing is skipped.
        """
        seq = v.scalar_int("seq", seq)
        limit = v.scalar_int("limit", limit)
        rows = self._fetchall(
            "SELECT seq, post_id, op FROM post_log WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        )
        return PostChanges._from_rows(rows)

    def get_posts(self, post_ids: Any) -> PostRows:
        """Look posts up by id, aligned to the input.

        Args:
          post_ids: `[P]` int ids (repeats allowed).

        Returns:
          `PostRows` in input order; unknown ids get author -1 and created_at -1 (so the
          missing-author filter drops them), text None, repost_of -1, video NaN. A deleted or
          taken-down post is not served, so it reads as unknown here (`post_states` tells them apart).
        """
        pid = v.int_array("post_ids", post_ids, nonneg=False)
        uniq = np.unique(pid)
        rows = self._fetchall(
            f"SELECT {_P_COLS} FROM {self._ids_table('j')} JOIN posts AS p ON p.post_id = j.value "
            "WHERE p.deleted_at IS NULL AND p.taken_down_at IS NULL ORDER BY p.post_id",
            (self._ids_param(uniq),),
        )
        found = PostRows._from_rows(rows)
        pos = np.searchsorted(found.post_ids, pid)
        pos_c = np.minimum(pos, max(len(found) - 1, 0))
        out = PostRows.unknown(pid)
        if len(found):
            hit = (pos < len(found)) & (found.post_ids[pos_c] == pid)
            out.put(hit, found, pos_c[hit])
        return out

    def num_posts(self) -> int:
        """Number of post rows in the store (deleted and taken-down ones included: their rows stay)."""
        return int(self._fetchone("SELECT COUNT(*) FROM posts")[0])

    def latest_timestamp(self) -> int | None:
        """The newest engagement time or post creation time, None for an empty store.

        Both columns are indexed, so this is two index look-ups (the serving "data" clock).
        """
        row = self._fetchone(
            "SELECT MAX(t) FROM (SELECT MAX(timestamp) AS t FROM engagements "
            "UNION ALL SELECT MAX(created_at) AS t FROM posts) AS m"
        )
        return None if row[0] is None else int(row[0])

    def iter_posts(self, batch_size: int = 10_000) -> Iterator[PostRows]:
        """All servable posts (not deleted, not taken down) in post-id order, `batch_size` at a time.

        Yields:
          `PostRows` chunks of at most `batch_size` posts.
        """
        batch_size = v.scalar_int("batch_size", batch_size)
        if batch_size == 0:
            raise ValueError("batch_size must be > 0")
        last = v.INT64_MIN
        while True:
            # Keyset pagination: stable and O(batch) per page, unlike OFFSET.
            rows = self._fetchall(
                f"SELECT {_COLS} FROM posts WHERE post_id > ? AND {SERVABLE} ORDER BY post_id LIMIT ?",
                (last, batch_size),
            )
            if not rows:
                return
            yield PostRows._from_rows(rows)
            last = rows[-1][0]

    def _engagements_since(self) -> str:
        """The FROM item of engagements read by a time window (`timestamp >= ?`); backends may pin an index."""
        return "engagements"

    def _recent_posts_sql(self) -> str:
        # The correlated sub-select walks idx_posts_author_created for each author and stops after
        # `per_author_cap` rows, so cost is O(authors x cap), not O(all posts of those authors).
        # Parameters: ids, since, cap, total.
        return (
            f"SELECT {_P_COLS} FROM {self._ids_table('a')} JOIN posts AS p ON p.post_id IN ("
            "  SELECT q.post_id FROM posts AS q WHERE q.author_id = a.value AND q.created_at >= ?"
            "  AND q.deleted_at IS NULL AND q.taken_down_at IS NULL"
            "  ORDER BY q.created_at DESC, q.post_id DESC LIMIT ?) "
            "ORDER BY p.created_at DESC, p.post_id DESC LIMIT ?"
        )

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
        aid = np.unique(v.int_array("author_ids", author_ids))
        limit_total = v.scalar_int("limit_total", limit_total)
        per_author_cap = v.scalar_int("per_author_cap", per_author_cap)
        if aid.size == 0 or limit_total == 0 or per_author_cap == 0:
            return PostRows._from_rows([])
        params = (self._ids_param(aid), v.INT64_MIN if since is None else int(since), per_author_cap, limit_total)
        return PostRows._from_rows(self._fetchall(self._recent_posts_sql(), params))

    def popular_posts(self, limit: int, since: int | None = None) -> PostRows:
        """Posts with the most engagement events.

        Args:
          limit: at most this many posts.
          since: count only engagements with timestamp >= since (a trending window); None = all.

        Returns:
          `PostRows`, most engaged first (ties: newer post, then higher id).
        """
        limit = v.scalar_int("limit", limit)
        source = "engagements" if since is None else self._engagements_since()
        rows = self._fetchall(
            f"SELECT {_P_COLS} FROM ("
            f"  SELECT post_id, COUNT(*) AS n FROM {source} WHERE timestamp >= ? GROUP BY post_id"
            ") AS c JOIN posts AS p ON p.post_id = c.post_id WHERE p.deleted_at IS NULL AND p.taken_down_at IS NULL "
            "ORDER BY c.n DESC, p.created_at DESC, p.post_id DESC LIMIT ?",
            (v.INT64_MIN if since is None else int(since), limit),
        )
        return PostRows._from_rows(rows)

    def fresh_posts(self, limit: int) -> PostRows:
        """The newest posts overall (ties: higher id first).

        Returns:
          `PostRows` of at most `limit` posts, newest first.
        """
        limit = v.scalar_int("limit", limit)
        rows = self._fetchall(f"SELECT {_COLS} FROM posts WHERE {SERVABLE} ORDER BY created_at DESC, post_id DESC LIMIT ?", (limit,))
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
        uid = v.int_array("user_ids", user_ids)
        n = uid.shape[0]
        pid = v.int_array("post_ids", post_ids, n)
        ts = v.int_array("timestamps", timestamps, n, nonneg=False)
        surf = np.zeros(n, np.int64) if product_surface is None else v.int_array("product_surface", product_surface, n)
        if isinstance(actions, np.ndarray):
            encoded = v.encode_action_matrix(actions, action_names, n)
        else:
            encoded = v.encode_action_maps(actions, n)
        self._insert_engagements(uid, pid, ts, encoded, surf)
        return n

    def _insert_engagements(
        self, uid: np.ndarray, pid: np.ndarray, ts: np.ndarray, encoded: list[str], surf: np.ndarray
    ) -> None:
        rows = list(zip(uid.tolist(), pid.tolist(), ts.tolist(), encoded, surf.tolist(), strict=True))
        self._insert_checked(
            "INSERT INTO engagements (user_id, post_id, timestamp, actions, product_surface) VALUES (?, ?, ?, ?, ?)",
            rows,
            pid,
        )

    def _is_missing_post_error(self, e: BaseException) -> bool:
        """Whether `e` is the backend's foreign-key / integrity violation."""
        return False

    def _insert_checked(self, sql: str, rows: list[tuple], pid: np.ndarray) -> int:
        """Insert rows referencing posts; a missing post becomes ValueError naming `post_ids`."""
        try:
            with self.transaction() as conn:
                return self._executemany(conn, sql, rows)
        except Exception as e:
            if not self._is_missing_post_error(e):
                raise
            raise ValueError(f"post_ids: {self._missing_posts_message(pid)} ({e})") from None

    def _missing_posts_message(self, pid: np.ndarray) -> str:
        known = self.get_posts(np.unique(pid)).author_ids >= 0
        missing = np.unique(pid)[~known]
        return f"{missing.size} post id(s) not in the store, e.g. {missing[:5].tolist()}"

    def claim_event_ids(self, user_ids: Any, event_ids: Sequence[str]) -> np.ndarray:
        """Record client event ids; `[E]` bool, True where (user, event id) is new.

        Call it inside the transaction that writes the events, so an id is claimed exactly when
        its event is written (a rolled-back request claims nothing). A repeat within the same
        call is a duplicate of its first occurrence.
        """
        uid = v.int_array("user_ids", user_ids)
        if len(event_ids) != uid.shape[0]:
            raise ValueError(f"event_ids: expected {uid.shape[0]} ids, got {len(event_ids)}")
        fresh = np.zeros(uid.shape[0], dtype=bool)
        at = v.now()
        with self.transaction() as conn:
            for i, (u, e) in enumerate(zip(uid.tolist(), event_ids, strict=True)):
                if not isinstance(e, str) or not e:
                    raise ValueError(f"event_ids[{i}] must be a non-empty string, got {e!r}")
                fresh[i] = self._execute(
                    conn,
                    "INSERT INTO client_events (user_id, event_id, received_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (user_id, event_id) DO NOTHING",
                    (u, e, at),
                ) == 1
        return fresh

    def get_history(self, user_id: int, limit: int, *, before: int | None = None) -> History:
        """The user's most recent `limit` engagements, returned oldest first.

        Args:
          user_id: the user.
          limit: at most this many events (the newest ones).
          before: only events with timestamp < before (no leakage when replaying the past).

        Returns:
          `History` of `[S]` columns, S <= limit, ordered by (timestamp, insertion order).
        """
        user_id = v.scalar_int("user_id", user_id)
        limit = v.scalar_int("limit", limit)
        rows = self._fetchall(
            "SELECT e.post_id, p.author_id, e.timestamp, e.actions, e.product_surface "
            "FROM engagements AS e JOIN posts AS p ON p.post_id = e.post_id "
            "WHERE e.user_id = ? AND e.timestamp < ? ORDER BY e.timestamp DESC, e.event_id DESC LIMIT ?",
            (user_id, v.INT64_MAX if before is None else int(before), limit),
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
        assert table in _EDGE_TABLES
        user_id = v.scalar_int("user_id", user_id)
        author_id = v.scalar_int("author_id", author_id)
        if user_id == author_id:
            raise ValueError(f"user_id {user_id} cannot {table[:-1]} themselves")
        with self.transaction() as conn:
            changed = self._execute(
                conn,
                f"INSERT INTO {table} (user_id, author_id, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id, author_id) DO NOTHING",
                (user_id, author_id, v.now() if at is None else int(at)),
            )
        return changed == 1

    def _edge_remove(self, table: str, user_id: int, author_id: int) -> bool:
        assert table in _EDGE_TABLES
        user_id = v.scalar_int("user_id", user_id)
        author_id = v.scalar_int("author_id", author_id)
        with self.transaction() as conn:
            changed = self._execute(conn, f"DELETE FROM {table} WHERE user_id = ? AND author_id = ?", (user_id, author_id))
        return changed == 1

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
        uid = v.scalar_int("user_id", user_id)
        return self._scalar_ints("SELECT author_id FROM follows WHERE user_id = ? ORDER BY author_id", (uid,))

    def blocked_or_muted_authors(self, user_id: int) -> np.ndarray:
        """`[K]` int64 authors the user blocked or muted (union), ascending."""
        uid = v.scalar_int("user_id", user_id)
        return self._scalar_ints(
            "SELECT author_id FROM blocks WHERE user_id = ? UNION SELECT author_id FROM mutes WHERE user_id = ? "
            "ORDER BY author_id",
            (uid, uid),
        )

    def authors_blocking(self, user_id: int) -> np.ndarray:
        """`[K]` int64 users who blocked `user_id` (reverse blocks: their posts are hidden from it), ascending."""
        uid = v.scalar_int("user_id", user_id)
        return self._scalar_ints("SELECT user_id FROM blocks WHERE author_id = ? ORDER BY user_id", (uid,))

    # -- users ----------------------------------------------------------------------------------
    def list_users(self, limit: int, *, after: int | None = None) -> np.ndarray:
        """`[K]` int64 ids of users with stored engagements, ascending, greater than `after`, K <= limit.

        A skip scan in one statement: each step of the recursive query is one index seek on
        engagements(user_id, ...) for the next id, so a page costs `limit` seeks however many events
        the users have (a DISTINCT would walk every row of a heavy user) and one round trip.
        """
        limit = _page_limit(limit)
        start = -(2**62) if after is None else v.scalar_int("after", after)
        return self._scalar_ints(
            "WITH RECURSIVE u (id, n) AS ("
            "SELECT (SELECT MIN(user_id) FROM engagements WHERE user_id > ?), 1 "
            "UNION ALL SELECT (SELECT MIN(user_id) FROM engagements WHERE user_id > u.id), u.n + 1 "
            "FROM u WHERE u.id IS NOT NULL AND u.n < ?"
            ") SELECT id FROM u WHERE id IS NOT NULL ORDER BY id",
            (start, limit),
        )

    #: How many of the newest engagement rows `recent_users` reads per user asked for: a bound on its
    #: work (it reads the time index backwards) that still finds enough distinct users in practice.
    RECENT_USERS_SCAN = 50

    def recent_users(self, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Users with the newest engagements: (`[K]` user ids, `[K]` their latest timestamp), newest first.

        Reads at most `limit * RECENT_USERS_SCAN` of the newest engagement rows (bounded work on a large
        store), so a user whose last event is older than that window is not listed; `list_users` pages
        through every user.
        """
        limit = _page_limit(limit)
        rows = self._fetchall(
            "SELECT user_id, MAX(timestamp) AS last_t FROM ("
            "SELECT user_id, timestamp FROM engagements ORDER BY timestamp DESC LIMIT ?"
            ") AS newest GROUP BY user_id ORDER BY last_t DESC, user_id LIMIT ?",
            (limit * self.RECENT_USERS_SCAN, limit),
        )
        users = np.array([r[0] for r in rows], dtype=np.int64)
        return users, np.array([r[1] for r in rows], dtype=np.int64)

    # -- served / seen --------------------------------------------------------------------------
    def mark_served(self, user_id: int, post_ids: Any, session_id: str, *, served_at: int | None = None) -> int:
        """Record that these posts were served to the user in this session (for pagination).

        Re-serving a post in the same session keeps its first `served_at`.

        Returns:
          Number of new (user, session, post) rows.
        """
        uid = v.scalar_int("user_id", user_id)
        pid = v.int_array("post_ids", post_ids)
        if not isinstance(session_id, str) or not session_id:
            raise ValueError(f"session_id must be a non-empty string, got {session_id!r}")
        at = v.now() if served_at is None else int(served_at)
        return self._insert_checked(
            "INSERT INTO served (user_id, session_id, post_id, served_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (user_id, session_id, post_id) DO NOTHING",
            [(uid, session_id, p, at) for p in pid.tolist()],
            pid,
        )

    def served_posts(self, user_id: int, session_id: str | None = None, *, limit: int | None = None) -> np.ndarray:
        """`[K]` int64 posts served to the user (in `session_id`, or in any session), ascending.

        `limit` keeps only the most recently served ones, so a long session costs a bounded read.
        """
        uid = v.scalar_int("user_id", user_id)
        where, params = ("user_id = ?", [uid]) if session_id is None else ("user_id = ? AND session_id = ?", [uid, session_id])
        if limit is None:
            sql = f"SELECT DISTINCT post_id FROM served WHERE {where} ORDER BY post_id"
        else:
            sql = f"SELECT post_id FROM served WHERE {where} ORDER BY served_at DESC LIMIT ?"
            params.append(int(limit))
        return np.unique(self._scalar_ints(sql, params))

    def prune_served(self, before: int) -> int:
        """Delete served rows older than `before` (pagination state past its use). Returns rows deleted."""
        with self.transaction() as conn:
            return self._execute(conn, "DELETE FROM served WHERE served_at < ?", (int(before),))

    _SEEN_INSERT = "INSERT INTO seen (user_id, post_id, seen_at) VALUES (?, ?, ?) ON CONFLICT (user_id, post_id) DO NOTHING"

    def mark_seen(self, user_id: int, post_ids: Any, *, seen_at: int | None = None) -> int:
        """Record impressions: the client showed these posts. Keeps the first `seen_at`.

        Returns:
          Number of new (user, post) rows.
        """
        uid = v.scalar_int("user_id", user_id)
        pid = v.int_array("post_ids", post_ids)
        at = v.now() if seen_at is None else int(seen_at)
        return self._insert_checked(self._SEEN_INSERT, [(uid, p, at) for p in pid.tolist()], pid)

    def seen_posts(self, user_id: int, *, since: int | None = None, limit: int | None = None) -> np.ndarray:
        """`[K]` int64 posts the user has seen: engaged with, or reported as impressions. Ascending.

        `since` / `limit` bound the read for users with long lifetimes: only events at or after
        `since`, and only the `limit` most recent of each kind (impressions, engagements).
        """
        uid = v.scalar_int("user_id", user_id)
        if since is None and limit is None:
            return self._scalar_ints(
                "SELECT post_id FROM seen WHERE user_id = ? UNION SELECT post_id FROM engagements WHERE user_id = ? "
                "ORDER BY post_id",
                (uid, uid),
            )
        t0 = -(2**62) if since is None else int(since)
        lim, extra = ("", ()) if limit is None else (" LIMIT ?", (int(limit),))
        seen = self._joined_ints(
            "SELECT post_id FROM seen WHERE user_id = ? AND seen_at >= ? ORDER BY seen_at DESC" + lim, (uid, t0, *extra)
        )
        engaged = self._joined_ints(
            "SELECT post_id FROM engagements WHERE user_id = ? AND timestamp >= ? "
            "ORDER BY timestamp DESC, event_id DESC" + lim,
            (uid, t0, *extra),
        )
        return np.union1d(seen, engaged).astype(np.int64)

    # -- bulk seeding ---------------------------------------------------------------------------
    def seed_from_tables(
        self,
        events: Any,
        posts: Any = None,
        follows: Any = None,
        *,
        action_names: Sequence[str],
        impressions_as_seen: bool = True,
    ) -> Any:
        """Bulk-load a dataset in one transaction (all or nothing); see `seeding.seed_from_tables`."""
        from phoenix_recsys.serve.store.seeding import seed_from_tables

        return seed_from_tables(
            self, events, posts, follows, action_names=action_names, impressions_as_seen=impressions_as_seen
        )
