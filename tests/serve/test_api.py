"""Tests for serve.api (in-process `TestClient`) and the `serve` / `feed` commands (server call patched)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from phoenix_recsys.cli import serve as serve_cli
from phoenix_recsys.cli.main import app as cli_app
from phoenix_recsys.data.examples import build_ranking_examples
from phoenix_recsys.serve.api import create_app
from phoenix_recsys.serve.pipeline import ModelRuntime
from phoenix_recsys.train.inference import predict_ranker

AUTH_KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {AUTH_KEY}"}


@pytest.fixture
def make_client(service_factory):
    """`make_client(**settings)`: a TestClient over a fresh seeded service."""
    clients = []

    def make(**overrides):
        c = TestClient(create_app(service_factory(**overrides)))
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def client(make_client):
    return make_client()


def _active_user(client) -> int:
    svc = client.app.state.service
    for u in range(40):
        if len(svc.user_model_history(u)) >= 3 and svc.store.followed_authors(u).size:
            return u
    raise AssertionError("no active user")


def _n_events(client, user: int) -> int:
    r = client.get(f"/v1/users/{user}/events", params={"limit": 1000})
    assert r.status_code == 200
    return len(r.json()["events"])


def _detail(r) -> dict:
    body = r.json()
    assert isinstance(body["detail"], list), body
    return body["detail"][0]


# -- reads ---------------------------------------------------------------------------------------
def test_feed_returns_explained_items(client):
    u = _active_user(client)
    r = client.post("/v1/feed", json={"user_id": u, "k": 15})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] == u and not body["cold_start"] and len(body["items"]) == 15
    it = body["items"][0]
    assert set(it) >= {"source", "probabilities", "weighted_score", "offset_score", "diversity_multiplier",
                       "oon_multiplier", "final_score", "top_contributions", "in_network", "age_s"}  # fmt: skip
    assert set(it["probabilities"]) == set(client.app.state.service.vocab.names)
    assert it["final_score"] == pytest.approx(it["offset_score"] * it["diversity_multiplier"] * it["oon_multiplier"])


def test_openapi_documents_every_route(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/v1/feed", "/v1/rank", "/v1/retrieve", "/v1/events", "/v1/posts",
              "/v1/users/{user_id}/{relation}/{author_id}", "/healthz", "/metrics"):  # fmt: skip
        assert p in paths, p
    assert "put" in paths["/v1/users/{user_id}/{relation}/{author_id}"]
    assert "delete" in paths["/v1/users/{user_id}/{relation}/{author_id}"]


def test_unknown_user_gets_cold_start_not_an_error(client):
    r = client.post("/v1/feed", json={"user_id": 123_456_789, "k": 10})
    assert r.status_code == 200
    body = r.json()
    assert body["cold_start"] and len(body["items"]) == 10
    assert {i["source"] for i in body["items"]} <= {"popular", "fresh"}


def test_user_listing_recent_and_paged_by_id(client):
    store = client.app.state.service.store
    with_events = store.list_users(10_000).tolist()
    assert len(with_events) > 3
    r = client.get("/v1/users", params={"limit": 3})
    assert r.status_code == 200, r.text
    recent = r.json()
    assert recent["order"] == "recent" and len(recent["users"]) == 3 and recent["next_after"] is None
    last = [u["last_active"] for u in recent["users"]]
    assert last == sorted(last, reverse=True)
    for u in recent["users"]:  # last_active is the newest stored event of that user
        assert client.get(f"/v1/users/{u['user_id']}/events", params={"limit": 1}).json()["events"][0][
            "timestamp"] == u["last_active"]
    got, after = [], None
    while True:
        body = client.get("/v1/users", params={"order": "id", "limit": 7, **({"after": after} if after is not None
                                                                            else {})}).json()
        got += [u["user_id"] for u in body["users"]]
        if body["next_after"] is None:
            break
        after = body["next_after"]
    assert got == with_events
    for params, loc in [({"limit": 1001}, ["query", "limit"]), ({"limit": 0}, ["query", "limit"]),
                        ({"order": "name"}, ["query", "order"]), ({"after": 3}, ["query", "after"])]:
        r = client.get("/v1/users", params=params)
        assert r.status_code == 422 and _detail(r)["loc"] == loc, (params, r.text)


def test_rank_equals_offline_model(client, world, runtime):
    cfg = runtime.config
    ex = build_ranking_examples(world, cfg.hash_config, history_len=cfg.history_seq_len, max_candidates=8, split="all")
    idx = [i for i in range(len(ex)) if (ex.history_event_rows[i] >= 0).sum() >= 1][:4]
    offline = predict_ranker(runtime.bundle.ranker, ex.take(np.array(idx)))
    labels, names = world.action_matrix(), runtime.vocab.names
    ev = {c: world.column(c) for c in ("post_id", "author_id", "product_surface")}
    w = np.array([client.app.state.service.scoring.weights.get(n, 0.0) for n in names])
    for row, i in enumerate(idx):
        hrows = ex.history_event_rows[i][ex.history_event_rows[i] >= 0]
        crows = ex.candidate_event_rows[i][ex.candidate_mask[i]]
        body = {
            "user_id": int(ex.user_ids[i]),
            "history": [
                {"post_id": int(ev["post_id"][r]), "author_id": int(ev["author_id"][r]),
                 "product_surface": int(ev["product_surface"][r]),
                 "actions": {n: float(v) for n, v in zip(names, labels[r], strict=True) if v > 0}}
                for r in hrows
            ],
            "candidates": [
                {"post_id": int(ev["post_id"][r]), "product_surface": int(ev["product_surface"][r]), "in_network": bool(f)}
                for r, f in zip(crows, ex.batch.candidate_in_network[i][ex.candidate_mask[i]], strict=True)
            ],
        }  # fmt: skip
        r = client.post("/v1/rank", json=body)
        assert r.status_code == 200, r.text
        got = np.array([[c["probabilities"][n] for n in names] for c in r.json()["candidates"]])
        want = offline[row][ex.candidate_mask[i]]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose([c["weighted_score"] for c in r.json()["candidates"]], want @ w, rtol=1e-5, atol=1e-5)


def test_rank_from_store_history_and_retrieve(client):
    u = _active_user(client)
    r = client.post("/v1/rank", json={"user_id": u, "candidates": [{"post_id": p} for p in (5, 3, 9)]})
    assert r.status_code == 200
    body = r.json()
    assert [c["post_id"] for c in body["candidates"]] == [5, 3, 9] and body["history_length"] > 0
    assert sorted(body["ranking"]) == [0, 1, 2]
    r = client.post("/v1/retrieve", json={"user_id": u, "k": 25})
    assert r.status_code == 200 and len(r.json()["items"]) == 25
    seen = set(client.app.state.service.store.seen_posts(u).tolist())
    assert not seen & {i["post_id"] for i in r.json()["items"]}
    r = client.post("/v1/retrieve", json={"history": [{"post_id": 5, "actions": ["favorite"]}], "k": 5})
    assert r.status_code == 200 and r.json()["user_id"] is None


# -- behaviour through the API -------------------------------------------------------------------
def test_event_changes_the_next_feed(client):
    u = _active_user(client)
    first = client.post("/v1/feed", json={"user_id": u, "k": 10}).json()
    top = first["items"][0]["post_id"]
    r = client.post("/v1/events", headers=AUTH, json={"events": [{"user_id": u, "post_id": top, "actions": ["favorite"]}]})
    assert r.status_code == 200 and r.json() == {"accepted": 1, "duplicates": 0, "engagements": 1, "impressions": 0}
    second = client.post("/v1/feed", json={"user_id": u, "k": 10}).json()
    assert second["history_length"] == first["history_length"] + 1
    assert top not in {i["post_id"] for i in second["items"]}


def test_block_removes_author_and_delete_restores(client):
    u = _active_user(client)
    items = client.post("/v1/feed", json={"user_id": u, "k": 200}).json()["items"]
    a = items[0]["author_id"]
    r = client.put(f"/v1/users/{u}/blocks/{a}", headers=AUTH)
    assert r.status_code == 200 and r.json()["changed"] and r.json()["active"]
    assert client.put(f"/v1/users/{u}/blocks/{a}", headers=AUTH).json()["changed"] is False  # idempotent
    after = client.post("/v1/feed", json={"user_id": u, "k": 200}).json()["items"]
    assert a not in {i["author_id"] for i in after}
    assert client.delete(f"/v1/users/{u}/blocks/{a}", headers=AUTH).json()["changed"]
    back = client.post("/v1/feed", json={"user_id": u, "k": 200}).json()["items"]
    assert a in {i["author_id"] for i in back}
    assert client.put(f"/v1/users/{u}/likes/{a}", headers=AUTH).status_code == 422  # not a relation
    r = client.put(f"/v1/users/{u}/follows/{u}", headers=AUTH)
    assert r.status_code == 422 and _detail(r)["loc"] == ["path", "author_id"]


def test_new_post_becomes_retrievable(client):
    svc = client.app.state.service
    u = _active_user(client)
    r = client.post("/v1/posts", headers=AUTH, json={"posts": [{"post_id": 90_001, "author_id": 7, "text": "new"}]})
    assert r.status_code == 200 and r.json() == {"accepted": 1, "indexed": True}
    k = len(svc.index)
    items = client.post("/v1/retrieve", json={"user_id": u, "k": k, "exclude_seen": False}).json()["items"]
    assert 90_001 in {i["post_id"] for i in items}
    r = client.post("/v1/events", headers=AUTH, json={"events": [{"user_id": u, "post_id": 90_001, "actions": {"click": 1}}]})
    assert r.status_code == 200  # the new post is a valid event target at once


# -- refusals: 422 names the field, 401 without the key, nothing half-written ---------------------
@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/v1/feed", {"user_id": "seven", "k": 5}, ["body", "user_id"]),
        ("/v1/feed", {"user_id": 1, "k": 0}, ["body", "k"]),
        ("/v1/feed", {"user_id": 1, "k": 5, "colour": 1}, ["body", "colour"]),
        ("/v1/rank", {"user_id": 1}, ["body", "candidates"]),
        ("/v1/rank", {"user_id": 1, "candidates": [{"post_id": -4}]}, ["body", "candidates", 0, "post_id"]),
        ("/v1/rank", {"candidates": [{"post_id": 1}]}, ["body"]),
        ("/v1/rank", {"user_id": 1, "candidates": [{"post_id": 1}, {"post_id": 888_888}]}, ["body", "candidates", 1, "author_id"]),
        ("/v1/retrieve", {"user_id": 1, "k": 1001}, ["body", "k"]),
    ],
)
def test_invalid_bodies_name_the_field(client, path, body, loc):
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert _detail(r)["loc"][: len(loc)] == loc


def test_limits_are_422_with_the_limit(client):
    r = client.post("/v1/feed", json={"user_id": 1, "k": 201})
    assert r.status_code == 422
    d = _detail(r)
    assert d["loc"] == ["body", "k"] and d["type"] == "limit_exceeded" and d["ctx"] == {"limit": 200} and "200" in d["msg"]
    r = client.post("/v1/rank", json={"user_id": 1, "candidates": [{"post_id": 1}] * 5001})
    assert r.status_code == 422
    d = _detail(r)
    assert d["loc"] == ["body", "candidates"] and d["ctx"] == {"limit": 5000} and "5000" in d["msg"]
    r = client.get("/v1/users/1/events", params={"limit": 1001})
    assert r.status_code == 422 and _detail(r)["loc"] == ["query", "limit"] and _detail(r)["ctx"] == {"limit": 1000}


def test_writes_need_the_key_and_refusals_write_nothing(client):
    u = _active_user(client)
    n = _n_events(client, u)
    posts = client.app.state.service.store.num_posts()
    ev = {"events": [{"user_id": u, "post_id": 3, "actions": ["favorite"]}]}
    for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": AUTH_KEY}):
        r = client.post("/v1/events", json=ev, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert client.post("/v1/posts", json={"posts": [{"post_id": 91_000, "author_id": 1}]}, headers=headers).status_code == 401
        assert client.put(f"/v1/users/{u}/blocks/3", headers=headers).status_code == 401
    # One bad event in a batch refuses the whole batch.
    bad = {"events": [ev["events"][0], {"user_id": u, "post_id": 999_999, "actions": ["favorite"]}]}
    r = client.post("/v1/events", json=bad, headers=AUTH)
    assert r.status_code == 422 and _detail(r)["loc"] == ["body", "events", 1, "post_id"]
    r = client.post("/v1/events", json={"events": [{"user_id": u, "post_id": 3, "actions": ["favourite"]}]}, headers=AUTH)
    assert r.status_code == 422 and _detail(r)["loc"] == ["body", "events", 0, "actions", "favourite"]
    assert _n_events(client, u) == n
    assert client.app.state.service.store.num_posts() == posts
    assert 3 not in client.app.state.service.store.blocked_or_muted_authors(u)
    assert client.post("/v1/events", json=ev, headers=AUTH).status_code == 200
    assert _n_events(client, u) == n + 1


def test_read_only_and_protected_reads(make_client):
    ro = make_client(writes_enabled=False, api_key=None)
    r = ro.post("/v1/events", json={"events": [{"user_id": 1, "post_id": 3, "actions": ["favorite"]}]}, headers=AUTH)
    assert r.status_code == 403
    assert ro.post("/v1/feed", json={"user_id": 1, "k": 3}).status_code == 200
    locked = make_client(public_reads=False)
    assert locked.post("/v1/feed", json={"user_id": 1, "k": 3}).status_code == 401
    assert locked.post("/v1/feed", json={"user_id": 1, "k": 3}, headers=AUTH).status_code == 200
    assert locked.get("/healthz").status_code == 200  # load balancers need no key


def test_metrics_count_requests_latency_and_errors(client):
    from prometheus_client.parser import text_string_to_metric_families

    client.post("/v1/feed", json={"user_id": 1, "k": 3})
    client.post("/v1/feed", json={"user_id": 1, "k": 0})
    client.put("/v1/users/1/blocks/2")
    text = client.get("/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }  # parsed by prometheus-client's own parser

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("phoenix_http_requests_total", method="POST", route="/v1/feed", status="200") == 1
    assert value("phoenix_http_requests_total", method="POST", route="/v1/feed", status="422") == 1
    route = "/v1/users/{user_id}/{relation}/{author_id}"
    assert value("phoenix_http_errors_total", method="PUT", route=route, status_class="4xx") == 1
    assert value("phoenix_http_request_duration_seconds_bucket", method="POST", route="/v1/feed", le="+Inf") == 2
    assert value("phoenix_feed_stage_seconds_count", stage="rank") == 1
    assert value("phoenix_index_posts") == 300
    assert "# TYPE phoenix_http_request_duration_seconds histogram" in text


def test_health_and_oversized_bodies(client):
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["index_posts"] == 300 and h["writes_enabled"]
    r = client.post("/v1/feed", content=b"{}", headers={"content-length": str(64 * 1024 * 1024), "content-type": "application/json"})
    assert r.status_code == 413


# -- the commands (server call patched) ----------------------------------------------------------
@pytest.fixture
def cli_env(monkeypatch, runtime):
    # Reuse the session's compiled models; the commands would otherwise load and compile them again.
    monkeypatch.setattr(ModelRuntime, "load", classmethod(lambda cls, *a, **k: runtime))
    for var in ("PHOENIX_API_KEY", "PHOENIX_INSECURE_DEV", "PHOENIX_WRITES_ENABLED"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_serve_refuses_writes_without_a_key(cli_env, bundle_dir, world, tmp_path):
    called = []
    cli_env.setattr(serve_cli, "run_server", lambda app, **kw: called.append(kw))
    args = ["serve", str(bundle_dir), "--data", str(world.path), "--store", str(tmp_path / "s.sqlite")]
    r = CliRunner().invoke(cli_app, args)
    assert r.exit_code == 1 and "PHOENIX_API_KEY" in r.output and not called
    cli_env.setenv("PHOENIX_API_KEY", AUTH_KEY)
    cli_env.setenv("PHOENIX_INDEX_DIR", str(tmp_path / "index"))
    cli_env.setenv("PHOENIX_WARMUP", "false")
    r = CliRunner().invoke(cli_app, [*args, "--port", "8123"])
    assert r.exit_code == 0, r.output
    assert called == [{"host": "127.0.0.1", "port": 8123, "log_level": "info"}]
    cli_env.delenv("PHOENIX_API_KEY")
    for flags in (["--read-only"], ["--insecure-dev"]):
        r = CliRunner().invoke(cli_app, [*args, *flags])
        assert r.exit_code == 0, r.output
    assert len(called) == 3


def test_feed_command_prints_json_and_table(cli_env, bundle_dir, world, tmp_path):
    args = ["feed", str(bundle_dir), "--data", str(world.path), "--store", str(tmp_path / "s.sqlite"), "--user", "3", "--k", "4"]
    cli_env.setenv("PHOENIX_INDEX_DIR", str(tmp_path / "index"))
    r = CliRunner().invoke(cli_app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    body = json.loads(r.output)
    assert body["user_id"] == 3 and len(body["items"]) == 4
    r = CliRunner().invoke(cli_app, args)
    assert r.exit_code == 0 and "For You: user 3" in r.output and "history" in r.output
    r = CliRunner().invoke(cli_app, [*args[:-2], "--k", "999"])
    assert r.exit_code == 1 and "200" in r.output


def test_demo_feed_step_explains_items(cli_env, bundle_dir, world, tmp_path):
    from rich.console import Console

    out = Console(record=True, width=120)
    cli_env.setattr(serve_cli, "console", out)
    serve_cli.print_feed_for_demo(bundle_dir, world.path, tmp_path / "demo.sqlite", k=5)
    text = out.export_text()
    assert "For You: user" in text and "final" in text and "x diversity" in text
    assert text.count("█") > 0  # the per-action bars
