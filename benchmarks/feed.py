"""Feed latency: `FeedService.feed` end to end (store reads, ANN retrieval, filters, cached-context
ranking of every surviving candidate, scoring, diversity) on a synthetic world.

World: 2,000 users x 10,000 posts x ~20 impressions (seed 0), so each request gathers the in-network
posts of followed authors plus 1,000 retrieved posts (SPEC 7 sizes) and ranks ~1,200 candidates.
Models: the trained default size (D=64, 2 layers), freshly initialised (latency does not depend on
the weights). k = 20; 20 warm-up requests, then 200 timed requests for random users.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from flax import nnx

from benchmarks.common import markdown_table, write_result
from phoenix_recsys.data.synth import SynthConfig, synthesize
from phoenix_recsys.model import PhoenixModel, PhoenixRetrievalModel
from phoenix_recsys.serve.pipeline import FeedService, apply_process_settings
from phoenix_recsys.serve.settings import ServeSettings
from phoenix_recsys.train.bundle import save_model
from phoenix_recsys.train.run import default_model_config

USERS, POSTS, IMPRESSIONS, WARMUP, REQUESTS, K = 2000, 10_000, 20.0, 20, 200, 20


def run() -> dict:
    """Build the world and bundle in a temp dir, then time feed requests."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ds = synthesize(root / "world", SynthConfig(num_users=USERS, num_posts=POSTS, impressions_per_user=IMPRESSIONS,
                                                    seed=0))
        cfg = default_model_config(ds.actions)
        save_model(root / "bundle", "ranker", PhoenixModel(cfg, rngs=nnx.Rngs(0)))
        save_model(root / "bundle", "retrieval", PhoenixRetrievalModel(cfg, rngs=nnx.Rngs(1)))
        settings = ServeSettings(writes_enabled=False, warmup=True, store_path=root / "store.sqlite",
                                 disabled_filters=("own_post",))
        apply_process_settings(settings)
        rng = np.random.default_rng(0)
        with FeedService.open(root / "bundle", settings=settings, data_dir=root / "world") as service:
            for u in rng.integers(0, USERS, WARMUP):
                service.feed(int(u), K)
            lat, ranked = [], []
            for u in rng.integers(0, USERS, REQUESTS):
                t0 = time.perf_counter()
                res = service.feed(int(u), K)
                lat.append((time.perf_counter() - t0) * 1e3)
                ranked.append(res.ranked)
    lat_a = np.asarray(lat)
    return {"settings": {"users": USERS, "posts": POSTS, "k": K, "requests": REQUESTS, "events": int(ds.num_events)},
            "p50_ms": float(np.percentile(lat_a, 50)), "p95_ms": float(np.percentile(lat_a, 95)),
            "p99_ms": float(np.percentile(lat_a, 99)), "mean_candidates_ranked": float(np.mean(ranked)),
            "requests_per_s_single_thread": float(1e3 / lat_a.mean())}


def table(result: dict) -> str:
    """Markdown table of a `run()` result."""
    return markdown_table(
        ["world", "candidates ranked / request", "p50 ms", "p95 ms", "p99 ms", "requests/s (1 thread)"],
        [[f"{USERS} users x {POSTS} posts", f"{result['mean_candidates_ranked']:.0f}", f"{result['p50_ms']:.1f}",
          f"{result['p95_ms']:.1f}", f"{result['p99_ms']:.1f}", f"{result['requests_per_s_single_thread']:.0f}"]],
    )


def main() -> dict:
    result = run()
    write_result("feed", result)
    return result
