"""Token reduction shared by the ranker and the retrieval user tower (SPEC 3), plus positions.

Axes: B batch, S history, C candidates, D width, A actions. Parameter names are the released ones
(`proj_mat_1` user, `proj_mat_3` history, `proj_mat_2` candidates) so imported weights map one to one.
Dtypes follow REFERENCE-LAYOUT 3 and 7: action and surface embeddings are rounded to the forward
dtype, then promoted back to float32 with the float32 hash embeddings for the projection.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.model.config import PhoenixModelConfig, PositionScheme
from phoenix_recsys.model.embeddings import HashEmbeddingTables, RecsysEmbeddings
from phoenix_recsys.model.layers import Transformer, _normal

DWELL_CLIP_S = 30.0
DWELL_INDEX = 1  # index of dwell time inside the May release's 8-wide continuous history block


def _param(rngs: nnx.Rngs, shape: tuple[int, int], std: float | None = None) -> nnx.Param:
    return nnx.Param(_normal((1.0 / shape[0] ** 0.5) if std is None else std)(rngs.params(), shape))


class PhoenixBase(nnx.Module):
    """Parameters and token builders common to `PhoenixModel` and `PhoenixRetrievalModel`."""

    def __init__(self, cfg: PhoenixModelConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        d, hc = cfg.emb_size, cfg.hash_config
        item_author = (hc.num_item_hashes + hc.num_author_hashes) * d
        self.proj_mat_1 = _param(rngs, (hc.num_user_hashes * d, d))
        history_extra = 3 * d if cfg.history_dwell_block else 2 * d
        self.proj_mat_3 = _param(rngs, (item_author + history_extra, d))
        self.action_projection = _param(rngs, (cfg.num_actions, d))
        self.product_surface_embedding_table = _param(rngs, (cfg.product_surface_vocab_size, d), std=1.0 / d**0.5)
        if cfg.history_dwell_block:
            self.history_dwell_time_proj1 = _param(rngs, (1, cfg.dwell_hidden_dim), std=1.0)
            self.history_dwell_time_proj2 = _param(rngs, (cfg.dwell_hidden_dim, d))
        self.transformer = Transformer(cfg.model, rngs=rngs)
        self.tables = HashEmbeddingTables(
            hc, d, rngs=rngs, init_std=cfg.embedding_init_std, num_ip_hashes=cfg.num_ip_hashes
        )

    @property
    def fp(self) -> jnp.dtype:
        return self.config.fprop_dtype.jnp

    def embed(self, batch: RecsysBatch) -> RecsysEmbeddings:
        """Look up this model's own hash tables for `batch`."""
        return self.tables.lookup(batch)

    # -- small embeddings ---------------------------------------------------------------------
    def _surface(self, idx: jax.Array) -> jax.Array:
        table = self.product_surface_embedding_table[...]
        onehot = jax.nn.one_hot(idx, table.shape[0], dtype=jnp.float32)
        return (onehot @ table).astype(self.fp)

    def _actions(self, actions: jax.Array) -> jax.Array:
        a = actions.astype(jnp.float32)
        e = (2.0 * a - 1.0) @ self.action_projection[...]
        # Rows with no action at all (padding included) get a zero vector, not "-1 on everything".
        e = e * jnp.any(a != 0, axis=-1, keepdims=True).astype(jnp.float32)
        return e.astype(self.fp)

    def _dwell(self, batch: RecsysBatch) -> jax.Array:
        b, s = batch.history_post_hashes.shape[:2]
        if batch.history_continuous_actions is None:
            dwell = jnp.zeros((b, s), jnp.float32)
        else:
            dwell = jnp.asarray(batch.history_continuous_actions, jnp.float32)[..., DWELL_INDEX]
        clipped = jnp.clip(dwell, 0.0, DWELL_CLIP_S)
        if self.config.dwell_use_log:
            v = jnp.log1p(clipped) / jnp.log1p(DWELL_CLIP_S)
        else:
            v = clipped / DWELL_CLIP_S
        hidden = jax.nn.gelu(v[..., None] @ self.history_dwell_time_proj1[...], approximate=True)
        return (hidden @ self.history_dwell_time_proj2[...]).astype(self.fp)

    # -- tokens -------------------------------------------------------------------------------
    def user_tokens(self, batch: RecsysBatch, emb: RecsysEmbeddings) -> tuple[jax.Array, jax.Array]:
        """User token `[B, 1, D]` (dtype of the embeddings) and its mask `[B, 1]`."""
        ue = emb.user_embeddings
        b = ue.shape[0]
        x = ue.reshape(b, 1, -1).astype(jnp.float32) @ self.proj_mat_1[...]
        x = x.astype(ue.dtype)
        if self.config.num_ip_hashes and emb.user_ip_embeddings is not None:
            x = x + jnp.sum(emb.user_ip_embeddings, axis=1, keepdims=True).astype(x.dtype)
        mask = (jnp.asarray(batch.user_hashes)[:, :1] != 0)
        return x, mask

    def history_tokens(self, batch: RecsysBatch, emb: RecsysEmbeddings) -> tuple[jax.Array, jax.Array]:
        """History tokens `[B, S, D]` and mask `[B, S]` (from the first post hash)."""
        pe, ae = emb.history_post_embeddings, emb.history_author_embeddings
        b, s = pe.shape[:2]
        parts = [
            pe.reshape(b, s, -1),
            ae.reshape(b, s, -1),
            self._actions(jnp.asarray(batch.history_actions)),
            self._surface(jnp.asarray(batch.history_product_surface)),
        ]
        if self.config.history_dwell_block:
            parts.append(self._dwell(batch))
        x = jnp.concatenate(parts, axis=-1)
        x = (x.astype(jnp.float32) @ self.proj_mat_3[...]).astype(x.dtype)
        return x, jnp.asarray(batch.history_post_hashes)[:, :, 0] != 0

    def context(self, batch: RecsysBatch, emb: RecsysEmbeddings) -> tuple[jax.Array, jax.Array]:
        """`[user | history]` tokens `[B, 1+S, D]` (float32) and mask `[B, 1+S]`."""
        u, um = self.user_tokens(batch, emb)
        h, hm = self.history_tokens(batch, emb)
        return jnp.concatenate([u, h], axis=1), jnp.concatenate([um, hm], axis=1)


