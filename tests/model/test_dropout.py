"""Training-only token dropout: off by default, seeded by its key, and never leaking into inference."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from phoenix_recsys.model.tokens import token_dropout
from phoenix_recsys.testing.fixtures import random_batch


def test_token_dropout_scales_kept_features_and_needs_a_key():
    x = np.ones((2, 50, 40), np.float32)
    y = np.asarray(token_dropout(x, 0.25, jax.random.key(0)))
    kept = y != 0
    assert 0.2 < 1 - kept.mean() < 0.3 and np.allclose(y[kept], 1 / 0.75)
    np.testing.assert_array_equal(np.asarray(token_dropout(x, 0.25, jax.random.key(0))), y)
    assert token_dropout(x, 0.0, None) is x
    with pytest.raises(ValueError, match="needs a PRNG key"):
        token_dropout(x, 0.1, None)


def test_models_drop_only_when_asked(cfg, make_ranker, make_retriever):
    b = random_batch(cfg, 3, seed=2, min_history=3)
    ranker, retriever = make_ranker(cfg), make_retriever(cfg)
    plain = np.asarray(ranker(b).logits)
    np.testing.assert_array_equal(np.asarray(ranker(b, dropout_rate=0.0).logits), plain)
    k = jax.random.key(3)
    dropped = np.asarray(ranker(b, dropout_rate=0.5, dropout_key=k).logits)
    assert not np.allclose(dropped, plain, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(ranker(b, dropout_rate=0.5, dropout_key=k).logits), dropped)
    u = np.asarray(retriever.build_user_representation(b)[0])
    ud = np.asarray(retriever.build_user_representation(b, dropout_rate=0.5, dropout_key=k)[0])
    assert not np.allclose(u, ud, atol=1e-4)
    np.testing.assert_allclose(np.asarray(retriever.build_user_representation(b)[0]), u, atol=0)
