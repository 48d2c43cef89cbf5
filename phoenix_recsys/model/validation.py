"""Input validation: clear `ValueError`s naming the field, raised before any JAX tracing error.

Shape checks use only static shapes, so they also run inside `jit`; value checks (id ranges, NaNs)
need concrete arrays and run in the eager entry points (`check_values=True`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.model.config import PhoenixModelConfig
from phoenix_recsys.model.embeddings import RecsysEmbeddings


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in np.shape(x))


def _is_concrete(x: Any) -> bool:
    try:
        np.asarray(x)
        return True
    except Exception:  # a tracer cannot be converted
        return False


def _expect(name: str, x: Any, shape: tuple[int | None, ...]) -> None:
    got = _shape(x)
    if len(got) != len(shape) or any(w is not None and g != w for g, w in zip(got, shape, strict=False)):
        want = "[" + ", ".join("?" if w is None else str(w) for w in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(got)}")


def _check_ids(name: str, x: Any, vocab: int | None) -> None:
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer hash ids, got dtype {arr.dtype}")
    if arr.size == 0:
        return
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise ValueError(f"{name} holds a negative hash id ({lo}); ids must be in [0, {vocab})")
    if vocab is not None and hi >= vocab:
        raise ValueError(f"{name} holds hash id {hi}, outside the table [0, {vocab})")


def validate_batch(
    batch: RecsysBatch,
    cfg: PhoenixModelConfig,
    embeddings: RecsysEmbeddings | None = None,
    *,
    require_candidates: bool = True,
    check_values: bool = True,
) -> None:
    """Check `batch` (and `embeddings`) against `cfg`.

    Args:
      batch: the hashed inputs; B, S and C are read from `user_hashes`, `history_post_hashes` and
        `candidate_post_hashes`.
      cfg: the model configuration they must agree with.
      embeddings: optional looked-up embeddings (the released code's entry point).
      require_candidates: refuse C == 0 (ranking needs at least one candidate).
      check_values: also check id ranges, product surfaces and NaNs (needs concrete arrays).

    Raises:
      ValueError: naming the first field that is wrong and how.
    """
    if not isinstance(batch, RecsysBatch):
        raise ValueError(f"batch must be a RecsysBatch, got {type(batch).__name__}")
    hc = cfg.hash_config
    u = _shape(batch.user_hashes)
    if len(u) != 2:
        raise ValueError(f"user_hashes must have shape [B, {hc.num_user_hashes}], got {list(u)}")
    b = u[0]
    if b == 0:
        raise ValueError("batch is empty: user_hashes has B = 0")
    h = _shape(batch.history_post_hashes)
    if len(h) != 3:
        raise ValueError(f"history_post_hashes must have shape [B, S, {hc.num_item_hashes}], got {list(h)}")
    s = h[1]
    c_shape = _shape(batch.candidate_post_hashes)
    if len(c_shape) != 3:
        raise ValueError(f"candidate_post_hashes must have shape [B, C, {hc.num_item_hashes}], got {list(c_shape)}")
    c = c_shape[1]
    if require_candidates and c == 0:
        raise ValueError("candidate list is empty: candidate_post_hashes has C = 0; pass at least one candidate")
    a = cfg.num_actions
    _expect("user_hashes", batch.user_hashes, (b, hc.num_user_hashes))
    _expect("history_post_hashes", batch.history_post_hashes, (b, s, hc.num_item_hashes))
    _expect("history_author_hashes", batch.history_author_hashes, (b, s, hc.num_author_hashes))
    _expect("history_actions", batch.history_actions, (b, s, a))
    _expect("history_product_surface", batch.history_product_surface, (b, s))
    _expect("candidate_post_hashes", batch.candidate_post_hashes, (b, c, hc.num_item_hashes))
    _expect("candidate_author_hashes", batch.candidate_author_hashes, (b, c, hc.num_author_hashes))
    _expect("candidate_product_surface", batch.candidate_product_surface, (b, c))
    if batch.history_continuous_actions is not None:
        _expect("history_continuous_actions", batch.history_continuous_actions, (b, s, cfg.num_history_continuous))
    for f in ("candidate_impr_ts", "candidate_post_creation_ts", "candidate_in_network"):
        if getattr(batch, f) is not None:
            _expect(f, getattr(batch, f), (b, c))
    if cfg.num_ip_hashes and batch.user_ip_hashes is not None:
        _expect("user_ip_hashes", batch.user_ip_hashes, (b, cfg.num_ip_hashes))

    d = cfg.emb_size
    if embeddings is not None:
        if not isinstance(embeddings, RecsysEmbeddings):
            raise ValueError(f"embeddings must be RecsysEmbeddings, got {type(embeddings).__name__}")
        _expect("user_embeddings", embeddings.user_embeddings, (b, hc.num_user_hashes, d))
        _expect("history_post_embeddings", embeddings.history_post_embeddings, (b, s, hc.num_item_hashes, d))
        _expect("history_author_embeddings", embeddings.history_author_embeddings, (b, s, hc.num_author_hashes, d))
        _expect("candidate_post_embeddings", embeddings.candidate_post_embeddings, (b, c, hc.num_item_hashes, d))
        _expect("candidate_author_embeddings", embeddings.candidate_author_embeddings, (b, c, hc.num_author_hashes, d))

    if not check_values or not _is_concrete(batch.user_hashes):
        return
    # With caller-supplied embeddings, hashes only mark padding (the release's ids exceed our tables).
    own = embeddings is None
    _check_ids("user_hashes", batch.user_hashes, hc.user_vocab_size if own else None)
    _check_ids("history_post_hashes", batch.history_post_hashes, hc.item_vocab_size if own else None)
    _check_ids("candidate_post_hashes", batch.candidate_post_hashes, hc.item_vocab_size if own else None)
    _check_ids("history_author_hashes", batch.history_author_hashes, hc.author_vocab_size if own else None)
    _check_ids("candidate_author_hashes", batch.candidate_author_hashes, hc.author_vocab_size if own else None)
    _check_ids("history_product_surface", batch.history_product_surface, cfg.product_surface_vocab_size)
    _check_ids("candidate_product_surface", batch.candidate_product_surface, cfg.product_surface_vocab_size)
    acts = np.asarray(batch.history_actions)
    if not np.isfinite(acts).all():
        raise ValueError("history_actions holds NaN or inf")
    if embeddings is not None:
        for name in RecsysEmbeddings._fields:
            e = getattr(embeddings, name)
            if e is not None and _is_concrete(e) and not np.isfinite(np.asarray(e, dtype=np.float32)).all():
                raise ValueError(f"{name} holds NaN or inf")
