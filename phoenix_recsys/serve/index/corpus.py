"""`CorpusIndex` (`serve.index.corpus`): FAISS inner-product search over L2-normalised post embeddings (SPEC 6).

Axes: P posts, D embedding width, B queries, k results per query.

Design choices:

* Exact `IndexFlatIP` up to `IndexConfig.exact_max_size` posts (50k by default: brute force is
  then a few ms and has perfect recall), an approximate structure above: IVF by default
  (`ann_kind="ivf"`: about sqrt(P) k-means lists, `ivf_nprobe` of them scanned per query), or
  HNSW (`ann_kind="hnsw"`). IVF was chosen from the measured 1M-post curve (`bench run ann`,
  BENCHMARKS.md "ANN at 1M posts"): it builds in seconds where HNSW takes minutes, and at the
  same queries/s it had the higher recall. The lists hold 4-bit PQ codes scanned with SIMD
  fast-scan (`ivf_codec="pq4"`) and the shortlist is re-scored exactly from float32 rows kept
  beside them (`IndexRefineFlat`): an IVF-Flat scan is bound by memory traffic, the codes are an
  eighth of its bytes, so more lists are probed for the same time. The kind is fixed at `build`;
  `compact()` rebuilds (re-picking the kind and retraining IVF lists on the live posts) when an
  index has grown or collected tombstones.
* Post ids live in an int64 array beside the index, position i <-> FAISS id i, rather than in an
  `IndexIDMap2`: HNSW cannot remove vectors, so a re-added post id (its embedding changed)
  tombstones the old position and appends the new vector. Duplicate ids across `add` calls
  therefore REPLACE; duplicates inside one call are rejected as ambiguous. Search over-fetches by
  the expected share of tombstones and excluded ids among the nearest posts, doubling the fetch
  (and, on IVF, the probed lists) while a row comes back short, so both stay invisible in results
  without a fetch that grows with a user's seen set.
* Threads: searches use the calling thread's FAISS/OpenMP setting, which we leave to the
  application (`faiss.omp_set_num_threads`, which under libgomp, what faiss-cpu ships, sets the
  calling thread's count only). Builds and IVF training use `IndexConfig.build_threads` (every
  core by default) in the building thread only, restored after (`_BuildThreads`). A lock
  serialises `add`, `search` and `save` on one index, because FAISS does not allow adding while
  searching.
* Persistence: `save(dir, fingerprint)` writes the index, the id and tombstone arrays and a JSON
  with the fingerprint (hash of model bundle + corpus, see `make_fingerprint`) and checksums; the
  JSON is written last, so a crash mid-save leaves a directory `load` rejects. `load` returns None
  when the directory is missing, stale or torn, so callers write
  `CorpusIndex.load(d, fp) or CorpusIndex.build(...)` (an empty index is still truthy).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from phoenix_recsys._extras import require_extra
from phoenix_recsys.serve._ids import sorted_member, sorted_unique
from phoenix_recsys.serve.index.config import (
    IndexConfig,
    IndexKind,
    IndexMismatchError,
    SearchResult,
)

faiss = require_extra("faiss", "serve", "the serving index (FAISS)")

_log = logging.getLogger(__name__)

_FORMAT_VERSION = 1
_INDEX_FILE = "index.faiss"
_IDS_FILE = "ids.npy"
_ALIVE_FILE = "alive.npy"
_META_FILE = "meta.json"


def _normalised(name: str, x: Any, dim: int | None = None) -> np.ndarray:
    """`[n, D]` float32 C-contiguous rows scaled to unit L2 norm; ValueError for bad rows."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, D], got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} must have width D={dim}, got {arr.shape[1]}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} must have width D >= 1")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if arr.shape[0] and norms.min() < 1e-12:
        raise ValueError(f"{name} row {int(np.argmin(norms))} has zero norm and no direction")
    # Renormalise even if the tower already did: FAISS's IP equals cosine only on unit vectors.
    return np.ascontiguousarray(arr / np.maximum(norms, 1e-12), dtype=np.float32)


