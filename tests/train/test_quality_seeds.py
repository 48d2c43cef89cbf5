"""Several seeds per quality job: each seed selected on validation with its curve and best step kept,
test read once per seed, mean ± sd over seeds for the model and the peers trained beside it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from phoenix_recsys.data.schema import load_dataset
from phoenix_recsys.train.quality import QualityJob, run_job
from tests.train.test_sequence_training import HASH, _cyclic_world


def _job(**kw):
    def make(out):
        _cyclic_world(out, users=60, posts=120, length=16)
        return load_dataset(out)

    cfg = {"model": {"model": {"emb_size": 16, "key_size": 8, "num_layers": 1, "num_q_heads": 2, "num_kv_heads": 1},
                     "hash_config": HASH.to_json(), "history_seq_len": 8, "history_attention": "causal",
                     "user_pooling": "last"},
           "train": {"batch_size": 16, "learning_rate": 1e-2, "warmup_steps": 5, "eval_every": 20, "patience": 0,
                     "selection_metric": "ndcg@10"},
           "retrieval": {"positive_actions": ["click"], "retrieval_objective": "every_position",
                         "negatives": "corpus", "history_ties": "sequence", "input_mode": "pure_id"}}
    base = dict(name="tiny", description="cyclic", make_data=make, kinds=("retrieval",), config=cfg, steps=40,
                protocol="loo", seeds=(0, 1), seen_rule="window", peers=("sasrec",),
                peer_config={"sasrec": {"dim": 16, "blocks": 1, "max_len": 8, "steps": 40, "eval_every": 20,
                                        "batch_size": 16}})
    return QualityJob(**{**base, **kw})


def test_seeds_keep_curves_best_steps_and_spread(tmp_path):
    from benchmarks.quality import table

    s = run_job(_job(), tmp_path / "work", progress=False)
    assert s["seeds"] == [0, 1] and s["seen_rule"] == "window" and len(s["seed_runs"]) == 2
    for run in s["seed_runs"]:
        m = run["models"]["retrieval"]
        assert m["selection_metric"] == "ndcg@10"
        assert [p["step"] for p in m["val_curve"]] == [20, 40]
        assert m["best_val"] == max(p["ndcg@10"] for p in m["val_curve"])
        assert m["best_step"] in (20, 40)
        sas = run["peers"]["sasrec"]
        assert [p["step"] for p in sas["val_curve"]] == [20, 40] and sas["best_step"] in (20, 40)
        assert "hr@10" in run["test"]["retrieval"]
    row = s["summary"]["retrieval"]["hr@10"]
    per = [r["test"]["retrieval"]["hr@10"]["model"] for r in s["seed_runs"]]
    assert row["model"] == pytest.approx(np.mean(per)) and row["model_sd"] == pytest.approx(np.std(per))
    assert "sasrec" in row and "popularity" in row and "popularity_sd" not in row
    on_disk = json.loads((tmp_path / "work" / "summary.json").read_text())
    assert on_disk["seed_runs"][1]["seed"] == 1
    md = table({"tiny": {**s, "machine": {"cores": 2}}})
    assert "seen rule window" in md and "sasrec" in md and " ± " in md


def test_quality_job_refuses_bad_options():
    with pytest.raises(ValueError, match="seen_rule"):
        _job(seen_rule="some")
    with pytest.raises(ValueError, match="unknown peers"):
        _job(peers=("knn",))
    with pytest.raises(ValueError, match="seeds"):
        _job(seeds=(1, 1))
