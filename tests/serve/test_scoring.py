"""Tests for serve.scoring: weighted score, negative offset, author diversity, out-of-network, config."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from phoenix_recsys.actions import PHOENIX_ACTIONS, ActionVocabulary
from phoenix_recsys.serve.scoring import (
    PRODUCTION_WEIGHTS,
    ScoringConfig,
    author_diversity_multipliers,
    offset_scores,
    out_of_network_multipliers,
    score_candidates,
    weighted_scores,
)

TINY = ActionVocabulary.binary(["like", "reply", "report"], negative=["report"])
TINY_CFG = ScoringConfig(weights={"like": 1.0, "reply": 2.0, "report": -3.0, "not_in_vocab": 100.0})


# -- config ---------------------------------------------------------------------------------------
def test_default_weights_are_spec_7_on_the_phoenix_axis():
    expected = [0.5, 5.0, 1.0, 0.05, 0.4, 0.0, 0.05, 2.0, 5.0, 20.0, 0.0, 5.0, 0.05, 4.0,
                -43.2, -31.2, -58.8, -234.0, 0.004]  # fmt: skip
    np.testing.assert_array_equal(ScoringConfig().weight_vector(PHOENIX_ACTIONS), expected)
    cfg = ScoringConfig()
    assert (cfg.vqv_min_video_seconds, cfg.author_diversity_decay, cfg.author_diversity_floor) == (
        10.0,
        0.5,
        0.25,
    )
    assert (cfg.out_of_network_factor, cfg.negative_score_offset) == (0.75, 0.001)


def test_config_is_frozen_and_weights_immutable():
    source = {"like": 1.0}
    cfg = ScoringConfig(weights=source)
    source["like"] = 9.0  # the config copied its input
    assert cfg.weights["like"] == 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.out_of_network_factor = 0.1  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.weights["like"] = 2.0  # type: ignore[index]
    assert hash(cfg) == hash(ScoringConfig(weights={"like": 1.0}))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"author_diversity_decay": 1.5}, "author_diversity_decay"),
        ({"author_diversity_floor": -0.1}, "author_diversity_floor"),
        ({"out_of_network_factor": 0.0}, "out_of_network_factor"),
        ({"negative_score_offset": 0.0}, "negative_score_offset"),
        ({"vqv_min_video_seconds": float("nan")}, "vqv_min_video_seconds"),
        ({"weights": {"like": float("inf")}}, "weights"),
        ({"weights": {"": 1.0}}, "weights"),
        ({"weights": [("like", 1.0)]}, "weights"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ScoringConfig(**kwargs)


def test_overrides_replace_weights_and_fields_without_touching_the_original():
    base = ScoringConfig()
    new = base.with_overrides({"reply": 6.0, "report": -100.0}, out_of_network_factor=0.5)
    assert new.weights["reply"] == 6.0 and new.weights["report"] == -100.0
    assert new.weights["favorite"] == 0.5 and new.out_of_network_factor == 0.5
    assert base.weights["reply"] == 5.0 and base.out_of_network_factor == 0.75


def test_overrides_reject_unknown_actions_and_fields():
    with pytest.raises(ValueError, match="repyl"):
        ScoringConfig().with_overrides({"repyl": 1.0})
    with pytest.raises(ValueError, match="out_of_netwrok_factor"):
        ScoringConfig().with_overrides(out_of_netwrok_factor=0.5)
    with pytest.raises(ValueError, match="out_of_network_factor"):
        ScoringConfig().with_overrides(out_of_network_factor=-1.0)
    # A vocabulary action may get its first weight when the vocabulary is passed.
    vocab = ActionVocabulary.binary(["favorite", "rating_5"])
    assert ScoringConfig().with_overrides({"rating_5": 3.0}, vocab=vocab).weights["rating_5"] == 3.0


def test_json_round_trip_and_unknown_keys():
    cfg = ScoringConfig().with_overrides({"share": 3.0}, author_diversity_floor=0.1)
    assert ScoringConfig.from_json(cfg.to_json()) == cfg
    assert ScoringConfig.from_json(json.dumps(cfg.to_json())) == cfg
    assert ScoringConfig.from_json({"weights": {"like": 2.0}}).author_diversity_decay == 0.5
    with pytest.raises(ValueError, match="bogus"):
        ScoringConfig.from_json({"bogus": 1})


# -- weighted score -------------------------------------------------------------------------------
def test_weighted_score_hand_computed_and_ignores_weights_outside_the_vocabulary():
    probs = np.array([[0.5, 0.25, 0.0], [0.0, 0.0, 0.1], [1.0, 1.0, 1.0]])
    # 0.5*1 + 0.25*2 = 1.0; 0.1*-3 = -0.3; 1 + 2 - 3 = 0. The 100.0 for "not_in_vocab" is ignored.
    np.testing.assert_allclose(weighted_scores(probs, TINY, TINY_CFG), [1.0, -0.3, 0.0])


def test_vocabulary_actions_without_a_weight_score_zero():
    vocab = ActionVocabulary.binary(["like", "bookmark"])
    np.testing.assert_allclose(weighted_scores(np.array([[0.5, 1.0]]), vocab, TINY_CFG), [0.5])


def test_vqv_counts_only_for_videos_longer_than_the_threshold():
    probs = np.zeros((4, len(PHOENIX_ACTIONS)))
    probs[:, PHOENIX_ACTIONS.index("vqv")] = 1.0
    probs[:, PHOENIX_ACTIONS.index("favorite")] = 0.2  # 0.1 that always counts
    cfg = ScoringConfig()
    durations = np.array([5.0, 10.0, 15.0, np.nan])  # exactly 10 s is not "longer than"
    np.testing.assert_allclose(weighted_scores(probs, PHOENIX_ACTIONS, cfg, durations), [0.1, 0.1, 0.15, 0.1])
    np.testing.assert_allclose(weighted_scores(probs, PHOENIX_ACTIONS, cfg), [0.15] * 4)


def test_weighted_score_shape_checks():
    with pytest.raises(ValueError, match="probs"):
        weighted_scores(np.zeros((2, 4)), TINY, TINY_CFG)
    with pytest.raises(ValueError, match="video_duration_s"):
        weighted_scores(np.zeros((2, 19)), PHOENIX_ACTIONS, ScoringConfig(), np.zeros(3))


# -- negative offset ------------------------------------------------------------------------------
def test_offset_hand_computed():
    # N = 3 (|report|), W = 1 + 2 + 3 = 6 (not_in_vocab's 100 does not apply to TINY).
    assert TINY_CFG.offset_constants(TINY) == (3.0, 6.0)
    out = offset_scores(np.array([2.0, 0.0, -1.0, -3.0]), TINY_CFG, TINY)
    np.testing.assert_allclose(out, [2.001, 0.001, 2 / 6 * 0.001, 0.0])


def test_offset_constants_follow_the_vocabulary():
    vocab = ActionVocabulary.binary(["favorite", "report"])
    assert ScoringConfig().offset_constants(vocab) == (234.0, 234.5)


_phoenix_probs = hnp.arrays(
    np.float64,
    st.tuples(st.integers(2, 40), st.just(len(PHOENIX_ACTIONS))),
    elements=st.floats(0.0, 1.0, allow_nan=False),
)


@settings(max_examples=60, deadline=None)
@given(probs=_phoenix_probs, dwell=st.floats(0.0, 600.0))
def test_offset_puts_every_positive_above_every_negative_and_keeps_order(probs, dwell):
    probs = probs.copy()
    probs[:, PHOENIX_ACTIONS.index("dwell_time")] *= dwell  # continuous action: seconds
    cfg = ScoringConfig()
    s = weighted_scores(probs, PHOENIX_ACTIONS, cfg)
    o = offset_scores(s, cfg, PHOENIX_ACTIONS)
    pos, neg = s >= 0, s < 0
    if pos.any() and neg.any():
        assert o[pos].min() > o[neg].max()
    assert np.all(o >= 0)
    # An increasing map: pairs ordered by s stay ordered by o. Strictness is checked where the gap
    # exceeds float64 resolution at the 0.001 scale (1e-79 vs 0 both become 0.001).
    i, j = np.triu_indices(s.shape[0], k=1)
    a, b = np.where(s[i] <= s[j], i, j), np.where(s[i] <= s[j], j, i)  # pairs with s[a] <= s[b]
    assert np.all(o[a] <= o[b])
    clear = s[b] - s[a] > 1e-9
    assert np.all(o[a][clear] < o[b][clear])


# -- author diversity -----------------------------------------------------------------------------
def _diversity_reference(scores, authors, decay, floor):
    """Plain loop over the ranking: the oracle for the vectorised version."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    seen: dict[int, int] = {}
    out = [0.0] * len(scores)
    for i in order:
        k = seen.get(authors[i], 0)
        out[i] = (1 - floor) * decay**k + floor
        seen[authors[i]] = k + 1
    return out


