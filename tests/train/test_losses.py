"""Losses (train/losses.py): masking, weights, the regression branch, and the retrieval softmax by hand."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from phoenix_recsys.train.losses import ranker_loss, retrieval_loss

B, C, A = 3, 5, 4  # distinct sizes so a swapped axis fails
IS_BINARY = np.array([True, True, False, True])  # action 2 is continuous (dwell-time-like)


def _case(seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(B, C, A)).astype(np.float32) * 2
    labels = (rng.random((B, C, A)) < 0.4).astype(np.float32)
    labels[..., 2] = rng.gamma(2.0, 5.0, size=(B, C))  # continuous values, often > 1
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
    return logits, labels, mask


def _loss(logits, labels, mask, weights=np.ones(A), sample_weights=None):
    return ranker_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask), jnp.asarray(IS_BINARY),
                       jnp.asarray(weights, jnp.float32), None if sample_weights is None else jnp.asarray(sample_weights))


def _softplus(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def _reference_per_action(logits, labels, w):
    """Hand formulas: BCE for binary actions, (log1p softplus - log1p y)^2 for continuous ones."""
    x, y = logits.astype(np.float64), labels.astype(np.float64)
    bce = _softplus(x) - x * y  # = -y log sigmoid(x) - (1 - y) log(1 - sigmoid(x))
    reg = (np.log1p(_softplus(x)) - np.log1p(y)) ** 2
    per = np.where(IS_BINARY, bce, reg)
    return (per * w[..., None]).sum(axis=(0, 1)) / w.sum()


def test_ranker_loss_matches_hand_formula():
    logits, labels, mask = _case()
    out = _loss(logits, labels, mask)
    want = _reference_per_action(logits, labels, mask.astype(np.float64))
    np.testing.assert_allclose(np.asarray(out.per_action), want, rtol=1e-5)
    assert float(out.total) == pytest.approx(want.sum(), rel=1e-5)


def test_ranker_loss_ignores_padded_candidates():
    logits, labels, mask = _case()
    base = _loss(logits, labels, mask)
    rng = np.random.default_rng(1)
    logits2, labels2 = logits.copy(), labels.copy()
    logits2[~mask] = rng.normal(size=(int((~mask).sum()), A)) * 50
    labels2[~mask] = rng.random((int((~mask).sum()), A)) * 100
    other = _loss(logits2, labels2, mask)
    np.testing.assert_array_equal(np.asarray(other.per_action), np.asarray(base.per_action))
    # and the padding does count as soon as it is unmasked
    assert not np.allclose(np.asarray(_loss(logits2, labels2, np.ones_like(mask)).per_action),
                           np.asarray(base.per_action))


def test_ranker_loss_action_weights_scale_parts():
    logits, labels, mask = _case()
    per = np.asarray(_loss(logits, labels, mask).per_action)
    w = np.array([2.0, 0.0, 0.5, 3.0])
    out = _loss(logits, labels, mask, weights=w)
    np.testing.assert_allclose(np.asarray(out.per_action), per, rtol=1e-6)  # parts are unweighted
    assert float(out.total) == pytest.approx(float((w * per).sum()), rel=1e-5)


def test_ranker_loss_sample_weights_are_a_weighted_mean():
    logits, labels, mask = _case()
    sw = np.ones((B, C), np.float32)
    sw[1] = 0.0  # zero weight on example 1 == masking it
    masked = mask.copy()
    masked[1] = False
    np.testing.assert_allclose(np.asarray(_loss(logits, labels, mask, sample_weights=sw).per_action),
                               np.asarray(_loss(logits, labels, masked).per_action), rtol=1e-6)
    sw = np.random.default_rng(2).random((B, C)).astype(np.float32) + 0.1
    want = _reference_per_action(logits, labels, mask * sw.astype(np.float64))
    np.testing.assert_allclose(np.asarray(_loss(logits, labels, mask, sample_weights=sw).per_action), want, rtol=1e-5)


def test_continuous_action_uses_the_regression_branch():
    logits, labels, mask = _case()
    # the logit whose softplus equals the label exactly: zero regression loss, BCE would not be zero
    labels[..., 2] = np.round(labels[..., 2], 1) + 0.5
    logits[..., 2] = np.log(np.expm1(labels[..., 2]))
    per = np.asarray(_loss(logits, labels, mask).per_action)
    assert per[2] == pytest.approx(0.0, abs=1e-9)
    assert per[0] > 0.1 and per[1] > 0.1
    # an over-prediction by a factor e (in log1p space) costs exactly 1
    y = np.full((B, C), 3.0, np.float32)
    labels[..., 2] = y
    logits[..., 2] = np.log(np.expm1(np.e * (1 + y) - 1))
    assert float(_loss(logits, labels, mask).per_action[2]) == pytest.approx(1.0, rel=1e-4)


def test_ranker_loss_all_padding_is_zero_not_nan():
    logits, labels, mask = _case()
    out = _loss(logits, labels, np.zeros_like(mask))
    assert float(out.total) == 0.0


# -- retrieval ------------------------------------------------------------------------------------


def _unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


U = _unit([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
V = _unit([[0.8, 0.6], [0.0, 1.0], [1.0, 1.0]])


def _ce(logits: np.ndarray, allowed: np.ndarray | None = None) -> float:
    """Mean over rows of -log softmax(logits)[i, i], only over `allowed` columns."""
    losses = []
    for i, row in enumerate(logits):
        cols = range(len(row)) if allowed is None else np.flatnonzero(allowed[i])
        losses.append(-(row[i] - math.log(sum(math.exp(row[j]) for j in cols))))
    return float(np.mean(losses))


def _rl(ids=(1, 2, 3), log_q=(0.0, 0.0, 0.0), t=0.5, valid=None, u=U, v=V):
    return float(retrieval_loss(jnp.asarray(u), jnp.asarray(v), jnp.asarray(ids), jnp.asarray(log_q, jnp.float32), t,
                                None if valid is None else jnp.asarray(valid)))


def test_retrieval_loss_hand_computed_3x3():
    # u.v: row 0 [0.8, 0, 0.7071]; row 1 [0.96, 0.8, 0.9899]; row 2 [0.6, 1, 0.7071]; divided by T = 0.5
    dots = np.array([[0.8, 0.0, 1 / math.sqrt(2)], [0.96, 0.8, 1.4 / math.sqrt(2)], [0.6, 1.0, 1 / math.sqrt(2)]])
    assert _rl() == pytest.approx(_ce(dots / 0.5), rel=1e-5)
    log_q = np.log([0.6, 0.3, 0.1])
    assert _rl(log_q=log_q) == pytest.approx(_ce(dots / 0.5 - log_q[None, :]), rel=1e-5)
    assert _rl(t=0.1) == pytest.approx(_ce(dots / 0.1), rel=1e-5)


def test_log_q_lowers_popular_items_logits():
    # uniform sampling probabilities shift every logit of a row alike: no change
    assert _rl(log_q=np.log([0.2, 0.2, 0.2])) == pytest.approx(_rl(), rel=1e-5)
    # Row 0 scores its own positive far above the rest (loss ~0 either way); rows 1 and 2 score item 0
    # (a negative for them) as high as their positive, so making item 0 "popular" lowers its logit
    # there and the loss falls.
    u = _unit([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    v = np.eye(3, dtype=np.float32)
    uniform = _rl(u=u, v=v, t=0.05, log_q=np.log([1 / 3] * 3))
    popular = _rl(u=u, v=v, t=0.05, log_q=np.log([0.9, 0.05, 0.05]))
    assert popular < uniform
    # ...and making item 0 rare (its logit raised as a negative) has the opposite effect
    assert _rl(u=u, v=v, t=0.05, log_q=np.log([0.01, 0.5, 0.49])) > uniform


def test_duplicate_positives_are_not_negatives():
    ids = np.array([7, 7, 9])  # rows 0 and 1 share the same positive post
    dots = U @ V.T
    allowed = ~((ids[:, None] == ids[None, :]) & ~np.eye(3, dtype=bool))
    assert allowed.tolist() == [[True, False, True], [False, True, True], [True, True, True]]
    assert _rl(ids=ids) == pytest.approx(_ce(dots / 0.5, allowed), rel=1e-5)
    assert _rl(ids=ids) != pytest.approx(_rl(ids=(7, 8, 9)), rel=1e-4)


def test_retrieval_loss_padding_rows_neither_contribute_nor_compete():
    valid = np.array([True, True, False])
    want = _rl(u=U[:2], v=V[:2], ids=(1, 2), log_q=(0.1, -0.3))
    assert _rl(log_q=(0.1, -0.3, 5.0), valid=valid) == pytest.approx(want, rel=1e-5)
