"""`serve --workers 2`: two worker processes on one port and one SQLite store keep each other current."""

from __future__ import annotations

import time

import httpx
import pytest

from phoenix_recsys.serve.workers import WorkerSpec, prepare_in_child
from phoenix_recsys.testing.servers import AUTH, Server, add_posts


@pytest.fixture
def workers(bundle_dir, world, tmp_path, jax_cache_dir, runtime):
    srv = Server(bundle_dir, world.path, tmp_path, jax_cache_dir, "multi")
    srv.extra_args = ["--workers", "2"]
    srv.start()
    yield srv
    srv.stop()


def _client_per_worker(url: str, deadline_s: float = 180.0) -> dict[str, httpx.Client]:
    """One keep-alive client pinned to each worker (a connection stays with the worker that accepted it).

    The server is ready once one worker answers; the other may still be loading its models, which
    on a loaded 2-core box took over a minute (CI flake), hence the long deadline and the pause
    between tries that leaves it the CPU."""
    out: dict[str, httpx.Client] = {}
    deadline = time.monotonic() + deadline_s
    while len(out) < 2:
        assert time.monotonic() < deadline, f"reached only workers {sorted(out)}"
        c = httpx.Client(base_url=url, timeout=30)
        sid = c.get("/healthz").json()["index_follow"]["server_id"]
        if sid in out:
            c.close()
            time.sleep(0.1)
        else:
            out[sid] = c
    return out


def test_two_workers_follow_each_other(workers):
    clients = _client_per_worker(workers.url)
    try:
        assert sorted(s[-3:] for s in clients) == ["-w0", "-w1"]
        (sa, a), (sb, b) = sorted(clients.items())
        # Warm-up is off in these servers, so a worker's first /v1/retrieve compiles the user tower
        # (seconds on a loaded box). Pay that before the clock starts: the deadline below measures
        # propagation through the follower, not JIT compilation (the 1 s deadline used to flake here).
        for c in (a, b):
            assert c.post("/v1/retrieve", json={"user_id": 0, "k": 1}).status_code == 200
        for src, dst, pid in ((a, b, 92_000), (b, a, 92_001)):
            add_posts(src, "", [pid], author=4)
            t0 = time.monotonic()
            while True:
                items = dst.post("/v1/retrieve", json={"user_id": 0, "k": 1000, "exclude_seen": False}).json()["items"]
                if pid in {i["post_id"] for i in items}:
                    break
                # The follower's SQLite poll is 50 ms; 5 s leaves room for a loaded 2-core box and still
                # fails if the other worker never follows.
                assert time.monotonic() - t0 < 5.0, f"post {pid} not retrievable through the other worker in 5 s"
                time.sleep(0.05)
        user = 3
        before = a.post("/v1/feed", json={"user_id": user, "k": 100}).json()["items"]
        author = next(i["author_id"] for i in before)
        assert b.put(f"/v1/users/{user}/blocks/{author}", headers=AUTH).status_code == 200
        after = a.post("/v1/feed", json={"user_id": user, "k": 100}).json()["items"]
        assert after and author not in {i["author_id"] for i in after}
        # A feed cursor from one worker pages on the other (no cursor_secret set: the parent gave both
        # workers one random secret), and page 2 skips page 1.
        p1 = a.post("/v1/feed", json={"user_id": user, "k": 10}).json()
        r = b.post("/v1/feed", json={"user_id": user, "k": 10, "cursor": p1["next_cursor"]})
        assert r.status_code == 200, r.text
        assert not {i["post_id"] for i in p1["items"]} & {i["post_id"] for i in r.json()["items"]}
    finally:
        for c in clients.values():
            c.close()



def test_prepare_in_child_reports_a_failed_child(tmp_path):
    # Seeding and the index build run in a child process (so the supervising parent never holds the
    # models or the corpus); a failure there must stop `serve --workers` with a clear error, not start
    # workers on a half-prepared store.
    with pytest.raises(RuntimeError, match="exit status"):
        prepare_in_child(WorkerSpec(bundle=str(tmp_path / "no-such-bundle"), workers=2))
