"""Two-tower retrieval: `PhoenixRetrievalModel` and exact top-k (SPEC 6).

Axes: B batch, S history, C candidates, N corpus size, D width.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.model.config import PhoenixModelConfig, UserPooling
from phoenix_recsys.model.embeddings import RecsysEmbeddings
from phoenix_recsys.model.mask import make_recsys_attn_mask
from phoenix_recsys.model.tokens import PhoenixBase, _param, context_positions, token_dropout
from phoenix_recsys.model.validation import validate_batch

NORM_EPS_SQ = 1e-12  # on the squared norm, as the release does
EXCLUDED_SCORE = -1e12


class RetrievalOutput(NamedTuple):
    """Outputs of both towers.

    Attributes:
      user_representation: `[B, D]` float32, unit norm.
      user_norm: `[B, 1]` the norm before normalisation.
      candidate_representation: `[B, C, D]` unit norm.
      candidate_padding_mask: `[B, C]` valid candidates.
    """

    user_representation: jax.Array
    user_norm: jax.Array
    candidate_representation: jax.Array
    candidate_padding_mask: jax.Array


def l2_normalize(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`x [..., D]` -> (`x / |x|`, `|x|` `[..., 1]`), with the norm floored at 1e-6 (1e-12 squared)."""
    n = jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1, keepdims=True), NORM_EPS_SQ))
    return x / n, n


class PhoenixRetrievalModel(PhoenixBase):
    """User tower: the Phoenix transformer over `[user | history]`, mean- (or last-position-) pooled,
    L2-normalised.
    Candidate tower: concat(post, author hash embeddings) -> Linear(2D) -> SiLU -> Linear(D) -> L2.
    """

    def __init__(self, cfg: PhoenixModelConfig, *, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs)
        d, hc = cfg.emb_size, cfg.hash_config
        if cfg.candidate_tower_linear_proj:
            self.candidate_tower_projection_1 = _param(rngs, ((hc.num_item_hashes + hc.num_author_hashes) * d, 2 * d))
            self.candidate_tower_projection_2 = _param(rngs, (2 * d, d))

    def user_sequence_outputs(
        self,
        batch: RecsysBatch,
        embeddings: RecsysEmbeddings | None = None,
        *,
        dropout_rate: float = 0.0,
        dropout_key: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Transformer outputs of every `[user | history]` position, `[B, 1+S, D]` float32, and the
        mask `[B, 1+S]`. Index 0 is the user token, index 1+j history item j (oldest first).

        `dropout_rate` > 0 (training only, with `dropout_key`) zeroes that fraction of the input
        tokens' features (inverted dropout), the embedding dropout sequential recommenders train with.
        """
        emb = self.embed(batch) if embeddings is None else embeddings
        ctx, mask = self.context(batch, emb)
        x = token_dropout(ctx, dropout_rate, dropout_key).astype(self.fp)
        t0 = x.shape[1]
        attn = make_recsys_attn_mask(
            t0, t0, x.dtype, history_attention=self.config.history_attention, padding_mask=mask
        )
        out, _ = self.transformer(x, attn, context_positions(mask, self.config.positions))
        return out.astype(jnp.float32), mask

    def build_user_representation(
        self, batch: RecsysBatch, embeddings: RecsysEmbeddings | None = None, **dropout: Any
    ) -> tuple[jax.Array, jax.Array]:
        """User tower: `[B, D]` unit vectors (float32) and their pre-normalisation norms `[B, 1]`,
        pooled as `config.user_pooling` says. `dropout`: see `user_sequence_outputs`."""
        out, mask = self.user_sequence_outputs(batch, embeddings, **dropout)
        if self.config.user_pooling is UserPooling.LAST:
            # Histories are oldest-first, so the newest valid position is the highest valid index.
            last = jnp.max(jnp.where(mask, jnp.arange(mask.shape[1]), 0), axis=1)
            pooled = jnp.take_along_axis(out, last[:, None, None], axis=1)[:, 0]
        else:
            m = mask[..., None].astype(jnp.float32)
            pooled = jnp.sum(out * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
        return l2_normalize(pooled)

    def user_sequence_representations(
        self, batch: RecsysBatch, embeddings: RecsysEmbeddings | None = None, **dropout: Any
    ) -> tuple[jax.Array, jax.Array]:
        """Unit vectors of every `[user | history]` position `[B, 1+S, D]` and the mask `[B, 1+S]`:
        with causal history attention, position t is the user tower as of right after history item
        t-1, which is what every-position next-item training scores. `dropout`: see
        `user_sequence_outputs`."""
        out, mask = self.user_sequence_outputs(batch, embeddings, **dropout)
        return l2_normalize(out)[0], mask

    def build_candidate_representation(self, post_embeddings: jax.Array, author_embeddings: jax.Array) -> jax.Array:
        """Candidate tower.

        Args:
          post_embeddings: `[..., h_i, D]`.
          author_embeddings: `[..., h_a, D]`.

        Returns:
          `[..., D]` unit vectors in the embeddings' dtype.
        """
        x = jnp.concatenate([post_embeddings, author_embeddings], axis=-2)
        if not self.config.candidate_tower_linear_proj:
            return l2_normalize(jnp.mean(x, axis=-2))[0].astype(post_embeddings.dtype)
        flat = x.reshape(*x.shape[:-2], -1).astype(jnp.float32)
        hidden = jax.nn.silu(flat @ self.candidate_tower_projection_1[...])
        rep = hidden @ self.candidate_tower_projection_2[...]
        return l2_normalize(rep)[0].astype(post_embeddings.dtype)

    def encode_posts(self, post_hashes: jax.Array, author_hashes: jax.Array) -> jax.Array:
        """Corpus encoding from hashes `[N, h_i]`, `[N, h_a]` -> `[N, D]` via this model's tables."""
        pe, ae = self.tables.items(post_hashes, author_hashes)
        return self.build_candidate_representation(pe, ae)

    def __call__(self, batch: RecsysBatch, embeddings: RecsysEmbeddings | None = None) -> RetrievalOutput:
        """Both towers for a batch; the candidates are the batch's candidate block."""
        validate_batch(batch, self.config, embeddings, require_candidates=False)
        emb = self.embed(batch) if embeddings is None else embeddings
        user, norm = self.build_user_representation(batch, emb)
        cand = self.build_candidate_representation(emb.candidate_post_embeddings, emb.candidate_author_embeddings)
        return RetrievalOutput(user, norm, cand, jnp.asarray(batch.candidate_post_hashes)[:, :, 0] != 0)


def retrieve_top_k(
    user_representation: jax.Array, corpus_embeddings: jax.Array, top_k: int, exclude_mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Exact top-k by dot product.

    Args:
      user_representation: `[B, D]`.
      corpus_embeddings: `[N, D]`.
      top_k: k <= N.
      exclude_mask: optional `[B, N]` bool, True = never return this item for this user.

    Returns:
      indices `[B, k]` into the corpus and their scores `[B, k]`, best first.
    """
    n = corpus_embeddings.shape[0]
    if not 1 <= top_k <= n:
        raise ValueError(f"top_k must be in [1, corpus size {n}], got {top_k}")
    scores = user_representation.astype(jnp.float32) @ corpus_embeddings.astype(jnp.float32).T
    if exclude_mask is not None:
        if exclude_mask.shape != scores.shape:
            raise ValueError(f"exclude_mask must have shape {list(scores.shape)}, got {list(exclude_mask.shape)}")
        scores = jnp.where(exclude_mask, EXCLUDED_SCORE, scores)
    top_scores, idx = jax.lax.top_k(scores, top_k)
    return idx, top_scores
