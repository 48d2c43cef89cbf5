"""ANN at 1M posts: recall@100 vs queries/s vs build time of FAISS structures (issue 13).

Corpus: the posts of the scale world (`data.scale`, 1M posts by default) embedded with the post
tower exactly as the server does (`ModelRuntime.post_embeddings`, float32, then L2-normalised as
`CorpusIndex` does). The bundle is the one `bench run scale` serves: freshly initialised models of
the default training size (`default_model_config`, D = 64, untrained); set `PHOENIX_ANN_BUNDLE` to
a trained bundle directory to measure that instead. Queries: user-tower embeddings of a fixed-seed
sample of users with history, each from their last S engaged events (what a feed request embeds).
Truth: exact top-100 by `IndexFlatIP`. Each point: recall@100 (mean over queries of
|ANN top-100 ∩ exact top-100| / 100), queries/s one query at a time (the server's pattern) and in
one batch, build seconds (train + add, every core), index bytes (serialised size). Structures:
IVF with float32 lists (IVF-Flat), with 4-bit PQ fast-scan codes whose shortlist is re-scored
exactly (the serving default, `IndexConfig.ivf_codec="pq4"`, built by the serving code), with
scalar-quantised lists (fp16, SQ8 + exact re-scoring) for comparison, and HNSW.

Cache (`PHOENIX_ANN_CACHE`, default ~/.cache/phoenix-recsys/ann): the world, the bundle, and the
`[P, D]` float32 embedding matrix as .npy, so reruns skip the embedding. `python -m benchmarks.ann
prepare` fills the cache only. Size: `PHOENIX_ANN_POSTS` (default 1000000), `PHOENIX_ANN_QUERIES`
(default 1000), `PHOENIX_ANN_SINGLE` (queries timed one at a time per point, default 200),
`PHOENIX_ANN_STRUCTURES` (comma-separated keys from `_configs`, e.g. `ivf1024,ivf1024-sq8`; default
all, the slow HNSW builds skipped when over `PHOENIX_ANN_BUDGET_S`, default 1500).
A run with `PHOENIX_ANN_BUNDLE` writes `results/ann_trained.json`, one without `results/ann.json`;
the section shows both curves when both files exist.
Long: not in `make bench`; run `phoenix-recsys bench run ann`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS_DIR, markdown_table, write_result

K = 100
_SEED = 0


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def cache_dir() -> Path:
    """Where the world, bundle, embeddings and queries are kept between runs."""
    d = Path(os.environ.get("PHOENIX_ANN_CACHE", Path.home() / ".cache" / "phoenix-recsys" / "ann"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _scale_config(posts: int) -> Any:
    from phoenix_recsys.data.scale import ScaleConfig

    # The world (100k users x 1M posts x 10M events); users and events scale with posts.
    if posts >= 1_000_000:
        return ScaleConfig(users=posts // 10, posts=posts, events=posts * 10, seed=_SEED)
    # Smaller (smoke) sizes: fewer, lighter heavy users so the totals still add up.
    return ScaleConfig(users=max(1000, posts // 10), posts=posts, events=posts * 10, heavy_users=2,
                       heavy_events=posts // 10, seed=_SEED)


def _world(posts: int) -> Path:
    """The scale world in the cache, generated (about a minute at 1M posts) unless already there."""
    import dataclasses

    from phoenix_recsys.data.scale import generate_scale_world

    cfg = _scale_config(posts)
    d = cache_dir() / f"world-{posts}"
    man = d / "manifest.json"
    if man.is_file() and json.loads(man.read_text()).get("notes", {}).get("scale_config") == dataclasses.asdict(cfg):
        return d
    print(f"generating the scale world ({posts:,} posts) in {d}", file=sys.stderr, flush=True)
    generate_scale_world(d, cfg, load=False)
    return d


def _bundle() -> Path:
    """`PHOENIX_ANN_BUNDLE`, else the untrained default-size bundle `bench run scale` serves."""
    if os.environ.get("PHOENIX_ANN_BUNDLE"):
        return Path(os.environ["PHOENIX_ANN_BUNDLE"])
    d = cache_dir() / "bundle-default-untrained"
    if not (d / "retrieval").exists():
        from flax import nnx

        from phoenix_recsys.actions import PHOENIX_ACTIONS
        from phoenix_recsys.model import PhoenixModel, PhoenixRetrievalModel
        from phoenix_recsys.train.bundle import save_model
        from phoenix_recsys.train.run import default_model_config

        mcfg = default_model_config(PHOENIX_ACTIONS)
        save_model(d, "ranker", PhoenixModel(mcfg, rngs=nnx.Rngs(0)))
        save_model(d, "retrieval", PhoenixRetrievalModel(mcfg, rngs=nnx.Rngs(1)))
    return d


def _post_embeddings(runtime: Any, world: Path, tag: str) -> tuple[np.ndarray, float]:
    """`[P, D]` float32 unit rows (cached .npy) and the seconds embedding took (0 if cached)."""
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from phoenix_recsys.serve.index.corpus import _normalised

    path = cache_dir() / f"post_emb-{tag}.npy"
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        return np.load(path, mmap_mode="r"), float(json.loads(meta.read_text())["seconds"])
    posts = pq.read_table(world / "posts.parquet", columns=["post_id", "author_id"])
    ids = posts["post_id"].to_numpy()
    authors = posts["author_id"].to_numpy()
    d = runtime.retrieval_config.emb_size
    tmp = path.with_name(path.name + ".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(ids.shape[0], d))
    chunk = 65_536
    t0 = time.perf_counter()
    with tqdm(total=ids.shape[0], desc="embedding posts", unit="post", file=sys.stderr) as bar:
        for lo in range(0, ids.shape[0], chunk):
            hi = min(lo + chunk, ids.shape[0])
            # The server's call, then CorpusIndex's normalisation: the vectors the index would hold.
            out[lo:hi] = _normalised("embeddings", runtime.post_embeddings(ids[lo:hi], authors[lo:hi]))
            bar.update(hi - lo)
    seconds = time.perf_counter() - t0
    out.flush()
    del out
    os.replace(tmp, path)
    meta.write_text(json.dumps({"seconds": seconds, "posts": int(ids.shape[0]), "dim": d}))
    return np.load(path, mmap_mode="r"), seconds


def _queries(runtime: Any, world: Path, tag: str, n: int) -> np.ndarray:
    """`[n, D]` user-tower embeddings of a fixed-seed sample of users with history (cached)."""
    import pyarrow.parquet as pq

    from phoenix_recsys.serve import history as hist
    from phoenix_recsys.serve.index.corpus import _normalised

    path = cache_dir() / f"queries-{tag}-{n}.npy"
    if path.is_file():
        return np.load(path)
    vocab = runtime.vocab
    names = hist.engagement_names(vocab)
    s = runtime.retrieval_config.history_seq_len
    f = pq.ParquetFile(world / "events.parquet")
    users = np.unique(pq.read_table(world / "events.parquet", columns=["user_id"])["user_id"].to_numpy())
    sample = np.sort(np.random.default_rng(_SEED).choice(users, size=min(n * 2, users.size), replace=False))
    cols = ["user_id", "post_id", "author_id", "timestamp", "product_surface", *vocab.names]
    parts = []
    for batch in f.iter_batches(batch_size=1 << 20, columns=cols):
        t = batch
        u = t.column(0).to_numpy()
        keep = np.isin(u, sample)
        engaged = np.zeros(u.shape[0], bool)
        for name in names:
            engaged |= t.column(cols.index(name)).to_numpy(zero_copy_only=False).astype(bool)
        keep &= engaged
        if keep.any():
            parts.append({c: t.column(i).to_numpy(zero_copy_only=False)[keep] for i, c in enumerate(cols)})
    ev = {c: np.concatenate([p[c] for p in parts]) for c in cols}
    out = []
    for uid in sample:
        rows = np.flatnonzero(ev["user_id"] == uid)
        if rows.size == 0:
            continue
        rows = rows[np.argsort(ev["timestamp"][rows], kind="stable")][-s:]
        acts = [{a: float(ev[a][r]) for a in vocab.names if ev[a][r]} for r in rows]
        h = hist.make_history(ev["post_id"][rows], ev["author_id"][rows], acts, ev["product_surface"][rows],
                              ev["timestamp"][rows])  # fmt: skip
        out.append(runtime.user_embedding(runtime.context(int(uid), h, for_retrieval=True)))
        if len(out) == n:
            break
    q = _normalised("queries", np.stack(out))
    np.save(path, q)
    return q


def prepare() -> dict[str, Any]:
    """World, bundle, post embeddings and queries (each from the cache when there)."""
    from phoenix_recsys.serve.runtime import ModelRuntime

    posts = _env_int("PHOENIX_ANN_POSTS", 1_000_000)
    world = _world(posts)
    bundle = _bundle()
    runtime = ModelRuntime.load(bundle)
    import hashlib

    tag = f"{hashlib.sha256(runtime.fingerprint.encode()).hexdigest()[:12]}-{posts}"
    emb, emb_s = _post_embeddings(runtime, world, tag)
    q = _queries(runtime, world, tag, _env_int("PHOENIX_ANN_QUERIES", 1000))
    return {"world": world, "bundle": bundle, "emb": emb, "embed_seconds": emb_s, "queries": q,
            "trained": bool(os.environ.get("PHOENIX_ANN_BUNDLE"))}  # fmt: skip


# -- the sweep ---------------------------------------------------------------------------------
def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _search_stats(
    index: Any, q: np.ndarray, truth: np.ndarray | None, n_single: int
) -> tuple[dict[str, Any], np.ndarray]:
    """recall@K against `truth`, batched and one-at-a-time queries/s of `index` on `q`."""
    t0 = time.perf_counter()
    _, ids = index.search(q, K)
    batch_s = time.perf_counter() - t0
    m = min(n_single, q.shape[0])
    index.search(q[:1], K)  # first-call costs out of the timing
    t0 = time.perf_counter()
    for i in range(m):
        index.search(q[i : i + 1], K)
    single_s = time.perf_counter() - t0
    out: dict[str, Any] = {"qps_batch": q.shape[0] / batch_s, "qps_single": m / single_s,
                           "ms_single": single_s / m * 1e3}  # fmt: skip
    if truth is not None:
        hits = [np.intersect1d(ids[i], truth[i][truth[i] >= 0]).size for i in range(q.shape[0])]
        out["recall"] = float(np.mean(hits) / K)
        # The head a feed mostly draws from: exact top-10 found in the ANN's top-10.
        hits10 = [np.intersect1d(ids[i, :10], truth[i, :10]).size for i in range(q.shape[0])]
        out["recall10"] = float(np.mean(hits10) / 10)
    return out, ids


def _configs() -> list[dict[str, Any]]:
    """The structures swept, cheapest build first (later ones are skipped when over the budget)."""
    every = [
        {"key": "ivf1024", "name": "IVF1024,Flat", "kind": "ivf", "nlist": 1024, "ivf_codec": "flat",
         "params": [4, 8, 16, 32, 64, 128, 256, 384, 512]},
        # 4-bit fast-scan codes shortlist, the float32 rows re-score the top `ivf_refine` x k (a flat
        # scan is bound by memory traffic). R4 is the serving default (`IndexConfig.ivf_codec="pq4"`).
        {"key": "ivf1024-pq4r8", "name": "IVF1024,PQ4fs,R8", "kind": "ivf", "nlist": 1024, "ivf_codec": "pq4",
         "ivf_refine": 8, "params": [64, 128, 256, 320, 384, 512]},
        {"key": "ivf1024-pq4", "name": "IVF1024,PQ4fs,R4", "kind": "ivf", "nlist": 1024, "ivf_codec": "pq4",
         "ivf_refine": 4, "params": [256, 384, 512]},
        # Scalar-quantised lists (half or a quarter of the bytes, SQ8 re-scored exactly), for comparison.
        {"key": "ivf1024-fp16", "name": "IVF1024,SQfp16", "kind": "ivf", "nlist": 1024, "codec": "SQfp16",
         "params": [256, 384, 512]},
        {"key": "ivf1024-sq8", "name": "IVF1024,SQ8,RFlat", "kind": "ivf", "nlist": 1024, "codec": "SQ8", "refine": 4,
         "params": [256, 384, 512]},
        {"key": "ivf4096", "name": "IVF4096,Flat", "kind": "ivf", "nlist": 4096, "ivf_codec": "flat", "params": [8, 16, 32, 64, 128, 256, 512]},
        {"key": "hnsw16-40", "name": "HNSW16 efC40", "kind": "hnsw", "m": 16, "efc": 40, "params": [100, 160, 256, 400, 640]},
        {"key": "hnsw32-40", "name": "HNSW32 efC40", "kind": "hnsw", "m": 32, "efc": 40, "params": [100, 160, 256, 400, 640]},
        {"key": "hnsw32-100", "name": "HNSW32 efC100", "kind": "hnsw", "m": 32, "efc": 100, "params": [100, 160, 256, 400, 640]},
        {"key": "hnsw16-100", "name": "HNSW16 efC100", "kind": "hnsw", "m": 16, "efc": 100, "params": [100, 160, 256, 400, 640]},
    ]
    want = os.environ.get("PHOENIX_ANN_STRUCTURES")
    if not want:
        return every
    names = [w.strip().lower() for w in want.split(",") if w.strip()]
    picked = [c for c in every if c["key"] in names]
    if len(picked) != len(names):
        raise SystemExit(f"PHOENIX_ANN_STRUCTURES={want!r}: known keys {[c['key'] for c in every]}")
    return picked


def _build(cfg: dict[str, Any], xb: np.ndarray) -> tuple[Any, float, float]:
    """(index, train seconds, add seconds) for one config."""
    import faiss

    from phoenix_recsys.serve.index.config import IndexConfig, IndexKind
    from phoenix_recsys.serve.index.corpus import _new_faiss_index, _train_ivf, refined_flat

    d = xb.shape[1]
    if cfg["kind"] == "hnsw":
        index = faiss.IndexHNSWFlat(d, cfg["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg["efc"]
        t0 = time.perf_counter()
        index.add(xb)
        return index, 0.0, time.perf_counter() - t0
    # IVF exactly as CorpusIndex builds it (spherical k-means on a sample), so the curve is the code's.
    icfg = IndexConfig(ann_kind="ivf", ivf_nlist=cfg["nlist"],
                       **{k: cfg[k] for k in ("ivf_codec", "ivf_refine") if k in cfg})  # fmt: skip
    nlist = icfg.nlist_for(xb.shape[0])
    index = (_scalar_quantised_ivf(cfg["codec"], d, nlist, icfg) if cfg.get("codec")
             else _new_faiss_index(IndexKind.IVF, d, icfg, num_posts=xb.shape[0]))  # fmt: skip
    t0 = time.perf_counter()
    _train_ivf(index, xb, icfg)
    t1 = time.perf_counter()
    if cfg.get("refine"):
        # Exact re-scoring of the top refine x k from float32 rows kept beside the codes.
        index = refined_flat(index, cfg["refine"])
    index.add(xb)
    return index, t1 - t0, time.perf_counter() - t1


def _scalar_quantised_ivf(codec: str, d: int, nlist: int, config: Any) -> Any:
    """An untrained IVF index whose lists hold scalar-quantised `codec` rows, with CorpusIndex's
    k-means settings."""
    import faiss

    from phoenix_recsys.serve.index.corpus import set_kmeans

    quantizer = faiss.IndexFlatIP(d)
    qt = {"SQ8": faiss.ScalarQuantizer.QT_8bit, "SQfp16": faiss.ScalarQuantizer.QT_fp16}[codec]
    index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, qt, faiss.METRIC_INNER_PRODUCT)
    index.own_fields = True
    quantizer.this.disown()
    set_kmeans(index, config)
    return index


def _set_param(index: Any, kind: str, p: int) -> None:
    import faiss

    if kind == "hnsw":
        index.hnsw.efSearch = p
    else:
        faiss.extract_index_ivf(index).nprobe = p


def run() -> dict[str, Any]:
    """Prepare (cached), exact truth, the sweep, then CorpusIndex's default built from nothing."""
    import faiss

    budget = float(os.environ.get("PHOENIX_ANN_BUDGET_S", "1500"))
    n_single = _env_int("PHOENIX_ANN_SINGLE", 200)
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    threads = os.cpu_count() or 1
    faiss.omp_set_num_threads(threads)  # builds and batched searches use every core
    p = prepare()
    xb = np.ascontiguousarray(p["emb"], dtype=np.float32)
    q = p["queries"]
    print(f"corpus {xb.shape}, {q.shape[0]} queries", file=sys.stderr, flush=True)
    exact = faiss.IndexFlatIP(xb.shape[1])
    exact.add(xb)
    ex, truth = _search_stats(exact, q, None, n_single)
    # How flat the exact ranking is: mean inner product at ranks 1, 10, 100, 1000. A tail near the
    # bulk's level means the top-100 past the head is decided by small differences (hard for any ANN).
    top_scores, _ = exact.search(q[:200], 1000)
    ex["score_at_rank"] = {str(r): float(top_scores[:, r - 1].mean()) for r in (1, 10, 100, 1000)}
    ex.update(name="Flat (exact)", kind="flat", param=None, recall=1.0, build_s=0.0,
              index_mib=xb.nbytes / 2**20)  # fmt: skip
    print(f"exact: {ex['qps_single']:.1f} q/s single, {ex['qps_batch']:.1f} q/s batched", file=sys.stderr, flush=True)
    del exact
    points: list[dict[str, Any]] = []
    skipped: list[str] = []
    builds: dict[str, float] = {}
    for cfg in _configs():
        elapsed = time.perf_counter() - t_start
        if cfg["kind"] == "hnsw" and "HNSW16 efC40" in builds:
            # Build time grows about linearly with M * efConstruction: skip what cannot fit.
            est = builds["HNSW16 efC40"] * cfg["m"] * cfg["efc"] / (16 * 40)
            if elapsed + est * 1.2 > budget:
                skipped.append(f"{cfg['name']} (estimated {est:.0f} s build, {elapsed:.0f} s of {budget:.0f} s used)")
                continue
        rss0 = _rss_mib()
        index, train_s, add_s = _build(cfg, xb)
        builds[cfg["name"]] = train_s + add_s
        mib = faiss.serialize_index(index).nbytes / 2**20
        print(f"{cfg['name']}: built in {train_s + add_s:.0f} s, {mib:.0f} MiB", file=sys.stderr, flush=True)
        for prm in cfg["params"]:
            _set_param(index, cfg["kind"], prm)
            st, _ = _search_stats(index, q, truth, n_single)
            st.update(name=cfg["name"], kind=cfg["kind"], param=prm, train_s=train_s, add_s=add_s,
                      build_s=train_s + add_s, index_mib=mib, rss_delta_mib=_rss_mib() - rss0)  # fmt: skip
            points.append(st)
            print(f"  {'efSearch' if cfg['kind'] == 'hnsw' else 'nprobe'}={prm}: recall {st['recall']:.3f}, "
                  f"{st['qps_single']:.0f} q/s single, {st['qps_batch']:.0f} batched", file=sys.stderr, flush=True)  # fmt: skip
        del index
    chosen = choose(points, ex)
    return {
        "settings": {"posts": int(xb.shape[0]), "dim": int(xb.shape[1]), "queries": int(q.shape[0]), "k": K,
                     "single_queries": n_single, "threads": threads, "budget_s": budget,
                     "bundle": "trained: " + str(p["bundle"]) if p["trained"] else "untrained default-size bundle",
                     "embed_seconds": p["embed_seconds"], "trained": p["trained"],
                     "load": f"{load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end"},
        "exact": ex, "points": points, "skipped": skipped, "chosen": chosen,
        "from_nothing": _from_nothing(xb, p["embed_seconds"]),
        "seconds": time.perf_counter() - t_start,
    }  # fmt: skip


