"""Transformer layers in the Grok-1 lineage (SPEC 4): RMSNorm, rotary, GQA attention, gated GELU, sandwich norms.

Axes: B batch, T tokens, C candidates, D width, H query heads, G kv heads, K key size, F FFN width.
Numerics follow the released code exactly (REFERENCE-LAYOUT 5 and 7): weights are stored in float32 and
cast to the activation dtype for matmuls; norms, rotary and softmax run in float32; the residual stream
stays in the activation dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from phoenix_recsys.model.config import TransformerConfig

RMS_EPS = 1e-5
SOFT_CAP = 30.0
MASKED_LOGIT = -1e30


def _normal(std: float) -> Callable[..., jax.Array]:
    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return (std * jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32) / 0.8796256610).astype(dtype)

    return init


class Linear(nnx.Module):
    """`y = x @ w` with no bias; `w` is `[in, out]` float32, cast to `x.dtype` for the matmul.

    Initialised with std 1/sqrt(in) (truncated normal), so a fresh model's outputs vary with its inputs.

    >>> lin = Linear(3, 2, rngs=nnx.Rngs(0))
    >>> lin(jnp.ones((5, 3))).shape
    (5, 2)
    """

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs, init_std: float | None = None):
        std = (1.0 / in_features**0.5) if init_std is None else init_std
        self.w = nnx.Param(_normal(std)(rngs.params(), (in_features, out_features)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.w[...].astype(x.dtype)


class RMSNorm(nnx.Module):
    """`y = (x * rsqrt(mean(x^2) + 1e-5)) * scale`, computed in float32, returned in `x.dtype`.

    The scale multiplies directly (not `1 + scale`), as in the release; we initialise it to 1 where the
    release uses 0 (which silences the whole network at init).

    >>> RMSNorm(4)(jnp.array([[2.0, 2.0, 2.0, 2.0]])).tolist()
    [[0.9999987483024597, 0.9999987483024597, 0.9999987483024597, 0.9999987483024597]]
    """

    def __init__(self, dim: int, *, init_scale: float = 1.0):
        self.scale = nnx.Param(jnp.full((dim,), init_scale, jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        ms = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        return (self.scale[...] * (x32 * jax.lax.rsqrt(ms + RMS_EPS))).astype(x.dtype)


def rotate_half(x: jax.Array) -> jax.Array:
    """Split-half (NeoX) rotation: concat(-x[K/2:], x[:K/2]) on the last axis."""
    half = x.shape[-1] // 2
    return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


class RotaryTables(NamedTuple):
    """`cos` and `sin` of the rotary phase, `[B, T, 1, K]` float32 each (broadcast over heads)."""

    cos: jax.Array
    sin: jax.Array


def rotary_tables(positions: jax.Array, key_size: int, base: float = 10000.0) -> RotaryTables:
    """The rotary phase tables of `positions [B, T]` (float32) for heads of width `key_size`."""
    exponents = jnp.arange(0, key_size, 2, dtype=jnp.float32)
    inv_freq = jnp.asarray(1.0 / (base ** (exponents / key_size)), dtype=jnp.float32)
    phase = positions.astype(jnp.float32)[:, :, None] * inv_freq[None, None, :]
    phase = jnp.concatenate([phase, phase], axis=-1)[:, :, None, :]
    return RotaryTables(jnp.cos(phase), jnp.sin(phase))


def shared_rotary_tables(valid: jax.Array, position: float, key_size: int, base: float = 10000.0) -> RotaryTables:
    """Tables for tokens that all sit at one `position` where `valid [B, T]`, and at 0 elsewhere.

    Equal to `rotary_tables(where(valid, position, 0))` (cos 0 = 1, sin 0 = 0 exactly), but the cos/sin
    are evaluated once instead of once per token: the cached ranker's candidates share one position.
    """
    one = rotary_tables(jnp.full((1, 1), position, jnp.float32), key_size, base)
    v = valid[:, :, None, None]
    return RotaryTables(jnp.where(v, one.cos, 1.0), jnp.where(v, one.sin, 0.0))


def rotate(x: jax.Array, tables: RotaryTables) -> jax.Array:
    """Apply precomputed rotary tables to `x [B, T, N, K]` (in float32); returns `x.dtype`."""
    return (x * tables.cos + rotate_half(x) * tables.sin).astype(x.dtype)


def apply_rotary(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
    """Rotary position embedding over all K dims of each head.

    Args:
      x: `[B, T, N, K]` queries or keys.
      positions: `[B, T]` float32 token positions.

    Returns:
      `[B, T, N, K]` in `x.dtype` (the rotation itself runs in float32).
    """
    return rotate(x, rotary_tables(positions, x.shape[-1], base))


def _soft_cap(logits: jax.Array) -> jax.Array:
    return SOFT_CAP * jnp.tanh(logits / SOFT_CAP)


class KV(NamedTuple):
    """Keys and values of the user+history context for one layer: `[B, T0, G, K]` each (post-rotary)."""

    k: jax.Array
    v: jax.Array


class Attention(nnx.Module):
    """Grouped-query attention with rotary positions, a logit multiplier and a 30*tanh(x/30) soft cap."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        d, h, g, k = cfg.emb_size, cfg.num_q_heads, cfg.num_kv_heads, cfg.key_size
        self.num_q_heads, self.num_kv_heads, self.key_size = h, g, k
        self.multiplier = cfg.attention_multiplier()
        self.query = Linear(d, h * k, rngs=rngs)
        self.key = Linear(d, g * k, rngs=rngs)
        self.value = Linear(d, g * k, rngs=rngs)
        self.linear = Linear(h * k, d, rngs=rngs)

    def project(self, x: jax.Array, positions: jax.Array) -> tuple[jax.Array, KV]:
        """`x [B, T, D]` -> queries `[B, T, G, H/G, K]` and rotated keys/values `[B, T, G, K]`."""
        b, t, _ = x.shape
        h, g, k = self.num_q_heads, self.num_kv_heads, self.key_size
        q = apply_rotary(self.query(x).reshape(b, t, h, k), positions)
        kk = apply_rotary(self.key(x).reshape(b, t, g, k), positions)
        v = self.value(x).reshape(b, t, g, k)
        # Consecutive query heads share a kv head (query head j -> kv head j // (H/G)).
        return q.reshape(b, t, g, h // g, k), KV(kk, v)

    def _scores(self, q: jax.Array, k: jax.Array) -> jax.Array:
        logits = jnp.einsum("btgjk,bsgk->bgjts", q, k).astype(jnp.float32)
        return _soft_cap(logits * self.multiplier)

    def _output(self, attn: jax.Array) -> jax.Array:
        b, t = attn.shape[:2]
        return self.linear(attn.reshape(b, t, -1))

    def __call__(self, x: jax.Array, mask: jax.Array, positions: jax.Array) -> tuple[jax.Array, KV]:
        """Full self-attention.

        Args:
          x: `[B, T, D]`.
          mask: `[B, 1, T, T]` (1 = may attend).
          positions: `[B, T]`.

        Returns:
          the output `[B, T, D]` and this layer's keys/values.
        """
        q, kv = self.project(x, positions)
        logits = self._scores(q, kv.k)
        logits = jnp.where(mask[:, :, None] != 0, logits, MASKED_LOGIT)
        weights = jax.nn.softmax(logits, axis=-1).astype(q.dtype)
        attn = jnp.einsum("bgjts,bsgk->btgjk", weights, kv.v)
        return self._output(attn), kv

    def attend_to_context(
        self, x: jax.Array, rotary: RotaryTables, context: KV, context_mask: jax.Array, self_mask: jax.Array
    ) -> jax.Array:
        """Candidate attention against a cached context: each candidate sees the context and itself.

        Written for the CPU serving path (it is most of the cost of ranking), with the same numbers as
        the full forward's candidate rows up to float rounding:
        - one kv group at a time, so every product is a plain `[C*J, K] x [K, T0]` matrix product on
          contiguous blocks (a batched einsum over heads made XLA transpose the candidate block);
        - the candidate's own logit needs no rotary: its query and key share a position and a rotation
          preserves dot products, so only the queries are rotated (for the context keys);
        - the softmax over `[context | self]` is taken in two parts (shared max and sum), so no
          `[C, T0 + 1]` block is concatenated and no `[C, T0 + C]` mask exists.

        Args:
          x: `[B, C, D]` candidate hidden states.
          rotary: the candidates' rotary tables (`[B, C, 1, K]`, computed once for all layers).
          context: cached keys/values `[B, T0, G, K]`.
          context_mask: `[B, T0]` valid context keys.
          self_mask: `[B, C]` valid candidates (a padded candidate does not see itself, as in the full mask).

        Returns:
          `[B, C, D]`, equal to the candidate rows of the full forward.
        """
        b, c, _ = x.shape
        h, g, k = self.num_q_heads, self.num_kv_heads, self.key_size
        j = h // g
        dt = x.dtype
        wq, wk, wv = (lin.w[...].astype(dt) for lin in (self.query, self.key, self.value))
        ctx_valid = context_mask[:, None, None, :]
        self_valid = self_mask[:, :, None]
        outs = []
        for gi in range(g):
            # Query heads gi*J .. gi*J+J-1 use kv head gi (as `project`'s reshape).
            q = (x @ wq[:, gi * j * k : (gi + 1) * j * k]).reshape(b, c, j, k)
            own_k = x @ wk[:, gi * k : (gi + 1) * k]
            own_v = x @ wv[:, gi * k : (gi + 1) * k]
            self_logits = jnp.einsum("bcjk,bck->bcj", q, own_k).astype(jnp.float32)
            self_logits = jnp.where(self_valid, _soft_cap(self_logits * self.multiplier), MASKED_LOGIT)
            ctx_logits = jnp.einsum("bcjk,bsk->bcjs", rotate(q, rotary), context.k[:, :, gi]).astype(jnp.float32)
            ctx_logits = jnp.where(ctx_valid, _soft_cap(ctx_logits * self.multiplier), MASKED_LOGIT)
            top = jnp.maximum(jnp.max(ctx_logits, axis=-1), self_logits)
            e_ctx = jnp.exp(ctx_logits - top[..., None])
            e_self = jnp.exp(self_logits - top)
            denom = jnp.sum(e_ctx, axis=-1) + e_self
            w_ctx = (e_ctx / denom[..., None]).astype(dt)
            w_self = (e_self / denom).astype(dt)
            attn = jnp.einsum("bcjs,bsk->bcjk", w_ctx, context.v[:, :, gi]) + w_self[..., None] * own_v[:, :, None, :]
            outs.append(attn.reshape(b, c, j * k))
        return self.linear(outs[0] if g == 1 else jnp.concatenate(outs, axis=-1))


class FeedForward(nnx.Module):
    """Gated GELU: `(gelu_tanh(x @ W) * (x @ V)) @ W_out`."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        f = cfg.ffn_size()
        # Creation order and names mirror the release (linear_v, linear, linear_1) for parameter import.
        self.linear_v = Linear(cfg.emb_size, f, rngs=rngs)
        self.linear = Linear(cfg.emb_size, f, rngs=rngs)
        self.linear_1 = Linear(f, cfg.emb_size, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_1(jax.nn.gelu(self.linear(x), approximate=True) * self.linear_v(x))


class DecoderLayer(nnx.Module):
    """`h += norm1(attn(norm0(h)))`; `h += norm3(ffn(norm2(h)))` (sandwich norms, Grok-1)."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        d = cfg.emb_size
        self.rms_norm = RMSNorm(d)
        self.rms_norm_1 = RMSNorm(d)
        self.rms_norm_2 = RMSNorm(d)
        self.rms_norm_3 = RMSNorm(d)
        self.multi_head_attention = Attention(cfg, rngs=rngs)
        self.ffn = FeedForward(cfg, rngs=rngs)

    def _residual_ffn(self, h: jax.Array) -> jax.Array:
        return h + self.rms_norm_3(self.ffn(self.rms_norm_2(h)))

    def __call__(self, h: jax.Array, mask: jax.Array, positions: jax.Array) -> tuple[jax.Array, KV]:
        """`h [B, T, D]` -> (`[B, T, D]`, this layer's KV)."""
        attn, kv = self.multi_head_attention(self.rms_norm(h), mask, positions)
        h = h + self.rms_norm_1(attn)
        return self._residual_ffn(h), kv

    def candidates(
        self, h: jax.Array, rotary: RotaryTables, context: KV, context_mask: jax.Array, self_mask: jax.Array
    ) -> jax.Array:
        """Candidate rows `[B, C, D]` of this layer, given the context's cached KV."""
        attn = self.multi_head_attention.attend_to_context(
            self.rms_norm(h), rotary, context, context_mask, self_mask
        )
        h = h + self.rms_norm_1(attn)
        return self._residual_ffn(h)


class Transformer(nnx.Module):
    """A stack of `DecoderLayer`s (no final norm: the ranker adds its own, retrieval has none)."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.layers = nnx.List([DecoderLayer(cfg, rngs=rngs) for _ in range(cfg.num_layers)])

    def __call__(self, h: jax.Array, mask: jax.Array, positions: jax.Array) -> tuple[jax.Array, list[KV]]:
        """`h [B, T, D]`, `mask [B, 1, T, T]`, `positions [B, T]` -> (`[B, T, D]`, per-layer KV)."""
        cache = []
        for layer in self.layers:
            h, kv = layer(h, mask, positions)
            cache.append(kv)
        return h, cache

    def candidates(
        self, h: jax.Array, rotary: RotaryTables, cache: list[KV], context_mask: jax.Array, self_mask: jax.Array
    ) -> jax.Array:
        """Run candidate tokens `[B, C, D]` through every layer against a cached context.

        `rotary`: the candidates' rotary tables (`rotary_tables` / `shared_rotary_tables`), shared by all
        layers since every layer sees the same positions.
        """
        for layer, kv in zip(self.layers, cache, strict=True):
            h = layer.candidates(h, rotary, kv, context_mask, self_mask)
        return h
