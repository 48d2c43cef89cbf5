"""The access model: keys with scopes, rotation without restart, rate limits (issue 14).

One real `serve` process (keys from a --config file, reloaded by SIGHUP) plus in-process checks.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from phoenix_recsys.serve.api import create_app
from phoenix_recsys.serve.api.access import KeyRing, RateLimiter
from phoenix_recsys.serve.settings import ApiKey, Scope, ServeSettings, SettingsError, hash_key, load_settings
from phoenix_recsys.testing.net import free_port

READ_KEY, OLD_KEY, NEW_KEY, ADMIN_KEY = ("reader-" + "r" * 20, "writer-old-" + "o" * 20, "writer-new-" + "n" * 20,
                                         "admin-" + "a" * 20)  # fmt: skip
START_TIMEOUT_S = 180.0


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _keys_file(path: Path, writer_key: str, **extra: object) -> None:
    path.write_text(json.dumps({
        "api_keys": [
            {"name": "reader", "key": READ_KEY, "scopes": ["read"]},
            {"name": "writer", "key": writer_key, "scopes": ["read", "write"]},
            {"name": "ops", "sha256": hash_key(ADMIN_KEY), "scopes": ["admin"]},
        ],
        **extra,
    }))  # fmt: skip


@pytest.fixture(scope="module")
def keyed_server(bundle_dir, world, tmp_path_factory, jax_cache_dir, runtime):
    """A `serve` process whose only keys come from a config file (no PHOENIX_* in its environment)."""
    work = tmp_path_factory.mktemp("access")
    cfg = work / "settings.json"
    # A slow refill and a burst no other step here exhausts: only the hammering step below hits it.
    _keys_file(cfg, OLD_KEY, rate_limit_per_s=0.2, rate_limit_burst=25, index_dir=str(work / "index"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOENIX_")}
    env.update(JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(jax_cache_dir),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")  # fmt: skip
    cmd = [sys.executable, "-m", "phoenix_recsys.cli.main", "serve", str(bundle_dir), "--data", str(world.path),
           "--store", str(work / "store.sqlite"), "--port", str(port), "--config", str(cfg), "--log-level", "warning"]  # fmt: skip
    log = work / "server.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, "server did not start:\n" + log.read_text(errors="replace")[-4000:]
            try:
                if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url, cfg, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


EV = {"events": [{"user_id": 1, "post_id": 3, "actions": ["favorite"]}]}
REQUESTS = [
    ("POST", "/v1/feed", {"user_id": 1, "k": 3}), ("POST", "/v1/rank", {"user_id": 1, "candidates": [{"post_id": 3}]}),
    ("POST", "/v1/retrieve", {"user_id": 1, "k": 3}), ("GET", "/v1/users/1/events", None), ("GET", "/metrics", None),
    ("GET", "/v1/users", None),
    ("POST", "/v1/events", EV), ("POST", "/v1/posts", {"posts": [{"post_id": 90_001, "author_id": 2}]}),
    ("PUT", "/v1/users/1/blocks/2", None), ("DELETE", "/v1/users/1/mutes/2", None),
    ("POST", "/v1/admin/reload-keys", None),
]  # fmt: skip


def test_keys_scopes_rotation_and_rate_limit_on_a_real_server(keyed_server):
    url, cfg, proc = keyed_server
    with httpx.Client(base_url=url, timeout=30) as c:
        # No key: every read and write refused by default; liveness stays open.
        for method, path, body in REQUESTS:
            r = c.request(method, path, json=body)
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/healthz").status_code == 200
        assert c.post("/v1/feed", json={"user_id": 1, "k": 3}, headers=_bearer("x" * 30)).status_code == 401
        # A read key reads but cannot write or administer.
        assert c.post("/v1/feed", json={"user_id": 1, "k": 3}, headers=_bearer(READ_KEY)).status_code == 200
        r = c.post("/v1/events", json=EV, headers=_bearer(READ_KEY))
        assert r.status_code == 403 and "write" in r.json()["detail"]
        assert c.post("/v1/admin/reload-keys", headers=_bearer(READ_KEY)).status_code == 403
        assert c.post("/v1/events", json=EV, headers=_bearer(OLD_KEY)).status_code == 200
        # Rotation: the file gets the new key instead of the old one; SIGHUP swaps the ring, no restart.
        _keys_file(cfg, NEW_KEY, rate_limit_per_s=0.2, rate_limit_burst=25, index_dir=str(cfg.parent / "index"))
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while c.post("/v1/events", json=EV, headers=_bearer(OLD_KEY)).status_code != 401:
            assert time.monotonic() < deadline, "the old key still works after SIGHUP"
            time.sleep(0.1)
        assert c.post("/v1/events", json=EV, headers=_bearer(NEW_KEY)).status_code == 200
        r = c.post("/v1/admin/reload-keys", headers=_bearer(ADMIN_KEY))  # the endpoint way, same ring
        assert r.status_code == 200 and r.json()["names"] == ["reader", "writer", "ops"]
        assert proc.poll() is None
        # Rate limit: the reader's burst runs out; 429 with a whole-second Retry-After.
        codes = [c.get("/v1/users/1/events", headers=_bearer(READ_KEY)).status_code for _ in range(30)]
        assert codes[0] == 200 and codes[-1] == 429, codes
        r = c.get("/v1/users/1/events", headers=_bearer(READ_KEY))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert c.post("/v1/feed", json={"user_id": 1, "k": 3}, headers=_bearer(NEW_KEY)).status_code == 200  # per key


def test_public_reads_flag_opens_reads_only(make_settings_client):
    c = make_settings_client(public_reads=True)
    assert c.post("/v1/feed", json={"user_id": 1, "k": 3}).status_code == 200
    assert c.post("/v1/events", json=EV).status_code == 401
    assert c.post("/v1/feed", json={"user_id": 1, "k": 3}, headers=_bearer("wrong" * 5)).status_code == 401


def test_admin_endpoint_reload_rotates_keys_in_process(make_settings_client, settings_factory):
    current = {"key": OLD_KEY}

    def reload() -> ServeSettings:
        return settings_factory(api_key=None, public_reads=False, api_keys=[
            {"name": "writer", "key": current["key"], "scopes": ["read", "write"]},
            {"name": "ops", "key": ADMIN_KEY, "scopes": ["admin"]}])  # fmt: skip

    c = make_settings_client(reload_settings=reload, settings=reload())
    assert c.post("/v1/events", json=EV, headers=_bearer(OLD_KEY)).status_code == 200
    current["key"] = NEW_KEY
    assert c.post("/v1/events", json=EV, headers=_bearer(NEW_KEY)).status_code == 401  # not yet reloaded
    assert c.post("/v1/admin/reload-keys", headers=_bearer(OLD_KEY)).status_code == 403  # write is not admin
    assert c.post("/v1/admin/reload-keys", headers=_bearer(ADMIN_KEY)).json() == {"keys": 2, "names": ["writer", "ops"]}
    assert c.post("/v1/events", json=EV, headers=_bearer(OLD_KEY)).status_code == 401
    assert c.post("/v1/events", json=EV, headers=_bearer(NEW_KEY)).status_code == 200


@pytest.fixture
def make_settings_client(service_factory):
    clients = []

    def make(*, reload_settings=None, settings=None, **overrides):
        svc = service_factory(**overrides)
        c = TestClient(create_app(svc, settings, reload_settings=reload_settings))
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


#: The routes open without a key: probes, the API docs and the explorer's static files.
OPEN_PATHS = {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/ui"}


def test_every_route_but_the_open_ones_needs_a_key(make_settings_client, settings_factory):
    """A property over the app's own OpenAPI route table, so a route added later cannot ship unguarded."""
    c = make_settings_client(settings=settings_factory(api_key=None, public_reads=False, api_keys=[
        {"name": "writer", "key": OLD_KEY, "scopes": ["read", "write"]}]))  # fmt: skip
    fill = {"user_id": "1", "author_id": "2", "relation": "blocks", "post_id": "3"}
    checked = set()
    for path, ops in c.get("/openapi.json").json()["paths"].items():
        if path in OPEN_PATHS:
            continue
        url = re.sub(r"\{(\w+)\}", lambda m: fill.get(m.group(1), "1"), path)
        for method in ops:
            r = c.request(method.upper(), url, json={})
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            checked.add((method.upper(), path))
    assert len(checked) >= len(REQUESTS)


