"""A real `phoenix-recsys serve` subprocess for tests: start, kill -9, stop, and index-follow probes.

Only loopback; every wait is bounded by a deadline. Used by the follow/worker tests (and usable by
the PostgreSQL two-server tests: pass `store=` a URL).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from phoenix_recsys.testing.net import free_port

KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
START_TIMEOUT_S = 180.0


class Server:
    """One `serve` subprocess on a given store and index directory (`extra_args` go to the command)."""

    def __init__(
        self, bundle: Path, data: Path, work: Path, jax_cache: Path, name: str, *, store: str | None = None, **env: str
    ) -> None:
        self.bundle, self.data, self.work = bundle, data, work
        self.store = store or str(work / "store.sqlite")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = work / f"{name}.log"
        self.extra_args: list[str] = []
        # A launcher the command is handed to (it must exec its arguments), e.g. one that sets a
        # resource limit first; an exec'd launcher, not preexec_fn, since forking JAX may deadlock.
        self.launcher: list[str] = []
        self.env = {
            **os.environ,
            "PHOENIX_API_KEY": KEY,
            "PHOENIX_PUBLIC_READS": "true",  # the suites using this test other things; test_access covers keys
            "PHOENIX_INDEX_DIR": str(work / "index"),
            "PHOENIX_WARMUP": "false",
            "PHOENIX_SERVER_ID": name,
            "JAX_PLATFORMS": "cpu",
            "JAX_COMPILATION_CACHE_DIR": str(jax_cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
            **env,
        }

    def launch(self) -> None:
        """Start the process without waiting for it to answer (`start` waits; `wait_exit` awaits a crash)."""
        cmd = [
            sys.executable, "-m", "phoenix_recsys.cli.main", "serve", str(self.bundle), "--data", str(self.data),
            "--store", self.store, "--host", "127.0.0.1", "--port", str(self.port),
            "--log-level", "warning", *self.extra_args,
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*self.launcher, *cmd], stdout=log, stderr=subprocess.STDOUT, env=self.env)

    def start(self) -> None:
        """Start the process and wait until `/healthz` answers (AssertionError if it exits first)."""
        self.launch()
        assert self.proc is not None
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

    def wait_exit(self, timeout: float = START_TIMEOUT_S) -> int:
        """Wait for the process to end by itself (e.g. at a `testing.crash` point); its return code."""
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise AssertionError(f"server still running after {timeout} s:\n{self.tail()}") from None
        self.proc = None
        return rc

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

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

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


def add_posts(client: httpx.Client, url: str, ids: list[int], author: int) -> None:
    r = client.post(url + "/v1/posts", json={"posts": [{"post_id": p, "author_id": author} for p in ids]}, headers=AUTH)
    assert r.status_code == 200, r.text
