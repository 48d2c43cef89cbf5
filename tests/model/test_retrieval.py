"""Two-tower retrieval: tower shapes and unit norms, and exact top-k against a NumPy brute force."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_recsys.model import RetrievalOutput, retrieve_top_k
from phoenix_recsys.testing.fixtures import random_batch

B, C = 3, 5
PROP = settings(max_examples=25, deadline=None, derandomize=True)


@pytest.fixture(scope="module")
def retriever(cfg, make_retriever):
    return make_retriever(cfg)


@pytest.fixture(scope="module")
def towers(retriever):
    """Jitted `(batch -> RetrievalOutput, (post, author hashes) -> corpus [N, D])`."""
    graphdef, state = nnx.split(retriever)
    both = jax.jit(lambda st, b: nnx.merge(graphdef, st)(b))
    posts = jax.jit(lambda st, p, a: nnx.merge(graphdef, st).encode_posts(p, a))
    return (lambda b: both(state, b)), (lambda p, a: posts(state, p, a))


@pytest.fixture(scope="module")
def batch(cfg):
    return random_batch(cfg, B, C, seed=0, min_history=0, pad_candidates=1)


def test_tower_shapes(cfg, towers, batch):
    out = towers[0](batch)
    d = cfg.emb_size
    assert isinstance(out, RetrievalOutput)
    assert out.user_representation.shape == (B, d)
    assert out.user_norm.shape == (B, 1)
    assert out.candidate_representation.shape == (B, C, d)
    assert out.candidate_padding_mask.shape == (B, C)
    assert out.user_representation.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out.candidate_padding_mask), batch.candidate_post_hashes[:, :, 0] != 0)


def test_representations_have_unit_norm(towers, batch):
    out = towers[0](batch)
    user = np.asarray(out.user_representation, np.float64)
    np.testing.assert_allclose(np.linalg.norm(user, axis=-1), 1.0, atol=1e-5)
    assert (np.asarray(out.user_norm) > 0).all()
    cand = np.asarray(out.candidate_representation, np.float64)
    valid = np.asarray(out.candidate_padding_mask)
    np.testing.assert_allclose(np.linalg.norm(cand, axis=-1)[valid], 1.0, atol=1e-5)


def test_user_representation_depends_on_history(towers, batch):
    out = np.asarray(towers[0](batch).user_representation)
    assert np.abs(out[:, None] - out[None, :]).max() > 1e-3  # different users, different vectors


def test_user_tower_ignores_history_padding(towers, batch):
    """The same valid history in a longer, more padded block (S + 6) gives the same user vector."""

    def pad(x: np.ndarray) -> np.ndarray:
        return np.pad(x, [(0, 0), (0, 6)] + [(0, 0)] * (x.ndim - 2))

    longer = batch._replace(
        history_post_hashes=pad(batch.history_post_hashes),
        history_author_hashes=pad(batch.history_author_hashes),
        history_actions=pad(batch.history_actions),
        history_product_surface=pad(batch.history_product_surface),
    )
    np.testing.assert_allclose(
        np.asarray(towers[0](longer).user_representation), np.asarray(towers[0](batch).user_representation), atol=1e-5
    )


def test_corpus_encoding_matches_candidate_tower(towers, batch):
    out = towers[0](batch)
    n = B * C
    corpus = towers[1](batch.candidate_post_hashes.reshape(n, -1), batch.candidate_author_hashes.reshape(n, -1))
    assert corpus.shape == (n, out.candidate_representation.shape[-1])
    valid = np.asarray(out.candidate_padding_mask).reshape(n)
    np.testing.assert_allclose(
        np.asarray(corpus)[valid], np.asarray(out.candidate_representation).reshape(n, -1)[valid], atol=1e-5
    )


def test_model_top_k_equals_brute_force(cfg, towers, batch):
    """End to end: user tower against an encoded corpus, exact top-k vs NumPy."""
    rng = np.random.default_rng(1)
    n, k = 41, 6
    hc = cfg.hash_config
    posts = rng.integers(1, hc.item_vocab_size, (n, hc.num_item_hashes)).astype(np.int32)
    authors = rng.integers(1, hc.author_vocab_size, (n, hc.num_author_hashes)).astype(np.int32)
    corpus = np.asarray(towers[1](posts, authors))
    user = np.asarray(towers[0](batch).user_representation)
    idx, scores = retrieve_top_k(jnp.asarray(user), jnp.asarray(corpus), k)
    brute = user @ corpus.T
    np.testing.assert_array_equal(np.asarray(idx), np.argsort(-brute, axis=1)[:, :k])
    np.testing.assert_allclose(np.asarray(scores), np.sort(brute, axis=1)[:, ::-1][:, :k], atol=1e-5)


@given(
    seed=st.integers(0, 2**16),
    n=st.sampled_from([9, 64]),
    k=st.sampled_from([1, 5, 9]),
    exclude_p=st.sampled_from([0.0, 0.3, 0.8]),
)
@PROP
def test_top_k_matches_numpy_brute_force(seed, n, k, exclude_p):
    rng = np.random.default_rng(seed)
    d, b = 8, 3
    user = rng.normal(size=(b, d)).astype(np.float32)
    corpus = rng.normal(size=(n, d)).astype(np.float32)
    exclude = rng.random((b, n)) < exclude_p
    for row in exclude:  # leave at least k items per user
        allowed = np.flatnonzero(~row)
        if allowed.size < k:
            row[rng.choice(np.flatnonzero(row), k - allowed.size, replace=False)] = False
    idx, scores = retrieve_top_k(jnp.asarray(user), jnp.asarray(corpus), k, jnp.asarray(exclude))
    idx, scores = np.asarray(idx), np.asarray(scores)
    assert idx.shape == scores.shape == (b, k)
    assert ((idx >= 0) & (idx < n)).all()
    assert all(len(set(r)) == k for r in idx.tolist())
    assert (np.diff(scores, axis=1) <= 0).all()
    assert not np.take_along_axis(exclude, idx, axis=1).any()
    brute = np.where(exclude, -np.inf, user.astype(np.float64) @ corpus.T.astype(np.float64))
    np.testing.assert_array_equal(idx, np.argsort(-brute, axis=1, kind="stable")[:, :k])
    np.testing.assert_allclose(scores, np.take_along_axis(brute, idx, axis=1), atol=1e-5)


def test_top_k_returns_exactly_the_allowed_items():
    user = jnp.ones((2, 4))
    corpus = jnp.asarray(np.random.default_rng(0).normal(size=(10, 4)), jnp.float32)
    exclude = np.ones((2, 10), bool)
    exclude[0, [1, 7]] = False
    exclude[1, [0, 9]] = False
    idx, _ = retrieve_top_k(user, corpus, 2, jnp.asarray(exclude))
    assert sorted(np.asarray(idx)[0].tolist()) == [1, 7]
    assert sorted(np.asarray(idx)[1].tolist()) == [0, 9]


@pytest.mark.parametrize("k", [0, -1, 11])
def test_top_k_out_of_range(k):
    with pytest.raises(ValueError, match="top_k"):
        retrieve_top_k(jnp.ones((1, 4)), jnp.ones((10, 4)), k)


def test_exclude_mask_wrong_shape():
    with pytest.raises(ValueError, match="exclude_mask"):
        retrieve_top_k(jnp.ones((2, 4)), jnp.ones((10, 4)), 3, jnp.zeros((2, 9), bool))


def _sequence_towers(model):
    graphdef, state = nnx.split(model)
    user = jax.jit(lambda st, b: nnx.merge(graphdef, st).build_user_representation(b)[0])
    seq = jax.jit(lambda st, b: nnx.merge(graphdef, st).user_sequence_representations(b))
    return (lambda b: np.asarray(user(state, b))), (lambda b: tuple(map(np.asarray, seq(state, b))))


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_last_pooling_is_the_newest_valid_position(cfg, make_retriever, attention):
    """user_pooling "last" returns exactly the newest valid position's vector (the user token's when
    the history is empty), which is what every-position training optimises."""
    c = cfg.replace(history_attention=attention, user_pooling="last")
    user, seq = _sequence_towers(make_retriever(c))
    b = random_batch(c, 6, 1, seed=4, min_history=0)
    length = (b.history_post_hashes[:, :, 0] != 0).sum(axis=1)
    reps, mask = seq(b)
    np.testing.assert_allclose(user(b), reps[np.arange(6), length], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(reps, axis=-1), 1.0, atol=1e-5)
    empty = b._replace(history_post_hashes=np.zeros_like(b.history_post_hashes))
    np.testing.assert_allclose(user(empty), seq(empty)[0][:, 0], atol=1e-6)


def test_causal_positions_do_not_see_later_history(cfg, make_retriever):
    """With causal history attention the representation after item t depends on items <= t only:
    cutting the history after t, or replacing what follows it, leaves positions 0..t unchanged."""
    c = cfg.replace(history_attention="causal", user_pooling="last")
    _, seq = _sequence_towers(make_retriever(c))
    s = c.history_seq_len
    b = random_batch(c, 4, 1, seed=9, min_history=s)
    full, _ = seq(b)
    k = 5
    keep = (np.arange(s) < k)
    cut = b._replace(history_post_hashes=b.history_post_hashes * keep[None, :, None],
                     history_author_hashes=b.history_author_hashes * keep[None, :, None],
                     history_actions=b.history_actions * keep[None, :, None])
    other = random_batch(c, 4, 1, seed=10, min_history=s)
    swapped = b._replace(**{f: np.where(keep[None, :, None] if getattr(b, f).ndim == 3 else keep[None, :],
                                        getattr(b, f), getattr(other, f))
                            for f in ("history_post_hashes", "history_author_hashes", "history_actions",
                                      "history_product_surface")})
    np.testing.assert_allclose(seq(cut)[0][:, : k + 1], full[:, : k + 1], atol=2e-5)
    np.testing.assert_allclose(seq(swapped)[0][:, : k + 1], full[:, : k + 1], atol=2e-5)
    assert not np.allclose(seq(swapped)[0][:, k + 2 :], full[:, k + 2 :], atol=1e-3)
