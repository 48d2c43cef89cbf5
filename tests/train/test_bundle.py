"""Model bundles (train/bundle.py): round trip, and every inconsistency refused with a `BundleError`."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from flax import nnx

from phoenix_recsys.model.retrieval import PhoenixRetrievalModel
from phoenix_recsys.train.bundle import BUNDLE_FILE, BundleError, load_bundle, save_model
from phoenix_recsys.train.inference import encode_corpus, predict_ranker


@pytest.fixture
def bundle_copy(bundle_dir, tmp_path):
    """A private copy of the session bundle, free to damage."""
    out = tmp_path / "bundle"
    shutil.copytree(bundle_dir, out)
    return out


def _edit_meta(path, fn):
    meta = json.loads((path / BUNDLE_FILE).read_text())
    fn(meta)
    (path / BUNDLE_FILE).write_text(json.dumps(meta))


def test_round_trip_identical_outputs(bundle_dir, ranker_run, retriever_run, splits, retrieval_splits, world, model_cfg):
    b = load_bundle(bundle_dir)
    ex = splits.test.take(np.arange(50))
    np.testing.assert_array_equal(predict_ranker(b.ranker, ex), predict_ranker(ranker_run.model, ex))
    corpus = retrieval_splits.corpus
    np.testing.assert_array_equal(encode_corpus(b.retrieval, corpus), encode_corpus(retriever_run.model, corpus))
    assert b.config == model_cfg and b.dataset_hash == world.manifest["content_sha256"]
    assert b.meta["models"]["ranker"]["train_config"] == ranker_run.train_config.to_json()
    assert b.fingerprint().startswith("ranker:") and "|retrieval:" in b.fingerprint()
    only = load_bundle(bundle_dir, kinds=("ranker",))
    assert only.retrieval is None and only.ranker is not None and only.config == model_cfg


def test_replacing_one_model_keeps_the_other(bundle_copy, untrained):
    before = load_bundle(bundle_copy).meta
    save_model(bundle_copy, "ranker", untrained[0])
    after = load_bundle(bundle_copy).meta
    assert after["models"]["retrieval"] == before["models"]["retrieval"]
    assert after["models"]["ranker"]["checksum"] != before["models"]["ranker"]["checksum"]
    assert after["dataset"] == before["dataset"]


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json", "bundle.json is corrupt"),
        (json.dumps({"format": "something-else", "version": 1}), "not a phoenix-recsys bundle"),
        (json.dumps({"format": "phoenix-recsys-bundle", "version": 99}), "bundle version 99"),
    ],
)
def test_corrupt_bundle_json_is_refused(bundle_copy, content, message):
    (bundle_copy / BUNDLE_FILE).write_text(content)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


def test_checkpoint_config_differing_from_bundle_json_is_refused(bundle_copy):
    # same parameter shapes, another configuration
    _edit_meta(bundle_copy, lambda m: m["models"]["ranker"]["config"].update(embedding_init_std=0.07))
    with pytest.raises(BundleError, match="ranker checkpoint was saved with another config than bundle.json"):
        load_bundle(bundle_copy)


def test_bundle_json_config_with_other_shapes_or_invalid_is_refused(bundle_copy):
    _edit_meta(bundle_copy, lambda m: m["models"]["retrieval"]["config"]["hash_config"].update(item_vocab_size=1013))
    with pytest.raises(BundleError, match=r"retrieval checkpoint: .*shape"):
        load_bundle(bundle_copy)
    _edit_meta(bundle_copy, lambda m: m["models"]["ranker"].update(config={"bogus": 1}))
    with pytest.raises(BundleError, match="the ranker config is invalid"):
        load_bundle(bundle_copy)


def test_models_with_different_hash_configs_are_refused(bundle_copy, model_cfg, tmp_path):
    other_cfg = dataclasses.replace(model_cfg, hash_config=dataclasses.replace(model_cfg.hash_config, seed=11))
    other = PhoenixRetrievalModel(other_cfg, rngs=nnx.Rngs(0))
    # refused when saved next to the ranker ...
    with pytest.raises(BundleError, match="ranker uses another HashConfig"):
        save_model(bundle_copy, "retrieval", other)
    # ... and when a bundle is assembled by hand from two runs
    lone = tmp_path / "lone"
    save_model(lone, "retrieval", other)
    shutil.rmtree(bundle_copy / "retrieval")
    shutil.copytree(lone / "retrieval", bundle_copy / "retrieval")
    lone_info = json.loads((lone / BUNDLE_FILE).read_text())["models"]["retrieval"]
    _edit_meta(bundle_copy, lambda m: m["models"].update(retrieval=lone_info))
    with pytest.raises(BundleError, match="ranker and retrieval use different hash configs"):
        load_bundle(bundle_copy)
    assert load_bundle(bundle_copy, kinds=("retrieval",)).config.hash_config.seed == 11


def test_missing_model_dir_or_bundle_is_refused(bundle_copy, tmp_path):
    shutil.rmtree(bundle_copy / "ranker" / "model")
    with pytest.raises(BundleError, match=r"ranker checkpoint: no checkpoint at .*ranker/model"):
        load_bundle(bundle_copy)
    with pytest.raises(BundleError, match="no bundle directory"):
        load_bundle(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="bundle.json is missing"):
        load_bundle(tmp_path / "empty")
    _edit_meta(bundle_copy, lambda m: m.update(models={}))
    with pytest.raises(BundleError, match="holds none of the models"):
        load_bundle(bundle_copy)


def test_corrupt_model_checkpoint_is_refused(bundle_copy):
    f = max((p for p in (bundle_copy / "retrieval" / "model" / "state").rglob("*") if p.is_file()),
            key=lambda p: p.stat().st_size)
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(BundleError, match=r"retrieval checkpoint: .*does not match its checksum"):
        load_bundle(bundle_copy)


def test_save_refuses_another_dataset_and_bad_kind(bundle_copy, untrained):
    with pytest.raises(BundleError, match="trained on dataset"):
        save_model(bundle_copy, "ranker", untrained[0], dataset={"name": "elsewhere", "content_hash": "abc"})
    with pytest.raises(ValueError, match="kind must be one of"):
        save_model(bundle_copy, "reranker", untrained[0])
