"""kill -9 during an index snapshot or a schema migration, against real `serve` processes (issue 14).

The kill comes from inside the process, at a named point (`phoenix_recsys.testing.crash`, set through
`PHOENIX_TEST_CRASH_AT`), so it lands mid-write every time instead of whenever a timer fires. After the
kill, the test reads what was left on disk (or in PostgreSQL) directly, then restarts the server without
the crash point and checks what it serves against what the store holds.
"""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import httpx
import numpy as np
import pytest

from phoenix_recsys.serve.index.snapshot import SNAPSHOT_DIR, list_snapshots
from phoenix_recsys.serve.store import Store, load_migrations
from phoenix_recsys.testing.crash import ENV
from phoenix_recsys.testing.servers import AUTH, Server

CORPUS = 300  # posts of the session world (conftest)
KILLED = -signal.SIGKILL  # Popen's return code for a process that died of SIGKILL


def _snapshot_names(index_dir: Path) -> list[str]:
    return sorted(s.path.name for s in list_snapshots(index_dir))


def _temp_dirs(index_dir: Path) -> list[Path]:
    d = index_dir / SNAPSHOT_DIR
    return sorted(p for p in d.iterdir() if p.name.startswith(".tmp.")) if d.is_dir() else []


def _servable_ids(store_path: str) -> set[int]:
    """Every post the store would serve (not deleted, not taken down), read beside the running server."""
    with Store.open(store_path, read_only=True) as s:
        return {int(p) for rows in s.iter_posts() for p in rows.post_ids.tolist()}


@pytest.mark.parametrize("files_written", [2, 4])
def test_kill_9_mid_snapshot_while_serving_restarts_from_the_previous_snapshot(
    files_written, bundle_dir, world, tmp_path, jax_cache_dir, runtime
):
    new = [90_000 + i for i in range(7)]
    gone = 5  # a seeded post, deleted in the life that dies
    # Snapshots only when 8 changes (the deletion and the 7 posts) are pending, so the one that is
    # killed is written while serving, after every request below has committed.
    srv = Server(bundle_dir, world.path, tmp_path, jax_cache_dir, "snap",
                 PHOENIX_INDEX_SNAPSHOT_INTERVAL_S="none", PHOENIX_INDEX_SNAPSHOT_EVERY_POSTS=str(len(new) + 1))  # fmt: skip
    index_dir = tmp_path / "index"
    srv.start()  # seeds the store, builds the index and snapshots it
    seq0 = srv.follow_stats()["seq"]
    srv.stop()
    good = _snapshot_names(index_dir)
    assert good == [f"{seq0:016d}.snap"]

    srv.env[ENV] = f"snapshot-after-files:{files_written}"
    srv.start()  # loads that snapshot; nothing to catch up, so nothing written at start
    with httpx.Client(timeout=30) as c:
        assert c.delete(f"{srv.url}/v1/posts/{gone}", headers=AUTH).status_code == 200
        try:
            r = c.post(
                srv.url + "/v1/posts",
                json={"posts": [{"post_id": p, "author_id": 3} for p in new]},
                headers=AUTH,
            )
            assert r.status_code == 200, r.text
        except httpx.TransportError:
            pass  # the snapshot (and the kill) may beat the response; the posts committed before it was due
    assert srv.wait_exit(60) == KILLED, srv.tail()
    # Killed mid-write: a temporary directory holding exactly the files written so far, no new snapshot.
    (torn,) = _temp_dirs(index_dir)
    assert len(list(torn.iterdir())) == files_written
    assert _snapshot_names(index_dir) == good

    del srv.env[ENV]
    srv.start()
    try:
        stats = srv.follow_stats()
        # The previous snapshot was loaded and only the 7 new posts embedded (a rebuild embeds 306).
        assert stats["posts_embedded"] == len(new) and stats["seq"] == seq0 + len(new) + 1
        expected = (set(range(CORPUS)) - {gone}) | set(new)
        assert _servable_ids(srv.store) == expected
        with httpx.Client(timeout=30) as c:
            assert srv.retrievable(c) == expected  # every servable post, and only those
        # The catch-up was snapshotted at start, and that write removed the dead process's leftovers.
        assert _temp_dirs(index_dir) == []
        assert f"{seq0 + len(new) + 1:016d}.snap" in _snapshot_names(index_dir)
    finally:
        srv.stop()


def test_kill_9_mid_first_snapshot_restarts_with_a_rebuild(
    bundle_dir, world, tmp_path, jax_cache_dir, runtime
):
    index_dir = tmp_path / "index"
    srv = Server(bundle_dir, world.path, tmp_path, jax_cache_dir, "first", **{ENV: "snapshot-after-files:2"})
    srv.launch()  # seeds, builds the index, and dies writing its first snapshot
    assert srv.wait_exit() == KILLED, srv.tail()
    assert _snapshot_names(index_dir) == [] and len(_temp_dirs(index_dir)) == 1

    del srv.env[ENV]
    srv.start()
    try:
        stats = srv.follow_stats()  # no complete snapshot to load (checked above): built from the store
        with httpx.Client(timeout=30) as c:
            assert srv.retrievable(c) == _servable_ids(srv.store) == set(range(CORPUS))
        assert _temp_dirs(index_dir) == [] and _snapshot_names(index_dir) == [f"{stats['seq']:016d}.first"]
    finally:
        srv.stop()


