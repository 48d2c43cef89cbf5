"""`make_recsys_attn_mask`: candidate isolation as one mask function (SPEC 5)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from phoenix_recsys.model.config import HistoryAttention


def make_recsys_attn_mask(
    seq_len: int,
    candidate_start_offset: int,
    dtype: Any = jnp.float32,
    *,
    history_attention: HistoryAttention | str = HistoryAttention.BIDIRECTIONAL,
    padding_mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """The attention mask of the sequence `[user | history | candidates]`.

    Queries in user+history (positions `< candidate_start_offset`) attend to user+history only:
    all of it (bidirectional) or the positions at or before themselves (causal). A candidate attends
    to every user+history position and to itself, never to another candidate. With `padding_mask`,
    padded keys are never attended (queries are not masked: a padded query row is simply ignored).

    Args:
      seq_len: T = 1 + S + C.
      candidate_start_offset: 1 + S; `seq_len` for a sequence without candidates.
      dtype: dtype of the returned mask (1 = may attend, 0 = may not).
      history_attention: "bidirectional" (default) or "causal" (the first release).
      padding_mask: optional `[B, T]` bool, True for valid tokens.

    Returns:
      `[1, 1, T, T]` without `padding_mask`, else `[B, 1, T, T]`; axis 2 is the query, 3 the key.

    >>> make_recsys_attn_mask(4, 2)[0, 0].astype(int).tolist()
    [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 1]]
    """
    if not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
    if not isinstance(candidate_start_offset, int) or not 0 <= candidate_start_offset <= seq_len:
        raise ValueError(f"candidate_start_offset must be an int in [0, seq_len={seq_len}], got {candidate_start_offset!r}")
    mode = HistoryAttention(getattr(history_attention, "value", history_attention))
    idx = jnp.arange(seq_len)
    q, k = idx[:, None], idx[None, :]
    in_context_q = q < candidate_start_offset
    in_context_k = k < candidate_start_offset
    if mode is HistoryAttention.CAUSAL:
        context = in_context_q & in_context_k & (k <= q)
    else:
        context = in_context_q & in_context_k
    candidate = ~in_context_q & (in_context_k | (k == q))
    base = (context | candidate).astype(dtype)[None, None]
    if padding_mask is None:
        return base
    if padding_mask.ndim != 2 or padding_mask.shape[1] != seq_len:
        raise ValueError(f"padding_mask must have shape [B, {seq_len}], got {tuple(padding_mask.shape)}")
    return padding_mask[:, None, None, :].astype(dtype) * base
