"""Scale: the feed service over HTTP on a large skewed world (issue 13), driven by a bounded load generator.

Builds a scale world (`data.scale`: heavy users, popular authors, power-law post traffic), a bundle
of freshly initialised models (the trained default size; latency does not depend on the weights),
starts a real `phoenix-recsys serve` (read-only) on 127.0.0.1, waits for /healthz, then
drives POST /v1/feed (k = 20) from 1, 4 and 16 client threads for a fixed duration each, cycling
over three user classes: known (light users with history), heavy (the world's heavy users) and
cold-start (ids the store has never seen). Reports latency per class and concurrency, requests/s,
errors, server RSS, start-up time, and feed latency against the user's lifetime events.

Size: `PHOENIX_SCALE_SIZE=USERSxPOSTSxEVENTS` (default the issue's 100000x1000000x10000000), heavy
users `PHOENIX_SCALE_HEAVY=NxEVENTS` (default 20x100000), seconds per concurrency
`PHOENIX_SCALE_DURATION` (default 20), the most seconds the server may take to get ready
`PHOENIX_SCALE_START_TIMEOUT` (default 1800), server worker processes `PHOENIX_SCALE_WORKERS` (default 2, one per core
of the 2-core reference box: 69 vs 50 req/s at 16 clients with 1; `serve --workers N`) and ranking micro-batch window `PHOENIX_SCALE_RANK_BATCH_MS` (default 0: off; passed as
the serve setting rank_batch_window_ms); both are recorded in the JSON. The store is seeded first in a process of its own
(timed), so the server's ready time is the corpus index from nothing plus warm-up. Long: not in `make bench`; run `phoenix-recsys bench run scale`.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from benchmarks.common import RESULTS_DIR, markdown_table, write_result
from phoenix_recsys.actions import PHOENIX_ACTIONS
from phoenix_recsys.data.scale import ScaleConfig, generate_scale_world, user_event_counts
from phoenix_recsys.model import PhoenixModel, PhoenixRetrievalModel
from phoenix_recsys.testing.net import free_port
from phoenix_recsys.train.bundle import save_model
from phoenix_recsys.train.run import default_model_config

CONCURRENCY = (1, 4, 16)
CLASSES = ("known", "heavy", "cold_start")
K = 20


def _size() -> ScaleConfig:
    u, p, e = (int(x) for x in os.environ.get("PHOENIX_SCALE_SIZE", "100000x1000000x10000000").split("x"))
    hn, he = (int(x) for x in os.environ.get("PHOENIX_SCALE_HEAVY", "20x100000").split("x"))
    return ScaleConfig(users=u, posts=p, events=e, heavy_users=hn, heavy_events=he, seed=0)


def _rss_mib(pid: int) -> float:
    """Resident MiB of `pid` plus all its descendants (with `--workers N` the workers are children)."""
    return sum(_rss_by_process(pid).values())


def _process_tree(pid: int) -> list[int]:
    """`pid` and all its live descendants (with `--workers N` the workers are children), from /proc."""
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        out.append(p)
    return out


def _rss_by_process(pid: int) -> dict[int, float]:
    """Resident MiB of `pid` and of each of its descendants, by pid."""
    out: dict[int, float] = {}
    for p in _process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[p] = int(line.split()[1]) / 1024
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def server_cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` and all its descendants (the workers), from /proc."""
    total = 0
    for p in _process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def user_classes(cfg: ScaleConfig, counts: np.ndarray) -> dict[str, np.ndarray]:
    """The load generator's user ids per class (fixed seed): known = up to 2,000 light users with
    history, heavy = the world's heavy users, cold start = ids the store has never seen."""
    rng = np.random.default_rng(0)
    light = np.flatnonzero(counts[cfg.heavy_users :] > 0) + cfg.heavy_users
    return {
        "known": rng.choice(light, size=min(2000, light.size), replace=False),
        "heavy": np.arange(cfg.heavy_users) if cfg.heavy_users else light[:1],
        "cold_start": np.arange(cfg.users + 1_000_000, cfg.users + 1_002_000),
    }


def _drive(port: int | list[int], users: dict[str, np.ndarray], threads: int, duration_s: float,
           seed: int) -> dict[str, Any]:
    """`threads` keep-alive clients for `duration_s`, each cycling the classes; latencies per class.
    With several ports (servers behind a balancer), client i talks to port i mod their number."""
    ports = [port] if isinstance(port, int) else list(port)
    lat: dict[str, list[float]] = {c: [] for c in CLASSES}
    samples: list[tuple[int, float]] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration_s

    def client(i: int) -> None:
        rng = np.random.default_rng([seed, i])
        port = ports[i % len(ports)]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        n = i
        while time.perf_counter() < stop_at:
            cls = CLASSES[n % len(CLASSES)]
            n += 1
            uid = int(rng.choice(users[cls]))
            body = json.dumps({"user_id": uid, "k": K})
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/v1/feed", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            ms = (time.perf_counter() - t0) * 1e3
            with lock:
                if ok:
                    lat[cls].append(ms)
                    samples.append((uid, ms))
                else:
                    errors[0] += 1
        conn.close()

    ts = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {"concurrency": threads, "seconds": wall, "errors": errors[0],
                           "requests": sum(len(v) for v in lat.values())}  # fmt: skip
    out["requests_per_s"] = out["requests"] / wall
    for c, v in lat.items():
        a = np.asarray(v) if v else np.full(1, np.nan)
        out[c] = {"n": len(v), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}
    out["_samples"] = samples
    return out


