"""Evaluation metrics (SPEC 8), plain NumPy, no scikit-learn.

Ranker, per action: AUROC (ties averaged), PR-AUC (average precision over distinct thresholds),
log-loss, RCE (relative cross-entropy: % improvement of log-loss over predicting the set's base rate)
and calibration (mean prediction / mean label).
Retrieval, per query with one target: HR@K (= Recall@K with one relevant item), NDCG@K, MRR, as
expectations under uniformly random tie-breaking, so a baseline with many tied scores (popularity)
is neither flattered nor punished by an arbitrary order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

EPS = 1e-7


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of `x` with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    _, first, counts = np.unique(xs, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.repeat(avg, counts)
    return ranks


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U); NaN when only one class is present."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, np.float64).ravel()
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _average_ranks(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pr_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision: sum over distinct thresholds of (recall step) x precision; NaN with no positives."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, np.float64).ravel()
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order], s[order]
    tp = np.cumsum(ys)
    # Evaluate only at the last index of each group of tied scores (a threshold admits all ties).
    last = np.r_[np.nonzero(np.diff(ss))[0], ys.size - 1]
    tp_t = tp[last]
    precision = tp_t / (last + 1)
    recall = tp_t / n_pos
    recall_prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - recall_prev) * precision))


def logloss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy (probabilities clipped to [1e-7, 1 - 1e-7])."""
    y = np.asarray(labels, np.float64).ravel()
    p = np.clip(np.asarray(probs, np.float64).ravel(), EPS, 1 - EPS)
    if y.size == 0:
        return float("nan")
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def rce(labels: np.ndarray, probs: np.ndarray) -> float:
    """Relative cross-entropy in %: 100 * (1 - logloss / logloss of predicting the base rate)."""
    y = np.asarray(labels, np.float64).ravel()
    if y.size == 0:
        return float("nan")
    rate = y.mean()
    if rate <= 0 or rate >= 1:  # one class only: the base rate predicts perfectly, RCE is undefined
        return float("nan")
    base = logloss(y, np.full_like(y, rate))
    return float(100.0 * (1.0 - logloss(y, probs) / base))


def calibration(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean prediction / mean label (1.0 = calibrated on average; NaN without positives)."""
    y = np.asarray(labels, np.float64).ravel()
    m = y.mean() if y.size else 0.0
    return float(np.mean(probs) / m) if m > 0 else float("nan")


def binary_action_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """All ranker metrics of one binary action over valid candidates."""
    y = np.asarray(labels).ravel()
    p = np.asarray(probs, np.float64).ravel()
    return {
        "auroc": auroc(y, p),
        "pr_auc": pr_auc(y, p),
        "logloss": logloss(y, p),
        "rce": rce(y, p),
        "calibration": calibration(y, p),
        "positives": int(np.asarray(y).astype(bool).sum()),
        "count": int(y.size),
    }


def _prefix(n: int, f) -> np.ndarray:
    vals = f(np.arange(n, dtype=np.float64))
    return np.r_[0.0, np.cumsum(vals)]


def retrieval_metrics(
    greater: np.ndarray, ties: np.ndarray, ks: Iterable[int] = (10, 50, 100, 1000), corpus_size: int | None = None
) -> dict[str, float]:
    """HR@K, Recall@K, NDCG@K and MRR from each query's target position counts.

    Args:
      greater: `[Q]` number of eligible items scored strictly above the target.
      ties: `[Q]` number of other eligible items scored exactly like the target.
      ks: cut-offs.
      corpus_size: upper bound of positions (defaults to max(greater + ties) + 1).

    Returns:
      `{"hr@K", "recall@K", "ndcg@K" for each K, "mrr", "queries"}`; the target's 0-based position is
      uniform on [greater, greater + ties].
    """
    g = np.asarray(greater, np.int64)
    t = np.asarray(ties, np.int64)
    q = g.size
    out: dict[str, float] = {"queries": int(q)}
    if q == 0:
        return out
    n = int(corpus_size if corpus_size is not None else (g + t).max() + 1) + 1
    inv_log = _prefix(n, lambda i: 1.0 / np.log2(i + 2.0))  # sum over positions < j of 1/log2(pos+2)
    inv_rank = _prefix(n, lambda i: 1.0 / (i + 1.0))
    span = t + 1.0
    for k in ks:
        hit = np.clip((k - g) / span, 0.0, 1.0)
        hi = np.minimum(g + t + 1, k)
        lo = np.minimum(g, k)
        ndcg = (inv_log[hi] - inv_log[lo]) / span
        out[f"hr@{k}"] = float(hit.mean())
        out[f"recall@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(ndcg.mean())
    out["mrr"] = float(((inv_rank[g + t + 1] - inv_rank[g]) / span).mean())
    return out


def target_positions(scores: np.ndarray, target_idx: np.ndarray, excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Count items above and tied with each row's target.

    Args:
      scores: `[Q, N]` scores over the full corpus.
      target_idx: `[Q]` index of each row's target.
      excluded: optional `[Q, N]` bool of items that are not eligible (already seen); the target itself
        is always eligible.

    Returns:
      (greater `[Q]`, ties `[Q]`).
    """
    rows = np.arange(scores.shape[0])
    ts = scores[rows, target_idx][:, None]
    eligible = np.ones_like(scores, dtype=bool) if excluded is None else ~excluded
    eligible[rows, target_idx] = False  # count others only
    greater = np.sum((scores > ts) & eligible, axis=1)
    ties = np.sum((scores == ts) & eligible, axis=1)
    return greater, ties


def nan_to_none(x: float) -> float | None:
    """JSON-safe float."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x
