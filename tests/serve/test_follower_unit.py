"""`IndexFollower` and snapshots in-process, over a real SQLite store and a counting stand-in tower."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from phoenix_recsys.serve.index import CorpusIndex, IndexConfig, IndexKind
from phoenix_recsys.serve.index.follower import FollowConfig, IndexFollower
from phoenix_recsys.serve.index.snapshot import list_snapshots, load_newest, write_snapshot
from phoenix_recsys.serve.store import PostOp, Store

D = 8


class Tower:
    """Deterministic embeddings of (post, author); counts the posts it embeds."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, ids: np.ndarray, authors: np.ndarray) -> np.ndarray:
        self.calls += int(len(ids))
        out = np.stack([np.random.default_rng(int(p) * 1000 + int(a)).standard_normal(D) for p, a in zip(ids, authors, strict=True)])
        return out.astype(np.float32).reshape(len(ids), D)


def _delete(store: Store, ids: list[int]) -> None:
    """Delete posts the way a backend with deletion does: row gone plus a DELETE post-sequence entry."""
    with store.transaction() as conn:
        for p in ids:
            store._execute(conn, "DELETE FROM posts WHERE post_id = ?", (p,))
        store._log_posts(conn, ids, PostOp.DELETE)


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "s.db") as s:
        s.add_posts(np.arange(100), author_ids=np.arange(100) % 7, created_at=np.zeros(100, np.int64))
        yield s


def _follower(store, tmp_path, tower, **cfg) -> IndexFollower:
    ids = np.arange(100)
    index = CorpusIndex.build(ids, tower(ids, ids % 7), config=IndexConfig(exact_max_size=cfg.pop("exact", 50_000)))
    return IndexFollower(store, index, store.post_seq(), tower, config=FollowConfig(**cfg), snapshot_root=tmp_path / "idx",
                         server_id="t", base_fingerprint="fp")  # fmt: skip


def test_sync_applies_upserts_deletes_and_author_changes(store, tmp_path):
    tower = Tower()
    f = _follower(store, tmp_path, tower)
    tower.calls = 0
    store.add_posts([200, 201], author_ids=[1, 2], created_at=[0, 0])
    store.add_posts([5], author_ids=[6], created_at=[0])  # author changed: re-embedded
    _delete(store, [7, 201])
    assert f.sync() == 5 and f.seq == store.post_seq()
    assert tower.calls == 2  # 200 and 5; 201 was deleted before it was applied
    assert 200 in f.index and 201 not in f.index and 7 not in f.index and len(f.index) == 100
    q = tower(np.array([5]), np.array([6]))
    assert f.index.search(q, k=1).ids[0, 0] == 5
    # The write path's own embeddings are reused, not recomputed.
    emb = tower(np.array([300]), np.array([3]))
    tower.calls = 0
    store.add_posts([300], author_ids=[3], created_at=[0])
    f.sync(known=(np.array([300]), np.array([3]), emb))
    assert tower.calls == 0 and 300 in f.index


def test_background_follow_and_rebuild_keep_concurrent_changes(store, tmp_path):
    tower = Tower()
    f = _follower(store, tmp_path, tower, exact=120, poll_interval_s=0.05, maintenance_interval_s=0.05,
                  snapshot_interval_s=None, snapshot_every_posts=None)  # fmt: skip
    f.start()
    try:
        store.add_posts(np.arange(1000, 1050), author_ids=np.ones(50, np.int64), created_at=np.zeros(50, np.int64))
        deadline = time.monotonic() + 10
        while not (f.rebuilds and 1049 in f.index):
            assert time.monotonic() < deadline, f.stats()
            time.sleep(0.02)
        # 150 posts > exact_max_size 120: rebuilt as the ANN kind (IVF) in the background, nothing lost.
        assert f.index.kind is IndexKind.IVF and len(f.index) == 150
        stop = threading.Event()

        def writer() -> None:
            i = 2000
            while not stop.is_set():
                store.add_posts([i], author_ids=[2], created_at=[0])
                i += 1

        t = threading.Thread(target=writer)
        t.start()
        f.rebuild()  # while posts keep arriving
        stop.set()
        t.join()
        deadline = time.monotonic() + 5
        while f.seq < store.post_seq():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        live = {int(p) for rows in store.iter_posts() for p in rows.post_ids}
        assert set(f.index.post_ids().tolist()) == live
    finally:
        f.stop(snapshot=False)


def test_ivf_outgrowing_its_training_is_retrained_in_the_background(store, tmp_path):
    tower = Tower()
    ids = np.arange(100)
    cfg = IndexConfig(exact_max_size=50, ann_kind="ivf", ivf_retrain_growth=2.0)
    index = CorpusIndex.build(ids, tower(ids, ids % 7), config=cfg)
    f = IndexFollower(store, index, store.post_seq(), tower, snapshot_root=None, server_id="t", base_fingerprint="fp",
                      config=FollowConfig(poll_interval_s=0.05, maintenance_interval_s=0.05, snapshot_interval_s=None,
                                          snapshot_every_posts=None))  # fmt: skip
    assert index.kind is IndexKind.IVF and not f.needs_rebuild()
    store.add_posts(np.arange(1000, 1080), author_ids=np.ones(80, np.int64), created_at=np.zeros(80, np.int64))
    f.sync()
    assert not f.needs_rebuild()  # 180 live <= 2 x 100 trained on
    f.start()
    try:
        store.add_posts(np.arange(2000, 2030), author_ids=np.ones(30, np.int64), created_at=np.zeros(30, np.int64))
        deadline = time.monotonic() + 10
        while not f.rebuilds:
            assert time.monotonic() < deadline, f.stats()
            time.sleep(0.02)
        # 210 > 200: retrained on everything live, and every post is still there.
        assert f.index.kind is IndexKind.IVF and f.index.trained_on >= 210 and len(f.index) == 210
        assert not f.needs_rebuild()
    finally:
        f.stop(snapshot=False)


def test_snapshots_are_keyed_pruned_and_corrupt_ones_skipped(store, tmp_path):
    tower = Tower()
    f = _follower(store, tmp_path, tower, snapshot_keep=2)
    root = tmp_path / "idx"
    seqs = []
    for i in range(3):
        store.add_posts([500 + i], author_ids=[1], created_at=[0])
        f.sync()
        f.snapshot()
        seqs.append(f.seq)
    # Another server's snapshot in the same directory is never touched by this one's pruning.
    write_snapshot(root, f.index, seq=f.seq, server_id="other", base_fingerprint="fp")
    names = sorted(s.path.name for s in list_snapshots(root))
    assert names == sorted([f"{seqs[1]:016d}.t", f"{seqs[2]:016d}.t", f"{seqs[2]:016d}.other"])
    got = load_newest(root, "fp", max_seq=store.post_seq())
    assert got is not None and got[1].seq == seqs[2] and 502 in got[0]
    # Corrupt both newest: the older one is used, and replaying from its seq completes it.
    for s in list_snapshots(root):
        if s.seq == seqs[2]:
            (s.path / "ids.npy").write_bytes(b"garbage")
    index, snap = load_newest(root, "fp", max_seq=store.post_seq())
    assert snap.seq == seqs[1] and 502 not in index
    g = IndexFollower(store, index, snap.seq, tower)
    g.sync()
    assert 502 in g.index
    # Other bundle/store fingerprint, or a snapshot ahead of the store: not used.
    assert load_newest(root, "other-fp", max_seq=store.post_seq()) is None
    assert load_newest(root, "fp", max_seq=seqs[0]) is None
