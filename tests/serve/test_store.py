"""Tests for serve.store: pragmas, migrations, round trips, atomicity, threads, durability, seeding.

The `store` fixture runs every behaviour test against both backends (SQLite always; PostgreSQL on
a throwaway server via `pg_url`, skipped with the reason when PostgreSQL is not installed).
SQLite-only mechanics (pragmas, file migrations, kill -9 of the file's writer) use `sqlite_store`.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from phoenix_recsys.actions import PHOENIX_ACTIONS, ActionVocabulary
from phoenix_recsys.serve.store import MIGRATIONS, Migration, SchemaVersionError, Store, _split_sql

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sqlite_store(tmp_path):
    with Store.open(tmp_path / "store.db") as s:
        yield s


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        target = tmp_path / "store.db"
    else:
        target = request.getfixturevalue("pg_url")
    with Store.open(target) as s:
        assert s.backend == request.param
        yield s


def _posts(store: Store, n: int = 10, authors: int = 3) -> None:
    store.add_posts(np.arange(n), author_ids=np.arange(n) % authors, created_at=1000 + np.arange(n) * 10)


# -- connection settings and migrations -----------------------------------------------------------
def test_pragmas_on_every_thread(sqlite_store):
    store = sqlite_store
    results = []

    def check():
        c = store._conn()
        results.append(
            (
                c.execute("PRAGMA journal_mode").fetchone()[0],
                c.execute("PRAGMA synchronous").fetchone()[0],
                c.execute("PRAGMA foreign_keys").fetchone()[0],
            )
        )

    check()
    t = threading.Thread(target=check)
    t.start()
    t.join()
    assert results == [("wal", 2, 1)] * 2  # synchronous 2 = FULL
    assert len(store._conns) == 2  # one connection per thread


def test_memory_path_is_refused():
    with pytest.raises(ValueError, match="path"):
        Store.open(":memory:")


def test_migrations_versioned_and_idempotent_on_reopen(tmp_path):
    path = tmp_path / "m.db"
    with Store.open(path) as s:
        assert s.schema_version() == len(MIGRATIONS) == 5
        _posts(s, 3)
    with Store.open(path) as s:  # reopen: nothing re-applied, data intact
        assert s.applied_migrations() == [
            (1, "initial schema"), (2, "post sequence"), (3, "client event ids"), (4, "seen served time indexes"),
            (5, "post removal"),
        ]
        assert s.num_posts() == 3


def test_a_later_migration_applies_once_and_older_code_refuses_the_file(tmp_path):
    path = tmp_path / "m.db"
    with Store.open(path) as s:
        _posts(s, 3)
    v2 = Migration(
        version=len(MIGRATIONS) + 1,
        name="post language",
        sql="ALTER TABLE posts ADD COLUMN lang TEXT; CREATE INDEX idx_posts_lang ON posts (lang);",
    )
    with Store.open(path, migrations=(*MIGRATIONS, v2)) as s:
        assert s.applied_migrations()[-1] == (len(MIGRATIONS) + 1, "post language")
        cols = [r[1] for r in s._conn().execute("PRAGMA table_info(posts)")]
        assert "lang" in cols and s.num_posts() == 3
    with Store.open(path, migrations=(*MIGRATIONS, v2)) as s:
        assert s.schema_version() == len(MIGRATIONS) + 1  # not applied twice (ALTER would fail if it were)
    with pytest.raises(SchemaVersionError, match="newer"):
        Store.open(path)


def test_a_failing_migration_is_rolled_back(tmp_path):
    path = tmp_path / "m.db"
    bad = Migration(
        version=len(MIGRATIONS) + 1, name="broken", sql="CREATE TABLE half_done (x INTEGER); SELECT * FROM no_such;"
    )
    with pytest.raises(sqlite3.OperationalError):
        Store.open(path, migrations=(*MIGRATIONS, bad))
    with Store.open(path) as s:
        assert s.schema_version() == len(MIGRATIONS)
        tables = {r[0] for r in s._conn().execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "half_done" not in tables and "posts" in tables


def test_migration_numbering_is_checked():
    with pytest.raises(ValueError, match="numbered"):
        Store.open("x.db", migrations=(Migration(version=2, name="x", sql="SELECT 1;"),))


def test_split_sql_respects_strings_and_triggers():
    script = """
    CREATE TABLE t (s TEXT);
    INSERT INTO t VALUES ('a;b');
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO t VALUES ('x'); END;
    """
    stmts = _split_sql(script)
    assert len(stmts) == 3 and "'a;b'" in stmts[1] and stmts[2].endswith("END;")


# -- round trips ----------------------------------------------------------------------------------
def test_posts_round_trip_upsert_and_lookup(store):
    store.add_posts(
        [1, 2, 3],
        author_ids=[10, 11, 10],
        created_at=[100, 200, 300],
        text=["hello", None, "bye"],
        repost_of=[-1, 1, -1],
        video_duration_s=[np.nan, 12.5, 3.0],
    )
    got = store.get_posts([3, 99, 1, 3])
    assert got.author_ids.tolist() == [10, -1, 10, 10]
    assert got.created_at.tolist() == [300, -1, 100, 300]
    assert got.text.tolist() == ["bye", None, "hello", "bye"]
    two = store.get_posts([2])
    assert two.repost_of.tolist() == [1] and two.video_duration_s.tolist() == [12.5]
    assert np.isnan(store.get_posts([1]).video_duration_s[0])
    store.add_posts([2], author_ids=[12], created_at=[250])  # upsert: latest write wins
    assert store.get_posts([2]).author_ids.tolist() == [12]
    assert store.num_posts() == 3
    chunks = list(store.iter_posts(batch_size=2))
    assert [c.post_ids.tolist() for c in chunks] == [[1, 2], [3]]
    cands = store.get_posts([1, 2]).to_candidates("fresh")
    assert cands.source.tolist() == ["fresh", "fresh"] and cands.text.tolist() == ["hello", None]


def test_bad_post_input_names_the_field(store):
    with pytest.raises(ValueError, match="author_ids"):
        store.add_posts([1, 2], author_ids=[1], created_at=[0, 0])
    with pytest.raises(ValueError, match="author_ids"):
        store.add_posts([1], author_ids=[-3], created_at=[0])
    with pytest.raises(ValueError, match="post_ids"):
        store.add_posts([1, 1], author_ids=[1, 1], created_at=[0, 0])
    with pytest.raises(ValueError, match="created_at"):
        store.add_posts([1], author_ids=[1], created_at=[0.5])
    with pytest.raises(ValueError, match="text"):
        store.add_posts([1], author_ids=[1], created_at=[0], text=[3])
    assert store.num_posts() == 0


def test_engagements_round_trip_oldest_first_with_stable_ties(store):
    _posts(store, 6)
    # Events 0..3 share timestamp 50; insertion order must be kept among them.
    store.add_engagements(
        user_ids=[7, 7, 7, 7, 7, 8],
        post_ids=[3, 1, 4, 0, 5, 2],
        timestamps=[50, 50, 50, 50, 10, 50],
        actions=[
            {"favorite": 1},
            {"reply": 1.0, "dwell_time": 2.5},
            {"click": True},
            {"share": 1},
            {"favorite": 1},
            {"report": 1},
        ],  # fmt: skip
        product_surface=[1, 2, 3, 0, 0, 0],
    )
    h = store.get_history(7, limit=10)
    assert h.post_ids.tolist() == [5, 3, 1, 4, 0]
    assert h.author_ids.tolist() == [2, 0, 1, 1, 0]
    assert h.timestamps.tolist() == [10, 50, 50, 50, 50]
    assert h.product_surface.tolist() == [0, 1, 2, 3, 0]
    assert h.actions[2] == {"reply": 1, "dwell_time": 2.5}
    m = h.action_matrix(PHOENIX_ACTIONS)
    assert m.shape == (5, 19) and m[2, PHOENIX_ACTIONS.index("dwell_time")] == 2.5
    assert m[3, PHOENIX_ACTIONS.index("click")] == 1.0 and m.sum() == 7.5
    # limit keeps the newest; before excludes later events
    assert store.get_history(7, limit=2).post_ids.tolist() == [4, 0]
    assert store.get_history(7, limit=10, before=50).post_ids.tolist() == [5]
    assert len(store.get_history(123, limit=5)) == 0


def test_engagements_from_an_array_with_names(store):
    _posts(store, 3)
    names = ["like", "rating"]
    store.add_engagements([1, 1], [0, 2], [5, 6], np.array([[1, 0], [1, 4.5]]), action_names=names)
    h = store.get_history(1, 5)
    assert h.actions == ({"like": 1}, {"like": 1, "rating": 4.5})
    np.testing.assert_array_equal(
        h.action_matrix(ActionVocabulary.binary(["rating", "x"])), [[0, 0], [4.5, 0]]
    )


def test_bad_engagement_input(store):
    _posts(store, 3)
    with pytest.raises(ValueError, match=r"actions\[1\]"):
        store.add_engagements([1, 1], [0, 1], [0, 0], [{"like": 1}, {"like": 0}])
    with pytest.raises(ValueError, match="action_names"):
        store.add_engagements([1], [0], [0], np.ones((1, 2)))
    with pytest.raises(ValueError, match=r"actions\[0\]"):
        store.add_engagements([1], [0], [0], [{"like": -1}])
    with pytest.raises(ValueError, match="timestamps"):
        store.add_engagements([1], [0], [0, 1], [{"like": 1}])


def test_social_graph_round_trip(store):
    assert store.follow(1, 10) is True
    assert store.follow(1, 10) is False  # idempotent
    store.follow(1, 12)
    store.follow(2, 10)
    store.block(1, 20)
    store.mute(1, 21)
    store.mute(1, 20)
    np.testing.assert_array_equal(store.followed_authors(1), [10, 12])
    np.testing.assert_array_equal(store.blocked_or_muted_authors(1), [20, 21])
    assert store.unfollow(1, 10) is True and store.unfollow(1, 10) is False
    assert store.unblock(1, 20) and store.unmute(1, 21)
    np.testing.assert_array_equal(store.followed_authors(1), [12])
    np.testing.assert_array_equal(store.blocked_or_muted_authors(1), [20])  # still muted
    assert store.followed_authors(3).dtype == np.int64 and len(store.followed_authors(3)) == 0
    with pytest.raises(ValueError, match="themselves"):
        store.follow(5, 5)
    with pytest.raises(ValueError, match="user_id"):
        store.block(-1, 5)


def test_recent_posts_by_authors_matches_a_reference(store):
    rng = np.random.default_rng(3)
    n = 400
    authors = rng.integers(0, 20, n)
    created = rng.integers(0, 50, n)  # many ties on created_at
    store.add_posts(np.arange(n), authors, created)
    follow = [1, 4, 5, 9, 17, 999]
    for cap, total, since in [(5, 1000, None), (3, 10, None), (50, 25, 30), (1, 1000, 49)]:
        got = store.recent_posts_by_authors(follow, limit_total=total, per_author_cap=cap, since=since)
        ref = []
        for a in follow:
            mine = [i for i in range(n) if authors[i] == a and (since is None or created[i] >= since)]
            ref += sorted(mine, key=lambda i: (-created[i], -i))[:cap]
        ref = sorted(ref, key=lambda i: (-created[i], -i))[:total]
        assert got.post_ids.tolist() == ref, (cap, total, since)
    assert len(store.recent_posts_by_authors([], 10, 10)) == 0


def test_user_listing_pages_every_user_and_orders_recent_by_last_event(store):
    rng = np.random.default_rng(11)
    _posts(store, 20)
    n = 300
    users = rng.choice([0, 3, 4, 10, 11, 12, 57, 1000, 2**40], size=n)  # heavy repeats, sparse ids
    ts = rng.integers(0, 40, n)  # many timestamp ties
    store.add_engagements(user_ids=users, post_ids=rng.integers(0, 20, n), timestamps=ts,
                          actions=[{"favorite": 1}] * n)
    expected = sorted(set(users.tolist()))
    for page in (1, 2, 4, 100):
        got, after = [], None
        while True:
            chunk = store.list_users(page, after=after).tolist()
            got += chunk
            if len(chunk) < page:
                break
            after = chunk[-1]
        assert got == expected, page
    assert store.list_users(5, after=2**40).tolist() == []
    last = {u: int(ts[users == u].max()) for u in expected}
    ids, when = store.recent_users(len(expected))  # the scan window covers all 300 rows here
    ref = sorted(expected, key=lambda u: (-last[u], u))
    assert ids.tolist() == ref and when.tolist() == [last[u] for u in ref]
    assert store.recent_users(2)[0].tolist() == ref[:2]
    with pytest.raises(ValueError, match="limit"):
        store.list_users(0)


def test_popular_and_fresh_posts(store):
    _posts(store, 5)  # post i created at 1000 + 10 i
    store.add_engagements([1, 2, 3, 1, 2, 1], [3, 3, 3, 1, 1, 4], [5, 5, 900, 5, 5, 5], [{"like": 1}] * 6)
    assert store.popular_posts(10).post_ids.tolist() == [3, 1, 4]
    assert store.popular_posts(10, since=100).post_ids.tolist() == [3]
    assert store.popular_posts(1).post_ids.tolist() == [3]
    assert store.fresh_posts(2).post_ids.tolist() == [4, 3]


def test_served_and_seen(store):
    _posts(store, 6)
    assert store.mark_served(1, [0, 1], "s1") == 2
    assert store.mark_served(1, [1, 2], "s1") == 1  # 1 already served in s1
    store.mark_served(1, [3], "s2")
    np.testing.assert_array_equal(store.served_posts(1, "s1"), [0, 1, 2])
    np.testing.assert_array_equal(store.served_posts(1), [0, 1, 2, 3])
    store.mark_seen(1, [4])
    store.add_engagements([1], [5], [0], [{"like": 1}])
    np.testing.assert_array_equal(store.seen_posts(1), [4, 5])  # served alone is not seen
    with pytest.raises(ValueError, match="session_id"):
        store.mark_served(1, [0], "")
    with pytest.raises(ValueError, match="post_ids"):
        store.mark_served(1, [77], "s1")


# -- atomicity, threads, durability ---------------------------------------------------------------
def test_a_write_failing_midway_leaves_nothing(store):
    _posts(store, 3)
    # The second of three events references an unknown post: none may be written.
    with pytest.raises(ValueError, match="not in the store"):
        store.add_engagements([1, 1, 1], [0, 42, 1], [0, 1, 2], [{"like": 1}] * 3)
    assert len(store.get_history(1, 10)) == 0
    # A group of writes in one transaction, interrupted by an error, also leaves nothing.
    with pytest.raises(RuntimeError, match="boom"):
        with store.transaction():
            store.add_posts([50], [1], [0])
            store.follow(1, 2)
            raise RuntimeError("boom")
    assert store.num_posts() == 3 and len(store.followed_authors(1)) == 0


def test_nested_transaction_is_a_savepoint(store):
    with store.transaction():
        store.add_posts([1], [10], [0])
        with pytest.raises(ValueError):
            store.add_engagements([5, 5], [1, 404], [0, 1], [{"like": 1}] * 2)  # inner block undone
        store.follow(5, 10)
    assert store.num_posts() == 1 and len(store.get_history(5, 10)) == 0
    np.testing.assert_array_equal(store.followed_authors(5), [10])


def test_concurrent_writers_lose_nothing(store):
    _posts(store, 20)
    n_threads, n_writes = 8, 40
    errors = []

    def writer(t: int) -> None:
        try:
            for i in range(n_writes):
                store.add_engagements([t], [(t + i) % 20], [i], [{"like": 1}])
                store.follow(t, 100 + i)
                store.get_history(t, 5)  # readers interleave with writers
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    for t in range(n_threads):
        assert len(store.get_history(t, 1000)) == n_writes
        assert len(store.followed_authors(t)) == n_writes
    total = store._fetchone("SELECT COUNT(*) FROM engagements")[0]
    assert total == n_threads * n_writes


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_acknowledged_writes_survive_kill_9(tmp_path):
    path = tmp_path / "k.db"
    child = (
        "import os, signal, sys\n"
        "from phoenix_recsys.serve.store import Store\n"
        "s = Store.open(sys.argv[1])\n"
        "s.add_posts([1, 2], [5, 6], [10, 20])\n"
        "s.follow(3, 5)\n"
        "print('acked', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-c", child, str(path)], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL and "acked" in proc.stdout, proc.stderr
    with Store.open(path) as s:
        assert s.num_posts() == 2
        np.testing.assert_array_equal(s.followed_authors(3), [5])


def test_closed_store_refuses_use(tmp_path):
    s = Store.open(tmp_path / "c.db")
    s.close()
    with pytest.raises(RuntimeError, match="closed"):
        s.num_posts()


# -- seeding --------------------------------------------------------------------------------------
def _events_table(n: int, rng: np.random.Generator, names=PHOENIX_ACTIONS.names) -> pa.Table:
    cols = {
        "user_id": rng.integers(0, 500, n),
        "post_id": rng.integers(0, 5000, n),
        "timestamp": np.sort(rng.integers(0, 10**6, n)),
        "product_surface": rng.integers(0, 4, n),
    }
    cols["author_id"] = cols["post_id"] % 97
    for a in names:
        cols[a] = (
            rng.exponential(5.0, n) * (rng.random(n) < 0.3) if a == "dwell_time" else rng.random(n) < 0.04
        )
    return pa.table(cols)


def test_seed_from_tables(store):
    events = pa.table(
        {
            "user_id": [1, 1, 1, 2, 2],
            "post_id": [10, 11, 12, 10, 13],
            "author_id": [5, 6, 5, 5, 7],
            "timestamp": [100, 100, 90, 50, 60],
            "product_surface": [1, 0, 2, 0, 0],
            "like": pa.array([True, False, None, True, False]),  # null = not done
            "dwell": [0.0, 0.0, 3.0, 0.0, 0.0],
        }
    )
    posts = {"post_id": [10, 11], "author_id": [5, 6], "created_at": [40, 45], "text": ["a", None]}
    follows = pa.table({"user_id": [1, 1, 2], "author_id": [5, 6, 5]})
    rep = store.seed_from_tables(events, posts, follows, action_names=["like", "dwell"])
    assert (rep.posts, rep.derived_posts, rep.engagements, rep.impressions, rep.follows) == (2, 2, 3, 2, 3)
    # Posts only in events are derived: author from the events, created_at = earliest event.
    got = store.get_posts([12, 13, 10])
    assert got.author_ids.tolist() == [5, 7, 5] and got.created_at.tolist() == [90, 60, 40]
    h = store.get_history(1, 10)
    assert h.post_ids.tolist() == [12, 10] and h.actions == ({"dwell": 3}, {"like": 1})
    assert h.product_surface.tolist() == [2, 1]
    np.testing.assert_array_equal(store.seen_posts(1), [10, 11, 12])  # 11 was an impression
    np.testing.assert_array_equal(store.seen_posts(2), [10, 13])
    np.testing.assert_array_equal(store.followed_authors(1), [5, 6])


def test_seed_validation_names_the_column(store):
    base = {"user_id": [1], "post_id": [1], "author_id": [2], "timestamp": [0], "like": [1]}
    with pytest.raises(ValueError, match="like"):
        store.seed_from_tables({k: v for k, v in base.items() if k != "like"}, action_names=["like"])
    with pytest.raises(ValueError, match="events.user_id"):
        store.seed_from_tables({**base, "user_id": [1.5]}, action_names=["like"])
    with pytest.raises(ValueError, match="author_id"):
        store.seed_from_tables({k: v for k, v in base.items() if k != "author_id"}, action_names=["like"])
    with pytest.raises(ValueError, match="posts"):
        store.seed_from_tables(base, posts={"post_id": [1]}, action_names=["like"])
    assert store.num_posts() == 0  # every failure rolled back


def test_seed_100k_rows_is_fast(store):
    events = _events_table(100_000, np.random.default_rng(0))
    t0 = time.perf_counter()
    rep = store.seed_from_tables(events, action_names=PHOENIX_ACTIONS.names)
    elapsed = time.perf_counter() - t0
    n_eng = store._fetchone("SELECT COUNT(*) FROM engagements")[0]
    assert n_eng == rep.engagements > 50_000
    assert elapsed < 10.0, f"seeding 100k rows took {elapsed:.1f}s"


def test_post_sequence_numbers_every_post_write_in_order(store):
    assert store.post_seq() == 0 and len(store.posts_since(0)) == 0
    store.add_posts([5, 6], [1, 2], [10, 20])
    store.add_posts([5], [3], [30])  # an update is a new entry
    ch = store.posts_since(0)
    assert ch.post_ids.tolist() == [5, 6, 5] and ch.ops.tolist() == ["upsert"] * 3
    assert ch.seqs.tolist() == sorted(ch.seqs.tolist()) and ch.last_seq == store.post_seq()
    assert store.posts_since(int(ch.seqs[0])).post_ids.tolist() == [6, 5]
    ids, ops = ch.latest()
    assert ids.tolist() == [5, 6] and ops.tolist() == ["upsert", "upsert"]
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.add_posts([7], [1], [0])
            raise RuntimeError("undone")
    assert store.post_seq() == ch.last_seq  # a rolled-back write leaves no entry


def test_wait_for_posts_wakes_on_a_write_and_times_out_without_one(store):
    assert store.wait_for_posts(0, timeout=0.0) == 0
    t0 = time.monotonic()
    assert store.wait_for_posts(0, timeout=0.2) == 0  # nothing written: returns at the timeout
    assert time.monotonic() - t0 >= 0.15
    timer = threading.Timer(0.2, lambda: store.add_posts([1], [1], [10]))
    timer.start()
    t0 = time.monotonic()
    got = store.wait_for_posts(0, timeout=10.0)
    timer.join()
    assert got >= 1 and got == store.post_seq()
    assert time.monotonic() - t0 < 5.0  # woken by the write, not the timeout
    with pytest.raises(ValueError, match="timeout"):
        store.wait_for_posts(0, timeout=-1)


# -- SQLite's one writer process ------------------------------------------------------------------
_HOLD = (
    "import sys, time\n"
    "from phoenix_recsys.serve.store import Store\n"
    "s = Store.open(sys.argv[1], multi_writer=sys.argv[2] == 'multi')\n"
    "print('open', flush=True)\n"
    "sys.stdin.read()\n"
)


def _holder(path: Path, mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path), mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "open"
    return proc


def test_a_second_writer_process_is_refused_with_the_holders_pid(tmp_path):
    from phoenix_recsys.serve.store import StoreLockedError

    path = tmp_path / "w.db"
    Store.open(path).close()
    proc = _holder(path, "single")
    try:
        with pytest.raises(StoreLockedError, match=rf"{path.name}.*pid {proc.pid}"):
            Store.open(path)
        with pytest.raises(StoreLockedError):
            Store.open(path, multi_writer=True)  # shared mode does not get past an exclusive writer
        with Store.open(path, read_only=True) as ro:  # readers need no lock
            assert ro.num_posts() == 0
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                ro.add_posts([1], [1], [0])
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    with Store.open(path) as s:  # the holder exited: the lock went with it
        assert s.add_posts([1], [1], [0]) == 1


def test_multi_writer_processes_admit_each_other_but_not_a_plain_writer(tmp_path):
    from phoenix_recsys.serve.store import StoreLockedError

    path = tmp_path / "m.db"
    Store.open(path).close()
    proc = _holder(path, "multi")
    try:
        with Store.open(path, multi_writer=True) as s:
            s.add_posts([2], [1], [0])
        with pytest.raises(StoreLockedError):
            Store.open(path)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_one_process_may_open_its_file_twice(tmp_path):
    with Store.open(tmp_path / "t.db") as a, Store.open(tmp_path / "t.db") as b:
        a.add_posts([1], [1], [0])
        assert b.num_posts() == 1


def test_bounded_seen_posts_keeps_the_newest_of_each_kind(store):
    # The bounded read (the feed's seen set) on both backends: the `limit` newest impressions and
    # the `limit` newest engagements at or after `since`, as a set; nothing = an empty array.
    _posts(store, 10)
    assert store.seen_posts(1, since=0, limit=3).tolist() == []
    for p in range(6):
        store.mark_seen(1, [p], seen_at=100 + p)
    store.add_engagements([1, 1, 1], [7, 8, 9], [50, 200, 300], [{"like": 1.0}] * 3)
    got = store.seen_posts(1, since=90, limit=2)
    assert got.dtype == np.int64 and got.tolist() == [4, 5, 8, 9]
    assert store.seen_posts(1, since=250, limit=5).tolist() == [9]


def test_deleted_and_taken_down_posts_leave_every_serving_read(store):
    """Deletion (final, text erased) and takedown (reversible) keep the row and its engagements but
    take the post out of hydration, sources and the corpus scan, each change in the post sequence."""
    store.add_posts([1, 2, 3], author_ids=[5, 5, 6], created_at=[10, 20, 30], text=["a", "b", "c"])
    store.add_engagements([9, 9], [1, 2], [40, 41], [{"favorite": 1}, {"favorite": 1}])
    seq = store.post_seq()
    assert store.delete_posts([1, 1, 77]).tolist() == [True, False, False]  # a repeat within the call too
    assert store.set_takedown([2], True).tolist() == [True]
    assert store.post_states([1, 2, 3, 77]).tolist() == ["deleted", "taken_down", "live", None]
    assert store.get_posts([1, 2, 3]).author_ids.tolist() == [-1, -1, 6]
    assert store.fresh_posts(10).post_ids.tolist() == [3]
    assert store.popular_posts(10).post_ids.tolist() == []
    assert store.recent_posts_by_authors([5, 6], limit_total=10, per_author_cap=10).post_ids.tolist() == [3]
    assert [int(p) for rows in store.iter_posts() for p in rows.post_ids] == [3]
    ch = store.posts_since(seq)
    assert ch.post_ids.tolist() == [1, 2] and ch.ops.tolist() == ["delete", "takedown"]
    assert store.num_posts() == 3 and len(store.get_history(9, 10)) == 2  # rows and history kept
    # Lifting a takedown serves the post again (an upsert entry); a deleted post stays deleted.
    assert store.set_takedown([2, 1], False).tolist() == [True, False]
    assert store.posts_since(seq).ops.tolist()[-1] == "upsert"
    assert store.get_posts([1, 2]).author_ids.tolist() == [-1, 5]
    assert store.set_takedown([1], True).tolist() == [False]
    # An upsert keeps both flags (a racing write cannot resurrect a removed post).
    store.add_posts([1], author_ids=[5], created_at=[10], text=["again"])
    assert store.post_states([1]).tolist() == ["deleted"] and store.get_posts([1]).author_ids.tolist() == [-1]
