"""Ranking: one context encoding, then cached scoring of every candidate."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.serve import history as hist
from phoenix_recsys.serve.filters import (
    Candidates,
)
from phoenix_recsys.serve.runtime import ModelRuntime


def rank_candidates(
    runtime: ModelRuntime,
    context: RecsysBatch,
    candidates: Candidates,
    *,
    in_network: np.ndarray,
    now: int,
    product_surface: int | np.ndarray,
    predict: Callable[[RecsysBatch], np.ndarray] | None = None,
) -> np.ndarray:
    """Model predictions `[N, A]` for every candidate: one context encoding, then cached scoring.

    `predict`: what scores the batch (default `runtime.predict`; the service passes its `RankBatcher`'s).
    """
    if len(candidates) == 0:
        return np.zeros((0, len(runtime.vocab)), np.float32)
    batch = hist.with_candidates(
        context,
        candidates.post_ids,
        candidates.author_ids,
        hash_config=runtime.hash_config,
        product_surface=product_surface,
        now=now,
        created_at=candidates.created_at,
        in_network=in_network,
    )
    return (runtime.predict if predict is None else predict)(batch)
