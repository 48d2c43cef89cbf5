"""Bounded per-request work (issue 13): cold start off the engagements table, bounded seen/served, capped follows."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from phoenix_recsys.serve.feed import cap_followed
from phoenix_recsys.serve.feed.coldstart import ColdStartCache, ColdStartConfig
from phoenix_recsys.serve.pipeline import FeedService
from phoenix_recsys.serve.settings import ServeSettings
from phoenix_recsys.serve.store import Store

UNKNOWN_USER = 987_654_321


def record_sql(store: Store) -> list[str]:
    """Every read the store runs from now on (its `_fetchall`), appended to the returned list."""
    seen: list[str] = []
    inner = store._fetchall  # type: ignore[attr-defined]

    def spy(sql: str, params: Any = ()) -> list[tuple]:
        seen.append(sql)
        return inner(sql, params)

    store._fetchall = spy  # type: ignore[attr-defined]
    return seen


def test_cold_start_feed_never_reads_the_engagements_table(service: FeedService) -> None:
    queries = record_sql(service.store)
    res = service.feed(UNKNOWN_USER, 20)
    assert res.cold_start and len(res.items) > 0
    assert res.sources.get("popular", 0) > 0
    assert queries, "the spy saw no reads at all"
    # The history / seen reads of an unknown user are indexed by user id (no rows), but nothing
    # may group or scan engagements by post: that is the 2.6 s popular_posts query.
    scans = [q for q in queries if "engagements" in q and "user_id = ?" not in q]
    assert scans == []


def test_cold_start_lists_match_the_store_and_refresh_in_the_background(service: FeedService) -> None:
    cache = service.cold_start
    s = service.settings
    since = service.now() - s.popular_window_s
    want = service.store.popular_posts(s.cold_start_popular, since=since).post_ids
    got = cache.candidates()
    n_pop = int((got.source == "popular").sum())
    assert got.post_ids[:n_pop].tolist() == want.tolist()
    before = cache.refreshes
    cache.invalidate()
    deadline = time.monotonic() + 10
    while cache.refreshes == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cache.refreshes > before


class CountingStore:
    """A store stub: counts popular/fresh calls (the refresher's only reads) and served prunes."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {"popular": 0, "fresh": 0, "prune": 0}
        self.lock = threading.Lock()
        self.prune_before: list[int] = []

    def _rows(self, n: int) -> Any:
        from phoenix_recsys.serve.store import PostRows

        ids = np.arange(n, dtype=np.int64)
        return PostRows(
            post_ids=ids, author_ids=ids, created_at=ids, text=np.array([""] * n, dtype=object), repost_of=np.full(n, -1, np.int64),
            video_duration_s=np.full(n, np.nan),
        )  # fmt: skip

    def popular_posts(self, limit: int, since: int | None = None) -> Any:
        with self.lock:
            self.calls["popular"] += 1
        return self._rows(limit)

    def fresh_posts(self, limit: int) -> Any:
        with self.lock:
            self.calls["fresh"] += 1
        return self._rows(limit)

    def engagements_version(self) -> int | None:
        return None  # unknown, as on PostgreSQL: every refresh recomputes

    def prune_served(self, before: int) -> int:
        self.calls["prune"] += 1
        self.prune_before.append(before)
        return 0


def test_requests_read_the_cache_only_and_the_refresher_prunes_served() -> None:
    store = CountingStore()
    cache = ColdStartCache(store, ColdStartConfig(popular=3, fresh=2, window_s=100, refresh_s=0.05, served_retention_s=10), lambda: 1_000)  # type: ignore[arg-type]
    cache.start()
    try:
        after_start = dict(store.calls)
        assert after_start == {"popular": 1, "fresh": 1, "prune": 1}
        cache._stop.set()  # freeze the refresher to count request-path reads exactly
        cache._wake.set()
        cache._thread.join(5)  # type: ignore[union-attr]
        for _ in range(50):
            c = cache.candidates()
        assert len(c) == 5 and store.calls == after_start
        assert store.prune_before == [990]
    finally:
        cache.stop()


def test_refresh_keeps_the_lists_only_while_window_events_and_posts_are_unchanged(service: FeedService) -> None:
    cache, store, s = service.cold_start, service.store, service.settings
    since = service.now() - s.popular_window_s

    def popular() -> list[int]:
        got = cache.candidates()
        return got.post_ids[got.source == "popular"].tolist()

    def fresh() -> list[int]:
        got = cache.candidates()
        return got.post_ids[got.source == "fresh"].tolist()

    cache.refresh()
    skipped = cache.unchanged
    cache.refresh()
    assert cache.unchanged == skipped + 1  # nothing changed: the 0.6 s query (at 1M posts) is not rerun
    # A new event moves a post to the top of "popular": the next refresh must see it.
    rare = int(store.fresh_posts(1).post_ids[0])
    for i in range(50):
        store.add_engagements([900_000 + i], [rare], [service.now()], [{"favorite": 1.0}])
    cache.refresh()
    assert cache.unchanged == skipped + 1 and popular()[0] == rare
    assert popular() == store.popular_posts(s.cold_start_popular, since=since).post_ids.tolist()
    # A new post (no event) must enter "fresh".
    store.add_posts([123_456_789], [1], [service.now()])
    cache.refresh()
    assert cache.unchanged == skipped + 1 and fresh()[0] == 123_456_789


def test_cold_start_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="refresh_s"):
        ColdStartConfig(popular=1, fresh=1, window_s=None, refresh_s=0)
    with pytest.raises(ValueError, match="window_s"):
        ColdStartConfig(popular=1, fresh=1, window_s=0, refresh_s=1)


