"""Start-up time of the feed service from an index snapshot vs from nothing (issue 13).

A synthetic SQLite store of N posts (default 100k; the issue's goals are at 1M) and a model bundle
(default: the untrained default-size models `bench run scale` serves, D = 64; `--bundle` for
another: the tower's cost does not depend on its weights), then `FeedService.open` (no warm-up, no
follower threads, the serving default index: exact up to 50k posts, IVF above) is timed three ways:
  nothing   no snapshot: every post is embedded and indexed (goal at 1M: <= 10 min)
  snapshot  the newest snapshot is loaded, nothing to catch up (goal: <= 30 s)
  catch-up  the snapshot plus `--new` posts written after it, as after a kill -9 (goal with 50k
            new posts: <= 90 s, every post retrievable)
After the catch-up the index must hold exactly the store's posts, and a fixed-seed sample of the
new posts, each searched by its own embedding, must come back first ("retrievable").

The base store is seeded once and kept in `--cache` (default ~/.cache/phoenix-recsys/startup);
each run works on a copy, so reruns skip the seeding.

    nice -n 10 python -m benchmarks.index_startup --posts 1000000 --new 50000 \
        --out benchmarks/results/index_startup_1m.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from phoenix_recsys.serve.pipeline import FeedService
from phoenix_recsys.serve.runtime import ModelRuntime
from phoenix_recsys.serve.settings import ServeSettings
from phoenix_recsys.serve.store import Store

_AUTHORS = 5_000
_T0, _T1 = 1_700_000_000, 1_720_000_000


def _load() -> float:
    return os.getloadavg()[0]


def _default_bundle(cache: Path) -> Path:
    """The untrained default-size bundle (`default_model_config`, what `bench run scale` serves)."""
    d = cache / "bundle-default-untrained"
    if not (d / "retrieval").exists():
        from flax import nnx

        from phoenix_recsys.actions import PHOENIX_ACTIONS
        from phoenix_recsys.model import PhoenixModel, PhoenixRetrievalModel
        from phoenix_recsys.train.bundle import save_model
        from phoenix_recsys.train.run import default_model_config

        cfg = default_model_config(PHOENIX_ACTIONS)
        save_model(d, "ranker", PhoenixModel(cfg, rngs=nnx.Rngs(0)))
        save_model(d, "retrieval", PhoenixRetrievalModel(cfg, rngs=nnx.Rngs(1)))
    return d


def _base_store(cache: Path, posts: int) -> tuple[Path, float | None]:
    """A store of `posts` fixed-seed posts in the cache; (path, seconds seeding took or None if cached)."""
    path = cache / f"store-{posts}.sqlite"
    if path.is_file():
        return path, None
    rng = np.random.default_rng(0)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with Store.open(tmp) as st:
        for start in range(0, posts, 50_000):
            n = min(50_000, posts - start)
            st.add_posts(np.arange(start, start + n), author_ids=rng.integers(0, _AUTHORS, n),
                         created_at=rng.integers(_T0, _T1, n))  # fmt: skip
    os.replace(tmp, path)
    return path, time.perf_counter() - t0


def _timed_open(runtime: ModelRuntime, settings: ServeSettings, check_new: np.ndarray | None = None) -> dict:
    load0 = _load()
    t0 = time.perf_counter()
    svc = FeedService.open(runtime, settings=settings)
    dt = time.perf_counter() - t0
    info = svc.index_info
    out = {"seconds": round(dt, 2), "source": info.source, "embedded": info.embedded, "caught_up": info.caught_up,
           "posts": info.size, "index_kind": str(svc.index.kind), "load_before": round(load0, 2),
           "load_after": round(_load(), 2)}  # fmt: skip
    try:
        if check_new is not None:
            out.update(_retrievable(runtime, svc, check_new))
    finally:
        svc.follower.stop(snapshot=False)
        svc.store.close()
    return out


def _retrievable(runtime: ModelRuntime, svc: FeedService, new_ids: np.ndarray) -> dict:
    """Every store post is in the index; a sample of the new posts comes back first for itself."""
    store_ids = np.concatenate([rows.post_ids for rows in svc.store.iter_posts(100_000)])
    index = svc.index
    same = np.array_equal(np.sort(store_ids), index.post_ids())
    sample = np.sort(np.random.default_rng(1).choice(new_ids, size=min(1000, new_ids.size), replace=False))
    rows = svc.store.get_posts(sample)
    emb = runtime.post_embeddings(sample, rows.author_ids)
    top1 = index.search(emb, 1).ids[:, 0]
    return {"index_equals_store": bool(same), "store_posts": int(store_ids.size),
            "new_sampled": int(sample.size), "new_found_first": int((top1 == sample).sum())}  # fmt: skip


def main() -> None:
    """Seed (cached), then time the three starts and write JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--posts", type=int, default=100_000)
    ap.add_argument("--new", type=int, default=5_000)
    ap.add_argument("--bundle", type=Path, default=None, help="model bundle (default: untrained default size)")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "phoenix-recsys" / "startup")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle or _default_bundle(args.cache)
    base, seed_s = _base_store(args.cache, args.posts)
    work = Path(tempfile.mkdtemp(prefix="phoenix-startup-"))
    try:
        store_path = work / "store.sqlite"
        shutil.copyfile(base, store_path)
        runtime = ModelRuntime.load(bundle)
        runtime.post_embeddings(np.arange(5000), np.zeros(5000, np.int64))  # compile outside the timings
        settings = ServeSettings(writes_enabled=False, warmup=False, index_follow=False, store_path=store_path,
                                 index_dir=work / "index")  # fmt: skip
        results: dict = {
            "posts": args.posts, "new_posts": args.new, "emb_size": runtime.retrieval_config.emb_size,
            "bundle": str(bundle), "index_config": str(settings.index_config()),
            "store_seed_seconds": None if seed_s is None else round(seed_s, 1),
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        }  # fmt: skip
        results["from_nothing"] = _timed_open(runtime, settings)
        results["from_snapshot"] = _timed_open(runtime, settings)
        new_ids = np.arange(args.posts, args.posts + args.new)
        with Store.open(store_path) as st:
            rng = np.random.default_rng(2)
            st.add_posts(new_ids, author_ids=rng.integers(0, _AUTHORS, args.new),
                         created_at=np.full(args.new, _T1 + 1))  # fmt: skip
        results["snapshot_plus_catch_up"] = _timed_open(runtime, settings, check_new=new_ids)
        print(json.dumps(results, indent=2))
        if args.out is not None:
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