def _id_array(name: str, x: Any, n: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be [{n}] (one per embedding row), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must be >= 0 (-1 marks empty result slots)")
    if np.unique(arr).shape[0] != n:
        raise ValueError(f"{name} has duplicates within one call")
    return arr


def _exclusion_array(e: Iterable[int] | np.ndarray | None) -> np.ndarray | None:
    """Sorted unique int64 ids of one query's exclusions (None = no exclusions)."""
    if e is None:
        return None
    if isinstance(e, np.ndarray):
        return sorted_unique(e)
    return np.unique(np.fromiter((int(i) for i in e), dtype=np.int64))


def _first_fetch(k: int, n_excl: int, n_dead: int, n_total: int) -> int:
    """How many neighbours to ask FAISS for first, so that about k survive exclusions and tombstones.

    Fetching k + every exclusion made a user's search grow with their seen set (10k seen posts:
    an HNSW search with k = 11,000, so efSearch 11,000). Instead assume the excluded and dead
    positions are spread like the corpus: a fraction f of any neighbourhood, so k / (1 - f) plus a
    margin usually suffice, and `search` doubles the fetch when a row comes back short. Never
    more than the old bound (k + all of them), which is exact for a flat index.
    """
    bound = min(n_total, k + n_excl + n_dead)
    f = min((n_excl + n_dead) / max(n_total, 1), 0.9)
    estimate = int(np.ceil(k / (1.0 - f) * 1.25)) + 32
    return max(1, min(bound, estimate))


def _new_faiss_index(kind: IndexKind, dim: int, config: IndexConfig, *, num_posts: int = 0) -> faiss.Index:
    """An empty FAISS index of `kind` (IVF sized for `num_posts`, still to be trained)."""
    if kind is IndexKind.FLAT:
        return faiss.IndexFlatIP(dim)
    if kind is IndexKind.IVF:
        quantizer = faiss.IndexFlatIP(dim)
        nlist = config.nlist_for(num_posts)
        if config.ivf_codec == "flat":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            # One 4-bit sub-quantizer per dimension: D/2 bytes a post, scanned 32 codes at a time.
            index = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, dim, 4, faiss.METRIC_INNER_PRODUCT)
        index.own_fields = True
        quantizer.this.disown()
        index.nprobe = config.ivf_nprobe
        set_kmeans(index, config)
        if config.ivf_codec == "flat":
            return index
        # The codes only shortlist: the float32 rows beside them give the scores returned (and the
        # vectors compact/rebuild reconstruct, so no quantisation error accumulates).
        return refined_flat(index, config.ivf_refine)
    index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = config.hnsw_ef_construction
    index.hnsw.efSearch = config.hnsw_ef_search
    return index


def set_kmeans(index: faiss.Index, config: IndexConfig) -> None:
    """The k-means settings of the IVF lists of `index` (an untrained IVF index) from `config`."""
    # Unit-norm centroids: lists by cosine, the metric the search ranks by.
    index.cp.spherical = True
    index.cp.niter = config.ivf_train_iters
    index.cp.seed = 1234
    index.cp.max_points_per_centroid = config.ivf_train_per_list


def refined_flat(index: faiss.Index, k_factor: float) -> faiss.Index:
    """`index` under an exact re-scoring layer: its best `k_factor` x k hits re-scored from float32
    rows the layer keeps (it takes ownership of `index`; add vectors through the layer)."""
    refined = faiss.IndexRefineFlat(index)
    refined.k_factor = float(k_factor)
    refined.own_fields = True
    index.this.disown()
    return refined


def _train_ivf(index: faiss.Index, emb: np.ndarray, config: IndexConfig) -> None:
    """k-means the IVF lists on a fixed-seed sample of `emb` (`ivf_train_per_list` points a list)."""
    n = min(emb.shape[0], config.ivf_train_per_list * int(_ivf(index).nlist))
    rows = (
        np.sort(np.random.default_rng(0).choice(emb.shape[0], size=n, replace=False))
        if n < emb.shape[0]
        else None
    )
    index.train(emb if rows is None else np.ascontiguousarray(emb[rows]))
    if not isinstance(index, faiss.IndexRefine):
        # reconstruct_n (compact, rebuild) needs the position -> list map; adds keep it current.
        # (A refined index reconstructs from its float32 rows instead.)
        index.make_direct_map()


def _ivf(index: faiss.Index) -> Any:
    """The IVF part of an IVF index (itself, or the base under an exact re-scoring layer)."""
    return faiss.extract_index_ivf(index)