def test_seen_set_is_bounded_by_time_and_size(service_factory: Callable[..., FeedService]) -> None:
    svc = service_factory(seen_limit=3, seen_window_s=1000)
    uid = UNKNOWN_USER
    posts = svc.store.fresh_posts(10).post_ids
    now = svc.now()
    svc.store.mark_seen(uid, posts[:2], seen_at=now - 5000)  # outside the window
    for i, p in enumerate(posts[2:8].tolist()):
        svc.store.mark_seen(uid, [p], seen_at=now - 100 + i)
    got = svc.seen_set(uid, now)
    # the 3 most recent impressions, nothing from outside the window
    assert sorted(got.tolist()) == sorted(posts[5:8].tolist())
    assert set(svc.store.seen_posts(uid).tolist()) == set(posts[:8].tolist())  # unbounded read kept


def test_served_limit_and_pruning(service: FeedService) -> None:
    store = service.store
    posts = store.fresh_posts(6).post_ids.tolist()
    for i, p in enumerate(posts):
        store.mark_served(1, [p], "s1", served_at=100 + i)
    assert store.served_posts(1, "s1", limit=2).tolist() == sorted(posts[-2:])
    assert store.served_posts(1, "s1").tolist() == sorted(posts)
    assert store.prune_served(103) == 3
    assert store.served_posts(1, "s1").tolist() == sorted(posts[3:])


def test_cap_followed_prefers_recently_engaged_authors() -> None:
    followed = np.arange(100, 110, dtype=np.int64)
    history = np.array([105, 1, 103, 108, 103], dtype=np.int64)  # oldest first; 1 is not followed
    got = cap_followed(followed, history, 3)
    assert got.tolist() == [103, 105, 108]
    got = cap_followed(followed, history, 5)
    assert set(got.tolist()) == {103, 105, 108, 100, 101}
    assert cap_followed(followed, history, 50).tolist() == followed.tolist()


def test_settings_document_bounded_defaults(tmp_path: Path) -> None:
    s = ServeSettings(writes_enabled=False)
    assert s.popular_window_s == 7 * 86_400 and s.seen_limit and s.served_limit and s.in_network_max_authors
    with pytest.raises(ValueError, match="cold_start_refresh_s"):
        ServeSettings(writes_enabled=False, cold_start_refresh_s=0)


def _vm_steps(store: Store, fn: Callable[[], Any]) -> int:
    """SQLite virtual-machine steps (in units of 10) that `fn` makes this thread's connection run."""
    conn = store._conn()  # type: ignore[attr-defined]
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(tick, 10)
    try:
        fn()
    finally:
        conn.set_progress_handler(None, 0)
    return steps[0]


