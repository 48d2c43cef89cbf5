"""Faults against a real `serve` process (issue 14): the file-size limit hit while serving.

RLIMIT_FSIZE is set by a launcher that execs the server, with SIGXFSZ ignored there, so a write past the limit
returns EFBIG (SQLite: disk I/O error) instead of killing the process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from phoenix_recsys.serve.store import open_store
from phoenix_recsys.testing.servers import AUTH, Server


def _counts(store_path: str) -> tuple[int, int]:
    store = open_store(store_path)
    try:
        return store.num_posts(), store.post_seq()
    finally:
        store.close()


def test_a_write_past_the_file_size_limit_is_a_503_and_writes_nothing(bundle_dir, world, tmp_path, jax_cache_dir, runtime):
    srv = Server(bundle_dir, world.path, tmp_path, jax_cache_dir, "fsize")
    srv.start()  # seeds the store and writes the index snapshot, without a limit
    srv.stop()
    n0, seq0 = _counts(srv.store)
    # Every file the server appends to must stay writable up to its current size; the limit sits
    # 512 KiB above the largest, so the next ~1 MB post batch cannot fit in the WAL.
    largest = max(p.stat().st_size for p in Path(tmp_path).rglob("*") if p.is_file())
    limit = largest + 512 * 1024

    # Ignored signals and resource limits both survive exec, so the server inherits them.
    srv.launcher = [
        sys.executable, "-c",
        "import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); os.execv(sys.argv[1], sys.argv[1:])",
    ]  # fmt: skip
    srv.start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            small = c.post("/v1/posts", json={"posts": [{"post_id": 80_000, "author_id": 1}]}, headers=AUTH)
            assert small.status_code == 200, small.text
            big = [{"post_id": 81_000 + i, "author_id": 2, "text": "x" * 5000} for i in range(200)]
            r = c.post("/v1/posts", json={"posts": big}, headers=AUTH)
            assert r.status_code == 503, r.text
            assert r.json()["detail"]["type"] == "store_unavailable" and "Traceback" not in r.text
            # Still serving: probes, reads, and a small write that fits.
            assert c.get("/healthz").status_code == 200
            assert c.post("/v1/feed", json={"user_id": 1, "k": 5}).status_code == 200
            again = c.post("/v1/posts", json={"posts": [{"post_id": 80_001, "author_id": 1}]}, headers=AUTH)
            assert again.status_code == 200, again.text
        assert srv.running()
    finally:
        srv.stop()
    n1, seq1 = _counts(srv.store)
    assert n1 == n0 + 2  # the two small posts, none of the refused batch
    assert seq1 == seq0 + 2
