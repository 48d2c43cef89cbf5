"""A throwaway PostgreSQL server for tests: one cluster in a temp dir, on 127.0.0.1, a free port.

    with PostgresServer.start() as pg:      # raises PostgresUnavailable when binaries are absent
        url = pg.create_database("t1")       # postgresql://postgres@127.0.0.1:PORT/t1

* Binaries: `$PHOENIX_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`, else `initdb` on PATH.
* `initdb` refuses to run as root, so when we are root the cluster is created and run as the
  `postgres` user (`runuser`), in a dir that user owns. Trust auth on 127.0.0.1 and a private
  socket dir, so nothing else on the box is touched.
* Durability settings are relaxed (`fsync=off`): this is a test server, and it makes CREATE
  DATABASE and commits fast. Nothing here is for production.
* `create_database(name)` clones a template that already holds nothing but is warm, which takes
  tens of milliseconds, so tests can have a fresh database each.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from phoenix_recsys.testing.net import free_port


class PostgresUnavailable(RuntimeError):
    """No usable PostgreSQL binaries (or psycopg) here; the message says which and why."""


def find_bin_dir() -> Path:
    """The directory holding `initdb` and `pg_ctl`; raises PostgresUnavailable with the reason."""
    env = os.environ.get("PHOENIX_PG_BIN")
    candidates = [Path(env)] if env else []
    candidates += [
        Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    ]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for c in candidates:
        if (c / "initdb").is_file() and (c / "pg_ctl").is_file():
            return c
    raise PostgresUnavailable(
        "PostgreSQL binaries not found (set PHOENIX_PG_BIN, or install the `postgresql` package: "
        "looked in /usr/lib/postgresql/*/bin and PATH)"
    )


def _version_key(path: str) -> int:
    try:
        return int(Path(path).parent.name)
    except ValueError:
        return -1


class PostgresServer:
    """A running throwaway cluster; `stop()` (or leaving the `with`) kills it and removes its dir."""

    def __init__(self, bin_dir: Path, root: Path, port: int, as_user: str | None) -> None:
        """Use `PostgresServer.start`."""
        self.bin_dir = bin_dir
        self.root = root
        self.data_dir = root / "data"
        self.port = port
        self._as_user = as_user
        self._stopped = False

    @classmethod
    def start(cls, *, timeout_s: float = 60.0) -> PostgresServer:
        """initdb + start a cluster in a new temp dir; raises PostgresUnavailable if impossible."""
        try:
            import psycopg  # noqa: F401  (the store needs it; a server without a client is useless)
        except ImportError as e:
            raise PostgresUnavailable(f"psycopg is not installed: {e}") from e
        bin_dir = find_bin_dir()
        as_user = None
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise PostgresUnavailable("running as root and `runuser` is missing (initdb refuses root)")
            as_user = "postgres"
        root = Path(tempfile.mkdtemp(prefix="phoenix-pg-"))
        if as_user:
            shutil.chown(root, user=as_user)
        server = cls(bin_dir, root, free_port(), as_user)
        try:
            server._run(
                [
                    "initdb",
                    "-D",
                    str(server.data_dir),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
                timeout_s,
            )
            server._pg_ctl_start(timeout_s)
        except BaseException:
            server.stop()
            raise
        return server

    def _pg_ctl_start(self, timeout_s: float) -> None:
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            ["pg_ctl", "-D", str(self.data_dir), "-o", opts, "-l", str(self.root / "log"), "-w", "-t",
             str(int(timeout_s)), "start"],
            timeout_s + 5,
        )  # fmt: skip

    def halt(self, *, timeout_s: float = 60.0) -> None:
        """Stop the server (fast shutdown: sessions are cut) but keep its data, for `resume()`.

        What a database restart or failover looks like to its clients.
        """
        self._run(["pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(int(timeout_s)), "stop"],
                  timeout_s + 5)  # fmt: skip

    def resume(self, *, timeout_s: float = 60.0) -> None:
        """Start a `halt()`ed server again, on the same port with the same data."""
        self._pg_ctl_start(timeout_s)

    def _run(self, argv: list[str], timeout_s: float) -> None:
        cmd = [str(self.bin_dir / argv[0]), *argv[1:]]
        if self._as_user:
            cmd = ["runuser", "-u", self._as_user, "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=self.root)
        if r.returncode != 0:
            log = ""
            with contextlib.suppress(OSError):
                log = (self.root / "log").read_text()[-2000:]
            raise PostgresUnavailable(
                f"{argv[0]} failed (rc {r.returncode}): {r.stderr.strip()[-2000:]} {log}"
            )

    def url(self, dbname: str = "postgres") -> str:
        """A libpq URL for `dbname` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str, *, template: str = "template1") -> str:
        """CREATE DATABASE `name` (an identifier: letters, digits, _) and return its URL."""
        if not name.replace("_", "").isalnum() or not name[0].isalpha():
            raise ValueError(f"database name must be letters, digits and _, got {name!r}")
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            c.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run(["pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"], 60)
        except (PostgresUnavailable, subprocess.TimeoutExpired):
            pass
        finally:
            # Wait briefly for the postmaster to drop its files before removing the dir.
            time.sleep(0.05)
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