def start_server(cmd: list[str], env: dict[str, str], port: int, log: Path,
                 timeout_s: float = 1800) -> tuple[subprocess.Popen[bytes], float]:
    """Start a `serve` process and wait for /healthz; (process, seconds until ready)."""
    t_start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    while proc.poll() is None and time.perf_counter() - t_start < timeout_s:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return proc, time.perf_counter() - t_start
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")


_SEED_SCRIPT = (
    "import sys\n"
    "from phoenix_recsys.actions import PHOENIX_ACTIONS\n"
    "from phoenix_recsys.serve.seed import seed_store\n"
    "from phoenix_recsys.serve.store import Store\n"
    "with Store.open(sys.argv[1]) as s:\n"
    "    seed_store(s, sys.argv[2], PHOENIX_ACTIONS)\n"
)


def _health(port: int) -> dict[str, Any]:
    """The server's /healthz body (index kind and size)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/healthz")
    return dict(json.loads(c.getresponse().read()))


def run() -> dict:
    """Build the world and bundle, start the server, drive it; returns the result."""
    cfg = _size()
    duration = float(os.environ.get("PHOENIX_SCALE_DURATION", "20"))
    workers = int(os.environ.get("PHOENIX_SCALE_WORKERS", "2"))
    batch_ms = float(os.environ.get("PHOENIX_SCALE_RANK_BATCH_MS", "0"))
    if workers < 1 or batch_ms < 0:
        raise ValueError(f"PHOENIX_SCALE_WORKERS must be >= 1 and PHOENIX_SCALE_RANK_BATCH_MS >= 0; got {workers}, {batch_ms}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        world = generate_scale_world(root / "world", cfg, load=False)
        world["seconds"] = time.perf_counter() - t0
        mcfg = default_model_config(PHOENIX_ACTIONS)
        save_model(root / "bundle", "ranker", PhoenixModel(mcfg, rngs=nnx.Rngs(0)))
        save_model(root / "bundle", "retrieval", PhoenixRetrievalModel(mcfg, rngs=nnx.Rngs(1)))
        port = free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")])}
        # Seed the store in a process of its own first, so the server's start is timed alone: the
        # corpus index from nothing (every post embedded and indexed) plus warm-up.
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", _SEED_SCRIPT, str(root / "store.sqlite"), str(root / "world")], env=env,
                       check=True)  # fmt: skip
        seed_s = time.perf_counter() - t0
        load = {"start": os.getloadavg()[0]}
        cmd = [sys.executable, "-m", "phoenix_recsys.cli.main", "serve", str(root / "bundle"), "--data", str(root / "world"),
               "--store", str(root / "store.sqlite"), "--port", str(port), "--read-only", "--public-reads",
               "--log-level", "warning", "--workers", str(workers)]  # fmt: skip  (reads need a key unless --public-reads)
        env = {**env, "PHOENIX_RANK_BATCH_WINDOW_MS": str(batch_ms)}
        start_timeout = float(os.environ.get("PHOENIX_SCALE_START_TIMEOUT", "1800"))
        proc, ready_s = start_server(cmd, env, port, root / "server.log", timeout_s=start_timeout)
        load["ready"] = os.getloadavg()[0]
        health = _health(port)
        try:
            counts = user_event_counts(cfg)
            users = user_classes(cfg, counts)
            _drive(port, users, 2, min(10.0, duration), seed=99)  # warm caches (SQLite pages, FAISS)
            rows = []
            for c in CONCURRENCY:
                # Server CPU per request as well as latency: on a shared box whose speed drifts, CPU
                # per feed is the steadier figure for comparing runs.
                cpu0 = server_cpu_s(proc.pid)
                r = _drive(port, users, c, duration, seed=c)
                r["server_cpu_ms_per_request"] = (server_cpu_s(proc.pid) - cpu0) / max(r["requests"], 1) * 1e3
                rows.append(r)
            rss_by = _rss_by_process(proc.pid)
            rss = sum(rss_by.values())
            load["end"] = os.getloadavg()[0]
        finally:
            proc.terminate()
            proc.wait(30)
    # Cost vs lifetime events: concurrency-1 samples of known and heavy users, by decade of events.
    samples = [(int(counts[u]), ms) for u, ms in rows[0]["_samples"] if u < cfg.users]
    by_len: list[dict[str, Any]] = []
    for lo in (1, 10, 100, 1000, 10_000, 100_000):
        ms = [m for n, m in samples if lo <= n < lo * 10]
        if ms:
            by_len.append({"events_from": lo, "events_to": lo * 10, "n": len(ms), "p50_ms": float(np.median(ms))})
    for r in rows:
        r.pop("_samples")
    return {"settings": {"users": cfg.users, "posts": cfg.posts, "events": cfg.events, "heavy_users": cfg.heavy_users,
                         "heavy_events": cfg.heavy_events, "duration_s": duration, "k": K, "workers": workers, "rank_batch_window_ms": batch_ms},
            "world": world, "seed_s": seed_s, "server_ready_s": ready_s, "index_kind": health.get("index_kind"),
            "index_posts": health.get("index_posts"), "load_avg_1m": load, "server_rss_mib": rss,
            "server_rss_mib_by_process": [round(v) for v in rss_by.values()], "rows": rows,
            "cost_vs_history": by_len}  # fmt: skip


def _plots(result: dict) -> list[str]:
    """latency vs concurrency and cost vs history length, as PNGs under benchmarks/results/."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for c in CLASSES:
        ax.plot(CONCURRENCY, [r[c]["p50_ms"] for r in result["rows"]], marker="o", label=f"{c} p50")
        ax.plot(CONCURRENCY, [r[c]["p99_ms"] for r in result["rows"]], marker="x", ls="--", label=f"{c} p99")
    ax.set(xlabel="concurrent clients", ylabel="feed latency (ms)", xscale="log", title="Latency vs concurrency")
    ax.legend(fontsize=7)
    fig.tight_layout()
    p = RESULTS_DIR / "scale_latency.png"
    fig.savefig(p, dpi=100)
    paths.append(str(p))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    b = result["cost_vs_history"]
    ax.plot([x["events_from"] for x in b], [x["p50_ms"] for x in b], marker="o")
    ax.set(xlabel="user lifetime events (decade start)", ylabel="p50 feed latency (ms)", xscale="log",
           title="Cost vs history length (concurrency 1)")  # fmt: skip
    fig.tight_layout()
    p = RESULTS_DIR / "scale_cost_vs_history.png"
    fig.savefig(p, dpi=100)
    paths.append(str(p))
    plt.close("all")
    return paths


