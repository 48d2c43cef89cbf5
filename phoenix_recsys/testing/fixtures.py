"""Seeded random `RecsysBatch`es with realistic padding, and the tiny test configuration."""

from __future__ import annotations

from typing import Any

import numpy as np

from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.model.config import PhoenixModelConfig


def tiny_config(**overrides: Any) -> PhoenixModelConfig:
    """`PhoenixModelConfig.tiny()` with overrides (fp32, distinct prime-ish sizes)."""
    return PhoenixModelConfig.tiny(**overrides)


def random_batch(
    cfg: PhoenixModelConfig,
    batch_size: int = 3,
    num_candidates: int | None = None,
    *,
    seed: int = 0,
    min_history: int = 0,
    pad_candidates: int = 0,
    history_len: int | None = None,
) -> RecsysBatch:
    """A random batch for `cfg`.

    Each example's history has a random valid length in `[min_history, S]`, packed at the front; the
    last `pad_candidates` candidates of every example are padding (hash 0).

    Args:
      cfg: model configuration (sizes, vocabularies).
      batch_size: B.
      num_candidates: C (default `cfg.candidate_seq_len`).
      seed: numpy seed.
      min_history: smallest valid history length.
      pad_candidates: padded candidates at the end of each example.
      history_len: S (default `cfg.history_seq_len`).
    """
    rng = np.random.default_rng(seed)
    hc = cfg.hash_config
    b = batch_size
    s = cfg.history_seq_len if history_len is None else history_len
    c = cfg.candidate_seq_len if num_candidates is None else num_candidates
    a = cfg.num_actions

    def ids(shape: tuple[int, ...], vocab: int) -> np.ndarray:
        return rng.integers(1, vocab, size=shape, dtype=np.int64).astype(np.int32)

    valid = rng.integers(min(min_history, s), s + 1, size=b)
    hist_mask = np.arange(s)[None, :] < valid[:, None]
    hp = ids((b, s, hc.num_item_hashes), hc.item_vocab_size) * hist_mask[..., None]
    ha = ids((b, s, hc.num_author_hashes), hc.author_vocab_size) * hist_mask[..., None]
    actions = (rng.random((b, s, a)) < 0.3).astype(np.float32) * hist_mask[..., None]
    cand_mask = np.arange(c)[None, :] < (c - pad_candidates)
    cand_mask = np.broadcast_to(cand_mask, (b, c))
    cp = ids((b, c, hc.num_item_hashes), hc.item_vocab_size) * cand_mask[..., None]
    ca = ids((b, c, hc.num_author_hashes), hc.author_vocab_size) * cand_mask[..., None]
    return RecsysBatch(
        user_hashes=ids((b, hc.num_user_hashes), hc.user_vocab_size),
        history_post_hashes=hp.astype(np.int32),
        history_author_hashes=ha.astype(np.int32),
        history_actions=actions,
        history_product_surface=(rng.integers(0, cfg.product_surface_vocab_size, (b, s)) * hist_mask).astype(np.int32),
        candidate_post_hashes=cp.astype(np.int32),
        candidate_author_hashes=ca.astype(np.int32),
        candidate_product_surface=rng.integers(0, cfg.product_surface_vocab_size, (b, c)).astype(np.int32),
    )
