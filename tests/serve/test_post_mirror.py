"""PostMirror answers the feed's post reads exactly as the store does, through every kind of post change."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from phoenix_recsys.serve.store import open_store
from phoenix_recsys.serve.store.base import PostRows, Store
from phoenix_recsys.serve.store.mirror import PostMirror


def _assert_rows_equal(got: PostRows, want: PostRows, what: str) -> None:
    for name in ("post_ids", "author_ids", "created_at", "repost_of"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=f"{what}: {name}")
    np.testing.assert_array_equal(got.video_duration_s, want.video_duration_s, err_msg=f"{what}: video")
    assert got.text.tolist() == want.text.tolist(), f"{what}: text"


def _random_change(store: Store, rng: np.random.Generator, next_id: list[int]) -> None:
    """One random write: new posts, an upsert that moves a post to another author, a delete, a takedown or its reversal."""
    kind = rng.choice(["add", "add", "upsert", "delete", "takedown", "restore"])
    known = np.arange(next_id[0])
    if kind == "add" or known.size == 0:
        n = int(rng.integers(1, 40))
        ids = np.arange(next_id[0], next_id[0] + n)
        next_id[0] += n
        store.add_posts(
            ids, rng.integers(0, 12, n), rng.integers(0, 50, n),  # few authors and times: many ties
            text=[None if rng.random() < 0.5 else f"t{i}" for i in ids],
            repost_of=np.where(rng.random(n) < 0.2, rng.integers(0, max(next_id[0], 1), n), -1),
            video_duration_s=np.where(rng.random(n) < 0.3, rng.random(n) * 30, np.nan),
        )  # fmt: skip
    elif kind == "upsert":
        ids = rng.choice(known, size=min(5, known.size), replace=False)
        store.add_posts(ids, rng.integers(0, 12, ids.size), rng.integers(0, 50, ids.size))
    elif kind == "delete":
        store.delete_posts(rng.choice(known, size=min(3, known.size), replace=False))
    else:
        store.set_takedown(rng.choice(known, size=min(4, known.size), replace=False), kind == "takedown")


def _check_reads(mirror: PostMirror, store: Store, rng: np.random.Generator, top: int) -> None:
    ids = rng.integers(-2, top + 3, 60)  # repeats, unknown and negative ids
    _assert_rows_equal(mirror.get_posts(ids), store.get_posts(ids), "get_posts")
    for _ in range(3):
        authors = rng.choice(14, size=int(rng.integers(0, 8)), replace=False)  # 12, 13 never post
        limit, cap = int(rng.integers(0, 30)), int(rng.integers(0, 6))
        since = None if rng.random() < 0.5 else int(rng.integers(0, 50))
        _assert_rows_equal(
            mirror.recent_posts_by_authors(authors, limit, cap, since=since),
            store.recent_posts_by_authors(authors, limit, cap, since=since),
            f"recent_posts_by_authors({authors.tolist()}, {limit}, {cap}, since={since})",
        )


def _check_random_changes(store: Store, merge_at: int) -> None:
    rng = np.random.default_rng(merge_at)
    next_id = [0]
    try:
        for _ in range(5):
            _random_change(store, rng, next_id)
        mirror = PostMirror(store, merge_at=merge_at)
        mirror.load()
        for _ in range(60):
            _random_change(store, rng, next_id)
            _check_reads(mirror, store, rng, next_id[0])
        assert mirror.fallbacks == 0 and mirror.hits > 0
        assert len(mirror) == store.fresh_posts(10_000).post_ids.size
    finally:
        store.close()


@pytest.mark.parametrize("merge_at", [1, 7, 10_000])
def test_mirror_reads_equal_store_reads_through_random_changes(tmp_path: Path, merge_at: int) -> None:
    _check_random_changes(open_store(tmp_path / "s.db"), merge_at)


def test_mirror_reads_equal_store_reads_on_postgres(pg_url: str) -> None:
    """The same on PostgreSQL, whose post sequence several servers share (merge threshold 7)."""
    _check_random_changes(open_store(pg_url), 7)


def test_mirror_sees_writes_of_another_store_handle_at_once(tmp_path: Path) -> None:
    """A post written by another process's handle is read by the next call, not after a poll."""
    path = tmp_path / "s.db"
    ours, theirs = open_store(path), open_store(path)
    try:
        theirs.add_posts([1, 2], [5, 5], [10, 20])
        mirror = PostMirror(ours)
        mirror.load()
        theirs.add_posts([3], [5], [30])
        theirs.delete_posts([2])
        assert mirror.recent_posts_by_authors([5], 10, 10).post_ids.tolist() == [3, 1]
        assert mirror.get_posts([2, 3]).author_ids.tolist() == [-1, 5]
    finally:
        ours.close()
        theirs.close()


