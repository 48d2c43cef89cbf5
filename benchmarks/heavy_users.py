"""Cost vs lifetime history in-process (issue 13): a heavy user's feed against a light user's, per stage.

The goal "a user with 100k lifetime events costs at most 1.5x a user with 100" is about per-request
work that grows with a user's lifetime (seen set, history reads, exclusions). This measures it without
HTTP and without other clients: one `FeedService` over a cached scale world (`data.scale`, seed 0),
models freshly initialised at the trained default size, the serving defaults (`ServeSettings`,
read-only). Light users are those with `--light-events` lifetime events (within 30%), heavy users
are the world's heavy users; the two classes are interleaved request by request, so load on a shared
box hits both alike. Reports the median total and median per stage (`FeedResult.timings_ms`) per
class, the heavy / light ratio, and with `--profile` the top cProfile entries of the heavy feeds.

Usage (the world, bundle and store are cached in --work and reused):
    python -m benchmarks.heavy_users --size 10000x50000x1000000 --heavy 5x100000 --requests 60
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import time
from pathlib import Path
from typing import Any

import numpy as np


def _prepare(work: Path, size: str, heavy: str) -> tuple[Path, Path, Path, Any]:
    """World, bundle and store under `work` (built once per size, then reused)."""
    from flax import nnx

    from phoenix_recsys.actions import PHOENIX_ACTIONS
    from phoenix_recsys.data.scale import ScaleConfig, generate_scale_world
    from phoenix_recsys.model import PhoenixModel, PhoenixRetrievalModel
    from phoenix_recsys.train.bundle import save_model
    from phoenix_recsys.train.run import default_model_config

    u, p, e = (int(x) for x in size.split("x"))
    hn, he = (int(x) for x in heavy.split("x"))
    cfg = ScaleConfig(users=u, posts=p, events=e, heavy_users=hn, heavy_events=he, seed=0)
    root = work / f"{size}-{heavy}"
    world, bundle = root / "world", root / "bundle"
    if not (world / "DONE").exists():
        generate_scale_world(world, cfg, load=False)
        (world / "DONE").write_text("ok\n")
    if not (bundle / "DONE").exists():
        mcfg = default_model_config(PHOENIX_ACTIONS)
        save_model(bundle, "ranker", PhoenixModel(mcfg, rngs=nnx.Rngs(0)))
        save_model(bundle, "retrieval", PhoenixRetrievalModel(mcfg, rngs=nnx.Rngs(1)))
        (bundle / "DONE").write_text("ok\n")
    return world, bundle, root / "store.sqlite", cfg


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Open the service, time interleaved light/heavy feeds; the result as a dict."""
    from phoenix_recsys.data.scale import user_event_counts
    from phoenix_recsys.serve.pipeline import FeedService, apply_process_settings
    from phoenix_recsys.serve.settings import ServeSettings

    world, bundle, store, cfg = _prepare(Path(args.work), args.size, args.heavy)
    extra = {} if args.exact_max_size is None else {"index_exact_max_size": args.exact_max_size}
    settings = ServeSettings(writes_enabled=False, warmup=True, store_path=store, index_follow=False,
                             index_snapshot_interval_s=None, index_dir=store.parent / f"index-{args.exact_max_size}",
                             **extra)  # fmt: skip
    apply_process_settings(settings)
    counts = user_event_counts(cfg)
    rng = np.random.default_rng(0)
    lo, hi = args.light_events * 0.7, args.light_events * 1.3
    light_pool = np.flatnonzero((counts >= lo) & (counts <= hi))
    light_pool = light_pool[light_pool >= cfg.heavy_users]
    light = rng.choice(light_pool, size=min(200, light_pool.size), replace=False)
    heavy = np.arange(cfg.heavy_users)
    t0 = time.perf_counter()
    service = FeedService.open(bundle, settings=settings, data_dir=world)
    open_s = time.perf_counter() - t0
    out: dict[str, Any] = {"size": args.size, "heavy": args.heavy, "open_s": round(open_s, 1),
                           "index_kind": service.index.kind.value if service.index is not None else None,
                           "light_events_median": float(np.median(counts[light])),
                           "heavy_events": int(cfg.heavy_events), "load_avg_start": os.getloadavg()[0]}  # fmt: skip
    prof = cProfile.Profile() if args.profile else None
    try:
        for i in range(10):  # warm SQLite pages and the jitted shapes
            service.feed(int(light[i % light.size]), 20)
            service.feed(int(heavy[i % heavy.size]), 20)
        res: dict[str, list[dict[str, float]]] = {"light": [], "heavy": []}
        meta: dict[str, list[int]] = {"light_seen": [], "heavy_seen": [], "light_hist": [], "heavy_hist": []}
        for i in range(args.requests):
            for cls, pool in (("light", light), ("heavy", heavy)):
                uid = int(pool[i % pool.size])
                if prof is not None and cls == "heavy":
                    prof.enable()
                r = service.feed(uid, 20)
                if prof is not None and cls == "heavy":
                    prof.disable()
                res[cls].append(dict(r.timings_ms))
                meta[f"{cls}_seen"].append(int(service.seen_set(uid, service.now()).size))
                meta[f"{cls}_hist"].append(r.history_length)
    finally:
        service.close()
    out["load_avg_end"] = os.getloadavg()[0]
    for cls, rows in res.items():
        stages = sorted({k for r in rows for k in r})
        out[cls] = {k: round(float(np.median([r.get(k, 0.0) for r in rows])), 2) for k in stages}
        out[cls]["seen_set"] = float(np.median(meta[f"{cls}_seen"]))
    out["ratio_total_p50"] = round(out["heavy"]["total"] / out["light"]["total"], 3)
    if prof is not None:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(35)
        out["profile"] = s.getvalue()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="10000x50000x1000000", help="USERSxPOSTSxEVENTS")
    ap.add_argument("--heavy", default="5x100000", help="NxEVENTS heavy users")
    ap.add_argument("--light-events", type=int, default=100, help="lifetime events of a light user")
    ap.add_argument("--requests", type=int, default=60, help="timed requests per class")
    ap.add_argument("--work", default="runs/heavy-users", help="cache of world, bundle and store")
    ap.add_argument("--exact-max-size", type=int, default=None,
                    help="index_exact_max_size (e.g. 10000: HNSW at 50k posts, as at full size)")
    ap.add_argument("--profile", action="store_true", help="cProfile the heavy feeds")
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args(argv)
    out = run(args)
    prof = out.pop("profile", None)
    print(json.dumps(out, indent=1))
    if prof:
        print(prof)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