def test_diversity_known_sequence():
    # Ranking: 5 (a1, k0), 4 (a1, k1), 3 (a1, k2), 2 (a2, k0), 1 (a2, k1).
    m = author_diversity_multipliers(
        np.array([3.0, 5.0, 1.0, 4.0, 2.0]), np.array([1, 1, 2, 1, 2]), ScoringConfig()
    )
    np.testing.assert_allclose(m, [0.4375, 1.0, 0.625, 0.625, 1.0])


def test_diversity_ties_break_by_input_index_and_floor_is_approached():
    m = author_diversity_multipliers(np.ones(5), np.zeros(5, dtype=np.int64), ScoringConfig())
    np.testing.assert_allclose(m, [1.0, 0.625, 0.4375, 0.34375, 0.296875])
    cfg = ScoringConfig(author_diversity_decay=0.0, author_diversity_floor=0.1)
    np.testing.assert_allclose(
        author_diversity_multipliers(np.ones(3), np.zeros(3, np.int64), cfg), [1.0, 0.1, 0.1]
    )
    assert author_diversity_multipliers(np.zeros(0), np.zeros(0, np.int64), cfg).shape == (0,)


@settings(max_examples=50, deadline=None)
@given(
    scores=st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5]), min_size=1, max_size=30),
    data=st.data(),
)
def test_diversity_matches_loop_reference(scores, data):
    authors = data.draw(st.lists(st.integers(0, 4), min_size=len(scores), max_size=len(scores)))
    got = author_diversity_multipliers(np.array(scores), np.array(authors), ScoringConfig())
    np.testing.assert_allclose(got, _diversity_reference(scores, authors, 0.5, 0.25))


