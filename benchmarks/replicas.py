"""Replicas: feed requests/s and latency with one server on SQLite, one server on PostgreSQL and two
servers on one PostgreSQL store, all on this box (issue 15).

Builds a scale world (`data.scale`, size `PHOENIX_REPLICAS_SIZE=USERSxPOSTSxEVENTS`, default
20000x100000x1000000) and a bundle of freshly initialised models, starts a throwaway PostgreSQL
cluster on 127.0.0.1 (`phoenix_recsys.testing.postgres`), then for each setup starts real `serve`
processes and drives POST /v1/feed from `PHOENIX_REPLICAS_CLIENTS` (default 8) keep-alive clients for
`PHOENIX_REPLICAS_DURATION` seconds (default 20), split evenly over the servers as a balancer would,
cycling known, heavy and cold-start users (the load generator of `benchmarks.scale`).

On one 2-core box two servers share the same two cores, so the second server buys concurrency across
requests (each server ranks one request at a time per core) rather than more CPU; on separate boxes
it adds CPU as well. Long: not in `make bench`; run `phoenix-recsys bench run replicas`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from flax import nnx

from benchmarks.common import markdown_table, write_result
from benchmarks.scale import CLASSES, _drive, _rss_mib, start_server, user_classes
from phoenix_recsys.actions import PHOENIX_ACTIONS
from phoenix_recsys.data.scale import ScaleConfig, generate_scale_world, user_event_counts
from phoenix_recsys.model import PhoenixModel, PhoenixRetrievalModel
from phoenix_recsys.testing.net import free_port
from phoenix_recsys.testing.postgres import PostgresServer
from phoenix_recsys.train.bundle import save_model
from phoenix_recsys.train.run import default_model_config

SETUPS = (("sqlite", 1), ("postgresql", 1), ("postgresql", 2))


def _size() -> ScaleConfig:
    u, p, e = (int(x) for x in os.environ.get("PHOENIX_REPLICAS_SIZE", "20000x100000x1000000").split("x"))
    return ScaleConfig(users=u, posts=p, events=e, heavy_users=10, heavy_events=min(20_000, e // 20), seed=0)


def run() -> dict[str, Any]:
    """Build once, then measure every setup on fresh servers (and a fresh PostgreSQL database)."""
    cfg = _size()
    clients = int(os.environ.get("PHOENIX_REPLICAS_CLIENTS", "8"))
    duration = float(os.environ.get("PHOENIX_REPLICAS_DURATION", "20"))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, PostgresServer.start() as pg:
        root = Path(tmp)
        generate_scale_world(root / "world", cfg, load=False)
        mcfg = default_model_config(PHOENIX_ACTIONS)
        save_model(root / "bundle", "ranker", PhoenixModel(mcfg, rngs=nnx.Rngs(0)))
        save_model(root / "bundle", "retrieval", PhoenixRetrievalModel(mcfg, rngs=nnx.Rngs(1)))
        users = user_classes(cfg, user_event_counts(cfg))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent),
                                                            os.environ.get("PYTHONPATH", "")])}
        for n_setup, (backend, servers) in enumerate(SETUPS):
            work = root / f"setup{n_setup}"
            work.mkdir()
            store = str(work / "store.sqlite") if backend == "sqlite" else pg.create_database(f"replicas{n_setup}")
            procs, ports, ready = [], [], []
            try:
                for i in range(servers):  # one after the other: the first seeds the store and snapshots the index
                    port = free_port()
                    cmd = [sys.executable, "-m", "phoenix_recsys.cli.main", "serve", str(root / "bundle"),
                           "--data", str(root / "world"), "--store", store, "--port", str(port), "--read-only",
                           "--public-reads", "--log-level", "warning"]
                    penv = {**env, "PHOENIX_INDEX_DIR": str(work / "index"), "PHOENIX_SERVER_ID": f"s{i}"}
                    proc, ready_s = start_server(cmd, penv, port, work / f"server{i}.log")
                    procs.append(proc)
                    ports.append(port)
                    ready.append(round(ready_s, 1))
                _drive(ports, users, 2, min(10.0, duration), seed=99)  # warm pages, caches and compiled shapes
                t0 = time.perf_counter()
                r = _drive(ports, users, clients, duration, seed=clients)
                r.pop("_samples")
                rows.append({"backend": backend, "servers": servers, "clients": clients, "ready_s": ready,
                             "requests_per_s": round(r["requests_per_s"], 1), "errors": r["errors"],
                             "requests": r["requests"], "seconds": round(time.perf_counter() - t0, 1),
                             "rss_mib": [round(_rss_mib(p.pid)) for p in procs],
                             **{c: r[c] for c in CLASSES}})
                print(f"  {backend:10s} x{servers}: {r['requests_per_s']:.1f} feeds/s, errors {r['errors']}", flush=True)
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    p.wait(30)
    return {"settings": {"users": cfg.users, "posts": cfg.posts, "events": cfg.events, "clients": clients,
                         "duration_s": duration}, "rows": rows}


def table(result: dict[str, Any]) -> str:
    """The BENCHMARKS.md table."""
    s = result["settings"]
    head = (f"World: {s['users']:,} users x {s['posts']:,} posts x {s['events']:,} events; {s['clients']} clients "
            f"for {s['duration_s']:.0f} s per setup, split evenly over the servers. Run as "
            f"`PHOENIX_REPLICAS_SIZE={s['users']}x{s['posts']}x{s['events']} phoenix-recsys bench run replicas`.\n\n")
    rows = [[r["backend"], r["servers"], f"{r['requests_per_s']:.1f}", r["errors"],
             *[f"{r[c]['p50_ms']:.0f} / {r[c]['p99_ms']:.0f}" for c in CLASSES],
             ", ".join(f"{x:.0f}" for x in r["ready_s"])] for r in result["rows"]]
    return head + markdown_table(["store", "servers", "feeds/s", "errors", *[f"{c} p50 / p99 ms" for c in CLASSES],
                                  "ready s"], rows)


def main() -> dict[str, Any]:
    result = run()
    write_result("replicas", result)
    return result
