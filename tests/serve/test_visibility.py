"""Visibility (issue 14): reposts carry their original author and obey the viewer's blocks, mutes and
reverse blocks, in the feed and in /v1/retrieve."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_recsys.serve.api import create_app
from phoenix_recsys.serve.filters import Candidates, FilterConfig, FilterContext, apply_filters

AUTH = {"Authorization": "Bearer test-key-0123456789abcdef"}
ORIGINAL_AUTHOR, REPOSTER = 500, 501
ORIGINAL, REPOST = 70_000, 70_001


@pytest.fixture
def client(service_factory):
    c = TestClient(create_app(service_factory(max_k=1000)))  # a page holds the whole corpus
    yield c
    c.close()


def _viewer(client) -> int:
    svc = client.app.state.service
    return next(x for x in range(40) if len(svc.user_model_history(x)) >= 3)


def _feed(client, user: int, **body) -> dict:
    r = client.post("/v1/feed", json={"user_id": user, "k": 1000, **body})
    assert r.status_code == 200, r.text
    return r.json()


def _feed_ids(client, user: int) -> set[int]:
    return {int(i["post_id"]) for i in _feed(client, user)["items"]}


def _retrieve_ids(client, user: int) -> set[int]:
    # k above the corpus size: every indexed post the viewer may see comes back.
    r = client.post("/v1/retrieve", json={"user_id": user, "k": 1000, "exclude_seen": False})
    assert r.status_code == 200, r.text
    return {int(i["post_id"]) for i in r.json()["items"]}


def _post_repost(client, viewer: int) -> None:
    """An original by ORIGINAL_AUTHOR, reposted by REPOSTER whom the viewer follows (in-network)."""
    now = client.app.state.service.now()
    posts = [
        {"post_id": ORIGINAL, "author_id": ORIGINAL_AUTHOR, "created_at": now, "text": "original"},
        {"post_id": REPOST, "author_id": REPOSTER, "created_at": now, "repost_of": ORIGINAL},
    ]
    assert client.post("/v1/posts", json={"posts": posts}, headers=AUTH).status_code == 200
    assert client.put(f"/v1/users/{viewer}/follows/{REPOSTER}", headers=AUTH).status_code == 200


def test_a_repost_carries_its_original_author(client):
    u = _viewer(client)
    _post_repost(client, u)
    items = {int(i["post_id"]): i for i in _feed(client, u)["items"]}
    assert REPOST in items
    assert items[REPOST]["author_id"] == REPOSTER
    assert items[REPOST]["repost_of"] == ORIGINAL and items[REPOST]["original_author_id"] == ORIGINAL_AUTHOR
    r = client.post("/v1/retrieve", json={"user_id": u, "k": 1000, "exclude_seen": False}).json()
    hit = next(i for i in r["items"] if i["post_id"] == REPOST)
    assert hit["repost_of"] == ORIGINAL and hit["original_author_id"] == ORIGINAL_AUTHOR
    plain = next(i for i in r["items"] if i["post_id"] != REPOST and i["post_id"] != ORIGINAL)
    assert plain["repost_of"] is None and plain["original_author_id"] is None


@pytest.mark.parametrize("how", ["block", "mute", "reverse_block"])
def test_a_repost_of_a_hidden_author_is_absent_from_feed_and_retrieve(client, how):
    u = _viewer(client)
    _post_repost(client, u)
    assert REPOST in _feed_ids(client, u) and REPOST in _retrieve_ids(client, u)
    if how == "block":
        path = f"/v1/users/{u}/blocks/{ORIGINAL_AUTHOR}"
    elif how == "mute":
        path = f"/v1/users/{u}/mutes/{ORIGINAL_AUTHOR}"
    else:  # the original's author blocked the viewer
        path = f"/v1/users/{ORIGINAL_AUTHOR}/blocks/{u}"
    assert client.put(path, headers=AUTH).status_code == 200
    feed = _feed(client, u)
    got = {int(i["post_id"]) for i in feed["items"]}
    assert REPOST not in got and ORIGINAL not in got
    assert feed["filtered"]["blocked_or_muted_author"] >= 1
    assert got  # the rest of the feed is still served
    ret = _retrieve_ids(client, u)
    assert ret and REPOST not in ret and ORIGINAL not in ret
    # Undone, the repost is back (nothing was deleted, only hidden from this viewer).
    assert client.delete(path, headers=AUTH).status_code == 200
    assert REPOST in _feed_ids(client, u)


def test_a_repost_of_a_post_the_store_lacks_is_not_served(client):
    u = _viewer(client)
    now = client.app.state.service.now()
    body = {"posts": [{"post_id": REPOST, "author_id": REPOSTER, "created_at": now, "repost_of": 999_999}]}
    assert client.post("/v1/posts", json=body, headers=AUTH).status_code == 200
    client.put(f"/v1/users/{u}/follows/{REPOSTER}", headers=AUTH)
    assert REPOST not in _feed_ids(client, u) and REPOST not in _retrieve_ids(client, u)


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 9), st.integers(-1, 9)), min_size=0, max_size=30
    ),  # (author, original author or -1)
    hidden=st.sets(st.integers(0, 9), max_size=5),
)
def test_the_hidden_author_filter_matches_its_oracle(rows, hidden):
    n = len(rows)
    authors = np.array([a for a, _ in rows], np.int64)
    orig = np.array([o for _, o in rows], np.int64)
    c = Candidates(
        post_ids=np.arange(n, dtype=np.int64), author_ids=authors, created_at=np.zeros(n, np.int64),
        source="in_network", repost_of=np.where(orig >= 0, 1_000, -1) + np.arange(n), original_author_ids=orig,
    )  # fmt: skip
    ctx = FilterContext(viewer_id=99, blocked_or_muted_author_ids=sorted(hidden))
    kept, report = apply_filters(c, ctx, FilterConfig(max_age_s=None))
    expect = [i for i, (a, o) in enumerate(rows) if a not in hidden and o not in hidden]
    assert kept.post_ids.tolist() == expect
    assert report["blocked_or_muted_author"] == n - len(expect)


# -- deletion and takedown -------------------------------------------------------------------------
def _count(svc, table: str) -> int:
    return int(svc.store._fetchall(f"SELECT COUNT(*) FROM {table}")[0][0])


def _a_feed_post(client, u: int) -> int:
    """A post of u's feed that is not a repost and has engagement rows (so history keeping shows)."""
    svc = client.app.state.service
    for it in _feed(client, u)["items"]:
        p = int(it["post_id"])
        if it["repost_of"] is None and svc.store._fetchall("SELECT COUNT(*) FROM engagements WHERE post_id = ?", (p,))[0][0]:
            return p
    raise AssertionError("no engaged post in the feed")