# -- out of network and the chain -----------------------------------------------------------------
def test_out_of_network_multipliers():
    np.testing.assert_array_equal(
        out_of_network_multipliers(np.array([True, False]), ScoringConfig()), [1.0, 0.75]
    )
    cfg = ScoringConfig(out_of_network_factor=0.5)
    np.testing.assert_array_equal(out_of_network_multipliers(np.array([False]), cfg), [0.5])
    with pytest.raises(ValueError, match="bool"):
        out_of_network_multipliers(np.array([1, 0]), cfg)


def test_score_candidates_applies_spec_order_and_exposes_intermediates():
    # Post 0: highest weighted score but out-of-network; post 1: same author, in-network; post 2: a
    # negative total. Diversity ranks by the offset score (before the oon factor), so post 0 is the
    # author's first post (x1) and post 1 the second (x0.625), even though 0.75 makes post 0's final
    # score lower than its offset score.
    probs = np.array([[1.0, 0.0, 0.0], [0.9, 0.0, 0.0], [0.0, 0.0, 0.5]])
    res = score_candidates(
        probs, TINY, TINY_CFG, author_ids=np.array([7, 7, 8]), in_network=np.array([False, True, True])
    )
    np.testing.assert_allclose(res.weighted, [1.0, 0.9, -1.5])
    np.testing.assert_allclose(res.offset, [1.001, 0.901, (3 - 1.5) / 6 * 0.001])
    np.testing.assert_allclose(res.diversity_multiplier, [1.0, 0.625, 1.0])
    np.testing.assert_allclose(res.oon_multiplier, [0.75, 1.0, 1.0])
    np.testing.assert_allclose(res.final, res.offset * res.diversity_multiplier * res.oon_multiplier)
    assert res.ranking().tolist() == [0, 1, 2]  # 0.75075 > 0.563125 > 0.00025
    assert res.explain(2)["weighted"] == pytest.approx(-1.5)


def test_score_candidates_length_checks():
    with pytest.raises(ValueError, match="author_ids"):
        score_candidates(
            np.zeros((2, 3)), TINY, TINY_CFG, author_ids=np.zeros(3), in_network=np.ones(2, bool)
        )


def test_production_weights_mapping_is_read_only():
    with pytest.raises(TypeError):
        PRODUCTION_WEIGHTS["reply"] = 1.0  # type: ignore[index]
