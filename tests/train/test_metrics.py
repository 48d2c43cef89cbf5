"""Metrics (train/metrics.py, inference.retrieval_eval): hand-computed cases and brute-force references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_recsys.data.examples import RetrievalExamples
from phoenix_recsys.train import metrics as M
from phoenix_recsys.train.inference import retrieval_eval

# -- brute-force references (deliberately naive) ---------------------------------------------


def pairwise_auroc(y: np.ndarray, s: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counting 1/2."""
    pos, neg = s[y == 1], s[y == 0]
    total = 0.0
    for p in pos:
        for n in neg:
            total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))


def threshold_ap(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision: at each distinct threshold (high to low) add recall gain x precision."""
    n_pos = int(y.sum())
    ap, prev_recall = 0.0, 0.0
    for t in sorted(set(s.tolist()), reverse=True):
        predicted = s >= t
        tp = int((predicted & (y == 1)).sum())
        recall = tp / n_pos
        ap += (recall - prev_recall) * tp / int(predicted.sum())
        prev_recall = recall
    return ap


labelled_scores = st.integers(2, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n),
        # few distinct values: many ties
        st.lists(st.integers(0, 6), min_size=n, max_size=n),
    )
)


# -- ranker metrics, by hand ------------------------------------------------------------------


def test_auroc_hand_cases():
    assert M.auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    # positives {0.5, 0.9} vs negatives {0.5, 0.2}: 1/2 + 1 + 1 + 1 over 4 pairs
    assert M.auroc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.2, 0.9])) == pytest.approx(0.875)
    assert M.auroc(np.array([1, 1, 0, 0]), np.array([0.3, 0.3, 0.3, 0.3])) == pytest.approx(0.5)
    assert M.auroc(np.array([1, 0]), np.array([0.1, 0.9])) == 0.0
    assert math.isnan(M.auroc(np.array([1, 1]), np.array([0.1, 0.9])))
    assert math.isnan(M.auroc(np.array([0, 0]), np.array([0.1, 0.9])))


def test_pr_auc_hand_cases():
    # ranked: pos (P=1, R=1/2), neg, pos (P=2/3, R=1), neg -> 1/2 * 1 + 1/2 * 2/3
    assert M.pr_auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1])) == pytest.approx(5 / 6)
    # a tie admits both tied items at once: thresholds 0.9 (P=1, R=1/2) and 0.5 (P=2/3, R=1)
    assert M.pr_auc(np.array([1, 0, 1]), np.array([0.9, 0.5, 0.5])) == pytest.approx(5 / 6)
    # all tied: precision is the base rate
    assert M.pr_auc(np.array([1, 0, 0, 0]), np.zeros(4)) == pytest.approx(0.25)
    assert M.pr_auc(np.array([0, 1, 1]), np.array([0.0, 0.5, 0.7])) == pytest.approx(1.0)
    assert math.isnan(M.pr_auc(np.array([0, 0]), np.array([0.1, 0.2])))


def test_logloss_hand_and_clipping():
    assert M.logloss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    # p = 0 for a positive is clipped to 1e-7, not infinite
    assert M.logloss(np.array([1]), np.array([0.0])) == pytest.approx(-math.log(1e-7), rel=1e-6)
    assert M.logloss(np.array([0, 1]), np.array([0.0, 1.0])) == pytest.approx(0.0, abs=1e-6)


def test_rce_base_rate_zero_better_positive_worse_negative():
    y = np.array([1, 0, 0, 0, 1, 0, 0, 0])
    assert M.rce(y, np.full(8, 0.25)) == pytest.approx(0.0, abs=1e-9)
    better = np.where(y == 1, 0.6, 0.1)
    base = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    model = -(0.25 * math.log(0.6) + 0.75 * math.log(0.9))
    assert M.rce(y, better) == pytest.approx(100 * (1 - model / base))
    assert M.rce(y, better) > 0
    assert M.rce(y, np.where(y == 1, 0.1, 0.6)) < 0
    # one class only: the base rate is perfect (log-loss 0), so RCE is undefined, not -1e8
    assert math.isnan(M.rce(np.zeros(4), np.full(4, 0.1)))
    assert math.isnan(M.rce(np.ones(4), np.full(4, 0.9)))


def test_calibration_hand():
    y = np.array([1, 0, 0, 0])
    assert M.calibration(y, np.array([0.5, 0.1, 0.1, 0.1])) == pytest.approx(0.8)
    assert M.calibration(y, np.full(4, 0.25)) == pytest.approx(1.0)
    assert math.isnan(M.calibration(np.zeros(3), np.full(3, 0.2)))


def test_binary_action_metrics_bundles_all():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    m = M.binary_action_metrics(y, p)
    assert set(m) == {"auroc", "pr_auc", "logloss", "rce", "calibration", "positives", "count"}
    assert m["auroc"] == pytest.approx(0.75) and m["positives"] == 2 and m["count"] == 4
    assert m["logloss"] == pytest.approx(M.logloss(y, p)) and m["calibration"] == pytest.approx(1.65 / 2)


@settings(max_examples=60, deadline=None)
@given(labelled_scores)
def test_auroc_and_ap_match_brute_force(data):
    y, s = np.array(data[0]), np.array(data[1], np.float64) / 7.0
    if 0 < y.sum() < y.size:
        assert M.auroc(y, s) == pytest.approx(pairwise_auroc(y, s), abs=1e-12)
    else:
        assert math.isnan(M.auroc(y, s))
    if y.sum() > 0:
        assert M.pr_auc(y, s) == pytest.approx(threshold_ap(y, s), abs=1e-12)
    # shuffling the rows changes neither
    perm = np.random.default_rng(len(y)).permutation(len(y))
    assert np.allclose(M.auroc(y[perm], s[perm]), M.auroc(y, s), equal_nan=True)
    assert np.allclose(M.pr_auc(y[perm], s[perm]), M.pr_auc(y, s), equal_nan=True)


# -- retrieval metrics ----------------------------------------------------------------------------


def test_retrieval_metrics_target_first():
    r = M.retrieval_metrics(np.array([0]), np.array([0]), ks=(1, 10))
    assert r["hr@1"] == r["ndcg@1"] == r["mrr"] == r["hr@10"] == r["ndcg@10"] == r["recall@1"] == 1.0
    assert r["queries"] == 1


def test_retrieval_metrics_with_ties_is_the_expectation():
    # tied with one other item: position 0 or 1 with probability 1/2 each
    r = M.retrieval_metrics(np.array([0]), np.array([1]), ks=(1, 2))
    assert r["hr@1"] == pytest.approx(0.5) and r["hr@2"] == pytest.approx(1.0)
    assert r["mrr"] == pytest.approx(0.75)
    assert r["ndcg@1"] == pytest.approx(0.5)
    assert r["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 2)


def test_retrieval_metrics_hand_average_over_queries():
    # query 1 at position 3 exactly; query 2 at positions 0..3 uniformly
    r = M.retrieval_metrics(np.array([3, 0]), np.array([0, 3]), ks=(3, 4))
    assert r["hr@3"] == pytest.approx((0 + 3 / 4) / 2)
    assert r["hr@4"] == pytest.approx(1.0)
    mrr_2 = (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4
    assert r["mrr"] == pytest.approx((1 / 4 + mrr_2) / 2)
    ndcg_2_at_3 = (1 + 1 / math.log2(3) + 1 / math.log2(4)) / 4
    assert r["ndcg@3"] == pytest.approx((0 + ndcg_2_at_3) / 2)
    assert r["ndcg@4"] == pytest.approx((1 / math.log2(5) + ndcg_2_at_3 + 1 / math.log2(5) / 4) / 2)
    assert M.retrieval_metrics(np.array([], np.int64), np.array([], np.int64)) == {"queries": 0}


@pytest.mark.parametrize("greater,ties", [(0, 4), (2, 5), (7, 0), (1, 12)])
def test_retrieval_metrics_monte_carlo_tie_breaking(greater, ties):
    """Rank a score vector many times with a random order among equal scores; average the metrics."""
    rng = np.random.default_rng(greater * 31 + ties)
    n_items = greater + ties + 1 + 6  # six items below the target
    scores = np.r_[np.full(greater, 2.0), np.full(ties + 1, 1.0), np.zeros(6)]
    target = greater  # the first of the tied block
    trials = 20_000
    keys = rng.random((trials, n_items))  # random secondary key = uniform tie-breaking
    order = np.lexsort((keys, np.broadcast_to(-scores, keys.shape)), axis=-1)
    pos = np.argmax(order == target, axis=1)
    ks = (1, 3, 5, 10)
    want = M.retrieval_metrics(np.array([greater]), np.array([ties]), ks=ks)
    for k in ks:
        assert np.mean(pos < k) == pytest.approx(want[f"hr@{k}"], abs=0.015)
        assert np.mean(np.where(pos < k, 1 / np.log2(pos + 2), 0)) == pytest.approx(want[f"ndcg@{k}"], abs=0.015)
    assert np.mean(1 / (pos + 1)) == pytest.approx(want["mrr"], abs=0.015)


def test_target_positions_with_exclusions():
    scores = np.array([[0.9, 0.5, 0.5, 0.7, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]])
    excluded = np.array([[False, False, False, True, False], [True, True, True, True, True]])
    g, t = M.target_positions(scores, np.array([1, 0]), excluded)
    # row 0: above = {0.9} (0.7 excluded); tied = items 2, 4.  Row 1: everything else excluded,
    # and excluding the target itself has no effect.
    assert g.tolist() == [1, 0] and t.tolist() == [2, 0]
    g, t = M.target_positions(scores, np.array([1, 0]))
    assert g.tolist() == [2, 4] and t.tolist() == [2, 0]
    assert excluded[0].tolist() == [False, False, False, True, False]  # input untouched


def _examples(targets, seen_counts, seen=(20, 30, 40, 50)) -> RetrievalExamples:
    """Examples of one user whose engaged posts, in order, are `seen`."""
    n = len(targets)
    z = np.zeros(n, np.int64)
    return RetrievalExamples(
        batch=None, target_post_ids=np.asarray(targets, np.int64), target_timestamps=z, target_event_rows=z,
        user_ids=z, history_timestamps=z[:, None], history_event_rows=z[:, None], history_post_ids=z[:, None],
        seen_indptr=np.array([0, len(seen)]), seen_post_ids=np.asarray(seen, np.int64),
        example_user_index=z, seen_counts=np.asarray(seen_counts, np.int64),
    )


def test_retrieval_eval_excludes_seen_but_never_the_target():
    corpus = np.array([50, 40, 30, 20, 10])  # deliberately not sorted
    # Scores by post id: 20 > 30 > 40 > 50 > 10.
    by_id = {20: 5.0, 30: 4.0, 40: 3.0, 50: 2.0, 10: 1.0}
    row = np.array([by_id[int(p)] for p in corpus])
    score = lambda a, b: np.tile(row, (b - a, 1))  # noqa: E731
    # ex 0 saw 20, 30 then engaged 40; ex 1 saw 20, 30, 40, 50 and re-engaged 40; ex 2 saw nothing.
    ex = _examples([40, 40, 10], [2, 4, 0])
    r = retrieval_eval(score, corpus, ex, ks=(1, 2, 5))
    # ex 0: 20, 30 excluded -> first.  ex 1: 20, 30, 50 excluded, 40 is the target -> first.
    # ex 2: nothing excluded, 10 is last of 5.
    assert r["hr@1"] == pytest.approx(2 / 3) and r["hr@5"] == pytest.approx(1.0)
    assert r["mrr"] == pytest.approx((1 + 1 + 1 / 5) / 3)
    r = retrieval_eval(score, corpus, ex, ks=(1, 3, 5), exclude_seen=False)
    assert r["hr@1"] == 0.0 and r["hr@3"] == pytest.approx(2 / 3)
    assert r["mrr"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 5) / 3)


def test_retrieval_eval_chunks_agree_and_unknown_target_refused():
    rng = np.random.default_rng(0)
    corpus = np.array([10, 20, 30, 40, 50])
    table = rng.integers(0, 3, (7, 5)).astype(np.float32)  # ties
    ex = _examples([10, 20, 30, 40, 50, 20, 10], [0, 1, 2, 3, 4, 0, 2])
    score = lambda a, b: table[a:b]  # noqa: E731
    whole = retrieval_eval(score, corpus, ex, ks=(1, 2))
    assert retrieval_eval(score, corpus, ex, ks=(1, 2), chunk=3) == pytest.approx(whole)
    with pytest.raises(ValueError, match="not in the corpus"):
        retrieval_eval(score, corpus, _examples([60], [0]), ks=(1,))


def test_nan_to_none():
    assert M.nan_to_none(float("nan")) is None and M.nan_to_none(0.5) == 0.5 and M.nan_to_none(3) == 3
