"""Per-item explanations of a served feed: source, probabilities, contributions, multipliers."""

from __future__ import annotations

import math

import numpy as np

from phoenix_recsys.actions import ActionVocabulary
from phoenix_recsys.serve.filters import (
    Candidates,
)
from phoenix_recsys.serve.scoring import VQV_ACTION, ScoreBreakdown, ScoringConfig
from phoenix_recsys.serve.types import (
    FeedItem,
)

#: How many of an item's largest weighted contributions the explanation lists.
_TOP_CONTRIBUTIONS = 3


def explain_items(
    order: np.ndarray,
    candidates: Candidates,
    in_network: np.ndarray,
    probs: np.ndarray,
    breakdown: ScoreBreakdown,
    vocab: ActionVocabulary,
    config: ScoringConfig,
    now: int,
) -> tuple[FeedItem, ...]:
    """The selected candidates (`order`, best first) as `FeedItem`s with their explanation."""
    w = config.weight_vector(vocab)
    names = vocab.names
    # The vqv weight counts only for long enough videos (as in `weighted_scores`); so here too.
    vqv = vocab.index(VQV_ACTION) if VQV_ACTION in vocab and candidates.video_duration_s is not None else None
    items = []
    for rank, i in enumerate(order.tolist(), start=1):
        contrib = probs[i].astype(np.float64) * w
        if vqv is not None and not candidates.video_duration_s[i] > config.vqv_min_video_seconds:
            contrib[vqv] = 0.0
        top = np.argsort(-np.abs(contrib), kind="stable")[:_TOP_CONTRIBUTIONS]
        ex = breakdown.explain(i)
        rs = None if candidates.retrieval_score is None else float(candidates.retrieval_score[i])
        rp = -1 if candidates.repost_of is None else int(candidates.repost_of[i])
        oa = -1 if candidates.original_author_ids is None else int(candidates.original_author_ids[i])
        items.append(
            FeedItem(
                rank=rank,
                post_id=int(candidates.post_ids[i]),
                author_id=int(candidates.author_ids[i]),
                created_at=int(candidates.created_at[i]),
                age_s=int(now - candidates.created_at[i]),
                source=str(candidates.source[i]),
                in_network=bool(in_network[i]),
                retrieval_score=None if rs is None or math.isnan(rs) else rs,
                probabilities={n: float(p) for n, p in zip(names, probs[i].tolist(), strict=True)},
                weighted_score=ex["weighted"],
                offset_score=ex["offset"],
                diversity_multiplier=ex["diversity_multiplier"],
                oon_multiplier=ex["oon_multiplier"],
                final_score=ex["final"],
                top_contributions=tuple(
                    (names[j], float(contrib[j])) for j in top.tolist() if contrib[j] != 0
                ),
                repost_of=rp if rp >= 0 else None,
                original_author_id=oa if rp >= 0 and oa >= 0 else None,
            )
        )
    return tuple(items)
