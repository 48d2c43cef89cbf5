"""Fixtures of the learning-layer tests: one tiny synthetic world, a tiny model configuration, and a
ranker, a retriever and a bundle trained on it once per session.

Compiling a train step costs seconds on CPU and dominates these tests, so every training run here
uses the same model and optimiser settings (so the same HLO) and a session-local persistent
compilation cache lets later runs reuse earlier compilations.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import jax
import pytest
from flax import nnx
from jax.experimental.compilation_cache import compilation_cache

from phoenix_recsys.data.examples import (
    PostCorpus,
    RankingExamples,
    RetrievalExamples,
    TimeSplit,
    build_ranking_examples,
    build_retrieval_examples,
    post_corpus,
    split_by_time,
)
from phoenix_recsys.data.schema import Dataset
from phoenix_recsys.data.synth import SynthConfig, synthesize
from phoenix_recsys.hashing import HashConfig
from phoenix_recsys.model.config import PhoenixModelConfig, TransformerConfig
from phoenix_recsys.model.ranker import PhoenixModel
from phoenix_recsys.model.retrieval import PhoenixRetrievalModel
from phoenix_recsys.train.bundle import save_model
from phoenix_recsys.train.loop import TrainConfig, TrainResult, train_ranker, train_retrieval
from phoenix_recsys.train.run import default_model_config

# Post quality weighs heavily in this world, so a few dozen steps already learn a ranking signal
# (per-post embeddings) far above chance: the AUROC thresholds below stay robust across seeds.
WORLD = SynthConfig(num_users=300, num_posts=300, impressions_per_user=50, w_quality=2.0, seed=3)
HASH = dict(user_vocab_size=1009, item_vocab_size=2003, author_vocab_size=307)
TRANSFORMER = dict(emb_size=16, key_size=8, num_layers=1, num_q_heads=2, num_kv_heads=1)
MODEL = dict(emb_size=16, history_seq_len=8, candidate_seq_len=8)
TRAIN = dict(batch_size=32, learning_rate=1e-2, warmup_steps=5, eval_every=30, patience=0, seed=0)
STEPS = 120
RETRIEVAL_POSITIVES = ("favorite", "click")  # more targets than favorite alone: steadier HR@K


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache(tmp_path_factory):
    """Reuse identical XLA compilations across the session's training runs (a fresh cache per session)."""
    old = {k: jax.config.values[k] for k in (
        "jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes")}  # fmt: skip
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.reset_cache()
    yield
    for k, v in old.items():
        jax.config.update(k, v)
    compilation_cache.reset_cache()


class Splits(NamedTuple):
    protocol: TimeSplit
    train: RankingExamples
    val: RankingExamples
    test: RankingExamples


class RetrievalSplits(NamedTuple):
    train: RetrievalExamples
    val: RetrievalExamples
    corpus: PostCorpus


class Run(NamedTuple):
    model: Any
    result: TrainResult
    train_config: TrainConfig


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Dataset:
    """300 users x ~50 impressions over 300 posts (~15k events), quality-dominated; seed 3."""
    return synthesize(tmp_path_factory.mktemp("world"), WORLD)


@pytest.fixture(scope="session")
def model_cfg(world) -> PhoenixModelConfig:
    """D=16, one layer, S=8, C=8, small hash tables, over the world's 19 actions."""
    return default_model_config(world.actions, model=TransformerConfig(**TRANSFORMER), hash_config=HashConfig(**HASH),
                                **MODEL)


@pytest.fixture(scope="session")
def train_cfg() -> TrainConfig:
    """The ranker's optimisation settings (every ranker run here derives from it)."""
    return TrainConfig(steps=STEPS, **TRAIN)


@pytest.fixture(scope="session")
def job_config() -> dict[str, Any]:
    """The same settings as a `--config` JSON document for `train_job` / the CLI."""
    return {"model": {"model": TRANSFORMER, "hash_config": HASH, **MODEL}, "train": TRAIN,
            "retrieval": {"positive_actions": list(RETRIEVAL_POSITIVES)}}


@pytest.fixture(scope="session")
def splits(world, model_cfg) -> Splits:
    proto = split_by_time(world, 0.1, 0.1)
    kw = dict(history_len=model_cfg.history_seq_len, max_candidates=model_cfg.candidate_seq_len, protocol=proto)
    hc = model_cfg.hash_config
    return Splits(proto, *(build_ranking_examples(world, hc, split=s, **kw) for s in ("train", "val", "test")))


@pytest.fixture(scope="session")
def retrieval_splits(world, model_cfg, splits) -> RetrievalSplits:
    kw = dict(history_len=model_cfg.history_seq_len, protocol=splits.protocol, positive_actions=RETRIEVAL_POSITIVES)
    hc = model_cfg.hash_config
    return RetrievalSplits(build_retrieval_examples(world, hc, split="train", **kw),
                           build_retrieval_examples(world, hc, split="val", **kw), post_corpus(world, hc))


@pytest.fixture(scope="session")
def ranker_run(model_cfg, train_cfg, splits, tmp_path_factory) -> Run:
    """A ranker trained for 120 steps with validation every 30 (best checkpoint restored)."""
    run_dir = tmp_path_factory.mktemp("ranker_run")
    model, result = train_ranker(model_cfg, train_cfg, splits.train, splits.val, run_dir, progress=False)
    return Run(model, result, train_cfg)


@pytest.fixture(scope="session")
def retriever_run(model_cfg, train_cfg, retrieval_splits, tmp_path_factory) -> Run:
    """A two-tower retriever trained for 120 steps on favorite/click targets."""
    cfg = dataclasses.replace(train_cfg, positive_actions=RETRIEVAL_POSITIVES)
    r = retrieval_splits
    run_dir = tmp_path_factory.mktemp("retriever_run")
    model, result = train_retrieval(model_cfg, cfg, r.train, r.val, r.corpus, run_dir, progress=False)
    return Run(model, result, cfg)


@pytest.fixture(scope="session")
def bundle_dir(world, ranker_run, retriever_run, tmp_path_factory) -> Path:
    """A bundle holding both trained models (tests that damage it work on a copy)."""
    out = tmp_path_factory.mktemp("bundle")
    info = {"name": world.name, "content_hash": world.manifest["content_sha256"]}
    for kind, run in (("ranker", ranker_run), ("retrieval", retriever_run)):
        save_model(out, kind, run.model, dataset=info, train_config=run.train_config.to_json(),
                   result={"steps": run.result.steps})
    return out


@pytest.fixture(scope="session")
def untrained(model_cfg) -> tuple[PhoenixModel, PhoenixRetrievalModel]:
    """Fresh models of the session configuration (seed 1), for cases where training does not matter."""
    return PhoenixModel(model_cfg, rngs=nnx.Rngs(1)), PhoenixRetrievalModel(model_cfg, rngs=nnx.Rngs(1))
