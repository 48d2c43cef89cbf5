"""Training losses (SPEC 8): per-action masked BCE + continuous regression for the ranker, and a
log-Q-corrected in-batch sampled softmax (or a full corpus softmax) for the retriever.

Axes: B batch, C candidates, A actions, D width.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class RankerLoss(NamedTuple):
    """Total loss and its parts.

    Attributes:
      total: scalar, the optimised quantity.
      per_action: `[A]` mean loss per action over valid candidates (BCE or regression).
    """

    total: jax.Array
    per_action: jax.Array


def ranker_loss(
    logits: jax.Array,
    labels: jax.Array,
    candidate_mask: jax.Array,
    is_binary: jax.Array,
    action_weights: jax.Array,
    sample_weights: jax.Array | None = None,
) -> RankerLoss:
    """Masked multi-action loss.

    Binary actions: sigmoid cross-entropy on the logit. Continuous actions: squared error between
    log1p(softplus(logit)) and log1p(label): dwell times are heavy-tailed, and the log keeps one
    long dwell from dominating a batch while the softplus head still predicts the value itself.

    Args:
      logits: `[B, C, A]`.
      labels: `[B, C, A]` (0/1 for binary actions, values >= 0 for continuous ones).
      candidate_mask: `[B, C]` True for real candidates (padding contributes nothing).
      is_binary: `[A]` bool.
      action_weights: `[A]` per-action loss weights (the total is their weighted sum).
      sample_weights: optional `[B, C]` weights per candidate.

    Returns:
      `RankerLoss`.
    """
    logits = logits.astype(jnp.float32)
    labels = labels.astype(jnp.float32)
    bce = optax.sigmoid_binary_cross_entropy(logits, labels)
    pred = jax.nn.softplus(logits)
    reg = jnp.square(jnp.log1p(pred) - jnp.log1p(jnp.maximum(labels, 0.0)))
    per = jnp.where(is_binary, bce, reg)
    w = candidate_mask.astype(jnp.float32)
    if sample_weights is not None:
        w = w * sample_weights.astype(jnp.float32)
    denom = jnp.maximum(jnp.sum(w), 1.0)
    per_action = jnp.sum(per * w[..., None], axis=(0, 1)) / denom
    return RankerLoss(total=jnp.sum(per_action * action_weights), per_action=per_action)


def retrieval_loss(
    user_rep: jax.Array,
    item_rep: jax.Array,
    item_ids: jax.Array,
    log_q: jax.Array,
    temperature: float | jax.Array,
    valid: jax.Array | None = None,
) -> jax.Array:
    """In-batch sampled softmax with log-Q correction.

    Row i's positive is item i; every other item in the batch is a negative. Popular items show up as
    negatives more often than uniform sampling would, so their logits are lowered by log q(item) (the
    sampling-bias correction of Yi et al. 2019). An item that is row i's positive but also appears
    elsewhere in the batch is not counted as a negative for i.

    Args:
      user_rep: `[B, D]` unit vectors.
      item_rep: `[B, D]` unit vectors of each row's positive item.
      item_ids: `[B]` ids, to find duplicate positives.
      log_q: `[B]` log of each item's sampling probability (its share of positives).
      temperature: softmax temperature (> 0).
      valid: optional `[B]` mask of real rows (padding rows neither contribute nor act as negatives).

    Returns:
      scalar mean loss over valid rows.
    """
    logits = (user_rep.astype(jnp.float32) @ item_rep.astype(jnp.float32).T) / temperature
    logits = logits - log_q[None, :]
    b = logits.shape[0]
    same = item_ids[:, None] == item_ids[None, :]
    not_self = ~jnp.eye(b, dtype=bool)
    drop = same & not_self
    if valid is not None:
        drop = drop | ~valid[None, :]
    logits = jnp.where(drop, -1e9, logits)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(b))
    if valid is None:
        return jnp.mean(loss)
    v = valid.astype(jnp.float32)
    return jnp.sum(loss * v) / jnp.maximum(jnp.sum(v), 1.0)


def masked_softmax_loss(logits: jax.Array, labels: jax.Array, valid: jax.Array) -> jax.Array:
    """Full softmax cross-entropy over a fixed item set (the whole corpus), averaged over valid rows.

    Args:
      logits: `[M, N]` scores of every row against every item (already divided by the temperature).
      labels: `[M]` int index of each row's positive item.
      valid: `[M]` bool, rows that count.

    Returns:
      scalar mean loss over valid rows (0 when none is).
    """
    loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    v = valid.astype(jnp.float32)
    return jnp.sum(loss * v) / jnp.maximum(jnp.sum(v), 1.0)
