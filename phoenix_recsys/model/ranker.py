"""The ranker: `PhoenixModel` (transformer with candidate isolation) and `RankingOutput` (SPEC 1, 3-5).

Axes: B batch, S history, C candidates, T = 1 + S + C tokens, D width, A actions.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from phoenix_recsys.actions import ActionKind, ActionVocabulary, weight_vector
from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.model.config import PhoenixModelConfig, PositionScheme
from phoenix_recsys.model.embeddings import RecsysEmbeddings
from phoenix_recsys.model.layers import KV, RMSNorm, rotary_tables, shared_rotary_tables
from phoenix_recsys.model.mask import make_recsys_attn_mask
from phoenix_recsys.model.tokens import (
    PhoenixBase,
    _param,
    candidate_positions,
    context_positions,
    token_dropout,
)
from phoenix_recsys.model.validation import validate_batch

POST_AGE_RANGE_MINS = 4800


class RecsysModelOutput(NamedTuple):
    """Raw model outputs.

    Attributes:
      logits: `[B, C, A]` in the forward dtype.
      continuous_preds: `[B, C, n]` (the May release's sigmoid head) or None.
    """

    logits: jax.Array
    continuous_preds: jax.Array | None = None


class ContextCache(NamedTuple):
    """Per-layer keys/values of `[user | history]` for cached-context scoring.

    Attributes:
      kv: one `KV` per layer, `[B, 1+S, G, K]` each.
      mask: `[B, 1+S]` valid context tokens.
    """

    kv: list[KV]
    mask: jax.Array


class PhoenixModel(PhoenixBase):
    """The Phoenix ranker.

    The sequence `[user | history | candidates]` goes through the transformer with
    `make_recsys_attn_mask`, so each candidate sees user+history and itself only; the final RMSNorm of
    the candidate rows times `unembeddings [D, A]` gives the logits.
    """

    def __init__(self, cfg: PhoenixModelConfig, *, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs)
        d, hc = cfg.emb_size, cfg.hash_config
        item_author = (hc.num_item_hashes + hc.num_author_hashes) * d
        cand_extra = d * (1 + int(cfg.post_age_buckets) + int(cfg.in_network_feature))
        self.proj_mat_2 = _param(rngs, (item_author + cand_extra, d))
        self.unembeddings = _param(rngs, (d, cfg.num_actions))
        self.rms_norm = RMSNorm(d)
        self.action_bias = nnx.Param(jnp.zeros((cfg.num_actions,), jnp.float32)) if cfg.action_bias else None
        if cfg.post_age_buckets:
            self.post_age_embedding_table = _param(rngs, (cfg.num_post_age_buckets(), d), std=1.0 / d**0.5)
        if cfg.continuous_head_size:
            self.continuous_unembeddings = _param(rngs, (d, cfg.continuous_head_size))
        if cfg.in_network_feature:
            self.in_network_embedding_table = _param(rngs, (2, d), std=1.0 / d**0.5)

    # -- inputs -------------------------------------------------------------------------------
    def _post_age_bucket(self, batch: RecsysBatch) -> jax.Array:
        b, c = batch.candidate_post_hashes.shape[:2]
        g = self.config.post_age_granularity_mins
        if batch.candidate_impr_ts is None or batch.candidate_post_creation_ts is None:
            return jnp.zeros((b, c), jnp.int32)
        impr = jnp.asarray(batch.candidate_impr_ts).astype(jnp.int32)
        created = jnp.asarray(batch.candidate_post_creation_ts).astype(jnp.int32)
        age = impr - created
        bucket = jnp.clip(age // 60 // g + 1, 0, POST_AGE_RANGE_MINS // g + 1)
        # Unknown age (missing timestamp) and clock skew fall back to the "unknown" bucket 0.
        return jnp.where((age < 0) | (impr == 0) | (created == 0), 0, bucket)

    def _post_age(self, batch: RecsysBatch) -> jax.Array:
        table = self.post_age_embedding_table[...]
        return (jax.nn.one_hot(self._post_age_bucket(batch), table.shape[0], dtype=jnp.float32) @ table).astype(self.fp)

    def _in_network_flag(self, batch: RecsysBatch) -> jax.Array:
        b, c = batch.candidate_post_hashes.shape[:2]
        flag = jnp.zeros((b, c), jnp.int32) if batch.candidate_in_network is None else (
            jnp.asarray(batch.candidate_in_network).astype(jnp.int32))
        return jnp.clip(flag, 0, 1)

    def _in_network(self, batch: RecsysBatch) -> jax.Array:
        return jnp.take(self.in_network_embedding_table[...], self._in_network_flag(batch), axis=0).astype(self.fp)

    def candidate_tokens(self, batch: RecsysBatch, emb: RecsysEmbeddings) -> tuple[jax.Array, jax.Array]:
        """Candidate tokens `[B, C, D]` and mask `[B, C]` (from the first post hash)."""
        pe, ae = emb.candidate_post_embeddings, emb.candidate_author_embeddings
        b, c = pe.shape[:2]
        parts = [pe.reshape(b, c, -1), ae.reshape(b, c, -1), self._surface(jnp.asarray(batch.candidate_product_surface))]
        if self.config.post_age_buckets:
            parts.append(self._post_age(batch))
        if self.config.in_network_feature:
            parts.append(self._in_network(batch))
        x = jnp.concatenate(parts, axis=-1)
        x = (x.astype(jnp.float32) @ self.proj_mat_2[...]).astype(x.dtype)
        return x, jnp.asarray(batch.candidate_post_hashes)[:, :, 0] != 0

    def candidate_tokens_blockwise(self, batch: RecsysBatch, emb: RecsysEmbeddings) -> tuple[jax.Array, jax.Array]:
        """`candidate_tokens` computed block by block (the cached serving path): same numbers up to rounding.

        `concat(parts) @ proj_mat_2` is the sum of each part times its row block of `proj_mat_2`. The
        post and author embeddings are multiplied as they are (no `[C, 640]` concatenation), and the
        categorical features (surface, post age, in-network), whose part is a table row, use that
        table already multiplied by its row block: one small `[V, D] x [D, D]` product per call
        instead of a `[C, D] x [D, D]` one.
        """
        pe, ae = emb.candidate_post_embeddings, emb.candidate_author_embeddings
        b, c = pe.shape[:2]
        d = self.config.emb_size
        w = self.proj_mat_2[...]
        dense = [pe.reshape(b, c, -1), ae.reshape(b, c, -1)]
        lookups = [(self.product_surface_embedding_table[...], jnp.asarray(batch.candidate_product_surface))]
        if self.config.post_age_buckets:
            lookups.append((self.post_age_embedding_table[...], self._post_age_bucket(batch)))
        if self.config.in_network_feature:
            lookups.append((self.in_network_embedding_table[...], self._in_network_flag(batch)))
        x, row = None, 0
        for part in dense:
            n = part.shape[-1]
            y = part.astype(jnp.float32) @ w[row : row + n]
            x, row = (y if x is None else x + y), row + n
        for table, idx in lookups:
            # As the full path, a table row is rounded to the forward dtype before the projection.
            projected = table.astype(self.fp).astype(jnp.float32) @ w[row : row + d]
            x, row = x + jnp.take(projected, idx, axis=0), row + d
        return x.astype(pe.dtype), jnp.asarray(batch.candidate_post_hashes)[:, :, 0] != 0

    def build_inputs(
        self, batch: RecsysBatch, emb: RecsysEmbeddings
    ) -> tuple[jax.Array, jax.Array, int]:
        """The transformer input, as the seeds' `build_inputs`.

        Returns:
          embeddings `[B, T, D]` (forward dtype), padding mask `[B, T]`, candidate_start_offset = 1 + S.
        """
        ctx, ctx_mask = self.context(batch, emb)
        cand, cand_mask = self.candidate_tokens(batch, emb)
        x = jnp.concatenate([ctx, cand], axis=1).astype(self.fp)
        return x, jnp.concatenate([ctx_mask, cand_mask], axis=1), ctx.shape[1]

    # -- head ---------------------------------------------------------------------------------
    def head(self, hidden: jax.Array) -> RecsysModelOutput:
        """Final norm and unembedding of candidate hidden states `[B, C, D]`."""
        h = self.rms_norm(hidden).astype(jnp.float32)
        logits = h @ self.unembeddings[...]
        if self.action_bias is not None:
            logits = logits + self.action_bias[...]
        cont = None
        if self.config.continuous_head_size:
            cont = jax.nn.sigmoid(h @ self.continuous_unembeddings[...]).astype(self.fp)
        return RecsysModelOutput(logits=logits.astype(self.fp), continuous_preds=cont)

    # -- forward ------------------------------------------------------------------------------
    def __call__(
        self,
        batch: RecsysBatch,
        embeddings: RecsysEmbeddings | None = None,
        *,
        dropout_rate: float = 0.0,
        dropout_key: jax.Array | None = None,
    ) -> RecsysModelOutput:
        """Full forward over `[user | history | candidates]`.

        Args:
          batch: hashed inputs (`RecsysBatch`).
          embeddings: looked-up embeddings; None looks them up in this model's own tables.
          dropout_rate / dropout_key: training-only dropout on the input tokens (`token_dropout`).

        Returns:
          `RecsysModelOutput` with logits `[B, C, A]`.
        """
        validate_batch(batch, self.config, embeddings)
        emb = self.embed(batch) if embeddings is None else embeddings
        x, pad, offset = self.build_inputs(batch, emb)
        x = token_dropout(x, dropout_rate, dropout_key)
        cfg = self.config
        mask = make_recsys_attn_mask(
            x.shape[1], offset, x.dtype, history_attention=cfg.history_attention, padding_mask=pad
        )
        positions = jnp.concatenate(
            [
                context_positions(pad[:, :offset], cfg.positions),
                candidate_positions(pad[:, offset:], offset - 1, cfg.positions),
            ],
            axis=1,
        )
        out, _ = self.transformer(x, mask, positions)
        return self.head(out[:, offset:])

    def encode_context(self, batch: RecsysBatch, embeddings: RecsysEmbeddings | None = None) -> ContextCache:
        """Run `[user | history]` once and keep every layer's keys/values (candidates are ignored)."""
        emb = self.embed(batch) if embeddings is None else embeddings
        ctx, ctx_mask = self.context(batch, emb)
        ctx = ctx.astype(self.fp)
        t0 = ctx.shape[1]
        mask = make_recsys_attn_mask(
            t0, t0, ctx.dtype, history_attention=self.config.history_attention, padding_mask=ctx_mask
        )
        _, kv = self.transformer(ctx, mask, context_positions(ctx_mask, self.config.positions))
        return ContextCache(kv=kv, mask=ctx_mask)

    def score_with_context(
        self,
        cache: ContextCache,
        batch: RecsysBatch,
        embeddings: RecsysEmbeddings | None = None,
        slot_offset: int = 0,
    ) -> RecsysModelOutput:
        """Score the candidates of `batch` against a cached context; same numbers as `__call__`.

        Only the candidate fields of `batch`/`embeddings` are read. `slot_offset` is this chunk's first
        candidate index in the whole list (it matters only under per-slot positions).
        """
        if embeddings is None:
            pe, ae = self.tables.items(jnp.asarray(batch.candidate_post_hashes), jnp.asarray(batch.candidate_author_hashes))
            embeddings = RecsysEmbeddings(None, None, pe, None, ae)  # type: ignore[arg-type]
        cand, cand_mask = self.candidate_tokens_blockwise(batch, embeddings)
        cand = cand.astype(self.fp)
        s = cache.mask.shape[1] - 1
        k = self.config.model.key_size
        if self.config.positions is PositionScheme.PER_SLOT:
            rotary = rotary_tables(candidate_positions(cand_mask, s, self.config.positions, slot_offset), k)
        else:
            # Every valid candidate sits at 1 + S (padded ones at 0, see `candidate_positions`): one
            # cos/sin evaluation serves the whole block.
            rotary = shared_rotary_tables(cand_mask, float(1 + s), k)
        hidden = self.transformer.candidates(cand, rotary, cache.kv, cache.mask, cand_mask)
        return self.head(hidden)


@dataclasses.dataclass(frozen=True)
class RankingOutput:
    """Ranking results with a `p_<action>` view per action.

    Attributes:
      probabilities: `[B, C, A]`: sigmoid of the logit for binary actions, softplus for continuous
        ones (an expected value, e.g. seconds of dwell).
      logits: `[B, C, A]` float32.
      weighted_score: `[B, C]` sum over actions of weight x probability (SPEC 7, before the offset,
        diversity and network multipliers the feed applies).
      ranked_indices: `[B, C]` candidates by weighted score, best first; padded candidates last.
      candidate_mask: `[B, C]` valid candidates.
      actions: the vocabulary naming the last axis.
    """

    probabilities: np.ndarray
    logits: np.ndarray
    weighted_score: np.ndarray
    ranked_indices: np.ndarray
    candidate_mask: np.ndarray
    actions: ActionVocabulary

    @property
    def scores(self) -> np.ndarray:
        """The seeds' name for `probabilities`."""
        return self.probabilities

    def __getattr__(self, name: str) -> Any:
        if name.startswith("p_"):
            key = name[2:]
            key = key[: -len("_score")] if key.endswith("_score") and key not in self.actions else key
            if key in self.actions:
                return self.probabilities[..., self.actions.index(key)]
        raise AttributeError(name)


def probabilities_from_logits(logits: jax.Array, actions: ActionVocabulary) -> jax.Array:
    """`[.., A]` logits -> sigmoid for binary actions, softplus for continuous ones (float32)."""
    logits = logits.astype(jnp.float32)
    is_binary = jnp.asarray([a.kind is ActionKind.BINARY for a in actions])
    return jnp.where(is_binary, jax.nn.sigmoid(logits), jax.nn.softplus(logits))


def ranking_output(
    logits: jax.Array, candidate_mask: jax.Array, actions: ActionVocabulary, weights: dict[str, float] | None = None
) -> RankingOutput:
    """Turn logits `[B, C, A]` into a `RankingOutput` (probabilities, weighted score, ranking)."""
    probs = np.asarray(probabilities_from_logits(logits, actions))
    w = np.asarray(weight_vector(actions, weights), np.float32)
    mask = np.asarray(candidate_mask, bool)
    ws = probs @ w
    order_key = np.where(mask, ws, -np.inf)
    ranked = np.argsort(-order_key, axis=-1, kind="stable")
    return RankingOutput(
        probabilities=probs,
        logits=np.asarray(logits, np.float32),
        weighted_score=ws.astype(np.float32),
        ranked_indices=ranked,
        candidate_mask=mask,
        actions=actions,
    )
