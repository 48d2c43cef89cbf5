"""A real `phoenix-recsys serve` process on 127.0.0.1: kill -9 durability and 8 concurrent clients.

Only loopback traffic; every loop is bounded by a deadline or a count. The server starts once for
the module (plus the restart the durability test needs); the session's XLA cache (conftest) lets
it load the scoring programs the in-process tests already compiled.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from phoenix_recsys.testing.servers import AUTH, KEY, Server

CONCURRENT_CLIENTS = 8
CONCURRENT_SECONDS = 10.0


@pytest.fixture(scope="module")
def server(bundle_dir, world, tmp_path_factory, jax_cache_dir, runtime):
    # `runtime` first: the in-process compile fills the shared XLA cache the server then reads.
    srv = Server(bundle_dir, world.path, tmp_path_factory.mktemp("server"), jax_cache_dir, "server",
                 PHOENIX_WARMUP="true")  # this suite always ran with warm-up on
    srv.start()
    yield srv
    srv.stop()


def _events(client: httpx.Client, user: int) -> list[dict]:
    r = client.get(f"/v1/users/{user}/events", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return r.json()["events"]


def test_acknowledged_events_survive_kill_9(server):
    user = 70_001
    written = []
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for i in range(12):
            ev = {"user_id": user, "post_id": i * 7, "actions": ["favorite"], "timestamp": 1_720_000_000 + i}
            r = c.post("/v1/events", json={"events": [ev]}, headers=AUTH)
            assert r.status_code == 200, r.text
            written.append((ev["post_id"], ev["timestamp"]))
        r = c.put(f"/v1/users/{user}/blocks/5", headers=AUTH)
        assert r.status_code == 200
        r = c.post("/v1/posts", json={"posts": [{"post_id": 80_000, "author_id": 9}]}, headers=AUTH)
        assert r.status_code == 200
    server.kill()  # no shutdown hook runs: only what was fsynced before each 2xx survives
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as c:
        got = [(e["post_id"], e["timestamp"]) for e in _events(c, user)]
        assert got == written
        feed = c.post("/v1/feed", json={"user_id": user, "k": 100}).json()
        assert feed["history_length"] == len(written)
        served = {i["post_id"] for i in feed["items"]}
        assert not served & {p for p, _ in written}
        assert 5 not in {i["author_id"] for i in feed["items"]}
        items = c.post("/v1/retrieve", json={"user_id": user, "k": 301, "exclude_seen": False}).json()["items"]
        assert 80_000 in {i["post_id"] for i in items}  # the index was rebuilt from the durable store


def test_eight_clients_ten_seconds_no_5xx_no_lost_writes(server):
    assert server.running()
    statuses: Counter[int] = Counter()
    acked: dict[int, list[tuple[int, int]]] = {}
    failures: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + CONCURRENT_SECONDS

    def client_loop(i: int) -> None:
        user = 60_000 + i
        mine: list[tuple[int, int]] = []
        local: Counter[int] = Counter()
        n = 0
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while time.monotonic() < stop_at and n < 900:  # bounded by time and by count
                n += 1
                try:
                    if n % 3 == 0:
                        r = c.post("/v1/feed", json={"user_id": user, "k": 20})
                    elif n % 7 == 0:
                        r = c.post("/v1/rank", json={"user_id": user, "candidates": [{"post_id": p} for p in range(0, 60, 3)]})
                    else:
                        ev = {"user_id": user, "post_id": (n * 13 + i) % 300, "actions": ["click"], "timestamp": 1_730_000_000 + n}
                        r = c.post("/v1/events", json={"events": [ev]}, headers=AUTH)
                        if r.status_code == 200:
                            mine.append((ev["post_id"], ev["timestamp"]))
                    local[r.status_code] += 1
                except httpx.HTTPError as e:  # a dropped connection would be a failure too
                    failures.append(f"client {i}: {type(e).__name__}: {e}")
                    return
        with lock:
            statuses.update(local)
            acked[user] = mine

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(CONCURRENT_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=CONCURRENT_SECONDS + 120)
    assert not any(t.is_alive() for t in threads)
    assert not failures, failures
    assert not [s for s in statuses if s >= 500], (statuses, server.tail())
    assert set(statuses) == {200}, statuses
    assert sum(len(v) for v in acked.values()) > 8  # every client got writes through
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for user, mine in acked.items():
            assert [(e["post_id"], e["timestamp"]) for e in _events(c, user)] == mine  # none lost, none doubled
        metrics = c.get("/metrics").text
    assert 'route="/v1/events",status="200"' in metrics


# -- hardening: malformed bodies and the streamed body limit, against the real server ----------
MALFORMED = [
    ("/v1/feed", b'{"user_id":1,"k":Infinity}'),
    ("/v1/feed", b'{"user_id":1,"k":NaN}'),
    ("/v1/feed", b'{"user_id":1e400,"k":5}'),
    ("/v1/feed", b'{"user_id":-Infinity}'),
    ("/v1/feed", b'{"user_id":123456789012345678901234567890}'),
    ("/v1/feed", b'{"user_id":1,"k":5'),
    ("/v1/feed", b"\xff\xfe{}"),
    ("/v1/feed", b"[" * 100_000 + b"]" * 100_000),
    ("/v1/feed", b'{"user_id":' + b'{"a":' * 50 + b"1" + b"}" * 51),
    ("/v1/feed", b'{"user_id":1,"session_id":"\\ud800"}'),
    ("/v1/posts", b'{"posts":[{"post_id":1,"author_id":2,"text":"\\ud800"}]}'),
    ("/v1/posts", b'{"posts":[{"post_id":1,"author_id":2,"video_duration_s":NaN}]}'),
    ("/v1/events", b'{"events":[{"user_id":1,"post_id":2,"actions":{"dwell_time":Infinity}}]}'),
    ("/v1/events", b'{"events":[{"user_id":1,"post_id":2,"actions":{"\\udfff":1}}]}'),
    ("/v1/rank", b'{"user_id":1,"candidates":[' + b",".join([b'{"post_id":1}'] * 10_001) + b"]}"),
    ("/v1/retrieve", b'{"user_id":1,"k":1e999}'),
    ("/v1/feed", b"null"),
    ("/v1/feed", b'"\\ud800"'),
]


@pytest.mark.parametrize(("path", "body"), MALFORMED, ids=[f"{i}" for i in range(len(MALFORMED))])
def test_malformed_bodies_are_4xx_and_the_error_encodes(server, path, body):
    r = httpx.post(server.url + path, content=body, headers={**AUTH, "content-type": "application/json"}, timeout=30)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:500])
    detail = r.json()["detail"]  # the error body is valid JSON
    if r.status_code == 422:
        assert detail[0]["loc"][0] == "body"
    assert r.headers["x-request-id"]
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200  # still up


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_chunked_over_limit_body_is_refused_without_buffering(server):
    assert server.proc is not None
    before = _peak_rss_kb(server.proc.pid)
    chunk = b"x" * (1 << 20)
    total = 96  # MiB offered; the limit is 16
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {KEY}\r\n".encode() + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        try:
            for _ in range(total):
                s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += 1
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed before the end: that is the point
        s.settimeout(30)
        reply = b""
        while b"\r\n\r\n" not in reply:
            part = s.recv(65536)
            if not part:
                break
            reply += part
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    grown_mib = (_peak_rss_kb(server.proc.pid) - before) / 1024
    assert grown_mib < 48, f"peak RSS grew {grown_mib:.0f} MiB for a {total} MiB body"
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200


def test_metrics_parse_with_prometheus_client(server):
    from prometheus_client.parser import text_string_to_metric_families

    httpx.post(server.url + "/v1/feed", json={"user_id": 1, "k": 3}, timeout=30)
    r = httpx.get(server.url + "/metrics", timeout=10)
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert {"phoenix_http_requests", "phoenix_http_request_duration_seconds", "phoenix_feed_stage_seconds",
            "phoenix_index_posts", "phoenix_up"} <= set(families)  # fmt: skip
    assert families["phoenix_http_request_duration_seconds"].type == "histogram"
    assert any(s.labels.get("route") == "/v1/feed" for s in families["phoenix_http_requests"].samples)
