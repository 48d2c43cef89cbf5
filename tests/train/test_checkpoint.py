"""Checkpoints (train/checkpoint.py) and resuming (train/loop.py): round trips, resume, refusals."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from flax import nnx

from phoenix_recsys.model.ranker import PhoenixModel
from phoenix_recsys.train import checkpoint as ckpt
from phoenix_recsys.train.checkpoint import CheckpointError
from phoenix_recsys.train.inference import predict_ranker
from phoenix_recsys.train.loop import train_ranker


def _state_files(root):
    return sorted(p for p in (root / "state").rglob("*") if p.is_file())


@pytest.fixture
def small_ckpt(tmp_path):
    """A checkpoint of a little nested pytree (int-like keys as nnx.List produces) and its target."""
    state = {"w": np.arange(600, dtype=np.float32).reshape(20, 30), "layers": {0: {"b": np.ones(7, np.float32)}}}
    path = ckpt.save_checkpoint(tmp_path / "ck", state, {"step": 3, "note": np.int64(5)})
    return path, state


def test_model_round_trip_gives_identical_predictions(ranker_run, model_cfg, splits, tmp_path):
    trained = ranker_run.model
    path = ckpt.save_checkpoint(tmp_path / "m", ckpt.model_state(trained), {"step": 120, "config": model_cfg.to_json()})
    fresh = PhoenixModel(model_cfg, rngs=nnx.Rngs(7))
    ex = splits.val.take(np.arange(40))
    assert not np.array_equal(predict_ranker(fresh, ex), predict_ranker(trained, ex))
    pure, meta = ckpt.load_checkpoint(path, ckpt.model_state(fresh))
    ckpt.restore_model(fresh, pure)
    np.testing.assert_array_equal(predict_ranker(fresh, ex), predict_ranker(trained, ex))
    assert meta == {"step": 120, "config": model_cfg.to_json()}


def test_small_round_trip_and_atomic_overwrite(small_ckpt):
    path, state = small_ckpt
    restored, meta = ckpt.load_checkpoint(path, state)
    np.testing.assert_array_equal(restored["w"], state["w"])
    np.testing.assert_array_equal(restored["layers"][0]["b"], state["layers"][0]["b"])
    assert meta == {"step": 3, "note": 5}
    newer = {"w": state["w"] + 1, "layers": {0: {"b": state["layers"][0]["b"] * 2}}}
    ckpt.save_checkpoint(path, newer, {"step": 4})
    restored, meta = ckpt.load_checkpoint(path, state)
    np.testing.assert_array_equal(restored["w"], newer["w"])
    assert meta["step"] == 4
    assert sorted(p.name for p in path.parent.iterdir()) == ["ck"]  # no .tmp / .old left behind


def _flip_bytes(root):
    f = max(_state_files(root), key=lambda p: p.stat().st_size)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))


def _truncate(root):
    f = max(_state_files(root), key=lambda p: p.stat().st_size)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _delete_manifest(root):
    (root / ckpt.CHECKSUMS).unlink()


def _garble_manifest(root):
    (root / ckpt.CHECKSUMS).write_text("{not json")


def _delete_state_file(root):
    _state_files(root)[0].unlink()


def _edit_meta(root):
    (root / "meta.json").write_text(json.dumps({"step": 999}))


@pytest.mark.parametrize(
    "damage,message",
    [
        (_flip_bytes, "does not match its checksum"),
        (_truncate, "does not match its checksum"),
        (_delete_manifest, "CHECKSUMS.json is missing"),
        (_garble_manifest, "CHECKSUMS.json is corrupt"),
        (_delete_state_file, "missing files"),
        (_edit_meta, "meta.json does not match its checksum"),
    ],
)
def test_damaged_checkpoint_is_refused(small_ckpt, damage, message):
    path, state = small_ckpt
    damage(path)
    with pytest.raises(CheckpointError, match=message) as e:
        ckpt.load_checkpoint(path, state)
    assert str(path) in str(e.value)  # the message names the checkpoint


def test_checkpoint_not_matching_the_model_is_refused(small_ckpt, tmp_path):
    path, state = small_ckpt
    with pytest.raises(CheckpointError, match=r"shape \(20, 30\) where the model expects \(30, 20\)"):
        ckpt.load_checkpoint(path, {"w": np.zeros((30, 20), np.float32), "layers": state["layers"]})
    with pytest.raises(CheckpointError, match="parameter structure"):
        ckpt.load_checkpoint(path, {"w": state["w"]})
    with pytest.raises(CheckpointError, match="parameter structure"):
        ckpt.load_checkpoint(path, {**state, "extra": np.zeros(2)})
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        ckpt.load_checkpoint(tmp_path / "nowhere", state)


def _metrics_steps(run_dir):
    return [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_continues_the_step_count(model_cfg, train_cfg, splits, tmp_path):
    run_dir = tmp_path / "run"
    half = dataclasses.replace(train_cfg, steps=train_cfg.steps // 2)
    first, res = train_ranker(model_cfg, half, splits.train, None, run_dir, progress=False)
    assert res.steps == 60 and _metrics_steps(run_dir) == [30, 60]
    ex = splits.val.take(np.arange(40))

    # resuming at the step already reached runs nothing and restores the parameters exactly
    same, res = train_ranker(model_cfg, half, splits.train, None, run_dir, resume=True, progress=False)
    assert res.steps == 60 and _metrics_steps(run_dir) == [30, 60]
    np.testing.assert_array_equal(predict_ranker(same, ex), predict_ranker(first, ex))

    # a different setting is refused before anything is overwritten
    for cfg, tcfg in [
        (model_cfg, dataclasses.replace(train_cfg, learning_rate=5e-3)),
        (model_cfg, dataclasses.replace(train_cfg, seed=1)),
        (dataclasses.replace(model_cfg, embedding_init_std=0.07), train_cfg),
    ]:
        with pytest.raises(ValueError, match="cannot resume from .*another configuration"):
            train_ranker(cfg, tcfg, splits.train, None, run_dir, resume=True, progress=False)
    assert _metrics_steps(run_dir) == [30, 60]

    # steps (and eval_every / patience) may change: 60 -> 120 continues at 61
    resumed, res = train_ranker(model_cfg, train_cfg, splits.train, None, run_dir, resume=True, progress=False)
    assert res.steps == 120 and [h["step"] for h in res.history] == [30, 60, 90, 120]
    assert _metrics_steps(run_dir) == [30, 60, 90, 120]
    assert ckpt.verify_checkpoint(run_dir / "checkpoints" / "latest")["step"] == 120
    assert not np.array_equal(predict_ranker(resumed, ex), predict_ranker(first, ex))


def test_resume_refuses_missing_or_corrupt_latest(model_cfg, train_cfg, splits, ranker_run, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*latest"):
        train_ranker(model_cfg, train_cfg, splits.train, None, tmp_path / "empty", resume=True, progress=False)
    run_dir = tmp_path / "copy"
    shutil.copytree(ranker_run.result.run_dir, run_dir)
    _flip_bytes(run_dir / "checkpoints" / "latest")
    with pytest.raises(CheckpointError, match=r"checkpoint .*latest is corrupt"):
        train_ranker(model_cfg, train_cfg, splits.train, None, run_dir, resume=True, progress=False)

