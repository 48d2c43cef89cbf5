"""Shared tiny models and jitted forwards for the model tests, built once per session.

Building a model and compiling a forward cost about a second each on CPU, so tests (and every
hypothesis example in them) reuse them through these memoised factories, keyed by the config (a
frozen, hashable dataclass) and the init seed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.model import PhoenixModel, PhoenixModelConfig, PhoenixRetrievalModel
from phoenix_recsys.testing.fixtures import tiny_config

MODEL_SEED = 0


@functools.cache
def _ranker(cfg: PhoenixModelConfig, seed: int = MODEL_SEED) -> PhoenixModel:
    return PhoenixModel(cfg, rngs=nnx.Rngs(seed))


@functools.cache
def _retriever(cfg: PhoenixModelConfig, seed: int = MODEL_SEED) -> PhoenixRetrievalModel:
    return PhoenixRetrievalModel(cfg, rngs=nnx.Rngs(seed))


@functools.cache
def _forward(cfg: PhoenixModelConfig, seed: int = MODEL_SEED) -> Callable[[RecsysBatch], np.ndarray]:
    """`batch -> logits [B, C, A]` (float32 numpy) of `model(batch)`, jitted via split/merge."""
    graphdef, state = nnx.split(_ranker(cfg, seed))

    @jax.jit
    def fwd(state, batch: RecsysBatch) -> jax.Array:
        return nnx.merge(graphdef, state)(batch).logits.astype(jnp.float32)

    return lambda batch: np.asarray(fwd(state, batch))


@pytest.fixture(scope="session")
def cfg() -> PhoenixModelConfig:
    """The tiny fp32 configuration with our defaults (bidirectional, right-anchored)."""
    return tiny_config()


@pytest.fixture(scope="session")
def make_ranker() -> Callable[..., PhoenixModel]:
    """`make_ranker(cfg, seed=0)`: a memoised `PhoenixModel(cfg, rngs=nnx.Rngs(seed))`."""
    return _ranker


@pytest.fixture(scope="session")
def make_retriever() -> Callable[..., PhoenixRetrievalModel]:
    """`make_retriever(cfg, seed=0)`: a memoised `PhoenixRetrievalModel`."""
    return _retriever


@pytest.fixture(scope="session")
def make_forward() -> Callable[..., Callable[[RecsysBatch], np.ndarray]]:
    """`make_forward(cfg, seed=0)(batch)`: float32 logits of the jitted full forward."""
    return _forward
