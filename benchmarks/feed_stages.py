"""Where one feed's time goes, in-process, on a seeded scale store: the feed's own stage timings
plus the calls inside them (ANN search, user embedding, store reads, context encode, scoring).

One request at a time in this process (no HTTP, no other clients), so each figure is the CPU work of
that call; the sources run in threads, so `sources` is wall time while its parts add up CPU.

Usage (a bundle and store as `benchmarks.scale` seeds them, sized by PHOENIX_SCALE_SIZE):

    PYTHONPATH=. python -m benchmarks.feed_stages BUNDLE STORE [--users 60]

Prints one JSON object per user class (median milliseconds per feed, and calls per feed); writes nothing.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from benchmarks.scale import _size, user_classes
from phoenix_recsys.data.scale import user_event_counts
from phoenix_recsys.model.cached import CachedRanker
from phoenix_recsys.serve import pipeline
from phoenix_recsys.serve.index.corpus import CorpusIndex
from phoenix_recsys.serve.runtime import ModelRuntime, apply_process_settings
from phoenix_recsys.serve.settings import ServeSettings
from phoenix_recsys.serve.store.mirror import PostMirror
from phoenix_recsys.serve.store.sql import SQLStore

#: (owner, attribute, label, returns device arrays): the calls timed inside a feed. A call that
#: returns device arrays is timed until they are ready, not until JAX has dispatched it.
TIMED: tuple[tuple[Any, str, str, bool], ...] = (
    (CorpusIndex, "search", "ann_search", False),
    (ModelRuntime, "user_embedding", "user_embedding", False),
    (ModelRuntime, "context", "context", False),
    (CachedRanker, "encode", "rank_encode", True),
    (CachedRanker, "score_cached", "rank_score", True),
    (SQLStore, "recent_posts_by_authors", "store_in_network", False),
    (PostMirror, "recent_posts_by_authors", "mirror_in_network", False),
    (PostMirror, "get_posts", "mirror_get_posts", False),
    (SQLStore, "get_posts", "store_get_posts", False),
    (SQLStore, "seen_posts", "store_seen", False),
    (pipeline, "score_feed", "score_feed", False),
    (pipeline, "explain_items", "explain_items", False),
)


def _timed(
    fn: Callable[..., Any], label: str, device: bool, sink: dict[str, list[float]]
) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        if device:
            jax.block_until_ready(out)
        sink[label].append((time.perf_counter() - t0) * 1e3)
        return out

    return wrapper


def main() -> None:
    """Open the service on BUNDLE + STORE, time `--users` feeds per user class, print medians."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("store")
    ap.add_argument("--users", type=int, default=60, help="feeds timed per class (after 10 warm ones)")
    ap.add_argument("--k", type=int, default=20)
    args = ap.parse_args()
    calls: dict[str, list[float]] = collections.defaultdict(list)
    for owner, name, label, device in TIMED:
        setattr(owner, name, _timed(getattr(owner, name), label, device, calls))
    settings = ServeSettings(
        writes_enabled=False, index_snapshot_interval_s=None, index_snapshot_every_posts=None
    )
    apply_process_settings(settings)  # FAISS threads as `serve` sets them, or the ANN figure is not the server's
    svc = pipeline.FeedService.open(args.bundle, settings=settings, store_path=args.store)
    if svc.post_mirror is not None:
        svc.post_mirror.wait_ready()  # as a server's feeds are once it has been up a few seconds
    cfg = _size()
    classes = user_classes(cfg, user_event_counts(cfg))
    rng = np.random.default_rng(0)
    try:
        for cls, pool in classes.items():
            users = rng.choice(pool, size=args.users, replace=pool.size < args.users)
            for u in users[:10]:
                svc.feed(int(u), args.k)
            calls.clear()
            stages: dict[str, list[float]] = collections.defaultdict(list)
            wall, ranked = [], []
            for u in users:
                t0 = time.perf_counter()
                r = svc.feed(int(u), args.k)
                wall.append((time.perf_counter() - t0) * 1e3)
                ranked.append(r.ranked)
                for stage, ms in r.timings_ms.items():
                    stages[stage].append(ms)
            print(json.dumps({
                "class": cls, "feeds": len(users), "wall_ms": float(np.median(wall)),
                "ranked": float(np.median(ranked)),
                "stages_ms": {s: round(float(np.median(v)), 2) for s, v in stages.items()},
                "calls_ms": {c: round(float(np.median(v)), 2) for c, v in calls.items()},
                "calls_per_feed": {c: round(len(v) / len(users), 2) for c, v in calls.items()},
            }))  # fmt: skip
    finally:
        svc.close()


if __name__ == "__main__":
    main()