def _start_text(result: dict) -> str:
    if "seed_s" not in result:  # results from before the seeding was timed on its own
        return f"server ready in {result['server_ready_s']:.0f} s (seeding + index build)"
    load = result.get("load_avg_1m", {})
    return (f"store seeded in {result['seed_s']:.0f} s, then server ready in {result['server_ready_s']:.0f} s "
            f"(corpus index from nothing: {result.get('index_posts') or 0:,} posts embedded into "
            f"{result.get('index_kind')}, plus warm-up); 1-minute load average {load.get('start', float('nan')):.1f} "
            f"at server start, {load.get('ready', float('nan')):.1f} when ready, {load.get('end', float('nan')):.1f} "
            "at the end (shared 2-core box)")  # fmt: skip


def table(result: dict) -> str:
    """Markdown tables of a `run()` result."""
    s = result["settings"]
    head = (f"World: {s['users']:,} users x {s['posts']:,} posts x {s['events']:,} events "
            f"({s['heavy_users']} heavy users with {s['heavy_events']:,} events), generated in "
            f"{result['world']['seconds']:.0f} s; {_start_text(result)}, RSS {result['server_rss_mib']:.0f} MiB; "
            f"{s['duration_s']:.0f} s per "
            f"concurrency, {s.get('workers', 1)} worker(s), ranking micro-batch window "
            f"{s.get('rank_batch_window_ms', 0):g} ms. Run as `PHOENIX_SCALE_WORKERS={s.get('workers', 1)} "
            f"PHOENIX_SCALE_RANK_BATCH_MS={s.get('rank_batch_window_ms', 0):g} PHOENIX_SCALE_HEAVY={s['heavy_users']}x{s['heavy_events']} "
            f"PHOENIX_SCALE_DURATION={s['duration_s']:.0f} phoenix-recsys bench run scale --size "
            f"{s['users']}x{s['posts']}x{s['events']}`.\n\n")  # fmt: skip
    def cpu(r: dict) -> str:
        return f"{r['server_cpu_ms_per_request']:.1f}" if "server_cpu_ms_per_request" in r else "-"

    rows = [[r["concurrency"], f"{r['requests_per_s']:.1f}", r["errors"], cpu(r)]
            + [f"{r[c]['p50_ms']:.0f} / {r[c]['p99_ms']:.0f}" for c in CLASSES] for r in result["rows"]]  # fmt: skip
    t1 = markdown_table(["clients", "requests/s", "errors", "server CPU ms / request"]
                        + [f"{c} p50 / p99 ms" for c in CLASSES], rows)  # fmt: skip
    t2 = markdown_table(["lifetime events", "requests", "p50 ms"],
                        [[f"{b['events_from']:,}-{b['events_to']:,}", b["n"], f"{b['p50_ms']:.0f}"]
                         for b in result["cost_vs_history"]])  # fmt: skip
    return head + t1 + "\n\nCost vs history length (concurrency 1):\n\n" + t2


def main() -> dict:
    result = run()
    result["plots"] = _plots(result)
    write_result("scale", result)
    return result