# -- migrations ------------------------------------------------------------------------------------
MIGRATION = 5  # 0005_post_removal: two ALTER TABLEs, so a kill after the first leaves it half-done
NEW_COLUMNS = {"deleted_at", "taken_down_at"}


def _fill_old(store: Store, action: str) -> None:
    """Rows written through the calls a version-4 store already had (seeding reads 0005's columns)."""
    rng = np.random.default_rng(0)
    store.add_posts(np.arange(CORPUS), rng.integers(0, 20, CORPUS), rng.integers(10**6, 2 * 10**6, CORPUS),
                    text=[f"post {i}" if i % 3 else None for i in range(CORPUS)])  # fmt: skip
    store.add_posts([7], [4], [10**6])  # an update: a second post-log entry for one post
    store.add_engagements(rng.integers(0, 40, 900), rng.integers(0, CORPUS, 900), 2 * 10**6 + np.arange(900),
                          [{action: 1.0}] * 900)  # fmt: skip
    for author in (2, 3, 5):
        store.follow(1, author)
    store.mark_seen(2, [4, 5])


def _raw_state(target: str) -> dict:
    """What the store holds, read without `Store.open` (which would migrate it)."""
    queries = {
        "versions": "SELECT version, name FROM schema_migrations ORDER BY version",
        # Whole rows (the columns every version has), so a lost or altered row shows, not just a count.
        "posts": "SELECT post_id, author_id, created_at, text FROM posts ORDER BY post_id",
        "engagements": "SELECT event_id, user_id, post_id, timestamp, product_surface FROM engagements ORDER BY 1",
        "post_log": "SELECT seq, post_id, op FROM post_log ORDER BY seq",
        "follows": "SELECT user_id, author_id FROM follows ORDER BY 1, 2",
        "seen": "SELECT user_id, post_id FROM seen ORDER BY 1, 2",
    }
    if target.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(target, autocommit=True) as conn:
            out = {k: conn.execute(q).fetchall() for k, q in queries.items()}
            cols = conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'posts'"
            ).fetchall()
            out["columns"] = {r[0] for r in cols}
    else:
        conn = sqlite3.connect(target)  # recovers the WAL left by the killed process; reads only
        try:
            out = {k: conn.execute(q).fetchall() for k, q in queries.items()}
            out["columns"] = {r[1] for r in conn.execute("PRAGMA table_info(posts)")}
            out["integrity"] = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
    return {k: [tuple(r) for r in rows] if isinstance(rows, list) else rows for k, rows in out.items()}


@pytest.mark.parametrize(
    "backend, point",
    [
        ("sqlite", f"migration-after-statement:{MIGRATION}:1"),
        ("sqlite", f"migration-before-commit:{MIGRATION}"),
        ("postgresql", f"migration-before-commit:{MIGRATION}"),
    ],
)
def test_kill_9_mid_migration_rolls_back_and_the_restart_applies_it(
    backend, point, request, bundle_dir, world, tmp_path, jax_cache_dir, runtime
):
    migrations = load_migrations("sqlite" if backend == "sqlite" else "postgres")
    target = request.getfixturevalue("pg_url") if backend == "postgresql" else str(tmp_path / "store.sqlite")
    # A store one release old: every migration before 0005, and rows in every table that matters.
    with Store.open(target, migrations=migrations[: MIGRATION - 1]) as old:
        _fill_old(old, runtime.vocab.names[0])
    before = _raw_state(target)
    assert [v for v, _ in before["versions"]] == list(range(1, MIGRATION))
    assert not NEW_COLUMNS & before["columns"]
    assert len(before["posts"]) == CORPUS and len(before["engagements"]) == 900 and len(before["seen"]) == 2

    srv = Server(bundle_dir, world.path, tmp_path, jax_cache_dir, "mig", store=target, **{ENV: point})
    srv.launch()  # opens the store, starts migration 5, and dies inside its transaction
    assert srv.wait_exit() == KILLED, srv.tail()
    after_kill = _raw_state(target)
    # Rolled back whole: no row for 5, neither column (not even the first ALTER's), every row kept.
    assert after_kill == before
    assert after_kill.get("integrity", [("ok",)]) == [("ok",)]  # SQLite: the file checks out after recovery

    del srv.env[ENV]
    srv.start()
    try:
        health = httpx.get(srv.url + "/healthz", timeout=10).json()
        assert health["schema_version"] == len(migrations)
        with httpx.Client(timeout=30) as c:
            feed = c.post(srv.url + "/v1/feed", json={"user_id": 1, "k": 5})
            assert feed.status_code == 200 and len(feed.json()["items"]) == 5, feed.text
            assert srv.retrievable(c) == set(range(CORPUS))
    finally:
        srv.stop()
    final = _raw_state(target)
    assert final["versions"] == [(m.version, m.name) for m in migrations]  # each applied once, in order
    assert NEW_COLUMNS <= final["columns"]
    # Every row as it was before the crash (the restart seeds nothing: the store has posts).
    data = ("posts", "engagements", "post_log", "follows", "seen")
    assert {k: final[k] for k in data} == {k: before[k] for k in data}
