"""`phoenix-recsys tune`: Optuna over the job file's search space, resumable from its study file."""

from __future__ import annotations

import json

import optuna
from typer.testing import CliRunner

from phoenix_recsys.cli.main import app
from phoenix_recsys.data.synth import SynthConfig, synthesize

JOB = {"model": {"model": {"emb_size": 8, "key_size": 4, "num_layers": 1, "num_q_heads": 2, "num_kv_heads": 1},
                 "emb_size": 8, "history_seq_len": 4, "candidate_seq_len": 4,
                 "hash_config": {"user_vocab_size": 101, "item_vocab_size": 211, "author_vocab_size": 31}},
       "train": {"batch_size": 16, "eval_every": 2, "patience": 0},
       "tune": {"kind": "ranker", "metric": "mean_auroc",
                "params": {"train.learning_rate": {"low": 1e-3, "high": 1e-1, "log": True},
                           "train.token_dropout": {"choices": [0.0, 0.1]}}}}


def test_tune_finds_best_and_resumes_the_same_study(tmp_path):
    world = synthesize(tmp_path / "w", SynthConfig(num_users=40, num_posts=40, seed=1))
    (tmp_path / "job.json").write_text(json.dumps(JOB))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["tune", "--data", str(world.path), "--out", str(tmp_path / "t"), "--config", str(tmp_path / "job.json"),
            "--steps", "2", "--study", storage, "--json"]
    r = CliRunner().invoke(app, [*args, "--trials", "2"])
    assert r.exit_code == 0, r.output
    first = json.loads(r.output)
    assert first["trials"] == 2 and first["metric"] == "mean_auroc"
    study = optuna.load_study(study_name="phoenix-tune", storage=storage)
    values = [t.value for t in study.trials]
    assert first["best_value"] == max(values)
    best = study.trials[first["best_trial"]]
    assert first["best_params"] == best.params
    assert first["best_config"]["train"]["learning_rate"] == best.params["train.learning_rate"]
    assert 1e-3 <= best.params["train.learning_rate"] <= 1e-1
    assert "tune" not in first["best_config"] and first["best_config"]["ranker"]["selection_metric"] == "mean_auroc"
    assert (tmp_path / "t" / f"trial_{first['best_trial']}" / "bundle.json").is_file()

    r = CliRunner().invoke(app, [*args, "--trials", "1"])  # resume: one more trial in the same study
    assert r.exit_code == 0, r.output
    again = json.loads(r.output)
    assert again["trials"] == 3
    assert len(optuna.load_study(study_name="phoenix-tune", storage=storage).trials) == 3
    assert again["best_value"] >= first["best_value"]


def test_tune_without_search_space_is_a_clean_error(tmp_path):
    (tmp_path / "job.json").write_text(json.dumps({"train": {"steps": 2}}))
    r = CliRunner().invoke(app, ["tune", "--data", str(tmp_path), "--out", str(tmp_path / "t"),
                                 "--config", str(tmp_path / "job.json")])
    assert r.exit_code == 1 and "no search space" in r.output