def test_keys_are_held_only_as_digests_and_compared_by_digest():
    k = ApiKey(name="a", key="s" * 20, scopes=["read", "write"])
    assert "s" * 20 not in repr(k) and "s" * 20 not in json.dumps(k.model_dump(mode="json"))
    assert k.sha256 == hash_key("s" * 20) and k.scopes == (Scope.READ, Scope.WRITE)
    ring = KeyRing([k, ApiKey(name="b", sha256=hash_key("t" * 20))])
    assert ring.lookup("s" * 20).name == "a" and ring.lookup("t" * 20).scopes == frozenset({Scope.READ})
    assert ring.lookup("s" * 19) is None and ring.lookup("") is None
    with pytest.raises(ValueError, match="at least 16"):
        ApiKey(name="c", key="short")
    with pytest.raises(SettingsError, match="duplicate key name"):
        load_settings(env={"PHOENIX_API_KEYS": json.dumps([{"name": "a", "key": "k" * 16}] * 2)}, writes_enabled=False)
    with pytest.raises(SettingsError, match="PHOENIX_API_KEY"):  # a read-only key list still needs a write key
        load_settings(env={"PHOENIX_API_KEYS": json.dumps([{"name": "a", "key": "k" * 16}])})
    assert ServeSettings(writes_enabled=False).public_reads is False  # reads need a key by default


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    rl = RateLimiter(per_s=2.0, burst=3, clock=lambda: now[0])
    assert [rl.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.acquire("a") == pytest.approx(0.5)  # empty: one token in 1/2 s
    assert rl.acquire("b") == 0.0  # buckets are per principal
    now[0] = 1.0  # two tokens back
    assert rl.acquire("a") == 0.0 and rl.acquire("a") == 0.0 and rl.acquire("a") > 0


def test_readyz_is_open_and_503_until_the_index_is_loaded(make_settings_client, monkeypatch):
    c = make_settings_client(public_reads=False)
    r = c.get("/readyz")
    assert r.status_code == 200 and r.json() == {"ready": True, "checks": {"models": True, "index": True, "store": True}}
    monkeypatch.setattr(type(c.app.state.service), "index", property(lambda self: None))  # index not built yet
    r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["index"] is False
