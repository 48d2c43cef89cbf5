"""Hash embedding tables and the `RecsysBatch` -> `RecsysEmbeddings` lookup (SPEC 2).

Axes: B batch, S history, C candidates, D width; h_u / h_i / h_a hashes per user / item / author.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.hashing import HashConfig


class RecsysEmbeddings(NamedTuple):
    """Looked-up hash embeddings, the released model's input alongside `RecsysBatch`.

    Attributes:
      user_embeddings: `[B, h_u, D]`.
      history_post_embeddings: `[B, S, h_i, D]`.
      candidate_post_embeddings: `[B, C, h_i, D]`.
      history_author_embeddings: `[B, S, h_a, D]`.
      candidate_author_embeddings: `[B, C, h_a, D]`.
      user_ip_embeddings: optional `[B, n_ip, D]`.
    """

    user_embeddings: jax.Array
    history_post_embeddings: jax.Array
    candidate_post_embeddings: jax.Array
    history_author_embeddings: jax.Array
    candidate_author_embeddings: jax.Array
    user_ip_embeddings: jax.Array | None = None


def _lookup(table: jax.Array, hashes: jax.Array) -> jax.Array:
    # Multiplying by the validity mask keeps bucket 0 a zero vector even after gradient updates touch
    # row 0 (padding rows receive no gradient through the mask either).
    emb = jnp.take(table, hashes, axis=0)
    return emb * (hashes != 0)[..., None].astype(emb.dtype)


class HashEmbeddingTables(nnx.Module):
    """One learned table per entity (`[V, D]` float32); bucket 0 is padding and always looks up zeros."""

    def __init__(
        self, hash_config: HashConfig, emb_size: int, *, rngs: nnx.Rngs, init_std: float = 0.1, num_ip_hashes: int = 0
    ):
        def table(rows: int) -> nnx.Param:
            return nnx.Param(init_std * jax.random.normal(rngs.params(), (rows, emb_size), jnp.float32))

        self.user = table(hash_config.user_vocab_size)
        self.item = table(hash_config.item_vocab_size)
        self.author = table(hash_config.author_vocab_size)
        self.ip = table(hash_config.user_vocab_size) if num_ip_hashes > 0 else None

    def lookup(self, batch: RecsysBatch) -> RecsysEmbeddings:
        """Gather every entity's hash embeddings for `batch` (shapes as in `RecsysEmbeddings`)."""
        ip = None
        if self.ip is not None and batch.user_ip_hashes is not None:
            ip = _lookup(self.ip[...], jnp.asarray(batch.user_ip_hashes))
        return RecsysEmbeddings(
            user_embeddings=_lookup(self.user[...], jnp.asarray(batch.user_hashes)),
            history_post_embeddings=_lookup(self.item[...], jnp.asarray(batch.history_post_hashes)),
            candidate_post_embeddings=_lookup(self.item[...], jnp.asarray(batch.candidate_post_hashes)),
            history_author_embeddings=_lookup(self.author[...], jnp.asarray(batch.history_author_hashes)),
            candidate_author_embeddings=_lookup(self.author[...], jnp.asarray(batch.candidate_author_hashes)),
            user_ip_embeddings=ip,
        )

    def items(self, post_hashes: jax.Array, author_hashes: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Embeddings of posts `[..., h_i]` and their authors `[..., h_a]` (for corpus encoding)."""
        return _lookup(self.item[...], post_hashes), _lookup(self.author[...], author_hashes)
