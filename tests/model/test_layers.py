"""Transformer layers against written-out formulas: RMSNorm, rotary, GQA head mapping, FFN width; and a
fresh model's outputs (non-constant, bf16 close to fp32)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_recsys.model import DType, TransformerConfig, probabilities_from_logits
from phoenix_recsys.model.layers import Attention, RMSNorm, apply_rotary
from phoenix_recsys.testing.fixtures import random_batch

PROP = settings(max_examples=20, deadline=None, derandomize=True)
_rotary = jax.jit(apply_rotary)


# -- RMSNorm --------------------------------------------------------------------------------------
def test_rms_norm_formula():
    rng = np.random.default_rng(0)
    # Row scales from 1e-3 to 10: at the small end the 1e-5 epsilon visibly matters.
    x = (rng.normal(size=(3, 5, 7)) * 10.0 ** rng.uniform(-3, 1, size=(3, 5, 1))).astype(np.float32)
    scale = rng.normal(size=(7,)).astype(np.float32)
    norm = RMSNorm(7)
    norm.scale[...] = jnp.asarray(scale)
    want = x / np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True) + 1e-5) * scale
    np.testing.assert_allclose(np.asarray(norm(jnp.asarray(x))), want, rtol=1e-5, atol=1e-6)


def test_rms_norm_keeps_dtype_and_starts_at_unit_scale():
    norm = RMSNorm(4)
    np.testing.assert_array_equal(np.asarray(norm.scale[...]), np.ones(4, np.float32))
    x = jnp.asarray([[1.0, -2.0, 3.0, 0.5]], jnp.bfloat16)
    assert norm(x).dtype == jnp.bfloat16


# -- rotary ---------------------------------------------------------------------------------------
@given(seed=st.integers(0, 2**16), pos_scale=st.sampled_from([1.0, 37.0, 1000.0]))
@PROP
def test_rotary_preserves_norms(seed, pos_scale):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, 5, 3, 8)).astype(np.float32)
    pos = (rng.random((2, 5)) * pos_scale).astype(np.float32)
    y = np.asarray(_rotary(jnp.asarray(x), jnp.asarray(pos)))
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


def test_rotary_is_identity_at_position_zero():
    x = np.random.default_rng(1).normal(size=(2, 4, 3, 8)).astype(np.float32)
    y = _rotary(jnp.asarray(x), jnp.zeros((2, 4), jnp.float32))
    np.testing.assert_allclose(np.asarray(y), x, atol=1e-7)


def test_rotary_scores_depend_only_on_relative_position():
    rng = np.random.default_rng(2)
    q = jnp.asarray(rng.normal(size=(1, 1, 1, 8)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(1, 1, 1, 8)), jnp.float32)

    def score(pq: float, pk: float) -> float:
        rq = _rotary(q, jnp.full((1, 1), pq, jnp.float32))
        rk = _rotary(k, jnp.full((1, 1), pk, jnp.float32))
        return float(jnp.sum(rq * rk))

    base = score(3.0, 1.0)
    for shift in (1.0, 10.0, 57.0):
        assert score(3.0 + shift, 1.0 + shift) == pytest.approx(base, abs=1e-4)
    assert abs(score(4.0, 1.0) - base) > 1e-3  # ... but it does depend on the distance


# -- attention: GQA head mapping ------------------------------------------------------------------
def _np_rotary(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
    k = x.shape[-1]
    inv = 1.0 / 10000.0 ** (np.arange(0, k, 2) / k)
    ph = pos[:, :, None] * inv
    ph = np.concatenate([ph, ph], axis=-1)[:, :, None, :]
    rot = np.concatenate([-x[..., k // 2 :], x[..., : k // 2]], axis=-1)
    return x * np.cos(ph) + rot * np.sin(ph)


def _np_attention(att: Attention, x: np.ndarray, mask: np.ndarray, pos: np.ndarray, kv_head) -> np.ndarray:
    """Plain per-head attention; `kv_head(j)` says which kv head query head j reads."""
    b, t, _ = x.shape
    h, g, k = att.num_q_heads, att.num_kv_heads, att.key_size
    w = {n: np.asarray(getattr(att, n).w[...], np.float64) for n in ("query", "key", "value", "linear")}
    q = _np_rotary((x @ w["query"]).reshape(b, t, h, k), pos)
    kk = _np_rotary((x @ w["key"]).reshape(b, t, g, k), pos)
    v = (x @ w["value"]).reshape(b, t, g, k)
    heads = []
    for j in range(h):
        logits = np.einsum("btk,bsk->bts", q[:, :, j], kk[:, :, kv_head(j)]) * att.multiplier
        logits = 30.0 * np.tanh(logits / 30.0)
        logits = np.where(mask[:, 0] != 0, logits, -np.inf)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        heads.append(np.einsum("bts,bsk->btk", p, v[:, :, kv_head(j)]))
    return np.concatenate(heads, axis=-1) @ w["linear"]


@pytest.fixture(scope="module")
def gqa(cfg, make_ranker):
    """The tiny ranker's first attention layer (H=4 query heads over G=2 kv heads)."""
    att = make_ranker(cfg).transformer.layers[0].multi_head_attention
    assert (att.num_q_heads, att.num_kv_heads) == (4, 2)
    return att


