"""Scoring for selection: the feed's scoring configuration and the SPEC 7 scorers in order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from phoenix_recsys.actions import ActionVocabulary, weight_vector
from phoenix_recsys.serve.filters import (
    Candidates,
)
from phoenix_recsys.serve.scoring import ScoreBreakdown, ScoringConfig, score_candidates


def feed_scoring_config(vocab: ActionVocabulary, overrides: Mapping[str, Any] | None = None) -> ScoringConfig:
    """The scoring configuration for a vocabulary: production weights, sensible defaults elsewhere.

    Phoenix action names take their production weight; other actions (an imported dataset's own
    vocabulary) take +1 if positive, -1 if negative, 0 if continuous (`actions.weight_vector`), so
    the weighted score is meaningful on any vocabulary. `overrides` (`ScoringConfig.to_json` keys)
    are applied on top; a weight for an action outside the vocabulary is rejected.
    """
    base = ScoringConfig(weights=dict(zip(vocab.names, weight_vector(vocab), strict=True)))
    if not overrides:
        return base
    fields = {k: v for k, v in overrides.items() if k != "weights"}
    return base.with_overrides(dict(overrides.get("weights") or {}), vocab=vocab, **fields)


def score_feed(
    probs: np.ndarray,
    candidates: Candidates,
    in_network: np.ndarray,
    vocab: ActionVocabulary,
    config: ScoringConfig,
) -> ScoreBreakdown:
    """SPEC 7 scorers over all candidates (weighted -> offset -> author diversity -> out-of-network)."""
    return score_candidates(
        probs,
        vocab,
        config,
        author_ids=candidates.author_ids,
        in_network=in_network,
        video_duration_s=candidates.video_duration_s,
    )
