"""Index settings and small types that need no FAISS (`IndexConfig`, `IndexKind`, `SearchResult`,
`make_fingerprint`), so the settings, the CLI and model-only installs can import them without the
`serve` extra; `serve.index.corpus` holds the FAISS-backed `CorpusIndex`.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from typing import NamedTuple

import numpy as np


class IndexKind(enum.StrEnum):
    """Which FAISS structure backs the index."""

    FLAT = "flat"
    HNSW = "hnsw"
    IVF = "ivf"


#: What IVF lists may hold (`IndexConfig.ivf_codec`).
IVF_CODECS = ("pq4", "flat")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class IndexConfig:
    """How `CorpusIndex.build` indexes a corpus.

    Attributes:
      exact_max_size: corpora of at most this many posts get an exact flat index; larger ones
        the approximate structure `ann_kind`.
      ann_kind: "ivf" (k-means lists, only the probed lists scanned) or "hnsw".
      hnsw_m: HNSW graph degree (memory and recall grow with it).
      hnsw_ef_construction: candidate list size while building (build time vs graph quality).
      hnsw_ef_search: candidate list size while searching (latency vs recall); raised to k when
        a search asks for more.
      ivf_nlist: IVF lists; 0 = automatic, `auto_nlist(P)` (about sqrt(P), a power of two).
      ivf_nprobe: lists scanned per query (latency vs recall); at most `nlist` are scanned.
      ivf_codec: what the IVF lists hold: "pq4" (4-bit product-quantised codes, one sub-quantizer
        per dimension, scanned with SIMD fast-scan; the best `ivf_refine` x fetch hits are then
        re-scored exactly from float32 rows kept beside them) or "flat" (float32 rows, exact
        scores inside the lists). The 1M-post curve (BENCHMARKS.md "ANN at 1M posts") chose pq4:
        a flat scan is memory-bound, and pq4 reads an eighth of the bytes per post.
      ivf_refine: with "pq4", how many times the asked-for hits are taken from the codes and
        re-scored exactly (recall vs re-scoring cost).
      ivf_train_per_list: k-means training sample, in points per list (capped at the corpus).
      ivf_train_iters: k-means iterations.
      ivf_retrain_growth: an IVF index whose live posts exceed this multiple of the posts it was
        trained on is due a background rebuild (`needs_retrain`), so lists and centroids follow
        the corpus as it grows.
      build_threads: OpenMP threads while building or training (None = every core); applied to
        the building thread only and restored after, so searches keep their own setting.
    """

    exact_max_size: int = 50_000
    ann_kind: IndexKind = IndexKind.IVF
    hnsw_m: int = 32
    hnsw_ef_construction: int = 40
    hnsw_ef_search: int = 128
    ivf_nlist: int = 0
    ivf_nprobe: int = 384
    ivf_codec: str = "pq4"
    ivf_refine: int = 4
    ivf_train_per_list: int = 64
    ivf_train_iters: int = 10
    ivf_retrain_growth: float = 2.0
    build_threads: int | None = None

    def __post_init__(self) -> None:
        for name, lo in (
            ("exact_max_size", 0),
            ("hnsw_m", 2),
            ("hnsw_ef_construction", 1),
            ("hnsw_ef_search", 1),
            ("ivf_nlist", 0),
            ("ivf_nprobe", 1),
            ("ivf_refine", 1),
            ("ivf_train_per_list", 39),
            ("ivf_train_iters", 1),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
                raise ValueError(f"IndexConfig.{name} must be an int >= {lo}, got {v!r}")
            object.__setattr__(self, name, int(v))
        try:
            kind = IndexKind(self.ann_kind)
        except ValueError:
            kind = None
        if kind not in (IndexKind.HNSW, IndexKind.IVF):
            raise ValueError(f"IndexConfig.ann_kind must be 'ivf' or 'hnsw', got {self.ann_kind!r}")
        object.__setattr__(self, "ann_kind", kind)
        if self.ivf_codec not in IVF_CODECS:
            raise ValueError(f"IndexConfig.ivf_codec must be one of {IVF_CODECS}, got {self.ivf_codec!r}")
        g = self.ivf_retrain_growth
        if isinstance(g, bool) or not isinstance(g, int | float) or not g > 1.0:
            raise ValueError(f"IndexConfig.ivf_retrain_growth must be a number > 1, got {g!r}")
        object.__setattr__(self, "ivf_retrain_growth", float(g))
        t = self.build_threads
        if t is not None and (isinstance(t, bool) or not isinstance(t, int | np.integer) or t < 1):
            raise ValueError(f"IndexConfig.build_threads must be None or an int >= 1, got {t!r}")

    def kind_for(self, num_posts: int) -> IndexKind:
        """The index kind a corpus of `num_posts` gets."""
        return IndexKind.FLAT if num_posts <= self.exact_max_size else self.ann_kind

    def nlist_for(self, num_posts: int) -> int:
        """IVF lists for a corpus of `num_posts`: `ivf_nlist`, or `auto_nlist`; never more than
        the corpus can train (39 points a list, FAISS's minimum)."""
        n = self.ivf_nlist or auto_nlist(num_posts)
        return max(1, min(n, num_posts // 39))


def auto_nlist(num_posts: int) -> int:
    """The power of two nearest sqrt(num_posts) (1024 at 1M posts), at least 16."""
    if num_posts <= 0:
        return 16
    return max(16, 1 << round(np.log2(np.sqrt(num_posts))))


class SearchResult(NamedTuple):
    """Top-k per query, best first.

    Attributes:
      ids: `[B, k]` int64 post ids, -1 where fewer than k posts qualify.
      scores: `[B, k]` float32 inner products, -inf where ids is -1.
    """

    ids: np.ndarray
    scores: np.ndarray


class IndexMismatchError(ValueError):
    """A saved index cannot be used (missing, other fingerprint, torn or corrupt); see the message."""


def make_fingerprint(*parts: str | bytes | np.ndarray) -> str:
    """A stable hex digest of the things an index depends on (model bundle digest, post ids ...).

    Each part is length-prefixed (and arrays carry dtype and shape), so different splits of the
    same bytes give different fingerprints.

    Args:
      parts: strings, bytes or arrays.

    Returns:
      64-character sha256 hex digest.
    """
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            arr = np.ascontiguousarray(p)
            head = f"array:{arr.dtype.str}:{arr.shape}".encode()
            data = arr.tobytes()
        elif isinstance(p, str):
            head, data = b"str", p.encode()
        elif isinstance(p, bytes):
            head, data = b"bytes", p
        else:
            raise ValueError(f"make_fingerprint parts must be str, bytes or arrays, got {type(p).__name__}")
        h.update(len(head).to_bytes(8, "little") + head + len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()