def test_gqa_query_head_j_uses_kv_head_j_div_group(gqa, cfg):
    rng = np.random.default_rng(4)
    b, t, d = 2, 5, cfg.emb_size
    x = rng.normal(size=(b, t, d))
    pos = np.tile(np.arange(t, dtype=np.float64), (b, 1)) * 3.0
    mask = np.tril(np.ones((t, t)))[None, None].repeat(b, axis=0)
    call = nnx.jit(lambda att, x, m, p: att(x, m, p))
    out, kv = call(gqa, jnp.asarray(x, jnp.float32), jnp.asarray(mask, jnp.float32), jnp.asarray(pos, jnp.float32))
    assert out.shape == (b, t, d)
    assert kv.k.shape == kv.v.shape == (b, t, 2, cfg.model.key_size)
    group = gqa.num_q_heads // gqa.num_kv_heads
    want = _np_attention(gqa, x, mask, pos, lambda j: j // group)
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-4)
    # The interleaved mapping (j % G) is a different function: the check above can tell them apart.
    wrong = _np_attention(gqa, x, mask, pos, lambda j: j % gqa.num_kv_heads)
    assert np.abs(wrong - want).max() > 1e-3


def test_attention_multiplier_default_and_override():
    assert TransformerConfig(key_size=64).attention_multiplier() == pytest.approx(0.125)
    assert TransformerConfig(key_size=16, attn_output_multiplier=0.3).attention_multiplier() == 0.3


# -- feed-forward ---------------------------------------------------------------------------------
def test_ffn_width_reference_value():
    assert TransformerConfig(emb_size=128, widening_factor=2.0).ffn_size() == 176


@given(d=st.integers(1, 512), w=st.sampled_from([0.5, 1.0, 1.5, 2.0, 2.7, 4.0]))
@settings(max_examples=50, deadline=None, derandomize=True)
def test_ffn_width_rule(d, w):
    cfg = TransformerConfig(emb_size=d, key_size=2, widening_factor=w)
    raw = int(w * d) * 2 // 3
    assert cfg.ffn_size() == -(-raw // 8) * 8


def test_ffn_parameter_shapes_and_gating(cfg, make_ranker):
    ffn = make_ranker(cfg).transformer.layers[0].ffn
    d, f = cfg.emb_size, cfg.model.ffn_size()
    assert f == 48  # ceil8(int(2.0 * 32) * 2 // 3) = ceil8(42)
    assert ffn.linear.w[...].shape == ffn.linear_v.w[...].shape == (d, f)
    assert ffn.linear_1.w[...].shape == (f, d)
    x = np.random.default_rng(5).normal(size=(3, d)).astype(np.float64)
    w, v, o = (np.asarray(m.w[...], np.float64) for m in (ffn.linear, ffn.linear_v, ffn.linear_1))
    a = x @ w
    gelu = 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a**3)))
    got = nnx.jit(lambda m, x: m(x))(ffn, jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), (gelu * (x @ v)) @ o, atol=1e-4)


# -- a fresh model --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fresh_batch(cfg):
    return random_batch(cfg, 3, 7, seed=9, min_history=2)


def test_fresh_model_outputs_vary_across_candidates_and_actions(cfg, make_forward, fresh_batch):
    probs = np.asarray(probabilities_from_logits(jnp.asarray(make_forward(cfg)(fresh_batch)), cfg.actions))
    binary = probs[..., list(cfg.actions.binary_indices)]
    assert np.isfinite(probs).all()
    assert binary.std(axis=1).mean() > 0.01  # across candidates
    assert binary.std(axis=2).mean() > 0.01  # across actions
    assert np.abs(binary - 0.5).max() > 0.05  # not the release's all-0.5 init


def test_bf16_and_fp32_forward_agree_loosely(cfg, make_forward, fresh_batch):
    """Same init seed, so the same fp32 parameters; only the activation dtype differs."""
    f32 = make_forward(cfg)(fresh_batch)
    bf16 = make_forward(cfg.replace(fprop_dtype=DType.BFLOAT16))(fresh_batch)
    assert np.isfinite(bf16).all()
    assert np.abs(bf16 - f32).max() > 0  # bf16 really ran
    np.testing.assert_allclose(bf16, f32, atol=0.15, rtol=0)
    p32 = np.asarray(probabilities_from_logits(jnp.asarray(f32), cfg.actions))
    p16 = np.asarray(probabilities_from_logits(jnp.asarray(bf16), cfg.actions))
    np.testing.assert_allclose(p16, p32, atol=0.03, rtol=0)


def test_bf16_forward_computes_in_bf16(cfg, make_ranker, fresh_batch):
    model = make_ranker(cfg.replace(fprop_dtype=DType.BFLOAT16))
    out = jax.eval_shape(lambda b: model(b), fresh_batch)
    assert out.logits.dtype == jnp.bfloat16
