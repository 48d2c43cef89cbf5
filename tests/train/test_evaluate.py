"""Evaluation (train/evaluate.py), reports, and the `train` / `evaluate` commands (through CliRunner)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from phoenix_recsys.actions import ActionKind, ActionVocabulary
from phoenix_recsys.cli.main import app
from phoenix_recsys.data.schema import write_dataset
from phoenix_recsys.train.bundle import load_bundle
from phoenix_recsys.train.evaluate import RETRIEVAL_KS, evaluate_bundle, write_report
from phoenix_recsys.train.inference import predict_ranker
from phoenix_recsys.train.loop import TrainConfig
from phoenix_recsys.train.metrics import auroc

runner = CliRunner()
RANKER_KEYS = {"auroc", "pr_auc", "logloss", "rce", "calibration", "positives", "count"}
# cut-offs up to the corpus size (300 posts): never @1000 over a smaller corpus
KS = [k for k in RETRIEVAL_KS if k <= 300]
RETRIEVAL_KEYS = {"queries", "mrr"} | {f"{m}@{k}" for m in ("hr", "recall", "ndcg") for k in KS}


@pytest.fixture(scope="module")
def evaluation(bundle_dir, world):
    return evaluate_bundle(load_bundle(bundle_dir), world, split="test")


def _check_ranker_section(sec, binary_names):
    assert list(sec) == binary_names  # continuous dwell_time has no AUROC
    for name, m in sec.items():
        assert set(m) == RANKER_KEYS, name
        assert isinstance(m["positives"], int) and isinstance(m["count"], int)
        for k in ("auroc", "pr_auc", "logloss", "rce", "calibration"):
            assert m[k] is None or isinstance(m[k], float), (name, k)


def test_report_shape(evaluation, world):
    report, _ = evaluation
    assert set(report) == {"protocol", "model", "baselines", "oracle"}
    assert set(report["baselines"]) == {"popularity", "base_rate"}
    assert {"split", "description", "dataset", "ranker", "retrieval"} <= set(report["protocol"])
    assert report["protocol"]["split"] == "test" and "full corpus of 300 posts" in report["protocol"]["retrieval"]
    binary = [a.name for a in world.actions if a.kind is ActionKind.BINARY]
    for sec in (report["model"], report["baselines"]["popularity"], report["baselines"]["base_rate"], report["oracle"]):
        _check_ranker_section(sec["ranker"], binary)
    for sec in (report["model"], report["baselines"]["popularity"], report["oracle"]):
        assert set(sec["retrieval"]) == RETRIEVAL_KEYS and {10, 100} <= set(KS)
        assert all(0.0 <= v <= 1.0 for k, v in sec["retrieval"].items() if k != "queries")
    assert "retrieval" not in report["baselines"]["base_rate"]
    json.dumps(report, allow_nan=False)  # strict JSON: NaN became null


def test_report_numbers_are_consistent(evaluation, ranker_run, splits):
    report, data = evaluation
    ex = splits.test  # same protocol, sizes and hashing as the bundle's
    assert data.ranking.candidate_mask.sum() == ex.candidate_mask.sum()
    m = ex.candidate_mask
    want = auroc(ex.labels[..., 0][m], predict_ranker(ranker_run.model, ex)[..., 0][m])
    fav = {name: sec["ranker"]["favorite"] for name, sec in
           [("model", report["model"]), ("oracle", report["oracle"]), *report["baselines"].items()]}
    assert fav["model"]["auroc"] == pytest.approx(want, abs=1e-9)
    assert fav["model"]["positives"] == int(ex.labels[..., 0][m].sum()) and fav["model"]["count"] == int(m.sum())
    # the true probabilities are the ceiling; the trained model is far above chance
    assert fav["oracle"]["auroc"] > 0.85 and fav["oracle"]["auroc"] > fav["model"]["auroc"] > 0.6
    ret = {name: sec["retrieval"] for name, sec in
           [("model", report["model"]), ("oracle", report["oracle"]), ("popularity", report["baselines"]["popularity"])]}
    assert ret["model"]["queries"] == ret["oracle"]["queries"] == ret["popularity"]["queries"] > 20
    for name in ret:  # random HR@100 is about 1/3 of this corpus
        assert ret[name]["hr@100"] > 0.45, name


def test_evaluate_caps_examples_and_refuses_bad_input(bundle_dir, world, tmp_path):
    b = load_bundle(bundle_dir)
    report, _ = evaluate_bundle(b, world, split="val", max_examples=12)
    assert report["model"]["retrieval"]["queries"] == 12
    assert report["model"]["ranker"]["favorite"]["count"] <= 12 * b.config.candidate_seq_len
    with pytest.raises(ValueError, match="split must be train, val or test"):
        evaluate_bundle(b, world, split="dev")
    other = write_dataset(
        tmp_path / "other",
        {"user_id": [0, 0, 1], "post_id": [1, 2, 1], "author_id": [5, 6, 5], "timestamp": [10, 20, 30],
         "product_surface": np.zeros(3, np.int32), "click": [True, False, True]},
        {"post_id": [1, 2], "author_id": [5, 6], "created_at": [0, 0]},
        None, ActionVocabulary.binary(["click"]), name="other", source="test",
    )  # fmt: skip
    with pytest.raises(ValueError, match="the bundle predicts actions .* but dataset 'other' records"):
        evaluate_bundle(b, other)


def test_write_report_files(evaluation, tmp_path):
    report, data = evaluation
    md = write_report(report, data, tmp_path / "rep")
    assert md == tmp_path / "rep" / "report.md"
    assert json.loads((tmp_path / "rep" / "eval.json").read_text()) == json.loads(json.dumps(report))
    assert (tmp_path / "rep" / "roc_calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    assert text.startswith(f"# Evaluation: {report['protocol']['dataset']} (test split)")
    for part in ("Protocol: time split", "## Ranker", "| favorite |", "## Retrieval (full corpus)", "| hr@10 |",
                 "model AUROC", "oracle AUROC", "popularity AUROC"):
        assert part in text, part


# -- CLI ------------------------------------------------------------------------------------


def _assert_clean_failure(result, message):
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split())  # Rich wraps long messages
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


def test_cli_evaluate_json_and_tables(bundle_dir, world, tmp_path):
    r = runner.invoke(app, ["evaluate", str(bundle_dir), "--data", str(world.path), "--json", "--max-examples", "40",
                            "--out", str(tmp_path / "j")])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert set(report) == {"protocol", "model", "baselines", "oracle"}
    assert report["model"]["retrieval"]["queries"] == 40 and "favorite" in report["model"]["ranker"]
    assert (tmp_path / "j" / "eval.json").is_file() and (tmp_path / "j" / "roc_calibration.png").is_file()
    r = runner.invoke(app, ["evaluate", str(bundle_dir), "--data", str(world.path), "--split", "val",
                            "--max-examples", "20", "--out", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    assert "ranker: AUROC per action" in r.output and "retrieval, full corpus" in r.output and "report:" in r.output


def test_cli_train_all_writes_a_loadable_bundle(world, job_config, ranker_run, splits, tmp_path):
    cfg = tmp_path / "job.json"
    cfg.write_text(json.dumps(job_config))
    out = tmp_path / "bundle"
    # The session's own settings and step count, so the run reuses the session's compilations and
    # must reproduce the library-trained ranker exactly (same data, config and seed).
    r = runner.invoke(app, ["train", "all", "--data", str(world.path), "--out", str(out), "--steps", "120",
                            "--config", str(cfg), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "trained into" in r.output
    b = load_bundle(out)
    assert b.ranker is not None and b.retrieval is not None
    assert b.config == ranker_run.model.config
    assert b.dataset_hash == world.manifest["content_sha256"]
    assert b.meta["dataset"]["split_protocol"] == "time"  # what `evaluate` defaults to for this bundle
    for kind in ("ranker", "retrieval"):
        info = b.meta["models"][kind]
        assert info["result"]["steps"] == 120 and info["train_config"]["steps"] == 120
        assert (out / kind / "metrics.jsonl").is_file() and (out / kind / "checkpoints" / "latest").is_dir()
    assert b.meta["models"]["retrieval"]["train_config"]["positive_actions"] == ["favorite", "click"]
    ex = splits.val.take(np.arange(30))
    np.testing.assert_allclose(predict_ranker(b.ranker, ex), predict_ranker(ranker_run.model, ex), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "config,extra,message",
    [
        (None, ["--data", "/nonexistent/dataset"], "not a dataset directory"),
        ("{not json", [], "is not valid JSON"),
        ('{"optimizer": {}}', [], "unknown sections ['optimizer']"),
        ('{"train": {"lr": 0.1}}', [], "unknown fields ['lr']"),
        ('{"model": {"actions": ["a"]}}', [], "remove model.actions"),
        ('{"retrieval": {"retrieval_objective": "every_position"}}', [], 'needs model.history_attention "causal"'),
        ('{"train": {"engagement_actions": ["like"]}}', [], "engagement action 'like' is not in dataset"),
        (None, ["--epochs", "1"], "give --steps or --epochs, not both"),
    ],
)
def test_cli_train_bad_input_exits_1_without_traceback(world, tmp_path, config, extra, message):
    args = ["train", "all", "--data", str(world.path), "--out", str(tmp_path / "b"), "--steps", "5", "--quiet"]
    if config is not None:
        (tmp_path / "c.json").write_text(config)
        args += ["--config", str(tmp_path / "c.json")]
    _assert_clean_failure(runner.invoke(app, args + extra), message)
    assert not (tmp_path / "b" / "bundle.json").exists()


def test_cli_missing_config_or_bundle_exits_1(world, tmp_path):
    r = runner.invoke(app, ["train", "ranker", "--data", str(world.path), "--out", str(tmp_path / "b"),
                            "--config", str(tmp_path / "absent.json"), "--quiet"])
    _assert_clean_failure(r, "does not exist")
    r = runner.invoke(app, ["evaluate", str(tmp_path / "nobundle"), "--data", str(world.path)])
    _assert_clean_failure(r, "no bundle directory")


def test_cli_retrieval_positive_action_must_exist(world, tmp_path):
    (tmp_path / "c.json").write_text('{"retrieval": {"positive_actions": ["like"]}}')
    r = runner.invoke(app, ["train", "retrieval", "--data", str(world.path), "--out", str(tmp_path / "b"),
                            "--config", str(tmp_path / "c.json"), "--quiet"])
    _assert_clean_failure(r, "retrieval positive action 'like' is not in dataset")


def test_engagement_actions_shape_history_in_training_and_evaluation(world, job_config, tmp_path):
    """A ranker trained with engagement_actions records them; evaluation rebuilds histories with them
    (and says so), instead of silently using the default rule."""
    from phoenix_recsys.train.run import JobConfig, train_job

    cfg = JobConfig(job_config["model"], {**job_config["train"], "engagement_actions": ["favorite"]}, {}, {})
    train_job(world.path, tmp_path / "b", ["ranker"], config=cfg, steps=5, progress=False)
    b = load_bundle(tmp_path / "b")
    assert b.train_config("ranker")["engagement_actions"] == ["favorite"] and b.train_config("retrieval") == {}
    report, data = evaluate_bundle(b, world, split="val", max_examples=30)
    assert "engagements (favorite)" in report["protocol"]["ranker"]
    rows = data.ranking.history_event_rows
    assert (world.column("favorite")[rows[rows >= 0]] > 0).all()
    with pytest.raises(ValueError, match="engagement_actions must be a non-empty list"):
        TrainConfig(engagement_actions=[])


def test_summarize_result_averages_seeds():
    from phoenix_recsys.train.quality import summarize_result

    def report(auc):
        return {"model": {"ranker": {"click": {"auroc": auc, "positives": 15}}},
                "baselines": {"base_rate": {"ranker": {"click": {"auroc": 0.8}}}}}

    one = summarize_result({"report": report(0.7)})
    assert one["ranker_auroc"]["click"] == {"model": 0.7, "positives": 15, "base_rate": 0.8}
    many = summarize_result({"report": report(0.7), "seed_reports": [report(0.7), report(0.9), report(0.8)]})
    row = many["ranker_auroc"]["click"]
    assert row["model"] == pytest.approx(0.8) and row["model_sd"] == pytest.approx(np.std([0.7, 0.9, 0.8]))
    assert row["model_per_seed"] == [0.7, 0.9, 0.8] and row["base_rate"] == 0.8
