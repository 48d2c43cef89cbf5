"""Bulk-loading a dataset (events, posts, follows as Arrow tables or column maps) into any SQL store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from phoenix_recsys.serve.store import _validate as v
from phoenix_recsys.serve.store.base import PostOp, SeedReport

if TYPE_CHECKING:
    from phoenix_recsys.serve.store.sql import SQLStore


def seed_from_tables(
    store: SQLStore,
    events: Any,
    posts: Any = None,
    follows: Any = None,
    *,
    action_names: Sequence[str],
    impressions_as_seen: bool = True,
) -> SeedReport:
    """Bulk-load a dataset in one transaction (all or nothing).

    Args:
      store: the target store.
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
    ev = v.columns(events, "events")
    v.require(ev, ["user_id", "post_id", "timestamp", *action_names], "events")
    uid = v.int_array("events.user_id", ev["user_id"])
    n = uid.shape[0]
    pid = v.int_array("events.post_id", ev["post_id"], n)
    ts = v.int_array("events.timestamp", ev["timestamp"], n, nonneg=False)
    surf = (
        v.int_array("events.product_surface", ev["product_surface"], n)
        if "product_surface" in ev
        else np.zeros(n, np.int64)
    )
    vals = (
        np.stack([v.action_column(a, ev[a]) for a in action_names], axis=1)
        if n
        else np.zeros((0, len(action_names)))
    )
    if vals.shape[0] != n:
        raise ValueError(f"events action columns must have {n} rows")
    v.check_action_matrix(action_names, vals, "events action columns")
    engaged = (vals > 0).any(axis=1)

    n_posts = 0
    with store.transaction() as conn:
        if posts is not None:
            pc = v.columns(posts, "posts")
            v.require(pc, ["post_id", "author_id", "created_at"], "posts")
            text = pc.get("text")
            n_posts = store.add_posts(
                v.int_array("posts.post_id", pc["post_id"]),
                v.int_array("posts.author_id", pc["author_id"]),
                v.int_array("posts.created_at", pc["created_at"], nonneg=False),
                text=None if text is None else list(v.to_numpy(text).tolist()),
                repost_of=None
                if "repost_of" not in pc
                else np.nan_to_num(v.to_numpy(pc["repost_of"]).astype(np.float64), nan=-1.0),
                video_duration_s=None
                if "video_duration_s" not in pc
                else v.to_numpy(pc["video_duration_s"]).astype(np.float64),
            )
        derived = _derive_posts(store, ev, pid, ts, n)
        store._insert_engagements(
            uid[engaged],
            pid[engaged],
            ts[engaged],
            v.actions_json_from_matrix(action_names, vals[engaged]),
            surf[engaged],
        )
        n_imp = 0
        if impressions_as_seen and (~engaged).any():
            imp = ~engaged
            n_imp = store._insert_checked(
                store._SEEN_INSERT,
                list(zip(uid[imp].tolist(), pid[imp].tolist(), ts[imp].tolist(), strict=True)),
                pid[imp],
            )
        n_follows = 0
        if follows is not None:
            fc = v.columns(follows, "follows")
            v.require(fc, ["user_id", "author_id"], "follows")
            fu = v.int_array("follows.user_id", fc["user_id"])
            fa = v.int_array("follows.author_id", fc["author_id"], fu.shape[0])
            if np.any(fu == fa):
                raise ValueError("follows has rows with user_id == author_id")
            at = v.now()
            n_follows = store._executemany(
                conn,
                "INSERT INTO follows (user_id, author_id, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id, author_id) DO NOTHING",
                list(zip(fu.tolist(), fa.tolist(), [at] * fu.shape[0], strict=True)),
            )
    store._after_bulk_load(["posts", "post_log", "engagements", "seen", "follows"])
    return SeedReport(
        posts=n_posts,
        derived_posts=derived,
        engagements=int(engaged.sum()),
        impressions=n_imp,
        follows=n_follows,
    )


def _derive_posts(store: SQLStore, ev: Mapping[str, Any], pid: np.ndarray, ts: np.ndarray, n: int) -> int:
    """Insert posts seen only in events (author from events, created_at = earliest event)."""
    if n == 0:
        return 0
    uniq = np.unique(pid)
    missing = uniq[store.get_posts(uniq).author_ids < 0]
    if missing.size == 0:
        return 0
    if "author_id" not in ev:
        raise ValueError(
            f"events reference {missing.size} post(s) absent from posts (e.g. {missing[:5].tolist()}) "
            "and have no author_id column to derive them from"
        )
    aid = v.int_array("events.author_id", ev["author_id"], n)
    # Earliest event per post: sort by (post, time), take each post's first row.
    order = np.lexsort((ts, pid))
    p_sorted = pid[order]
    first = np.r_[True, p_sorted[1:] != p_sorted[:-1]]
    rows_p, rows_a, rows_t = p_sorted[first], aid[order][first], ts[order][first]
    want = np.isin(rows_p, missing)
    with store.transaction() as conn:
        rows = list(zip(rows_p[want].tolist(), rows_a[want].tolist(), rows_t[want].tolist(), strict=True))
        store._executemany(conn, "INSERT INTO posts (post_id, author_id, created_at) VALUES (?, ?, ?)", rows)
        store._log_posts(conn, [r[0] for r in rows], PostOp.UPSERT)
    return int(want.sum())
