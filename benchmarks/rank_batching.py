"""Micro-batching of ranking across concurrent requests: 16 threads, with and without `RankBatcher`.

Each of `THREADS` threads scores its own requests (own user, history, candidates) back to back for
`DURATION_S` through `ModelRuntime.predict` (every request alone) or `RankBatcher.predict` (requests
of one bucket that arrive within the window scored in one compiled call). Model: the ranking
benchmark's (D=128, 2 layers, S=128), fp32, untrained. Two request mixes: small (16-250 candidates:
buckets 64 and 256) and feed-sized (600-1,000 candidates: bucket 1,024).

Usage: python -m benchmarks.rank_batching [--duration S] [--windows 2,5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from flax import nnx

from benchmarks.common import markdown_table, write_result
from benchmarks.ranking import _config
from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.model import PhoenixModel
from phoenix_recsys.serve import history as hist
from phoenix_recsys.serve.feed.batcher import RankBatcher
from phoenix_recsys.serve.runtime import ModelRuntime
from phoenix_recsys.train.bundle import save_model

THREADS = 16
MIXES = {"small (16-250 cands)": (16, 250), "feed-sized (600-1,000 cands)": (600, 1000)}


def _requests(runtime: ModelRuntime, lo: int, hi: int, count: int, seed: int) -> list[RecsysBatch]:
    rng = np.random.default_rng(seed)
    names = runtime.vocab.names
    out = []
    for i in range(count):
        h = int(rng.integers(0, runtime.config.history_seq_len + 1))
        history = hist.make_history(rng.integers(1, 100_000, h).tolist(), rng.integers(0, 5000, h).tolist(),
                                    [{names[int(rng.integers(0, len(names)))]: 1.0} for _ in range(h)])
        n = int(rng.integers(lo, hi + 1))
        out.append(hist.with_candidates(
            runtime.context(i, history), rng.integers(1, 100_000, n), rng.integers(0, 5000, n),
            hash_config=runtime.hash_config, product_surface=0, now=1_700_000_000,
        ))  # fmt: skip
    return out


def _drive(predict, per_thread: list[list[RecsysBatch]], duration_s: float) -> dict:
    lat: list[list[float]] = [[] for _ in per_thread]
    start = threading.Barrier(len(per_thread) + 1)
    stop_at = [0.0]

    def worker(i: int) -> None:
        reqs = per_thread[i]
        start.wait()
        j = 0
        while time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            predict(reqs[j % len(reqs)])
            lat[i].append(time.perf_counter() - t0)
            j += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(per_thread))]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + duration_s
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    all_lat = np.sort(np.concatenate([np.asarray(x) for x in lat]))
    return {"requests_per_s": len(all_lat) / wall, "p50_ms": float(np.percentile(all_lat, 50) * 1e3),
            "p99_ms": float(np.percentile(all_lat, 99) * 1e3), "requests": int(len(all_lat))}


def run(duration_s: float = 10.0, windows_ms: tuple[float, ...] = (2.0, 5.0)) -> dict:
    """Measure every (mix, mode) pair; returns the result rows."""
    cfg = _config("float32")
    with tempfile.TemporaryDirectory() as d:
        save_model(Path(d), "ranker", PhoenixModel(cfg, rngs=nnx.Rngs(0)), dataset={"name": "bench"})
        runtime = ModelRuntime.load(d)
    rows = []
    for mix, (lo, hi) in MIXES.items():
        per_thread = [_requests(runtime, lo, hi, 8, seed=100 + i) for i in range(THREADS)]
        batchers = {w: RankBatcher(runtime, window_s=w / 1e3, max_requests=8) for w in windows_ms}
        # Compile every program the mix can reach before timing (alone and batched).
        for reqs in per_thread:
            for r in reqs:
                runtime.predict(r)
        buckets: dict[int, RecsysBatch] = {}
        for reqs in per_thread:
            for r in reqs:
                buckets.setdefault(runtime._padded(r).num_candidates, r)
        for r in buckets.values():
            for count in (2, 4, 8):
                runtime.predict_many([r] * count)
        modes = [("alone", runtime.predict, None)] + [
            (f"batched, window {w:g} ms", b.predict, b) for w, b in batchers.items()]
        for mode, predict, batcher in modes:
            res = _drive(predict, per_thread, duration_s)
            share = None if batcher is None else batcher.batched_requests / max(1, res["requests"])
            rows.append({"mix": mix, "mode": mode, **res, "share_batched": share,
                         "load_avg_1m": round(os.getloadavg()[0], 2)})
            print(rows[-1], flush=True)
        for b in batchers.values():
            b.close()
    return {"settings": {"threads": THREADS, "duration_s": duration_s, "max_requests": 8, "S": cfg.history_seq_len,
                         "D": cfg.emb_size}, "rows": rows}


def table(result: dict) -> str:
    """Markdown table of a `run()` result."""
    return markdown_table(
        ["request mix", "mode", "requests/s", "p50 ms", "p99 ms", "share scored in a batch", "load avg"],
        [[r["mix"], r["mode"], f"{r['requests_per_s']:.1f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
          "-" if r["share_batched"] is None else f"{100 * r['share_batched']:.0f}%", f"{r['load_avg_1m']:.1f}"]
         for r in result["rows"]],
    )


def main(argv: list[str] | None = None) -> dict:
    """Run, write `benchmarks/results/rank_batching.json`, print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--windows", default="2,5", help="comma-separated batching windows in ms")
    a = p.parse_args(argv)
    result = run(a.duration, tuple(float(w) for w in a.windows.split(",")))
    write_result("rank_batching", result)
    print(table(result))
    return result


if __name__ == "__main__":
    main()
