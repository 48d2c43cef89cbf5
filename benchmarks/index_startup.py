"""Start-up time of the feed service from an index snapshot vs from nothing (issue 13).

Builds a synthetic store of N posts (default 100k) with the default-size model (D = 128, untrained:
the tower's cost does not depend on its weights), then times `FeedService.open` (no warm-up, no
follower threads) three ways:
  nothing   no snapshot: every post is embedded and indexed
  snapshot  the newest snapshot is loaded, nothing to catch up
  catch-up  the snapshot plus `--new` posts written after it (as after a kill -9)

    nice -n 10 python -m benchmarks.index_startup --posts 100000 --new 5000 --out /tmp/startup.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from flax import nnx

from phoenix_recsys.model import PhoenixModel, PhoenixModelConfig, PhoenixRetrievalModel
from phoenix_recsys.serve.pipeline import FeedService
from phoenix_recsys.serve.runtime import ModelRuntime
from phoenix_recsys.serve.settings import ServeSettings
from phoenix_recsys.serve.store import Store
from phoenix_recsys.train.bundle import save_model


def _timed_open(runtime: ModelRuntime, settings: ServeSettings) -> tuple[float, dict]:
    t0 = time.perf_counter()
    svc = FeedService.open(runtime, settings=settings)
    dt = time.perf_counter() - t0
    info = svc.index_info
    out = {"seconds": round(dt, 2), "source": info.source, "embedded": info.embedded, "caught_up": info.caught_up,
           "posts": info.size}  # fmt: skip
    svc.follower.stop(snapshot=False)
    svc.store.close()
    return dt, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--posts", type=int, default=100_000)
    ap.add_argument("--new", type=int, default=5_000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="phoenix-startup-"))
    try:
        cfg = PhoenixModelConfig()
        save_model(work / "bundle", "ranker", PhoenixModel(cfg, rngs=nnx.Rngs(0)))
        save_model(work / "bundle", "retrieval", PhoenixRetrievalModel(cfg, rngs=nnx.Rngs(1)))
        store_path = work / "store.sqlite"
        with Store.open(store_path) as st:
            for start in range(0, args.posts, 50_000):
                n = min(50_000, args.posts - start)
                st.add_posts(np.arange(start, start + n), author_ids=rng.integers(0, 5_000, n),
                             created_at=rng.integers(1_700_000_000, 1_720_000_000, n))  # fmt: skip
        runtime = ModelRuntime.load(work / "bundle")
        runtime.post_embeddings(np.arange(5000), np.zeros(5000, np.int64))  # compile outside the timings
        settings = ServeSettings(writes_enabled=False, warmup=False, index_follow=False, store_path=store_path,
                                 index_dir=work / "index")  # fmt: skip  (default index: HNSW above 50k posts)
        results = {"posts": args.posts, "new_posts": args.new, "emb_size": cfg.emb_size}
        _, results["from_nothing"] = _timed_open(runtime, settings)
        _, results["from_snapshot"] = _timed_open(runtime, settings)
        with Store.open(store_path) as st:
            st.add_posts(np.arange(args.posts, args.posts + args.new), author_ids=rng.integers(0, 5_000, args.new),
                         created_at=np.full(args.new, 1_720_000_001))  # fmt: skip
        _, results["snapshot_plus_catch_up"] = _timed_open(runtime, settings)
        print(json.dumps(results, indent=2))
        if args.out is not None:
            args.out.write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
