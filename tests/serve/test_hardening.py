"""Hardening of the write and read paths (issue 14): idempotent events, post upserts, visibility."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from phoenix_recsys.serve.api import create_app

AUTH_KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {AUTH_KEY}"}


@pytest.fixture
def client(service_factory):
    c = TestClient(create_app(service_factory()))
    yield c
    c.close()


def _n_events(client, user: int) -> int:
    r = client.get(f"/v1/users/{user}/events", params={"limit": 1000})
    assert r.status_code == 200
    return len(r.json()["events"])


def _n_seen(client, user: int) -> int:
    return int(client.app.state.service.store.seen_posts(user).size)


def test_replayed_events_with_the_same_ids_are_counted_once(client):
    u = 7
    n0, seen0 = _n_events(client, u), _n_seen(client, u)
    body = {
        "events": [
            {"user_id": u, "post_id": 3, "actions": ["favorite"], "event_id": "a-1"},
            {"user_id": u, "post_id": 4, "actions": ["favorite"], "event_id": "a-2"},
            {"user_id": u, "post_id": 5, "actions": [], "event_id": "imp-1"},  # an impression
            {"user_id": u, "post_id": 6, "actions": ["favorite"]},  # no id: never deduplicated
        ]
    }
    r = client.post("/v1/events", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 4 and r.json()["duplicates"] == 0
    assert _n_events(client, u) == n0 + 3
    r = client.post("/v1/events", json=body, headers=AUTH)  # the client's retry
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 1, "duplicates": 3, "engagements": 1, "impressions": 0}
    assert _n_events(client, u) == n0 + 4
    assert _n_seen(client, u) >= seen0
    # The id is per user: another user may use the same id.
    r = client.post("/v1/events", json={"events": [{"user_id": u + 1, "post_id": 3, "actions": ["favorite"],
                                                      "event_id": "a-1"}]}, headers=AUTH)  # fmt: skip
    assert r.json()["duplicates"] == 0
    # A repeat inside one request is a duplicate of its first occurrence.
    ev = {"user_id": u, "post_id": 3, "actions": ["favorite"], "event_id": "b-1"}
    r = client.post("/v1/events", json={"events": [ev, ev]}, headers=AUTH)
    assert r.json()["accepted"] == 1 and r.json()["duplicates"] == 1


def test_a_refused_request_claims_no_event_id(client):
    u = 9
    n0 = _n_events(client, u)
    good = {"user_id": u, "post_id": 3, "actions": ["favorite"], "event_id": "c-1"}
    bad = {"user_id": u, "post_id": 999_999, "actions": ["favorite"], "event_id": "c-2"}
    assert client.post("/v1/events", json={"events": [good, bad]}, headers=AUTH).status_code == 422
    r = client.post("/v1/events", json={"events": [good]}, headers=AUTH)  # retried without the bad one
    assert r.json()["duplicates"] == 0 and _n_events(client, u) == n0 + 1


@pytest.mark.parametrize("event_id", ["", "x" * 129, "has space", "é"])
def test_bad_event_ids_are_refused_naming_the_field(client, event_id):
    ev = {"user_id": 1, "post_id": 3, "actions": ["favorite"], "event_id": event_id}
    r = client.post("/v1/events", json={"events": [ev]}, headers=AUTH)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "events", 0, "event_id"]


def test_the_same_post_id_twice_is_an_upsert_latest_write_wins(client):
    store = client.app.state.service.store
    n = store.num_posts()
    seq = store.post_seq()
    for author, text in ((11, "first"), (12, "second")):
        r = client.post("/v1/posts", json={"posts": [{"post_id": 80_000, "author_id": author, "text": text}]},
                        headers=AUTH)  # fmt: skip
        assert r.status_code == 200, r.text
    got = store.get_posts([80_000])
    assert store.num_posts() == n + 1
    assert int(got.author_ids[0]) == 12 and got.text[0] == "second"
    assert store.post_seq() == seq + 2  # both writes are in the post sequence (followers re-read it)


def _feed_authors(client, user: int) -> set[int]:
    r = client.post("/v1/feed", json={"user_id": user, "k": 30})
    assert r.status_code == 200, r.text
    return {int(it["author_id"]) for it in r.json()["items"]}


def test_an_author_who_blocked_the_viewer_is_absent_from_feed_and_retrieve(client):
    svc = client.app.state.service
    u = next(x for x in range(40) if len(svc.user_model_history(x)) >= 3)
    authors = _feed_authors(client, u)
    assert authors
    a = sorted(authors)[0]
    assert svc.store.block(a, u)  # the author blocks the viewer (reverse block)
    assert a not in _feed_authors(client, u)
    r = client.post("/v1/retrieve", json={"user_id": u, "k": 200, "exclude_seen": False})
    assert r.status_code == 200, r.text
    got = {int(i["author_id"]) for i in r.json()["items"]}
    assert got and a not in got


def test_retrieve_honours_the_viewers_blocks(client):
    svc = client.app.state.service
    u = next(x for x in range(40) if len(svc.user_model_history(x)) >= 3)
    body = {"user_id": u, "k": 200, "exclude_seen": False}
    before = {int(i["author_id"]) for i in client.post("/v1/retrieve", json=body).json()["items"]}
    a = sorted(before)[0]
    r = client.put(f"/v1/users/{u}/blocks/{a}", headers=AUTH)
    assert r.status_code == 200, r.text
    after = {int(i["author_id"]) for i in client.post("/v1/retrieve", json=body).json()["items"]}
    assert after and a not in after


def test_a_full_disk_is_a_503_and_writes_nothing(client, monkeypatch):
    store = client.app.state.service.store
    n, seq = store.num_posts(), store.post_seq()
    orig = store._conn

    def full_conn():
        # A real SQLITE_FULL: the file may not grow past its current size on this connection.
        c = orig()
        c.execute(f"PRAGMA max_page_count = {c.execute('PRAGMA page_count').fetchone()[0]}")
        return c

    monkeypatch.setattr(store, "_conn", full_conn)
    posts = [{"post_id": 70_000 + i, "author_id": 1, "text": "x" * 5000} for i in range(200)]
    r = client.post("/v1/posts", json={"posts": posts}, headers=AUTH)
    assert r.status_code == 503, r.text
    assert r.json()["detail"]["type"] == "store_unavailable" and "full" in r.json()["detail"]["msg"]
    assert "Traceback" not in r.text
    monkeypatch.setattr(store, "_conn", orig)
    assert store.num_posts() == n and store.post_seq() == seq


def test_a_read_only_store_is_a_503_and_writes_nothing(client, monkeypatch):
    # A real SQLITE_READONLY from SQLite itself (`query_only`): what a store file that became read-only
    # (remounted, permissions) gives. chmod cannot stand in: tests run as root, who writes anyway.
    store = client.app.state.service.store
    n, seq = store.num_posts(), store.post_seq()
    orig = store._conn

    def read_only_conn():
        c = orig()
        c.execute("PRAGMA query_only = ON")
        return c

    monkeypatch.setattr(store, "_conn", read_only_conn)
    try:
        r = client.post("/v1/posts", json={"posts": [{"post_id": 71_000, "author_id": 1, "text": "x"}]},
                        headers=AUTH)
        e = client.post("/v1/events", json={"events": [{"user_id": 1, "post_id": 1, "actions": {"favorite": 1.0}}]},
                        headers=AUTH)
    finally:
        monkeypatch.setattr(store, "_conn", orig)
        orig().execute("PRAGMA query_only = OFF")  # a pooled connection is reused by later requests
    for resp in (r, e):
        assert resp.status_code == 503, resp.text
        detail = resp.json()["detail"]
        assert detail["type"] == "store_unavailable" and "readonly" in detail["msg"] and "Traceback" not in resp.text
    assert store.num_posts() == n and store.post_seq() == seq
