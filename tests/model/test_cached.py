"""`CachedRanker`: cached-context, chunked candidate scoring equals the full forward."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_recsys.model import CachedRanker, DType, probabilities_from_logits
from phoenix_recsys.testing.fixtures import random_batch

B, C = 2, 11
ATOL = 1e-4

# Chunk sizes 1, 3 and 8 (several chunks, a partial last one, non-zero slot offsets) and 20 (> C: one
# padded chunk). Each mode/position combination gets at least one multi-chunk size; the full product
# would only add compilation time.
CASES = [
    ("bidirectional", "right_anchored", 1),
    ("bidirectional", "right_anchored", 8),
    ("bidirectional", "right_anchored", 20),
    ("causal", "right_anchored", 3),
    ("bidirectional", "per_slot", 8),
    ("causal", "per_slot", 3),
]


@functools.cache
def _cached_ranker(model, chunk: int) -> CachedRanker:
    # One instance per (model, chunk size): each compiles its own encoder and chunk scorer.
    return CachedRanker(model, chunk_size=chunk)


def _batch(cfg, seed: int, num_candidates: int = C, pad_candidates: int = 2):
    # min_history=0: some examples have little or no history, so the context is heavily padded.
    return random_batch(cfg, B, num_candidates, seed=seed, min_history=0, pad_candidates=pad_candidates)


@pytest.mark.parametrize(("mode", "positions", "chunk"), CASES)
def test_cached_equals_full_forward(cfg, make_ranker, make_forward, mode, positions, chunk):
    c = cfg.replace(history_attention=mode, positions=positions)
    ranker = _cached_ranker(make_ranker(c), chunk)
    for seed in (0, 1):
        batch = _batch(c, seed)
        # Also pad one candidate in the middle, not only at the end.
        post = batch.candidate_post_hashes.copy()
        author = batch.candidate_author_hashes.copy()
        post[0, 2] = 0
        author[0, 2] = 0
        batch = batch.with_candidates(post, author, batch.candidate_product_surface)
        cached = ranker.score(batch).logits
        full = make_forward(c)(batch)
        assert cached.shape == full.shape == (B, C, c.num_actions)
        assert cached.dtype == np.float32
        np.testing.assert_allclose(cached, full, atol=ATOL, rtol=0)


def test_one_context_serves_several_candidate_sets(cfg, make_ranker, make_forward):
    ranker = _cached_ranker(make_ranker(cfg), 8)
    batch = _batch(cfg, 5)
    cache = ranker.encode(batch)
    for seed in (6, 7):
        other = random_batch(cfg, B, C, seed=seed)
        request = batch.with_candidates(
            other.candidate_post_hashes, other.candidate_author_hashes, other.candidate_product_surface
        )
        np.testing.assert_allclose(
            ranker.score_cached(cache, request).logits, make_forward(cfg)(request), atol=ATOL, rtol=0
        )


def test_many_candidates_in_one_request(cfg, make_ranker, make_forward):
    n = 300
    ranker = _cached_ranker(make_ranker(cfg), 20)  # 15 chunks
    batch = _batch(cfg, 11, num_candidates=n, pad_candidates=5)
    cached = ranker.score(batch).logits
    assert cached.shape == (B, n, cfg.num_actions)
    assert np.isfinite(cached).all()
    np.testing.assert_allclose(cached, make_forward(cfg)(batch), atol=ATOL, rtol=0)


def test_bf16_cached_close_to_bf16_full(cfg, make_ranker, make_forward):
    c = cfg.replace(fprop_dtype=DType.BFLOAT16)
    ranker = CachedRanker(make_ranker(c), chunk_size=3)
    batch = _batch(c, 2)
    cached = ranker.score(batch).logits
    full = make_forward(c)(batch)
    assert np.isfinite(cached).all()
    # bf16 keeps ~3 significant digits and the two paths round differently; logits are O(1).
    np.testing.assert_allclose(cached, full, atol=0.1, rtol=0)
    p_cached = np.asarray(probabilities_from_logits(cached, c.actions))
    p_full = np.asarray(probabilities_from_logits(full, c.actions))
    np.testing.assert_allclose(p_cached, p_full, atol=0.02, rtol=0)


def test_partial_last_chunk_is_padded_to_its_own_size(cfg, make_ranker, make_forward):
    # 45 = 20 + 20 + 5: the last 5 candidates are scored in a block of 8, not of 20.
    ranker = _cached_ranker(make_ranker(cfg), 20)
    batch = _batch(cfg, 12, num_candidates=45, pad_candidates=1)
    np.testing.assert_allclose(ranker.score(batch).logits, make_forward(cfg)(batch), atol=ATOL, rtol=0)


@pytest.mark.parametrize("chunk", [0, -1, 2.5])
def test_bad_chunk_size(cfg, make_ranker, chunk):
    with pytest.raises(ValueError, match="chunk_size"):
        CachedRanker(make_ranker(cfg), chunk_size=chunk)


# The cached path computes candidate tokens block by block, rotates only the queries (once-evaluated
# shared tables under right-anchored positions) and splits the softmax in two; the full forward does
# none of that. Property: on random inputs, including the optional candidate features and every
# head grouping, the two agree to fp32 tolerance.
_FEATURE_CFGS = [
    # (num_q_heads, num_kv_heads, post_age_buckets, in_network_feature, positions, history_attention)
    # (the tiny config's 4 query / 2 kv heads are covered above; these add one group and one head per group)
    (4, 1, True, True, "per_slot", "causal"),
    (2, 2, True, True, "released_right_anchored", "bidirectional"),
]


@functools.cache
def _feature_cfg(i: int):
    from phoenix_recsys.model import TransformerConfig
    from phoenix_recsys.testing.fixtures import tiny_config

    h, g, age, innet, pos, mode = _FEATURE_CFGS[i]
    return tiny_config(
        model=TransformerConfig(emb_size=32, key_size=8, num_layers=1, num_q_heads=h, num_kv_heads=g),
        post_age_buckets=age, in_network_feature=innet, positions=pos, history_attention=mode,
    )


@settings(max_examples=6, deadline=None, derandomize=True)
@given(which=st.integers(0, len(_FEATURE_CFGS) - 1), seed=st.integers(0, 2**16), pad=st.integers(0, 3))
def test_cached_equals_full_forward_property(make_ranker, make_forward, which, seed, pad):
    c = _feature_cfg(which)
    n = 11  # chunks of 8: a full one and a padded partial one
    batch = random_batch(c, B, n, seed=seed, min_history=0, pad_candidates=pad)
    rng = np.random.default_rng(seed)
    now = 1_700_000_000
    created = now - rng.integers(-600, 10 * 86400, size=(B, n))  # some in the future: bucket 0
    created[rng.random((B, n)) < 0.2] = 0  # unknown creation time
    batch = batch.with_candidates(
        batch.candidate_post_hashes, batch.candidate_author_hashes, batch.candidate_product_surface,
        np.full((B, n), now, np.int64), created.astype(np.int64), rng.integers(0, 2, (B, n)).astype(np.int32),
    )
    cached = _cached_ranker(make_ranker(c), 8).score(batch).logits
    np.testing.assert_allclose(cached, make_forward(c)(batch), atol=ATOL, rtol=0)