def test_a_deleted_post_and_its_reposts_leave_feed_retrieve_index_and_cold_start_at_once(client):
    svc = client.app.state.service
    u = _viewer(client)
    p = _a_feed_post(client, u)
    now = svc.now()
    repost = {"post_id": REPOST, "author_id": REPOSTER, "created_at": now, "repost_of": p}
    assert client.post("/v1/posts", json={"posts": [repost]}, headers=AUTH).status_code == 200
    client.put(f"/v1/users/{u}/follows/{REPOSTER}", headers=AUTH)
    assert {p, REPOST} <= _feed_ids(client, u) | _retrieve_ids(client, u)
    engagements, posts = _count(svc, "engagements"), _count(svc, "posts")
    r = client.delete(f"/v1/posts/{p}", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"post_id": p, "state": "deleted", "changed": True}
    assert not {p, REPOST} & _feed_ids(client, u)
    assert not {p, REPOST} & _retrieve_ids(client, u)
    assert p not in svc.index and REPOST in svc.index  # the repost is hidden at hydration
    cold = svc.feed(10_000, 1000)  # an unknown user: popular + fresh
    assert cold.cold_start and p not in {it.post_id for it in cold.items}
    assert p not in svc.cold_start.candidates().post_ids
    # Kept: the row (text erased) and every engagement on it; the history endpoint still lists them.
    assert _count(svc, "engagements") == engagements and _count(svc, "posts") == posts
    assert svc.store._fetchall("SELECT text, deleted_at FROM posts WHERE post_id = ?", (p,))[0][0] is None
    # Idempotent: again 200, unchanged; an unknown post 404.
    again = client.delete(f"/v1/posts/{p}", headers=AUTH)
    assert again.status_code == 200 and again.json()["changed"] is False
    assert client.delete("/v1/posts/987654321", headers=AUTH).status_code == 404
    # A deleted id is not reused, and no new event may name it.
    r = client.post("/v1/posts", json={"posts": [{"post_id": p, "author_id": 3}]}, headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "posts", 0, "post_id"]
    r = client.post("/v1/events", json={"events": [{"user_id": u, "post_id": p, "actions": ["favorite"]}]}, headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "events", 0, "post_id"]


