"""Index coherence with real `serve` processes: snapshots + catch-up after kill -9, and two servers
on one SQLite store following each other's writes through the post sequence.

Only loopback traffic; every wait is bounded by a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
START_TIMEOUT_S = 180.0
CORPUS = 300  # posts of the session world (conftest)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One `serve` subprocess on a given store and index directory."""

    def __init__(self, bundle: Path, data: Path, work: Path, jax_cache: Path, name: str, **env: str) -> None:
        self.bundle, self.data, self.work = bundle, data, work
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = work / f"{name}.log"
        self.env = {
            **os.environ,
            "PHOENIX_API_KEY": KEY,
            "PHOENIX_PUBLIC_READS": "true",  # these tests are about other things; test_access covers keys
            "PHOENIX_INDEX_DIR": str(work / "index"),
            "PHOENIX_WARMUP": "false",
            "PHOENIX_SERVER_ID": name,
            "JAX_PLATFORMS": "cpu",
            "JAX_COMPILATION_CACHE_DIR": str(jax_cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
            **env,
        }

    def start(self) -> None:
        cmd = [
            sys.executable, "-m", "phoenix_recsys.cli.main", "serve", str(self.bundle), "--data", str(self.data),
            "--store", str(self.work / "store.sqlite"), "--host", "127.0.0.1", "--port", str(self.port),
            "--log-level", "warning",
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server did not answer /healthz within {START_TIMEOUT_S} s:\n{self.tail()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def follow_stats(self) -> dict:
        r = httpx.get(self.url + "/healthz", timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["index_follow"]

    def retrievable(self, client: httpx.Client, user: int = 0) -> set[int]:
        """Every post the index returns (k above the corpus size, seen posts included)."""
        r = client.post(self.url + "/v1/retrieve", json={"user_id": user, "k": 1000, "exclude_seen": False})
        assert r.status_code == 200, r.text
        return {i["post_id"] for i in r.json()["items"]}


def _add_posts(client: httpx.Client, url: str, ids: list[int], author: int) -> None:
    r = client.post(url + "/v1/posts", json={"posts": [{"post_id": p, "author_id": author} for p in ids]}, headers=AUTH)
    assert r.status_code == 200, r.text


def test_kill_9_restart_catches_up_from_the_snapshot(bundle_dir, world, tmp_path, jax_cache_dir, runtime):
    # Snapshots only at start and on clean exit here, so the posts below are past the last one.
    srv = Server(bundle_dir, world.path, tmp_path, jax_cache_dir, "solo",
                 PHOENIX_INDEX_SNAPSHOT_INTERVAL_S="none", PHOENIX_INDEX_SNAPSHOT_EVERY_POSTS="none")  # fmt: skip
    srv.start()
    try:
        first = srv.follow_stats()
        assert first["snapshot_seq"] == first["seq"]  # the full build was snapshotted at start
        new = [90_000 + i for i in range(7)]
        with httpx.Client(timeout=30) as c:
            _add_posts(c, srv.url, new, author=3)
            assert set(new) <= srv.retrievable(c)
        srv.kill()
        srv.start()
        stats = srv.follow_stats()
        # Only the posts written after the snapshot were embedded, not the other 300.
        assert stats["seq"] == first["seq"] + len(new) and stats["posts_embedded"] == len(new)
        with httpx.Client(timeout=30) as c:
            got = srv.retrievable(c)
        assert set(new) <= got and len(got) == CORPUS + len(new)
    finally:
        srv.stop()
    # The newest snapshot (written after the catch-up) is at the newest seq; a torn newer one is skipped, not served.
    snaps = sorted((tmp_path / "index" / "snapshots").iterdir())
    newest = snaps[-1]
    assert newest.name.startswith(f"{first['seq'] + len(new):016d}.")
    torn = newest.with_name(f"{first['seq'] + len(new) + 5:016d}.other")
    torn.mkdir()
    (torn / "meta.json").write_text("{")
    srv.start()
    try:
        stats = srv.follow_stats()
        assert stats["snapshot_seq"] == first["seq"] + len(new) and stats["posts_embedded"] == 0
    finally:
        srv.stop()


@pytest.fixture
def pair(bundle_dir, world, tmp_path, jax_cache_dir, runtime):
    a = Server(bundle_dir, world.path, tmp_path, jax_cache_dir, "a")
    a.start()  # seeds the store and builds (and snapshots) the index
    b = Server(bundle_dir, world.path, tmp_path, jax_cache_dir, "b")
    try:
        b.start()  # loads a's snapshot
        yield a, b
    finally:
        b.stop()
        a.stop()


def test_two_servers_on_one_store_see_each_others_writes(pair):
    a, b = pair
    assert b.follow_stats()["posts_embedded"] == 0  # b started from a's snapshot
    with httpx.Client(timeout=30) as c:
        for srv_from, srv_to, pid in ((a, b, 91_000), (b, a, 91_001)):
            _add_posts(c, srv_from.url, [pid], author=4)
            t0 = time.monotonic()
            while pid not in srv_to.retrievable(c):
                assert time.monotonic() - t0 < 1.0, f"post {pid} not retrievable through the other server in 1 s"
                time.sleep(0.05)
        # A block through one applies on the very next feed through the other (the store is the truth).
        user = 3
        before = c.post(b.url + "/v1/feed", json={"user_id": user, "k": 100}).json()["items"]
        author = next(i["author_id"] for i in before)
        assert c.put(f"{a.url}/v1/users/{user}/blocks/{author}", headers=AUTH).status_code == 200
        after = c.post(b.url + "/v1/feed", json={"user_id": user, "k": 100}).json()["items"]
        assert after and author not in {i["author_id"] for i in after}
