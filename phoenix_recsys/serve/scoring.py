"""Feed scorers (SPEC 7): weighted score -> negative offset -> author diversity -> out-of-network factor.

Axes: N candidates, A actions (the vocabulary's axis order). Everything here is pure NumPy and
vectorised over candidates; scores are computed in float64 because the offset step maps negative totals
into a band of width 0.001, where float32 would start to merge neighbours.

Weights are keyed by action NAME, never by position, because vocabularies are data: a weight for an
action the vocabulary lacks is ignored, and an action the vocabulary has but the weights do not name
scores 0.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

from phoenix_recsys.actions import DEFAULT_ACTION_WEIGHTS, ActionVocabulary

#: The production defaults (SPEC 7). `dwell_time` is per second of predicted dwell.
# One source of truth for the SPEC 7 weights: the action vocabulary module (the model's
# RankingOutput uses the same defaults); here they are read-only.
PRODUCTION_WEIGHTS: Mapping[str, float] = MappingProxyType(dict(DEFAULT_ACTION_WEIGHTS))

#: The action whose weight is gated on video duration (SPEC 7: only videos longer than 10 s).
VQV_ACTION = "vqv"


def _check_finite(name: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def _check_weights(weights: Mapping[str, Any], field: str = "weights") -> dict[str, float]:
    if not isinstance(weights, Mapping):
        raise ValueError(
            f"ScoringConfig.{field} must be a mapping of action name -> weight, got {type(weights).__name__}"
        )
    out: dict[str, float] = {}
    for name, w in weights.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"ScoringConfig.{field} keys must be non-empty action names, got {name!r}")
        out[name] = _check_finite(f"ScoringConfig.{field}[{name!r}]", w)
    return out


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ScoringConfig:
    """How model probabilities become a feed order (SPEC 7); production values by default.

    Attributes:
      weights: action name -> weight. Negative actions carry negative weights. Names the scored
        vocabulary lacks are ignored; vocabulary actions not named here weigh 0.
      vqv_min_video_seconds: the `vqv` weight counts only for posts whose video is strictly longer
        than this (when durations are given).
      author_diversity_decay: per-extra-post decay of an author's multiplier.
      author_diversity_floor: the multiplier an author's posts decay towards.
      out_of_network_factor: multiplier for posts by authors the viewer does not follow.
      negative_score_offset: the 0.001 of the negative-score mapping.

    >>> cfg = ScoringConfig().with_overrides({"reply": 6.0}, out_of_network_factor=0.5)
    >>> cfg.weights["reply"], cfg.out_of_network_factor
    (6.0, 0.5)
    """

    weights: Mapping[str, float] = dataclasses.field(default_factory=lambda: dict(PRODUCTION_WEIGHTS))
    vqv_min_video_seconds: float = 10.0
    author_diversity_decay: float = 0.5
    author_diversity_floor: float = 0.25
    out_of_network_factor: float = 0.75
    negative_score_offset: float = 0.001

    def __post_init__(self) -> None:
        # Copy then freeze, so neither the caller's dict nor anyone holding the config can mutate it.
        object.__setattr__(self, "weights", MappingProxyType(_check_weights(self.weights)))
        vqv = _check_finite("ScoringConfig.vqv_min_video_seconds", self.vqv_min_video_seconds)
        if vqv < 0:
            raise ValueError(f"ScoringConfig.vqv_min_video_seconds must be >= 0, got {vqv}")
        decay = _check_finite("ScoringConfig.author_diversity_decay", self.author_diversity_decay)
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ScoringConfig.author_diversity_decay must be in [0, 1], got {decay}")
        floor = _check_finite("ScoringConfig.author_diversity_floor", self.author_diversity_floor)
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"ScoringConfig.author_diversity_floor must be in [0, 1], got {floor}")
        oon = _check_finite("ScoringConfig.out_of_network_factor", self.out_of_network_factor)
        # 0 would erase the order among out-of-network posts; > 1 (a boost) is allowed on purpose.
        if oon <= 0:
            raise ValueError(f"ScoringConfig.out_of_network_factor must be > 0, got {oon}")
        off = _check_finite("ScoringConfig.negative_score_offset", self.negative_score_offset)
        if off <= 0:
            raise ValueError(f"ScoringConfig.negative_score_offset must be > 0, got {off}")
        for name, value in (
            ("vqv_min_video_seconds", vqv),
            ("author_diversity_decay", decay),
            ("author_diversity_floor", floor),
            ("out_of_network_factor", oon),
            ("negative_score_offset", off),
        ):
            object.__setattr__(self, name, value)

    def __hash__(self) -> int:
        # The generated hash would fail on the mapping; hash its sorted items instead.
        return hash((tuple(sorted(self.weights.items())), *(getattr(self, f) for f in _SCALAR_FIELDS)))

    # -- derived values -----------------------------------------------------------------------
    def weight_vector(self, vocab: ActionVocabulary) -> np.ndarray:
        """The weights on `vocab`'s action axis.

        Args:
          vocab: the vocabulary the probabilities follow.

        Returns:
          `[A]` float64; 0 for actions the weights do not name.
        """
        return np.array([self.weights.get(n, 0.0) for n in vocab.names], dtype=np.float64)

    def offset_constants(self, vocab: ActionVocabulary) -> tuple[float, float]:
        """`(N, W)` of the negative mapping over the weights that apply to `vocab`.

        Returns:
          N = sum of |w| over negative weights, W = sum of |w| over all weights, both restricted
          to actions in `vocab`.
        """
        w = self.weight_vector(vocab)
        return float(-w[w < 0].sum()), float(np.abs(w).sum())

    # -- overrides and serialisation ----------------------------------------------------------
    def with_overrides(
        self,
        weights: Mapping[str, float] | None = None,
        /,
        *,
        vocab: ActionVocabulary | None = None,
        **fields: float,
    ) -> ScoringConfig:
        """A copy with some weights and/or scalar settings replaced (production's run-time switches).

        Args:
          weights: action name -> new weight. A name must already have a weight here or be an
            action of `vocab`; anything else is rejected, since a typo would otherwise silently
            score nothing.
          vocab: optional vocabulary whose action names may be given weights for the first time.
          **fields: scalar fields to replace, e.g. `out_of_network_factor=0.5`.

        Returns:
          A new, validated `ScoringConfig`.

        Raises:
          ValueError: naming an unknown action or field, or a bad value.
        """
        unknown_fields = sorted(set(fields) - set(_SCALAR_FIELDS))
        if unknown_fields:
            raise ValueError(
                f"unknown ScoringConfig field(s) {unknown_fields}; known: {list(_SCALAR_FIELDS)}"
            )
        new_weights = dict(self.weights)
        if weights:
            checked = _check_weights(weights, field="weights override")
            known = set(self.weights) | (set(vocab.names) if vocab is not None else set())
            unknown = sorted(set(checked) - known)
            if unknown:
                raise ValueError(
                    f"weights override names unknown action(s) {unknown}; known: {sorted(known)}"
                )
            new_weights.update(checked)
        return dataclasses.replace(self, weights=new_weights, **fields)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (inverse of `from_json`)."""
        out: dict[str, Any] = {"weights": dict(self.weights)}
        out.update({f: getattr(self, f) for f in _SCALAR_FIELDS})
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> ScoringConfig:
        """Build from a dict (or a JSON string) as written by `to_json`; unknown keys are rejected.

        Missing keys take their defaults, so `{"weights": {...}}` alone is a valid config.
        """
        if isinstance(data, str):
            data = json.loads(data)
        if not isinstance(data, Mapping):
            raise ValueError(f"ScoringConfig JSON must be an object, got {type(data).__name__}")
        unknown = sorted(set(data) - {"weights", *_SCALAR_FIELDS})
        if unknown:
            raise ValueError(f"unknown ScoringConfig key(s) {unknown}")
        return cls(**data)


_SCALAR_FIELDS: tuple[str, ...] = (
    "vqv_min_video_seconds",
    "author_diversity_decay",
    "author_diversity_floor",
    "out_of_network_factor",
    "negative_score_offset",
)


def _as_1d(name: str, x: Any, n: int | None = None, dtype: Any = None) -> np.ndarray:
    arr = np.asarray(x, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D [N], got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} must have length {n} (one per candidate), got {arr.shape[0]}")
    return arr


def weighted_scores(
    probs: np.ndarray,
    vocab: ActionVocabulary,
    config: ScoringConfig,
    video_duration_s: np.ndarray | None = None,
) -> np.ndarray:
    """Sum over actions of weight x predicted value.

    Args:
      probs: `[N, A]` probabilities (binary actions) and predicted values (continuous, e.g. dwell
        seconds) on `vocab`'s axis.
      vocab: the action vocabulary of `probs`.
      config: the weights.
      video_duration_s: optional `[N]` video length per post. When given, the `vqv` weight counts
        only where duration > `config.vqv_min_video_seconds`; NaN (a post without video) gets no
        vqv credit, as production gives none to posts without a video. When None, vqv always counts.

    Returns:
      `[N]` float64 weighted scores.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(vocab):
        raise ValueError(f"probs must be [N, A={len(vocab)}], got shape {p.shape}")
    w = config.weight_vector(vocab)
    scores = p @ w
    if video_duration_s is not None and VQV_ACTION in vocab:
        dur = _as_1d("video_duration_s", video_duration_s, p.shape[0], np.float64)
        j = vocab.index(VQV_ACTION)
        # Subtract the vqv term where ineligible rather than masking the matrix: one [N] op.
        ineligible = ~(dur > config.vqv_min_video_seconds)
        scores = scores - np.where(ineligible, p[:, j] * w[j], 0.0)
    return scores


def offset_scores(scores: np.ndarray, config: ScoringConfig, vocab: ActionVocabulary) -> np.ndarray:
    """SPEC 7's negative handling: s >= 0 -> s + c; s < 0 -> (s + N) / W * c, with c the offset.

    N and W come from the weights that apply to `vocab` (`ScoringConfig.offset_constants`). For
    any s >= -N (always true when negative weights sit on binary probabilities) a negative total maps
    into [0, c * N / W), below every non-negative total (>= c), and the map is increasing, so the
    order among negatives is kept. The result is then positive, which the multiplicative scorers
    after it need (a multiplier < 1 on a negative score would raise it).

    Args:
      scores: `[N]` (or any shape) weighted scores.
      config: supplies the offset c.
      vocab: selects the weights that define N and W.

    Returns:
      float64 array of `scores`' shape.
    """
    s = np.asarray(scores, dtype=np.float64)
    n_mag, w_mag = config.offset_constants(vocab)
    c = config.negative_score_offset
    # W == 0 means every weight is 0, so no score is negative; guard the division anyway.
    w_mag = w_mag if w_mag > 0 else 1.0
    return np.where(s >= 0, s + c, (s + n_mag) / w_mag * c)


def author_diversity_multipliers(
    scores: np.ndarray, author_ids: np.ndarray, config: ScoringConfig
) -> np.ndarray:
    """Per-candidate author-diversity multipliers.

    Candidates are ranked by score, descending, ties in input order. The k-th post of an author in
    that ranking (k = number of higher-ranked posts by the same author, 0-based) gets
    `(1 - floor) * decay**k + floor`. Missing authors (-1) are treated as one author; the filters
    remove them before scoring.

    Args:
      scores: `[N]` scores that define the ranking (after the offset).
      author_ids: `[N]` int author ids.
      config: decay and floor.

    Returns:
      `[N]` float64 multipliers in [floor, 1], in input order.
    """
    s = _as_1d("scores", scores, dtype=np.float64)
    a = _as_1d("author_ids", author_ids, s.shape[0])
    n = s.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    order = np.argsort(-s, kind="stable")  # rank -> input index; stable keeps input order on ties
    ranked_authors = a[order]
    # Group the ranked list by author with a stable sort, so each group stays in rank order; the
    # position inside a group is then k.
    by_author = np.argsort(ranked_authors, kind="stable")
    grouped = ranked_authors[by_author]
    starts = np.r_[0, np.flatnonzero(grouped[1:] != grouped[:-1]) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    k_ranked = np.empty(n, dtype=np.int64)
    k_ranked[by_author] = np.arange(n) - group_start
    k = np.empty(n, dtype=np.int64)
    k[order] = k_ranked
    floor, decay = config.author_diversity_floor, config.author_diversity_decay
    return (1.0 - floor) * np.power(decay, k.astype(np.float64)) + floor


def out_of_network_multipliers(in_network: np.ndarray, config: ScoringConfig) -> np.ndarray:
    """1 for in-network posts (author followed by the viewer), `out_of_network_factor` otherwise.

    Args:
      in_network: `[N]` bool.
      config: supplies the factor.

    Returns:
      `[N]` float64 multipliers.
    """
    m = _as_1d("in_network", in_network)
    if m.dtype != np.bool_:
        raise ValueError(f"in_network must be a bool array, got dtype {m.dtype}")
    return np.where(m, 1.0, config.out_of_network_factor)


class ScoreBreakdown(NamedTuple):
    """Every intermediate of `score_candidates`, all `[N]` float64 in input order.

    Attributes:
      weighted: weighted score (sum of weight x prediction).
      offset: after the negative-score offset.
      diversity_multiplier: author-diversity multiplier.
      oon_multiplier: out-of-network multiplier.
      final: offset x diversity x oon, the ranking score.
    """

    weighted: np.ndarray
    offset: np.ndarray
    diversity_multiplier: np.ndarray
    oon_multiplier: np.ndarray
    final: np.ndarray

    def ranking(self) -> np.ndarray:
        """`[N]` int64 candidate indices, best final score first (ties in input order)."""
        return np.argsort(-self.final, kind="stable")

    def explain(self, i: int) -> dict[str, float]:
        """The intermediates of candidate `i` as plain floats (for API responses)."""
        return {f: float(getattr(self, f)[i]) for f in self._fields}


def score_candidates(
    probs: np.ndarray,
    vocab: ActionVocabulary,
    config: ScoringConfig,
    *,
    author_ids: np.ndarray,
    in_network: np.ndarray,
    video_duration_s: np.ndarray | None = None,
) -> ScoreBreakdown:
    """All scorers in SPEC 7 order: weighted -> offset -> author diversity -> out-of-network.

    Author diversity ranks by the offset score (same order as the weighted score), and the
    out-of-network factor multiplies after it, as production's scorer chain does.

    Args:
      probs: `[N, A]` model predictions on `vocab`'s axis.
      vocab: the action vocabulary.
      config: weights and factors.
      author_ids: `[N]` int author ids.
      in_network: `[N]` bool, author followed by the viewer.
      video_duration_s: optional `[N]` float seconds (NaN = no video), gates vqv.

    Returns:
      `ScoreBreakdown` with every intermediate; `.ranking()` gives the feed order.
    """
    weighted = weighted_scores(probs, vocab, config, video_duration_s)
    n = weighted.shape[0]
    author_ids = _as_1d("author_ids", author_ids, n)
    in_network = _as_1d("in_network", in_network, n)
    offset = offset_scores(weighted, config, vocab)
    diversity = author_diversity_multipliers(offset, author_ids, config)
    oon = out_of_network_multipliers(in_network, config)
    return ScoreBreakdown(
        weighted=weighted,
        offset=offset,
        diversity_multiplier=diversity,
        oon_multiplier=oon,
        final=offset * diversity * oon,
    )
