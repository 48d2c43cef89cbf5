"""PostgreSQL-only store mechanics: racing opens, several writers' post sequence, LISTEN/NOTIFY.

The behaviour every backend shares is in test_store.py (parametrised over both); these need a
server (the session's throwaway cluster, `pg_url`) and skip with the reason without one.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from phoenix_recsys.serve.store import Migration, SchemaVersionError, Store
from phoenix_recsys.serve.store.postgres import MIGRATIONS, PostgresStore, redact_url


def test_store_open_picks_postgres_and_redacts_the_password(pg_url):
    with Store.open(pg_url) as s:
        assert isinstance(s, PostgresStore) and s.path is None
        assert s.applied_migrations() == [(m.version, m.name) for m in MIGRATIONS]
    assert redact_url("postgresql://u:secret@h:5/db") == "postgresql://u:***@h:5/db"


def test_connections_get_timeouts_and_keepalives_unless_the_url_sets_them(pg_url):
    with Store.open(pg_url + "?connect_timeout=7") as s:
        with s._pool.connection() as c:
            params = c.info.get_parameters()
        assert params["connect_timeout"] == "7" and params["keepalives_idle"] == "30"


def test_two_servers_opening_a_blank_database_at_once_migrate_it_once(pg_url):
    stores, errors = [], []

    def opener() -> None:
        try:
            stores.append(Store.open(pg_url))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert stores[0]._fetchone("SELECT COUNT(*) FROM schema_migrations")[0] == len(MIGRATIONS)
    finally:
        for s in stores:
            s.close()


def test_newer_schema_is_refused(pg_url):
    extra = (*MIGRATIONS, Migration(version=len(MIGRATIONS) + 1, name="x", sql="CREATE TABLE x (a INT);"))
    Store.open(pg_url, migrations=extra).close()
    with pytest.raises(SchemaVersionError, match="newer"):
        Store.open(pg_url)


def test_several_writers_never_reuse_a_seq_and_numbers_appear_in_order(pg_url):
    a, b = Store.open(pg_url), Store.open(pg_url)  # two "servers": separate pools
    n = 30
    seen_gaps = []

    def writer(s: Store, base: int) -> None:
        for i in range(n):
            s.add_posts([base + i], [1], [i])

    def watcher() -> None:
        # A reader must never see number k without every number below k (they have no holes).
        last = 0
        while last < 2 * n:
            seqs = a.posts_since(0).seqs.tolist()
            if seqs != list(range(1, len(seqs) + 1)):
                seen_gaps.append(seqs)
            last = len(seqs)

    threads = [threading.Thread(target=writer, args=(a, 0)), threading.Thread(target=writer, args=(b, 1000))]
    w = threading.Thread(target=watcher)
    w.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.join(timeout=30)
    try:
        ch = a.posts_since(0)
        assert len(ch) == 2 * n and len(set(ch.seqs.tolist())) == 2 * n
        assert sorted(ch.post_ids.tolist()) == list(range(n)) + list(range(1000, 1000 + n))
        assert seen_gaps == []
    finally:
        a.close()
        b.close()


def test_wait_for_posts_is_woken_by_another_servers_write(pg_url):
    follower, writer = Store.open(pg_url), Store.open(pg_url)
    try:
        t0 = time.monotonic()
        assert follower.wait_for_posts(0, timeout=0.3) == 0
        assert time.monotonic() - t0 >= 0.25
        timer = threading.Timer(0.3, lambda: writer.add_posts([7], [1], [0]))
        timer.start()
        t0 = time.monotonic()
        got = follower.wait_for_posts(0, timeout=20.0)
        timer.join()
        assert got == 1 and time.monotonic() - t0 < 5.0
        assert follower.posts_since(0).post_ids.tolist() == [7]
    finally:
        follower.close()
        writer.close()


def test_bulk_engagements_by_copy_still_check_posts(pg_url):
    with Store.open(pg_url) as s:
        s.add_posts([1, 2], [1, 1], [0, 0])
        n = 600  # above the COPY threshold
        pid = np.where(np.arange(n) == 599, 404, 1 + np.arange(n) % 2)
        with pytest.raises(ValueError, match="not in the store"):
            s.add_engagements(np.arange(n), pid, np.arange(n), [{"like": 1}] * n)
        assert s._fetchone("SELECT COUNT(*) FROM engagements")[0] == 0
        assert s.add_engagements(np.arange(n), 1 + np.arange(n) % 2, np.arange(n), [{"like": 1}] * n) == n
        assert len(s.get_history(5, 10)) == 1


def _rows_read_from(plan: dict, table: str) -> int:
    """Rows the EXPLAIN ANALYZE plan tree read from `table` (actual rows x loops of its scans)."""
    own = int(plan["Actual Rows"] * plan["Actual Loops"]) if plan.get("Relation Name") == table else 0
    return own + sum(_rows_read_from(p, table) for p in plan.get("Plans", []))


def test_in_network_query_reads_only_the_followed_authors_posts(pg_url):
    # Regression (issue 15): the shared `post_id IN (correlated sub-select)` form made PostgreSQL
    # walk every post newest first and run the sub-select once per (post, author) pair: ~1 s of
    # CPU per feed at 10k posts and 21 authors, so 8 HTTP clients queued for seconds. The in-network
    # query must read only the followed authors' posts, whether or not the tables were analyzed.
    authors, per_author, cap = 200, 20, 5
    n = authors * per_author
    pid = np.arange(n)
    author = pid % authors  # interleaved: the newest posts overall are mostly by other authors
    with Store.open(pg_url) as s:
        s.add_posts(pid, author, 1_000 + pid)
        followed = np.arange(0, authors, authors // 10)  # 10 authors
        # Per author its `cap` newest (created_at grows with the id), then all newest first.
        expect = sorted((p for a in followed for p in sorted(pid[author == a], reverse=True)[:cap]), reverse=True)
        got = s.recent_posts_by_authors(followed, limit_total=1200, per_author_cap=cap)
        assert got.post_ids.tolist() == expect
        params = (s._ids_param(followed), -(2**63), cap, 1200)
        for analyzed in (False, True):
            if analyzed:
                with s.transaction() as conn:
                    s._execute(conn, "ANALYZE posts")
            (plan,) = s._fetchone("EXPLAIN (ANALYZE, FORMAT JSON) " + s._recent_posts_sql(), params)[0]
            read = _rows_read_from(plan["Plan"], "posts")
            assert read <= followed.size * per_author, (analyzed, read, plan)


def test_bulk_seeding_leaves_planner_statistics_and_a_visibility_map(pg_url):
    # After COPY the planner has no statistics and index-only scans visit the heap for every row
    # until autovacuum comes round; seeding refreshes both before the first feed is served.
    n = 3000
    rng = np.random.default_rng(0)
    events = {
        "user_id": rng.integers(0, 50, n),
        "post_id": rng.integers(0, 400, n),
        "author_id": np.zeros(n, np.int64),
        "timestamp": np.arange(n),
        "like": rng.random(n) < 0.5,
    }
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as c:
        # Production commits synchronously; the test cluster's asynchronous commits would keep
        # VACUUM from marking freshly committed pages all-visible.
        c.execute(f"ALTER DATABASE {pg_url.rsplit('/', 1)[1]} SET synchronous_commit = on")
    with Store.open(pg_url) as s:
        s.seed_from_tables(events, action_names=["like"])
        for table in ("engagements", "seen", "posts", "post_log"):
            rows = s._fetchone(f"SELECT COUNT(*) FROM {table}")[0]
            tuples, all_visible, pages = s._fetchone(
                "SELECT reltuples, relallvisible, relpages FROM pg_class WHERE relname = ?", (table,)
            )
            assert tuples == rows, table  # statistics taken (never analyzed reads -1)
            assert pages > 0 and all_visible == pages, table  # index-only scans skip the heap
