"""ANN at the feed's k: one query at a time, 1,000 results, through `CorpusIndex.search` (issue 13).

`bench run ann` times FAISS alone at k = 100. A feed request asks the index for 1,000 posts (SPEC 7
sizes), and with 4-bit PQ codes the fast-scan heap holds `ivf_refine` x k entries, so the refine
factor costs time at that k. This times `CorpusIndex.search(q, 1000)` (the serving code path: IVF
search, exact re-scoring, id mapping) for IVF-Flat and pq4 settings, and recall@1000 against exact
search, on the cached 1M-post embeddings and queries of `benchmarks.ann` (run `python -m
benchmarks.ann prepare` first, or `bench run ann`).

    python -m benchmarks.ann_feed        # writes results/ann_feed.json
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np

from benchmarks.common import write_result

K = 1000
_SETTINGS = [
    ("flat", 1, 128),
    ("flat", 1, 384),
    ("pq4", 8, 384),
    ("pq4", 4, 384),
    ("pq4", 2, 384),
    ("pq4", 4, 320),
]


def run(n_queries: int = 100) -> dict[str, Any]:
    """Per setting: ms per single query at k = 1000 and recall@1000 against exact search."""
    import faiss

    from benchmarks.ann import prepare
    from phoenix_recsys.serve.index import CorpusIndex, IndexConfig

    p = prepare()
    emb = np.ascontiguousarray(p["emb"], dtype=np.float32)
    q = p["queries"][:n_queries]
    ids = np.arange(emb.shape[0], dtype=np.int64)
    load0 = os.getloadavg()[0]
    exact = faiss.IndexFlatIP(emb.shape[1])
    exact.add(emb)
    _, truth = exact.search(q, K)
    t0 = time.perf_counter()
    for i in range(20):
        exact.search(q[i : i + 1], K)
    exact_ms = (time.perf_counter() - t0) / 20 * 1e3
    del exact
    rows = []
    for codec, refine, nprobe in _SETTINGS:
        idx = CorpusIndex.build(
            ids, emb, config=IndexConfig(ivf_codec=codec, ivf_refine=refine, ivf_nprobe=nprobe)
        )
        idx.search(q[:1], K)  # first-call costs out of the timing
        t0 = time.perf_counter()
        got = [idx.search(q[i : i + 1], K).ids[0] for i in range(q.shape[0])]
        ms = (time.perf_counter() - t0) / q.shape[0] * 1e3
        recall = float(np.mean([np.intersect1d(g, t).size / K for g, t in zip(got, truth, strict=True)]))
        rows.append({"codec": codec, "refine": refine, "nprobe": nprobe, "ms": ms, "recall": recall})
        print(
            f"{codec} R{refine} nprobe {nprobe}: {ms:.1f} ms, recall@{K} {recall:.3f}",
            file=sys.stderr,
            flush=True,
        )
        del idx
    return {"k": K, "queries": int(q.shape[0]),
            "posts": int(emb.shape[0]), "exact_ms": exact_ms, "rows": rows,
            "load": f"{load0:.2f} at start, {os.getloadavg()[0]:.2f} at end"}  # fmt: skip


if __name__ == "__main__":
    result = run()
    write_result("ann_feed", result)
    print(f"exact: {result['exact_ms']:.1f} ms a query at k={K}; load {result['load']}")