def token_dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout on input token features `[B, T, D]` (training only; identity when rate is 0):
    the embedding dropout that keeps a model from memorising ids it has seen a handful of times."""
    if rate <= 0.0:
        return x
    if key is None:
        raise ValueError("token dropout needs a PRNG key")
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def context_positions(context_mask: jax.Array, scheme: PositionScheme) -> jax.Array:
    """Rotary positions `[B, 1+S]` of `[user | history]` given its mask `[B, 1+S]`.

    Right-anchored: valid history items are numbered so the newest valid one sits at S whatever the
    padding (equal to the May release's formula for front-packed histories, which ours always are);
    the user token sits right before the oldest valid item (the release keeps it at 0); padded tokens
    get 0. Per-slot: the index in the sequence.
    """
    b, t0 = context_mask.shape
    if scheme is PositionScheme.PER_SLOT:
        return jnp.broadcast_to(jnp.arange(t0, dtype=jnp.float32), (b, t0))
    s = t0 - 1
    hist = context_mask[:, 1:].astype(jnp.int32)
    later_valid = jnp.flip(jnp.cumsum(jnp.flip(hist, axis=1), axis=1), axis=1) - hist
    hist_pos = (s - later_valid) * hist
    if scheme is PositionScheme.RELEASED_RIGHT_ANCHORED:
        user_pos = jnp.zeros((b, 1), jnp.int32)
    else:  # user distances then depend on the valid history only, not on S
        user_pos = (s - jnp.sum(hist, axis=1, keepdims=True)) * context_mask[:, :1].astype(jnp.int32)
    pos = jnp.concatenate([user_pos, hist_pos], axis=1)
    return pos.astype(jnp.float32)


def candidate_positions(
    candidate_mask: jax.Array, history_len: int, scheme: PositionScheme, slot_offset: int = 0
) -> jax.Array:
    """Rotary positions `[B, C]` of candidates.

    Right-anchored: every valid candidate shares position S + 1 (padded ones 0), so a score does not
    depend on the slot. Per-slot: 1 + S + slot, where `slot_offset` is the index of the first
    candidate of this chunk in the full candidate list.
    """
    b, c = candidate_mask.shape
    if scheme is PositionScheme.PER_SLOT:
        slots = jnp.arange(c, dtype=jnp.float32) + (1 + history_len + slot_offset)
        return jnp.broadcast_to(slots, (b, c))
    return jnp.where(candidate_mask, float(1 + history_len), 0.0).astype(jnp.float32)
