"""Training loops (train/loop.py) on the tiny world: the loss falls, the models beat chance, settings
are validated."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import numpy as np
import pytest
from flax import nnx

from phoenix_recsys.actions import ActionKind, ActionVocabulary
from phoenix_recsys.model.config import PhoenixModelConfig
from phoenix_recsys.model.ranker import PhoenixModel
from phoenix_recsys.train import checkpoint as ckpt
from phoenix_recsys.train.inference import (
    embedding_scorer,
    encode_corpus,
    encode_users,
    predict_ranker,
    retrieval_eval,
)
from phoenix_recsys.train.loop import (
    TrainConfig,
    _batches,
    init_action_bias,
    ranker_validation,
    train_ranker,
    train_retrieval,
)
from phoenix_recsys.train.metrics import auroc

FAV = 0  # favorite is the first Phoenix action


def _fav_auroc(model, ex) -> float:
    probs = predict_ranker(model, ex)
    m = ex.candidate_mask
    return auroc(ex.labels[..., FAV][m], probs[..., FAV][m])


def test_ranker_loss_falls(ranker_run):
    hist = ranker_run.result.history
    assert [h["step"] for h in hist] == [30, 60, 90, 120]
    assert all(math.isfinite(h["loss"]) for h in hist)
    assert hist[-1]["loss"] < hist[0]["loss"] - 0.1  # means over steps 1-30 and 91-120


def test_ranker_beats_chance_on_val_and_test(ranker_run, splits):
    val_auc = _fav_auroc(ranker_run.model, splits.val)
    test_auc = _fav_auroc(ranker_run.model, splits.test)
    # ~55 positives each; a model that learned nothing sits at 0.5 +- 0.04, these reach ~0.7-0.9
    assert val_auc > 0.65 and test_auc > 0.65, (val_auc, test_auc)
    assert ranker_run.result.history[-1]["val"]["auroc/favorite"] > 0.65


def test_ranker_returns_its_best_validation_step(ranker_run, splits):
    res = ranker_run.result
    assert res.metric_name == "mean_auroc" and res.steps == 120 and not res.stopped_early
    by_step = {h["step"]: h["val"]["mean_auroc"] for h in res.history}
    assert res.best_metric == pytest.approx(max(by_step.values())) and by_step[res.best_step] == res.best_metric
    again = ranker_validation(predict_ranker(ranker_run.model, splits.val), splits.val)["mean_auroc"]
    assert again == pytest.approx(res.best_metric, abs=1e-6)


def test_ranker_run_writes_metrics_curves_and_checkpoints(ranker_run, model_cfg):
    run_dir = ranker_run.result.run_dir
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [30, 60, 90, 120]
    assert list(lines[0]["loss_per_action"]) == list(model_cfg.actions.names)
    assert {"loss", "grad_norm", "elapsed_s", "val"} <= set(lines[0])
    assert (run_dir / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    latest = ckpt.verify_checkpoint(run_dir / "checkpoints" / "latest")
    best = ckpt.verify_checkpoint(run_dir / "checkpoints" / "best")
    assert latest["step"] == 120 and best["step"] == ranker_run.result.best_step
    assert latest["identity"]["model"] == model_cfg.to_json()


def test_retriever_beats_random(retriever_run, retrieval_splits):
    r = retrieval_splits
    hist = retriever_run.result.history
    assert hist[-1]["loss"] < hist[0]["loss"]
    model = retriever_run.model
    got = retrieval_eval(embedding_scorer(encode_users(model, r.val.batch), encode_corpus(model, r.corpus)),
                         r.corpus.post_ids, r.val, ks=(10, 100))
    n = len(r.corpus.post_ids)
    rand = retrieval_eval(lambda a, b: np.zeros((b - a, n), np.float32), r.corpus.post_ids, r.val, ks=(10, 100))
    # ~125 queries over a 300-post corpus: random HR@100 ~0.35, the model ~0.7
    assert rand["hr@100"] == pytest.approx(100 / n, abs=0.05)
    assert got["hr@100"] > rand["hr@100"] + 0.15, (got, rand)
    assert got["ndcg@10"] > rand["ndcg@10"]
    assert got["hr@100"] == pytest.approx(retriever_run.result.best_metric, abs=1e-6)


def test_early_stopping_keeps_the_best_model(model_cfg, train_cfg, splits, tmp_path):
    # Validation labels inverted: the better the model learns, the worse it validates, so the first
    # evaluation is the best and training stops `patience` evaluations later, whatever the noise.
    val = splits.val
    binary = np.array(model_cfg.actions.binary_mask())
    flipped = np.where(binary & val.candidate_mask[..., None], 1.0 - val.labels, val.labels).astype(np.float32)
    val = dataclasses.replace(val, labels=flipped)
    # eval_every and patience do not enter the compiled step: this run reuses the session's compilation
    cfg = dataclasses.replace(train_cfg, eval_every=10, patience=2)
    model, res = train_ranker(model_cfg, cfg, splits.train, val, tmp_path, progress=False)
    assert res.stopped_early and res.steps == 30 and res.best_step == 10
    vals = [h["val"]["mean_auroc"] for h in res.history]
    assert vals[0] > vals[1] and vals[0] > vals[2] and res.best_metric == vals[0]
    again = ranker_validation(predict_ranker(model, val), val)["mean_auroc"]
    assert again == pytest.approx(res.best_metric, abs=1e-6)  # the best, not the last, parameters
    assert ckpt.verify_checkpoint(tmp_path / "checkpoints" / "latest")["step"] == 30


def test_init_action_bias_starts_at_base_rates(model_cfg, splits):
    model = PhoenixModel(model_cfg, rngs=nnx.Rngs(2))
    init_action_bias(model, splits.train)
    bias = np.asarray(model.action_bias.value)
    vals = splits.train.labels[splits.train.candidate_mask]
    for i, a in enumerate(model_cfg.actions):
        want = max(vals[:, i].mean(), 1e-5)
        got = jax.nn.sigmoid(bias[i]) if a.kind is ActionKind.BINARY else jax.nn.softplus(bias[i])
        assert float(got) == pytest.approx(want, rel=1e-3), a.name


def test_batches_resume_the_same_order():
    full = [b for b, _ in zip(_batches(10, 4, seed=3, start_step=0), range(7), strict=False)]
    assert all(len(b) == 4 for b in full)
    assert sorted(np.concatenate(full[:2]).tolist()) == sorted(set(np.concatenate(full[:2]).tolist()))
    resumed = [b for b, _ in zip(_batches(10, 4, seed=3, start_step=5), range(2), strict=False)]
    np.testing.assert_array_equal(np.stack(resumed), np.stack(full[5:7]))


def test_train_refuses_mismatched_actions_and_empty_splits(model_cfg, train_cfg, splits, retrieval_splits, tmp_path):
    other = ActionVocabulary.binary(["click", "favorite"])
    with pytest.raises(ValueError, match="differ from the training examples' actions"):
        train_ranker(PhoenixModelConfig.tiny(actions=other), train_cfg, splits.train, None, tmp_path, progress=False)
    with pytest.raises(ValueError, match="train split is empty"):
        train_ranker(model_cfg, train_cfg, splits.train.take([]), None, tmp_path, progress=False)
    r = retrieval_splits
    with pytest.raises(ValueError, match="no positive events"):
        train_retrieval(model_cfg, train_cfg, r.train.take([]), None, r.corpus, tmp_path, progress=False)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(steps=0), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(steps=None, epochs=None), "steps or epochs"),
        (dict(steps=None, epochs=-1.0), "epochs"),
        (dict(batch_size=0), "batch_size"),
        (dict(eval_every=0), "eval_every"),
        (dict(eval_max_examples=-3), "eval_max_examples"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(temperature=-0.1), "temperature"),
        (dict(grad_clip=0.0), "grad_clip"),
        (dict(warmup_steps=-1), "warmup_steps"),
        (dict(patience=-1), "patience"),
        (dict(weight_decay=-1e-3), "weight_decay"),
    ],
)
def test_train_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**kwargs)


def test_train_config_json_and_total_steps():
    cfg = TrainConfig(steps=None, epochs=2.5, batch_size=10, positive_actions=["favorite", "reply"])
    assert cfg.positive_actions == ("favorite", "reply")
    assert cfg.total_steps(101) == math.ceil(2.5 * 101 / 10)
    assert TrainConfig(steps=7).total_steps(10_000) == 7
    back = TrainConfig.from_json(json.loads(json.dumps(cfg.to_json())))
    assert back == cfg
    with pytest.raises(ValueError, match=r"unknown fields \['bogus'\]"):
        TrainConfig.from_json({"steps": 3, "bogus": 1})