def test_a_post_deleted_elsewhere_is_dropped_before_this_index_catches_up(service_factory):
    """Another server's delete reaches this one's store at once; its follower only later."""
    svc = service_factory(index_follow=False, max_k=1000)
    u = next(x for x in range(40) if len(svc.user_model_history(x)) >= 3)
    p = next(it.post_id for it in svc.feed(u, 1000).items)
    assert svc.store.delete_posts([p]).tolist() == [True]  # as a second server would, no local sync
    assert p in svc.index  # not applied here yet
    assert p not in {it.post_id for it in svc.feed(u, 1000).items}
    assert p not in {it.post_id for it in svc.retrieve(1000, user_id=u, exclude_seen=False).items}
    svc.follower.sync()
    assert p not in svc.index


def test_takedown_needs_admin_hides_the_post_and_is_reversible(service_factory):
    backend = "backend-key-0123456789abcdef"
    svc = service_factory(max_k=1000, api_keys=({"name": "backend", "key": backend, "scopes": ["read", "write"]},))
    with TestClient(create_app(svc)) as c:
        u = _viewer(c)
        p = _a_feed_post(c, u)
        r = c.post(f"/v1/posts/{p}/takedown", headers={"Authorization": f"Bearer {backend}"})
        assert r.status_code == 403  # a write key may delete, not moderate
        r = c.post(f"/v1/posts/{p}/takedown", headers=AUTH)
        assert r.status_code == 200 and r.json() == {"post_id": p, "state": "taken_down", "changed": True}
        assert c.post(f"/v1/posts/{p}/takedown", headers=AUTH).json()["changed"] is False
        assert p not in _feed_ids(c, u) and p not in _retrieve_ids(c, u) and p not in svc.index
        # An upsert does not lift it.
        r = c.post("/v1/posts", json={"posts": [{"post_id": p, "author_id": 3}]}, headers=AUTH)
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == "post_removed"
        r = c.delete(f"/v1/posts/{p}/takedown", headers=AUTH)
        assert r.status_code == 200 and r.json() == {"post_id": p, "state": "live", "changed": True}
        assert p in svc.index and p in _retrieve_ids(c, u)
        # Deletion wins over a takedown and cannot be lifted.
        c.post(f"/v1/posts/{p}/takedown", headers=AUTH)
        assert c.delete(f"/v1/posts/{p}", headers=AUTH).json()["state"] == "deleted"
        r = c.delete(f"/v1/posts/{p}/takedown", headers=AUTH)
        assert r.json() == {"post_id": p, "state": "deleted", "changed": False}
        assert p not in svc.index and c.post("/v1/posts/424242/takedown", headers=AUTH).status_code == 404