def test_reads_go_to_the_store_until_loaded_and_while_another_thread_catches_up(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    try:
        store.add_posts([1], [5], [10])
        mirror = PostMirror(store)
        assert mirror.get_posts([1]).author_ids.tolist() == [5]  # not loaded: the store answered
        assert (mirror.hits, mirror.fallbacks) == (0, 1)
        mirror.start()
        assert mirror.wait_ready(30)
        store.add_posts([2], [5], [20])
        with mirror._lock:  # another request is catching up: this one must not wait for it
            done = threading.Event()
            out: list[list[int]] = []
            t = threading.Thread(
                target=lambda: (out.append(mirror.get_posts([2]).author_ids.tolist()), done.set())
            )
            t.start()
            assert done.wait(10)
        assert out == [[5]] and mirror.fallbacks == 2
        assert mirror.get_posts([2]).author_ids.tolist() == [5] and mirror.hits == 1
    finally:
        store.close()


def test_bad_author_ids_name_the_field(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    try:
        mirror = PostMirror(store)
        mirror.load()
        with pytest.raises(ValueError, match="author_ids"):
            mirror.recent_posts_by_authors([-1], 5, 5)
        with pytest.raises(ValueError, match="merge_at"):
            PostMirror(store, merge_at=0)
    finally:
        store.close()


def test_feeds_are_the_same_with_the_mirror_and_read_no_posts_from_the_store(service_factory) -> None:
    """A feed through the mirror equals the store-read feed, reads no post rows from the store, and a
    post deleted through another store handle is gone from the very next feed."""
    plain = service_factory(post_mirror=False)
    mirrored = service_factory(post_mirror=True)
    assert mirrored.post_mirror is not None and mirrored.post_mirror.wait_ready(60)
    users = [int(u) for u in plain.store.list_users(6)] + [987_654_321]  # and an unknown user
    calls = {"get_posts": 0, "recent_posts_by_authors": 0}
    store = mirrored.store
    for name in calls:
        real = getattr(store, name)

        def spy(*a, _real=real, _name=name, **k):
            calls[_name] += 1
            return _real(*a, **k)

        setattr(store, name, spy)
    for u in users:
        want, got = plain.feed(u, 10), mirrored.feed(u, 10)
        assert [i.post_id for i in got.items] == [i.post_id for i in want.items]
        assert [i.final_score for i in got.items] == pytest.approx(
            [i.final_score for i in want.items], rel=1e-6
        )
    # Catch-up reads the changed posts' rows from the store, never the feed's candidates.
    assert calls == {"get_posts": 0, "recent_posts_by_authors": 0}
    top = mirrored.feed(users[0], 10).items[0].post_id
    plain.store.delete_posts([top])  # the other service's handle on the same file
    assert top not in [i.post_id for i in mirrored.feed(users[0], 10).items]
    assert calls == {"get_posts": 1, "recent_posts_by_authors": 0}  # one catch-up read: the deleted post
    health = mirrored.health()["post_mirror"]
    assert health["ready"] and health["hits"] > 0 and health["posts"] == len(mirrored.post_mirror)
    assert plain.health()["post_mirror"] is None