def _ivf_params(index: faiss.Index, nprobe: int) -> Any:
    """Search parameters scanning `nprobe` lists of the IVF `index` (through a re-scoring layer)."""
    ivf = faiss.SearchParametersIVF(nprobe=nprobe)
    if not isinstance(index, faiss.IndexRefine):
        return ivf
    params = faiss.IndexRefineSearchParameters(k_factor=float(index.k_factor), base_index_params=ivf)
    params._ivf = ivf  # SWIG holds a raw pointer: keep the IVF parameters alive with their parent
    return params


class _BuildThreads:
    """Run FAISS builds with `threads` OpenMP threads in the calling thread, restoring after.

    OpenMP's thread count is per calling thread under libgomp (what faiss-cpu ships), so a
    background rebuild with every core does not change the request threads' search setting.
    """

    def __init__(self, threads: int | None) -> None:
        self._want = threads if threads is not None else (os.cpu_count() or 1)
        self._old = 0

    def __enter__(self) -> None:
        self._old = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self._want)

    def __exit__(self, *exc: object) -> None:
        faiss.omp_set_num_threads(self._old)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


class CorpusIndex:
    """Inner-product top-k over unit-norm post embeddings, with exclusions, online adds and persistence.

    >>> emb = np.array([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6]], dtype=np.float32)
    >>> idx = CorpusIndex.build([10, 11, 12], emb)
    >>> idx.search(emb[:1], k=2, exclude=[{10}]).ids.tolist()
    [[12, 11]]
    """

    def __init__(
        self,
        index: faiss.Index,
        ids: np.ndarray,
        alive: np.ndarray,
        kind: IndexKind,
        config: IndexConfig,
        *,
        trained_on: int | None = None,
    ) -> None:
        """Use `build` or `load`."""
        self._index = index
        #: Posts the structure was built (and, for IVF, trained) on; see `needs_retrain`.
        self._trained_on = int(ids.shape[0]) if trained_on is None else int(trained_on)
        self._ids = ids  # [n_internal] int64: FAISS position -> post id
        self._alive = alive  # [n_internal] bool: False = replaced by a later add (tombstone)
        self._kind = kind
        self._config = config
        self._lock = threading.Lock()
        self._live_sorted: np.ndarray | None = None  # cache of sorted live ids; None = stale
        # Kept beside `_alive`: `len(index)` is asked on every feed, and summing a corpus-sized
        # mask there cost ~1 ms a request at 1M posts.
        self._n_live = int(alive.sum())

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def build(cls, post_ids: Any, embeddings: Any, *, config: IndexConfig | None = None) -> CorpusIndex:
        """Index a corpus.

        Args:
          post_ids: `[P]` unique int64 ids >= 0.
          embeddings: `[P, D]` float (normalised here).
          config: index settings; default `IndexConfig()`.

        Returns:
          A `CorpusIndex`, flat if P <= `config.exact_max_size`, else HNSW.
        """
        config = IndexConfig() if config is None else config
        emb = _normalised("embeddings", embeddings)
        ids = _id_array("post_ids", post_ids, emb.shape[0])
        kind = config.kind_for(emb.shape[0])
        index = _new_faiss_index(kind, emb.shape[1], config, num_posts=emb.shape[0])
        with _BuildThreads(config.build_threads):
            if kind is IndexKind.IVF:
                _train_ivf(index, emb, config)
            if emb.shape[0]:
                index.add(emb)
        return cls(index, ids, np.ones(ids.shape[0], dtype=bool), kind, config, trained_on=int(emb.shape[0]))

    def add(self, post_ids: Any, embeddings: Any) -> int:
        """Add posts online; an id already in the index is replaced by its new embedding.

        Args:
          post_ids: `[n]` int64 ids, unique within the call.
          embeddings: `[n, D]` float.

        Returns:
          How many of the ids replaced existing entries.
        """
        emb = _normalised("embeddings", embeddings, self.dim)
        ids = _id_array("post_ids", post_ids, emb.shape[0])
        if ids.size == 0:
            return 0
        with self._lock:
            old = np.flatnonzero(self._alive & np.isin(self._ids, ids))
            self._alive[old] = False
            self._index.add(emb)
            self._ids = np.concatenate([self._ids, ids])
            self._alive = np.concatenate([self._alive, np.ones(ids.shape[0], dtype=bool)])
            self._n_live += int(ids.size - old.size)
            self._live_sorted = None
        return int(old.size)

    def remove(self, post_ids: Any) -> int:
        """Tombstone posts (deleted or taken down); ids not in the index are ignored.

        Args:
          post_ids: `[n]` int ids.

        Returns:
          How many live entries were removed.
        """
        ids = np.asarray(post_ids, dtype=np.int64).ravel()
        if ids.size == 0:
            return 0
        with self._lock:
            hit = np.flatnonzero(self._alive & np.isin(self._ids, ids))
            self._alive[hit] = False
            self._n_live -= int(hit.size)
            if hit.size:
                self._live_sorted = None
        return int(hit.size)

    def compact(self) -> CorpusIndex:
        """A fresh index of the live posts only (drops tombstones, re-picks flat vs HNSW by size).

        Returns:
          A new `CorpusIndex`; this one is unchanged.
        """
        with self._lock:
            vectors = (
                self._index.reconstruct_n(0, self._index.ntotal)[self._alive] if self._index.ntotal else None
            )
            ids = self._ids[self._alive]
        if vectors is None:
            vectors = np.zeros((0, self.dim), dtype=np.float32)
        return CorpusIndex.build(ids, vectors, config=self._config)

    # -- queries --------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of live posts."""
        with self._lock:
            return self._n_live

    def __bool__(self) -> bool:
        # Without this an empty index would be falsy and `load(...) or build(...)` would rebuild it.
        return True

    def __contains__(self, post_id: object) -> bool:
        if not isinstance(post_id, int | np.integer):
            return False
        with self._lock:
            live = self._live_ids()
        i = np.searchsorted(live, post_id)
        return bool(i < live.shape[0] and live[i] == post_id)

    @property
    def dim(self) -> int:
        """Embedding width D."""
        return int(self._index.d)

    @property
    def kind(self) -> IndexKind:
        return self._kind

    @property
    def config(self) -> IndexConfig:
        return self._config

    @property
    def num_tombstones(self) -> int:
        """Replaced vectors still stored (see `compact`)."""
        with self._lock:
            return int(self._alive.size - self._n_live)

    @property
    def trained_on(self) -> int:
        """Posts the index was built from (IVF: trained on); adds since then are not counted."""
        return self._trained_on

    def needs_retrain(self) -> bool:
        """True for an IVF index whose live posts outgrew `ivf_retrain_growth` x what it was trained
        on: its lists were sized and placed for a smaller corpus (`compact` retrains)."""
        if self._kind is not IndexKind.IVF:
            return False
        return len(self) > self._config.ivf_retrain_growth * max(1, self._trained_on)

    def post_ids(self) -> np.ndarray:
        """`[P]` int64 live post ids, ascending."""
        with self._lock:
            return self._live_ids().copy()

    def _live_ids(self) -> np.ndarray:
        # Callers hold self._lock: `add` swaps `_ids` and `_alive` together under it.
        live = self._live_sorted
        if live is None:
            live = np.sort(self._ids[self._alive])
            self._live_sorted = live
        return live

    def search(
        self,
        queries: Any,
        k: int,
        exclude: Sequence[Iterable[int] | np.ndarray | None] | None = None,
    ) -> SearchResult:
        """Top-k posts by inner product per query, skipping each query's excluded ids.

        Args:
          queries: `[B, D]` float user embeddings (normalised here).
          k: results per query, >= 0.
          exclude: None, or B entries (each None or ids) of posts that query must not return
            (e.g. seen posts).

        Returns:
          `SearchResult(ids [B, k] int64 (-1 fill), scores [B, k] float32 (-inf fill))`, best first.
          Exact on a flat index; on HNSW and IVF approximate, retrying with a larger fetch (IVF:
          and more probed lists) when exclusions leave a row short.
        """
        q = _normalised("queries", queries, self.dim)
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
            raise ValueError(f"k must be an int >= 0, got {k!r}")
        k = int(k)
        b = q.shape[0]
        if exclude is not None and len(exclude) != b:
            raise ValueError(f"exclude must have one entry per query (B={b}), got {len(exclude)}")
        out_ids = np.full((b, k), -1, dtype=np.int64)
        out_scores = np.full((b, k), -np.inf, dtype=np.float32)
        with self._lock:
            n_total = int(self._index.ntotal)
            live = self._live_ids()
            if k == 0 or b == 0 or live.size == 0:
                return SearchResult(out_ids, out_scores)
            excl = [_exclusion_array(e) for e in (exclude if exclude is not None else [None] * b)]
            # Excluded ids that are actually indexed: each can take one slot of the fetch.
            n_excl = np.array([0 if e is None else int(sorted_member(e, live).sum()) for e in excl])
            achievable = np.minimum(k, live.size - n_excl)
            n_dead = n_total - live.size
            fetch = _first_fetch(k, int(n_excl.max()), n_dead, n_total)
            ivf = self._kind is IndexKind.IVF
            lists = _ivf(self._index) if ivf else None
            nlist = int(lists.nlist) if ivf else 0
            nprobe = min(nlist, int(lists.nprobe)) if ivf else 0
            while True:
                if ivf:
                    # Only the probed lists are scanned, whatever the fetch: widen them on retries.
                    scores, pos = self._index.search(q, fetch, params=_ivf_params(self._index, nprobe))
                else:
                    scores, pos = self._index.search(q, fetch)
                ok = pos >= 0
                safe = np.where(ok, pos, 0)
                ids = np.where(ok, self._ids[safe], -1)
                ok &= self._alive[safe]
                for i, e in enumerate(excl):
                    if e is not None and e.size:
                        ok[i] &= ~sorted_member(ids[i], e)
                # Complete once every row has what it can have; a short row (more exclusions or
                # tombstones near the query than the estimate, or the ANN's approximation) doubles.
                # IVF scans only the probed lists: complete only once it has probed them all.
                complete = fetch >= n_total and (not ivf or nprobe >= nlist)
                if complete or np.all(ok.sum(axis=1) >= achievable):
                    break
                if ivf and np.any(pos < 0):
                    nprobe = min(nlist, 2 * nprobe)
                fetch = min(n_total, 2 * fetch)
        # Compact each row's surviving hits to the front, keeping FAISS's best-first order.
        rank = np.cumsum(ok, axis=1) - 1
        rows, cols = np.nonzero(ok & (rank < k))
        out_ids[rows, rank[rows, cols]] = ids[rows, cols]
        out_scores[rows, rank[rows, cols]] = scores[rows, cols]
        return SearchResult(out_ids, out_scores)

    # -- persistence ----------------------------------------------------------------------------
    def save(self, directory: str | Path, fingerprint: str) -> Path:
        """Persist to `directory` (created if needed), tagged with `fingerprint`.

        Args:
          directory: target folder; existing index files there are replaced.
          fingerprint: what this index was built from (`make_fingerprint(bundle_digest, post_ids)`).

        Returns:
          The directory.
        """
        if not isinstance(fingerprint, str) or not fingerprint:
            raise ValueError("fingerprint must be a non-empty string")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        blobs, meta = self.to_blobs(fingerprint)
        # Remove the old meta first: from here until the new one lands the directory is invalid,
        # never a mix of old meta and new data.
        (d / _META_FILE).unlink(missing_ok=True)
        for name, data in blobs.items():
            _write_atomic(d / name, data)
        _write_atomic(d / _META_FILE, json.dumps(meta, indent=2).encode())
        return d

    def to_blobs(self, fingerprint: str) -> tuple[dict[str, bytes], dict[str, Any]]:
        """The files `save` writes, as `({file name: bytes}, meta)`; only this step holds the lock.

        Snapshots (`serve.index.snapshot`) call it so that the disk writes happen without the
        index lock, and searches are blocked only for the in-memory serialisation.
        """
        with self._lock:
            blobs = {
                _INDEX_FILE: faiss.serialize_index(self._index).tobytes(),
                _IDS_FILE: _npy_bytes(self._ids),
                _ALIVE_FILE: _npy_bytes(self._alive),
            }
            ntotal = int(self._ids.shape[0])
        meta = {
            "format_version": _FORMAT_VERSION,
            "fingerprint": fingerprint,
            "kind": self._kind.value,
            "dim": self.dim,
            "ntotal": ntotal,
            "config": dataclasses.asdict(self._config),
            "trained_on": self._trained_on,
            "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in blobs.items()},
        }
        return blobs, meta

    @classmethod
    def load(
        cls,
        directory: str | Path,
        expected_fingerprint: str,
        *,
        config: IndexConfig | None = None,
        strict: bool = False,
    ) -> CorpusIndex | None:
        """Load a saved index if it was built from `expected_fingerprint`.

        Args:
          directory: as given to `save`.
          expected_fingerprint: the fingerprint of the current model bundle + corpus.
          config: optional; its search-time settings (`hnsw_ef_search`, `ivf_nprobe`, `ivf_refine`) and
            `build_threads` apply to the loaded index (the saved config otherwise).
          strict: raise `IndexMismatchError` instead of returning None.

        Returns:
          The index, or None when the directory is missing, has another fingerprint, or is torn
          or corrupt (the reason is logged) - the caller then rebuilds.
        """
        try:
            return cls._load(Path(directory), expected_fingerprint, config)
        except IndexMismatchError as e:
            if strict:
                raise
            _log.info("not using saved index: %s", e)
            return None

    @classmethod
    def _load(cls, d: Path, expected: str, config: IndexConfig | None) -> CorpusIndex:
        meta_path = d / _META_FILE
        if not meta_path.is_file():
            raise IndexMismatchError(f"no saved index in {d} ({_META_FILE} missing)")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise IndexMismatchError(f"{meta_path} is unreadable: {e}") from None
        if meta.get("format_version") != _FORMAT_VERSION:
            raise IndexMismatchError(
                f"{d} has format {meta.get('format_version')}, this code reads {_FORMAT_VERSION}"
            )
        if meta.get("fingerprint") != expected:
            raise IndexMismatchError(
                f"{d} was built for fingerprint {meta.get('fingerprint')!r}, expected {expected!r}"
            )
        blobs = {}
        for name, digest in meta.get("sha256", {}).items():
            try:
                data = (d / name).read_bytes()
            except OSError as e:
                raise IndexMismatchError(f"{d / name} is unreadable: {e}") from None
            if hashlib.sha256(data).hexdigest() != digest:
                raise IndexMismatchError(f"{d / name} does not match its checksum (torn or corrupt save)")
            blobs[name] = data
        if set(blobs) != {_INDEX_FILE, _IDS_FILE, _ALIVE_FILE}:
            raise IndexMismatchError(f"{meta_path} lists files {sorted(blobs)}")
        index = faiss.deserialize_index(np.frombuffer(blobs[_INDEX_FILE], dtype=np.uint8))
        ids = np.load(io.BytesIO(blobs[_IDS_FILE]), allow_pickle=False)
        alive = np.load(io.BytesIO(blobs[_ALIVE_FILE]), allow_pickle=False)
        if not (index.ntotal == ids.shape[0] == alive.shape[0] == meta["ntotal"]) or index.d != meta["dim"]:
            raise IndexMismatchError(f"{d}: index, ids and meta disagree on size or width")
        kind = IndexKind(meta["kind"])
        # Fields a snapshot from an older version lacks take today's defaults.
        known = {f.name for f in dataclasses.fields(IndexConfig)}
        saved = {k: v for k, v in meta["config"].items() if k in known}
        if "ann_kind" not in meta["config"] and kind is IndexKind.HNSW:
            saved["ann_kind"] = IndexKind.HNSW  # written before IVF existed: it was built as HNSW
        if kind is IndexKind.IVF:
            # The structure says what the lists hold (snapshots from before pq4 are IVF-Flat).
            refined = isinstance(index, faiss.IndexRefine)
            saved["ivf_codec"] = "pq4" if refined else "flat"
            if refined:
                saved["ivf_refine"] = max(1, round(index.k_factor))
        saved_config = IndexConfig(**saved)
        if config is not None:
            # The search-time knobs and build threads follow the caller; the structure stays as saved.
            saved_config = dataclasses.replace(
                saved_config,
                hnsw_ef_search=config.hnsw_ef_search,
                ivf_nprobe=config.ivf_nprobe,
                ivf_refine=config.ivf_refine,
                build_threads=config.build_threads,
            )
        if kind is IndexKind.HNSW:
            index.hnsw.efSearch = saved_config.hnsw_ef_search
        elif kind is IndexKind.IVF:
            _ivf(index).nprobe = saved_config.ivf_nprobe
            if isinstance(index, faiss.IndexRefine):
                index.k_factor = float(saved_config.ivf_refine)
        trained_on = int(meta.get("trained_on", meta["ntotal"]))
        return cls(index, ids.astype(np.int64), alive.astype(bool), kind, saved_config, trained_on=trained_on)
