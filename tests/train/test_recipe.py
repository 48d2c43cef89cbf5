"""The sequential recipe: chosen automatically on ratings / interaction logs (and said so), overridable
by --config; its windowed, every-position training under leave-one-out never sees a validation or
test item as a target or in a history."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from phoenix_recsys.actions import ActionVocabulary
from phoenix_recsys.cli.main import app
from phoenix_recsys.data.examples import TRAIN, build_retrieval_examples, leave_one_out
from phoenix_recsys.data.schema import load_dataset, write_dataset
from phoenix_recsys.train.bundle import load_bundle
from phoenix_recsys.train.loop import sequence_targets
from phoenix_recsys.train.run import JobConfig, apply_recipe, resolve_recipe
from tests.train.test_sequence_training import HASH, _cyclic_world

runner = CliRunner()


def _tied_log(directory, users=30, length=23, seed=0, impressions=False):
    """Users rate distinct movies with coarse clocks (three ratings per second, as MovieLens does), so
    validation and test events share their timestamp with training events. With `impressions`, every
    third event is shown without any action (an impression log)."""
    rng = np.random.default_rng(seed)
    posts = rng.permuted(np.tile(np.arange(1, 101), (users, 1)), axis=1)[:, :length]
    n = users * length
    click = np.ones(n, bool)
    if impressions:
        click[::3] = False
    ev = {"user_id": np.repeat(np.arange(users), length), "post_id": posts.reshape(-1), "author_id": np.zeros(n),
          "timestamp": np.tile(np.arange(length) // 3, users) + 1000, "product_surface": np.zeros(n, np.int32),
          "click": click, "favorite": click & (rng.random(n) < 0.5)}
    pid = np.arange(1, 101)
    return write_dataset(directory, ev, {"post_id": pid, "author_id": np.zeros(100), "created_at": np.zeros(100)},
                         None, ActionVocabulary.binary(["click", "favorite"]), name="tied", source="test")


@pytest.mark.parametrize("stride", [None, 4])
def test_loo_training_never_sees_validation_or_test_items(tmp_path, stride):
    ds = _tied_log(tmp_path / "d")
    proto = leave_one_out()
    codes = proto.assign(ds)
    assert (codes != TRAIN).sum() == 2 * 30
    held = {(int(u), int(p)) for u, p in zip(ds.column("user_id")[codes != TRAIN], ds.column("post_id")[codes != TRAIN],
                                             strict=True)}
    # The recipe's example settings: every interaction a positive, one sequence per user (ties included).
    ex = build_retrieval_examples(ds, HASH, history_len=6, split="train", protocol=proto,
                                  positive_actions=("click", "favorite"), history_ties="sequence",
                                  window_stride=stride)
    assert len(ex) > 0
    assert (codes[ex.target_event_rows] == TRAIN).all()
    rows = ex.history_event_rows[ex.history_event_rows >= 0]
    assert rows.size and (codes[rows] == TRAIN).all()
    _, _, ids, valid = sequence_targets(ex, np.array([0, 1]))
    seen = {(int(ex.user_ids[i]), int(p)) for i, j in zip(*np.nonzero(valid), strict=True) for p in [ids[i, j]]}
    seen |= {(int(ex.user_ids[i]), int(ex.history_post_ids[i, j])) for i, j in zip(*np.nonzero(ex.history_post_ids >= 0),
                                                                                   strict=True)}
    assert seen and not seen & held
    # Every training positive is some window's target or an earlier position's target.
    assert len({pair for pair in seen}) == int((codes == TRAIN).sum())


def test_auto_recipe_follows_the_data(tmp_path):
    ratings = _tied_log(tmp_path / "r")
    shown = _tied_log(tmp_path / "s", impressions=True)
    assert resolve_recipe(ratings, "auto")[0] == "sequential" and "interaction" in resolve_recipe(ratings, "auto")[1]
    assert resolve_recipe(shown, "auto")[0] == "default"
    assert resolve_recipe(shown, "sequential") == ("sequential", "as requested (--recipe)")
    with pytest.raises(ValueError, match="recipe must be one of"):
        resolve_recipe(shown, "fast")
    cfg = apply_recipe(JobConfig({"history_seq_len": 12}, {}, {}, {"token_dropout": 0.1}), "sequential", ratings)
    assert cfg.model["history_seq_len"] == 12 and cfg.model["history_attention"] == "causal"
    assert cfg.retrieval["token_dropout"] == 0.1 and cfg.retrieval["retrieval_objective"] == "every_position"
    assert cfg.retrieval["positive_actions"] == ["click", "favorite"] and cfg.train["selection_metric"] == "ndcg@10"
    assert apply_recipe(cfg, "default", ratings) is cfg


def test_cli_train_states_the_recipe_and_trains_it(tmp_path):
    _cyclic_world(tmp_path / "data")
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"model": {"model": {"emb_size": 16, "key_size": 8, "num_layers": 1, "num_q_heads": 2,
                                                   "num_kv_heads": 1}, "emb_size": 16, "hash_config": HASH.to_json(),
                                         "history_seq_len": 12},
                               "train": {"eval_every": 10, "eval_max_examples": 50}}))
    r = runner.invoke(app, ["train", "retrieval", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "b"),
                            "--config", str(job), "--steps", "10", "--protocol", "loo", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "recipe: sequential (chosen automatically" in r.output
    b = load_bundle(tmp_path / "b")
    tc = b.train_config("retrieval")
    assert tc["retrieval_objective"] == "every_position" and tc["history_ties"] == "sequence"
    assert tc["selection_metric"] == "ndcg@10" and b.config.history_seq_len == 12
    assert load_dataset(tmp_path / "data").num_events == 80 * 24