def choose(points: list[dict[str, Any]], exact: dict[str, Any], *, recall: float = 0.95,
           speedup: float = 10.0) -> dict[str, Any] | None:
    """The point meeting recall@K >= `recall` at >= `speedup` x exact single-query q/s with the
    cheapest build (ties: most q/s); else the best recall among those at >= `speedup` x (flagged)."""
    fast = [p for p in points if p["qps_single"] >= speedup * exact["qps_single"]]
    ok = [p for p in fast if p["recall"] >= recall]
    if ok:
        best = min(ok, key=lambda p: (round(p["build_s"], -1), -p["qps_single"]))
        return {**best, "meets_goal": True}
    if fast:
        return {**max(fast, key=lambda p: p["recall"]), "meets_goal": False}
    return None


def _from_nothing(xb: np.ndarray, embed_s: float) -> dict[str, Any]:
    """`CorpusIndex.build` with the serving default at this size: seconds and RSS it adds."""
    from phoenix_recsys.serve.index import CorpusIndex, IndexConfig

    cfg = IndexConfig()
    rss0 = _rss_mib()
    t0 = time.perf_counter()
    idx = CorpusIndex.build(np.arange(xb.shape[0]), xb, config=cfg)
    build_s = time.perf_counter() - t0
    out = {"kind": idx.kind.value, "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
           "build_s": build_s, "embed_s": embed_s, "total_s": build_s + embed_s,
           "rss_added_mib": _rss_mib() - rss0, "rss_mib": _rss_mib()}  # fmt: skip
    del idx
    return out


