"""A feed server on PostgreSQL rides out a database restart (issue 15): 503 while the database is
down, serving again once it is back, with no restart of the service.

Uses its own throwaway PostgreSQL cluster (it is stopped and started here), so other tests never
see the outage; skipped with the reason when PostgreSQL is not installed.
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from phoenix_recsys.serve.api import create_app
from phoenix_recsys.serve.store import StoreUnavailableError

from .conftest import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _feed(client: TestClient, user: int):
    t0 = time.monotonic()
    r = client.post("/v1/feed", json={"user_id": user, "k": 5})
    return r, time.monotonic() - t0


def test_database_restart_gives_503_then_serves_again_without_a_service_restart(own_pg_server, service_factory):
    svc = service_factory(store_path=own_pg_server.create_database("restart"))
    user = next(u for u in range(40) if len(svc.user_model_history(u)) >= 3 and svc.store.followed_authors(u).size)
    post = int(svc.store.fresh_posts(1).post_ids[0])
    with TestClient(create_app(svc)) as client:
        r, _ = _feed(client, user)
        assert r.status_code == 200 and r.json()["items"]

        own_pg_server.halt()  # fast shutdown: every pooled session is cut, new connections are refused
        for _ in range(3):
            r, took = _feed(client, user)
            assert r.status_code == 503, r.text
            assert r.json()["detail"]["type"] == "store_unavailable"
            assert r.headers["Retry-After"] == "1"
            assert took < 5.0  # answered promptly, not after a 30 s pool wait
        w = client.post("/v1/events", json={"events": [{"user_id": user, "post_id": post, "actions": {"favorite": 1}}]},
                        headers=AUTH)  # fmt: skip
        assert w.status_code == 503 and w.json()["detail"]["type"] == "store_unavailable"
        assert client.get("/readyz").status_code == 503  # out of the balancer ...
        health = client.get("/healthz")  # ... but alive: a liveness probe must not restart it
        assert health.status_code == 200 and health.json()["status"] == "store_unavailable"
        with pytest.raises(StoreUnavailableError, match="unavailable"):
            svc.store.followed_authors(user)

        own_pg_server.resume()
        deadline = time.monotonic() + 15.0
        while True:
            r, _ = _feed(client, user)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            assert r.status_code == 503, r.text
            time.sleep(0.2)
        assert r.status_code == 200 and r.json()["items"], r.text
        assert client.get("/readyz").status_code == 200
        assert client.get("/healthz").json()["status"] == "ok"
        w = client.post("/v1/events", json={"events": [{"user_id": user, "post_id": post, "actions": {"favorite": 1}}]},
                        headers=AUTH)  # fmt: skip
        assert w.status_code == 200, w.text
        assert svc.store.get_history(user, 1).post_ids.tolist() == [post]