def test_seen_set_work_does_not_grow_with_lifetime_impressions(service_factory: Callable[..., FeedService]) -> None:
    # A user with 10x the impressions and engagements of another costs the same seen-set read:
    # the (user_id, seen_at) index is walked newest first and the read stops at seen_limit.
    # Without it SQLite reads and sorts every seen row of the user (~10x the steps here).
    svc = service_factory(seen_limit=20, seen_window_s=None)
    store, posts = svc.store, svc.store.fresh_posts(300).post_ids
    light, heavy = UNKNOWN_USER + 1, UNKNOWN_USER + 2
    for uid, n in ((light, 30), (heavy, 300)):
        store.mark_seen(uid, posts[:n], seen_at=1_000)
        with store.transaction() as conn:  # distinct times, newest last
            conn.execute("UPDATE seen SET seen_at = 1000 + post_id WHERE user_id = ?", (uid,))
        store.add_engagements([uid] * n, posts[:n], np.arange(n), [{"like": 1.0}] * n)
    assert svc.seen_set(heavy, 0).size >= 20  # the newest 20 impressions, plus engaged posts
    steps = {u: _vm_steps(store, lambda u=u: svc.seen_set(u, 0)) for u in (light, heavy)}
    assert steps[heavy] <= 1.5 * steps[light] + 20, steps


def test_seen_and_served_reads_use_the_time_indexes(service: FeedService) -> None:
    store = service.store
    queries = record_sql(store)
    store.seen_posts(1, since=0, limit=10)
    store.served_posts(1, "s1", limit=10)
    for sql in (q for q in queries if "FROM seen" in q or "FROM served" in q):
        n = sql.count("?")
        plan = " ".join(str(r[-1]) for r in store._conn().execute("EXPLAIN QUERY PLAN " + sql, (1,) * n))  # type: ignore[attr-defined]
        assert "TEMP B-TREE" not in plan and ("idx_seen_user_time" in plan or "idx_served_session_time" in plan), (sql, plan)


def test_windowed_popular_reads_only_the_window(service: FeedService) -> None:
    # The cold-start refresher's popular query must range-scan the time index: SQLite without
    # statistics otherwise walks idx_engagements_post (every engagement) to skip the GROUP BY sort,
    # 4 s per refresh per worker at 1.4M engagements.
    store = service.store
    queries = record_sql(store)
    since = service.now() - 86_400
    got = store.popular_posts(5, since=since)
    sql = next(q for q in queries if "GROUP BY post_id" in q)
    plan = " ".join(str(r[-1]) for r in store._conn().execute("EXPLAIN QUERY PLAN " + sql, (since, 5)))  # type: ignore[attr-defined]
    assert "idx_engagements_time_post (timestamp>?)" in plan, plan
    # Same answer as counting the window by hand.
    rows = store._fetchall("SELECT post_id, COUNT(*) FROM engagements WHERE timestamp >= ? GROUP BY post_id", (since,))  # type: ignore[attr-defined]
    counts = dict(rows)
    assert [counts[p] for p in got.post_ids] == sorted((counts[p] for p in got.post_ids), reverse=True)
    assert len(got) == min(5, len(counts)) and (not counts or counts[int(got.post_ids[0])] == max(counts.values()))


class _FetchSpy:
    """Wraps a FAISS index and records the k of every search."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.fetches = inner, []

    def search(self, q: np.ndarray, k: int) -> Any:
        self.fetches.append(int(k))
        return self.inner.search(q, k)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_retrieval_fetch_does_not_grow_with_the_exclusion_list() -> None:
    from phoenix_recsys.serve.index import CorpusIndex

    rng = np.random.default_rng(0)
    ids = np.arange(20_000, dtype=np.int64) * 3
    emb = rng.standard_normal((ids.size, 16)).astype(np.float32)
    idx = CorpusIndex.build(ids, emb)  # flat: exact, so the result can be checked exactly
    spy = _FetchSpy(idx._index)
    idx._index = spy  # type: ignore[assignment]
    q = rng.standard_normal((1, 16)).astype(np.float32)
    excl = rng.choice(ids, size=4_000, replace=False)  # a heavy user's seen set: 20% of the corpus
    got = idx.search(q, 100, exclude=[excl])
    assert max(spy.fetches) < 100 + 4_000 // 4, spy.fetches  # the old fetch was k + every exclusion
    qn = q / np.linalg.norm(q)
    en = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    scores = (en @ qn[0]).astype(np.float64)
    scores[np.isin(ids, excl)] = -np.inf
    want = ids[np.argsort(-scores, kind="stable")[:100]]
    assert got.ids[0].tolist() == want.tolist()