def _plot(result: dict[str, Any], name: str) -> Any:
    """recall@K vs single-query q/s, one line per structure; returns the Figure (also saved as PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(dict.fromkeys(p["name"] for p in result["points"]))
    for n in names:
        pts = [p for p in result["points"] if p["name"] == n]
        ax.plot([p["qps_single"] for p in pts], [p["recall"] for p in pts], marker="o", label=n)
        for p in pts:
            ax.annotate(str(p["param"]), (p["qps_single"], p["recall"]), fontsize=6, xytext=(2, 2),
                        textcoords="offset points")  # fmt: skip
    ex = result["exact"]["qps_single"]
    ax.axhline(0.95, color="grey", ls="--", lw=0.8)
    ax.axvline(10 * ex, color="grey", ls=":", lw=0.8, label=f"10x exact ({10 * ex:.0f} q/s)")
    ax.set(xscale="log", xlabel="queries/s, one query at a time", ylabel=f"recall@{K} vs exact",
           title=f"ANN at {result['settings']['posts']:,} posts, D={result['settings']['dim']}"
                 + (", trained" if result["settings"].get("trained") else ", untrained"))  # fmt: skip
    ax.legend(fontsize=7)
    fig.tight_layout()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS_DIR / f"{name}_recall_qps.png", dpi=100)
    return fig


def _result_name(trained: bool) -> str:
    return "ann_trained" if trained else "ann"


def table(result: dict[str, Any]) -> str:
    """Markdown: the untrained and the trained curve (this run's, and the other's from its JSON)."""
    out = []
    for trained, label in ((False, "Untrained bundle"), (True, "Trained bundle")):
        r = result if bool(result["settings"].get("trained")) == trained else None
        path = RESULTS_DIR / f"{_result_name(trained)}.json"
        if r is None and path.is_file():
            r = json.loads(path.read_text())
        if r is not None:
            out.append(f"### {label}\n\n{_one_table(r)}")
    return "\n\n".join(out)


def _one_table(result: dict[str, Any]) -> str:
    """Markdown for one run: the curve, the chosen point, and CorpusIndex's default built from nothing."""
    s, ex = result["settings"], result["exact"]
    load = f" 1-minute load average {s['load']}." if s.get("load") else ""
    if ex.get("score_at_rank"):
        load += (" Exact inner product (mean over 200 queries) at rank 1 / 10 / 100 / 1000: "
                 + " / ".join(f"{v:.3f}" for v in ex["score_at_rank"].values()) + ".")
    head = (f"{s['posts']:,} posts, D = {s['dim']}, {s['queries']} user-tower queries, k = {s['k']}, "
            f"{s['bundle']}; single-query q/s over {s['single_queries']} queries; builds with {s['threads']} "
            f"FAISS threads. Exact (IndexFlatIP): {ex['qps_single']:.1f} q/s single "
            f"({ex['ms_single']:.1f} ms), {ex['qps_batch']:.0f} q/s batched.{load}\n\n")  # fmt: skip
    rows = []
    for p in result["points"]:
        rows.append([p["name"], ("efSearch " if p["kind"] == "hnsw" else "nprobe ") + str(p["param"]),
                     f"{p['recall']:.3f}", f"{p['recall10']:.3f}" if "recall10" in p else "-", f"{p['qps_single']:.0f}", f"{p['qps_single'] / ex['qps_single']:.1f}x",
                     f"{p['qps_batch']:.0f}", f"{p['build_s']:.0f}", f"{p['index_mib']:.0f}"])  # fmt: skip
    t = markdown_table(["structure", "search param", f"recall@{K}", "recall@10", "q/s single", "vs exact", "q/s batched",
                        "build s", "index MiB"], rows)  # fmt: skip
    c = result["chosen"]
    if c is None:
        pick = "\n\nNo point reached 10x exact single-query q/s on this run."
    else:
        pick = (f"\n\nBest point by the goal rule (this run; the serving default is stated below the section): {c['name']}, {'efSearch' if c['kind'] == 'hnsw' else 'nprobe'} {c['param']}: recall "
                f"{c['recall']:.3f} at {c['qps_single'] / ex['qps_single']:.1f}x exact q/s, build {c['build_s']:.0f} s"
                + ("" if c["meets_goal"] else " (does NOT meet recall >= 0.95 at >= 10x; best recall at >= 10x)") + ".")
    if result["skipped"]:
        pick += " Skipped for the time budget: " + "; ".join(result["skipped"]) + "."
    f = result["from_nothing"]
    pick += (f"\n\n`CorpusIndex.build` with the serving default ({f['kind']}) at this size: {f['build_s']:.0f} s "
             f"build + {f['embed_s']:.0f} s embedding = {f['total_s']:.0f} s from nothing; RSS +{f['rss_added_mib']:.0f} MiB "
             f"for the index ({f['rss_mib']:.0f} MiB for the whole benchmark process, which also holds the "
             f"embedding matrix and the model).")  # fmt: skip
    return head + t + pick


def main() -> dict[str, Any]:
    """`python -m benchmarks.run ann`: the run, JSON, plot."""
    result = run()
    import matplotlib.pyplot as plt

    name = _result_name(result["settings"]["trained"])
    fig = _plot(result, name)
    plt.close(fig)
    result["plots"] = [str(RESULTS_DIR / f"{name}_recall_qps.png")]
    write_result(name, result)
    return result


if __name__ == "__main__":
    if sys.argv[1:] == ["prepare"]:
        p = prepare()
        print(f"embeddings {p['emb'].shape} ({p['embed_seconds']:.0f} s), queries {p['queries'].shape}")
    else:
        raise SystemExit("usage: python -m benchmarks.ann prepare   (the full run: python -m benchmarks.run ann)")
