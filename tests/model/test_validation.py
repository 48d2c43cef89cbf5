"""Bad input -> `ValueError` naming the field, before any JAX error, on every public path."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from phoenix_recsys.actions import ActionVocabulary
from phoenix_recsys.hashing import HashConfig
from phoenix_recsys.model import CachedRanker, RecsysEmbeddings, validate_batch
from phoenix_recsys.testing.fixtures import random_batch

B, C = 2, 7


@pytest.fixture(scope="module")
def good(cfg):
    return random_batch(cfg, B, C, seed=0, min_history=2)


@pytest.fixture(scope="module")
def ranker(cfg, make_ranker):
    return make_ranker(cfg)


@pytest.fixture(scope="module")
def cached(ranker):
    return CachedRanker(ranker, chunk_size=8)


@pytest.fixture(scope="module")
def embeddings(ranker, good):
    return ranker.embed(good)


def _grow(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """`x` with one more slot (zeros) on `axis`."""
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, 1)
    return np.pad(x, widths)


# (field, how to break it). Each break leaves B, S and C (read from user_hashes, history_post_hashes
# and candidate_post_hashes) intact unless that field is the one broken.
SHAPE_BREAKS = {
    "user_hashes": lambda b: _grow(b.user_hashes),
    "history_post_hashes": lambda b: _grow(b.history_post_hashes),
    "history_author_hashes": lambda b: _grow(b.history_author_hashes),
    "history_actions": lambda b: _grow(b.history_actions),
    "history_product_surface": lambda b: _grow(b.history_product_surface),
    "candidate_post_hashes": lambda b: _grow(b.candidate_post_hashes),
    "candidate_author_hashes": lambda b: _grow(b.candidate_author_hashes),
    "candidate_product_surface": lambda b: _grow(b.candidate_product_surface),
    "history_continuous_actions": lambda b: np.zeros((B, b.history_len, 3), np.float32),
    "candidate_impr_ts": lambda b: np.zeros((B, C + 1), np.int64),
    "candidate_post_creation_ts": lambda b: np.zeros((B,), np.int64),
}
# Same field, wrong batch or sequence axis / rank.
OTHER_SHAPE_BREAKS = [
    ("user_hashes", lambda b: b.user_hashes[0]),
    ("history_author_hashes", lambda b: b.history_author_hashes[:1]),
    ("history_actions", lambda b: b.history_actions[:, :-1]),
    ("candidate_author_hashes", lambda b: b.candidate_author_hashes[:, :-1]),
    ("candidate_product_surface", lambda b: b.candidate_product_surface[:1]),
    ("history_post_hashes", lambda b: b.history_post_hashes[:, :, 0]),
    ("candidate_post_hashes", lambda b: b.candidate_post_hashes[..., None]),
]
ALL_SHAPE_BREAKS = list(SHAPE_BREAKS.items()) + OTHER_SHAPE_BREAKS
ID_FIELDS = [
    "user_hashes",
    "history_post_hashes",
    "history_author_hashes",
    "candidate_post_hashes",
    "candidate_author_hashes",
    "history_product_surface",
    "candidate_product_surface",
]


def _vocab(cfg, field: str) -> int:
    hc = cfg.hash_config
    if "surface" in field:
        return cfg.product_surface_vocab_size
    if field == "user_hashes":
        return hc.user_vocab_size
    return hc.author_vocab_size if "author" in field else hc.item_vocab_size


def _set(batch, field: str, value: int):
    x = np.array(getattr(batch, field))
    x.reshape(-1)[3] = value
    return batch._replace(**{field: x})


# -- shapes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "brk"), ALL_SHAPE_BREAKS, ids=[f for f, _ in ALL_SHAPE_BREAKS])
def test_validate_batch_names_bad_shape(cfg, good, field, brk):
    with pytest.raises(ValueError, match=field):
        validate_batch(good._replace(**{field: brk(good)}), cfg)


@pytest.mark.parametrize(("field", "brk"), SHAPE_BREAKS.items(), ids=list(SHAPE_BREAKS))
def test_model_call_names_bad_shape(ranker, good, field, brk):
    with pytest.raises(ValueError, match=field):
        ranker(good._replace(**{field: brk(good)}))


@pytest.mark.parametrize(("field", "brk"), SHAPE_BREAKS.items(), ids=list(SHAPE_BREAKS))
def test_jitted_forward_names_bad_shape(cfg, make_forward, good, field, brk):
    """Under jit the check runs at trace time: still our ValueError, not an XLA shape error."""
    with pytest.raises(ValueError, match=field):
        make_forward(cfg)(good._replace(**{field: brk(good)}))


@pytest.mark.parametrize(("field", "brk"), SHAPE_BREAKS.items(), ids=list(SHAPE_BREAKS))
def test_cached_score_names_bad_shape(cached, good, field, brk):
    with pytest.raises(ValueError, match=field):
        cached.score(good._replace(**{field: brk(good)}))


@pytest.mark.parametrize("field", ["user_hashes", "history_actions", "candidate_author_hashes"])
def test_retrieval_call_names_bad_shape(cfg, make_retriever, good, field):
    with pytest.raises(ValueError, match=field):
        make_retriever(cfg)(good._replace(**{field: SHAPE_BREAKS[field](good)}))


# -- id ranges and NaNs ---------------------------------------------------------------------------
@pytest.mark.parametrize("field", ID_FIELDS)
@pytest.mark.parametrize("where", ["negative", "too_large"])
def test_validate_batch_names_bad_id(cfg, good, field, where):
    value = -1 if where == "negative" else _vocab(cfg, field)
    bad = _set(good, field, value)
    with pytest.raises(ValueError, match=field):
        validate_batch(bad, cfg)


@pytest.mark.parametrize("field", ["history_post_hashes", "candidate_author_hashes", "candidate_product_surface"])
@pytest.mark.parametrize("where", ["negative", "too_large"])
def test_cached_score_names_bad_id(cfg, cached, good, field, where):
    value = -1 if where == "negative" else _vocab(cfg, field)
    with pytest.raises(ValueError, match=field):
        cached.score(_set(good, field, value))


@pytest.mark.parametrize(("field", "where"), [("user_hashes", "negative"), ("candidate_post_hashes", "too_large")])
def test_model_call_names_bad_id(cfg, ranker, good, field, where):
    """Eager `model(batch)` must not silently gather a wrapped (negative) or NaN (past-the-end) row."""
    value = -1 if where == "negative" else _vocab(cfg, field)
    with pytest.raises(ValueError, match=field):
        ranker(_set(good, field, value))


def test_nan_history_actions(cfg, good):
    acts = good.history_actions.copy()
    acts[1, 0, 2] = np.nan
    with pytest.raises(ValueError, match="history_actions"):
        validate_batch(good._replace(history_actions=acts), cfg)


@pytest.mark.parametrize("field", [f for f in RecsysEmbeddings._fields if f != "user_ip_embeddings"])
def test_validate_batch_names_nan_embedding(cfg, good, embeddings, field):
    e = np.array(getattr(embeddings, field))
    e.reshape(-1)[5] = np.nan
    with pytest.raises(ValueError, match=field):
        validate_batch(good, cfg, embeddings._replace(**{field: jnp.asarray(e)}))


def test_model_call_names_nan_embedding(ranker, good, embeddings):
    e = np.array(embeddings.candidate_post_embeddings)
    e[0, 1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="candidate_post_embeddings"):
        ranker(good, embeddings._replace(candidate_post_embeddings=jnp.asarray(e)))


# -- empty and mismatched inputs ------------------------------------------------------------------
def _empty_candidates(batch):
    return batch.with_candidates(
        batch.candidate_post_hashes[:, :0], batch.candidate_author_hashes[:, :0], batch.candidate_product_surface[:, :0]
    )


def test_empty_candidate_list(cfg, ranker, cached, good):
    empty = _empty_candidates(good)
    for call in (lambda: validate_batch(empty, cfg), lambda: ranker(empty), lambda: cached.score(empty)):
        with pytest.raises(ValueError, match="candidate_post_hashes"):
            call()


def test_empty_batch_and_wrong_type(cfg, good):
    with pytest.raises(ValueError, match="user_hashes"):
        validate_batch(random_batch(cfg, 0, C), cfg)
    with pytest.raises(ValueError, match="RecsysBatch"):
        validate_batch(tuple(good), cfg)


MISMATCHED = {
    "history_post_hashes": lambda cfg: cfg.replace(
        hash_config=HashConfig(**{**cfg.hash_config.to_json(), "num_item_hashes": 3})
    ),
    "user_hashes": lambda cfg: cfg.replace(hash_config=HashConfig(**{**cfg.hash_config.to_json(), "num_user_hashes": 1})),
    "history_author_hashes": lambda cfg: cfg.replace(
        hash_config=HashConfig(**{**cfg.hash_config.to_json(), "num_author_hashes": 4})
    ),
    "history_actions": lambda cfg: cfg.replace(actions=ActionVocabulary.binary(["like", "reply", "share"])),
}


@pytest.mark.parametrize("field", list(MISMATCHED))
def test_batch_built_for_another_config(cfg, ranker, cached, field):
    other = random_batch(MISMATCHED[field](cfg), B, C, seed=1)
    for call in (lambda: validate_batch(other, cfg), lambda: ranker(other), lambda: cached.score(other)):
        with pytest.raises(ValueError, match=field):
            call()


def test_batch_built_for_larger_tables(cfg, cached):
    big = HashConfig(**{**cfg.hash_config.to_json(), "item_vocab_size": 50_021})
    other = random_batch(cfg.replace(hash_config=big), B, 40, seed=2, min_history=cfg.history_seq_len)
    with pytest.raises(ValueError, match="post_hashes"):
        validate_batch(other, cfg)
    with pytest.raises(ValueError, match="post_hashes"):
        cached.score(other)


def test_embeddings_of_another_width(cfg, ranker, good, embeddings):
    narrow = RecsysEmbeddings(*(None if e is None else jnp.asarray(e)[..., :16] for e in embeddings))
    with pytest.raises(ValueError, match="user_embeddings"):
        validate_batch(good, cfg, narrow)
    with pytest.raises(ValueError, match="user_embeddings"):
        ranker(good, narrow)


def test_good_batch_passes(cfg, good, embeddings):
    validate_batch(good, cfg)
    validate_batch(good, cfg, embeddings)
