"""Fixtures of the feed-service tests: a tiny synthetic world, a tiny untrained bundle, fresh stores.

The world, the bundle and the `ModelRuntime` (which holds the compiled programs) are built once
per session; every test gets its own SQLite file and index directory, so no test sees another's
writes. Behaviour tests need no training: a freshly initialised model already varies with its
inputs (SPEC 4), which is all the pipeline's plumbing needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import pytest
from flax import nnx
from jax.experimental.compilation_cache import compilation_cache

from phoenix_recsys.data.schema import Dataset
from phoenix_recsys.data.synth import SynthConfig, synthesize
from phoenix_recsys.model import PhoenixModel, PhoenixModelConfig, PhoenixRetrievalModel
from phoenix_recsys.serve.pipeline import FeedService, ModelRuntime
from phoenix_recsys.serve.settings import ServeSettings
from phoenix_recsys.train.bundle import save_model

API_KEY = "test-key-0123456789abcdef"
WORLD = SynthConfig(num_users=40, num_posts=300, impressions_per_user=15, seed=0)
_CACHE_KEYS = (
    "jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs", "jax_persistent_cache_min_entry_size_bytes",
)  # fmt: skip


@pytest.fixture(scope="session", autouse=True)
def jax_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A persistent XLA cache for this session, shared with the server subprocesses.

    CPU compiles of the scoring programs take seconds each; the in-process tests compile them
    once and the `serve` subprocesses (same bundle, same shapes) load them from here instead.
    """
    d = tmp_path_factory.mktemp("serve_jax_cache")
    old = {k: jax.config.values[k] for k in _CACHE_KEYS}
    jax.config.update("jax_compilation_cache_dir", str(d))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.reset_cache()
    yield d
    for k, v in old.items():
        jax.config.update(k, v)
    compilation_cache.reset_cache()


@pytest.fixture(scope="session")
def api_key() -> str:
    """The bearer key of the test services."""
    return API_KEY


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """40 users, 300 posts, ~15 impressions each; seed 0."""
    return synthesize(tmp_path_factory.mktemp("serve_world"), WORLD)


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory, world: Dataset) -> Path:
    """A bundle of a fresh tiny ranker (seed 0) and retriever (seed 1) on the world's actions."""
    d = tmp_path_factory.mktemp("serve_bundle")
    # The in-network candidate feature is on, as in the trained default (`train.run`).
    cfg = PhoenixModelConfig.tiny(actions=world.actions, in_network_feature=True)
    dataset = {"name": world.name, "content_hash": world.manifest.get("content_sha256")}
    save_model(d, "ranker", PhoenixModel(cfg, rngs=nnx.Rngs(0)), dataset=dataset)
    save_model(d, "retrieval", PhoenixRetrievalModel(cfg, rngs=nnx.Rngs(1)), dataset=dataset)
    return d


@pytest.fixture(scope="session")
def runtime(bundle_dir: Path) -> ModelRuntime:
    """The bundle's models with their jitted programs, shared so each compiles once per session."""
    return ModelRuntime.load(bundle_dir)


def make_settings(tmp_path: Path, **overrides: Any) -> ServeSettings:
    """Test settings: a key, public reads (access tests turn them off), no warm-up, store and index under `tmp_path`."""
    base: dict[str, Any] = {
        "api_key": API_KEY,
        "public_reads": True,
        "warmup": False,
        "store_path": tmp_path / "store.sqlite",
        "index_dir": tmp_path / "index",
    }
    base.update(overrides)
    return ServeSettings(**base)


def open_service(runtime: ModelRuntime, world: Dataset, tmp_path: Path, **overrides: Any) -> FeedService:
    """A service on a fresh store under `tmp_path`, seeded from the world."""
    return FeedService.open(runtime, settings=make_settings(tmp_path, **overrides), data_dir=world.path)


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., ServeSettings]:
    """`settings_factory(**overrides)`: test settings under this test's `tmp_path`."""
    return lambda **kw: make_settings(tmp_path, **kw)


@pytest.fixture
def service_factory(runtime: ModelRuntime, world: Dataset, tmp_path: Path) -> Iterator[Callable[..., FeedService]]:
    """`service_factory(**overrides)`: a seeded service on this test's store; closed after the test."""
    opened: list[FeedService] = []

    def make(**overrides: Any) -> FeedService:
        svc = open_service(runtime, world, tmp_path, **overrides)
        opened.append(svc)
        return svc

    yield make
    for svc in opened:
        svc.close()


@pytest.fixture
def service(service_factory: Callable[..., FeedService]) -> FeedService:
    """A service on a fresh store (one SQLite file per test)."""
    return service_factory()
