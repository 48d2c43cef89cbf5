"""Several seeds per quality job: each seed selected on validation with its curve and best step kept,
test read once per seed, mean ± sd over seeds for the model and the peers trained beside it."""

from __future__ import annotations

import dataclasses
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


def _structure(x):
    """The shape of a JSON document: dict keys and list lengths, values replaced by their type."""
    if isinstance(x, dict):
        return {k: _structure(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_structure(v) for v in x]
    return type(x).__name__


def test_stopped_job_resumes_without_retraining_finished_seeds(tmp_path, monkeypatch):
    """Stop after seed 0 (and again after seed 1's training): the rerun reads seed 0 back, continues seed 1
    without training it again, and writes a file of the same structure and figures as a from-scratch run."""
    import phoenix_recsys.train.quality as q

    calls = []
    real_train = q.train_job
    monkeypatch.setattr(q, "train_job", lambda *a, **kw: calls.append(kw["config"].train.get("seed")) or real_train(*a, **kw))
    job = _job()
    fresh = run_job(job, tmp_path / "fresh", progress=False)
    assert calls == [0, 1]

    def stop(after):
        def hook(seed, stage):
            if (seed, stage) == after:
                raise q.JobStopped(f"stopped after seed {seed} {stage}")
        return hook

    calls.clear()
    work = tmp_path / "work"
    with pytest.raises(q.JobStopped):
        run_job(job, work, progress=False, stop_hook=stop((0, "peer:sasrec")))
    with pytest.raises(q.JobStopped):
        run_job(job, work, progress=False, stop_hook=stop((1, "train")))
    assert calls == [0, 1]  # the second run trained seed 1 only
    calls.clear()
    said = []
    s = run_job(job, work, progress=False, log=said.append)
    assert calls == []  # nothing retrained: seed 0 whole and seed 1's model read back
    assert s["read_back"] == [{"seed": 0, "stages": ["train", "eval", "peer:sasrec"]}, {"seed": 1, "stages": ["train"]}]
    assert any("seed 0: read back" in m for m in said)
    for key in ("seed_runs", "seed_reports", "summary", "report"):
        assert _structure(s[key]) == _structure(fresh[key]), key
    for a, b in zip(s["seed_runs"], fresh["seed_runs"], strict=True):
        assert a["models"]["retrieval"]["best_step"] == b["models"]["retrieval"]["best_step"]
        assert a["test"]["retrieval"]["hr@10"]["model"] == pytest.approx(b["test"]["retrieval"]["hr@10"]["model"], abs=1e-6)
    assert json.loads((work / "summary.json").read_text())["seed_runs"][1]["seed"] == 1


def test_changed_config_does_not_reuse_records(tmp_path, monkeypatch):
    """A record made under another job config (here: other SASRec settings) is redone, not read back."""
    import phoenix_recsys.train.quality as q

    work = tmp_path / "work"
    with pytest.raises(q.JobStopped):
        run_job(_job(seeds=(0,)), work, progress=False,
                stop_hook=lambda seed, stage: (_ for _ in ()).throw(q.JobStopped()) if stage == "eval" else None)
    calls = []
    real_train = q.train_job
    monkeypatch.setattr(q, "train_job", lambda *a, **kw: calls.append(kw.get("resume")) or real_train(*a, **kw))
    said = []
    changed = _job(seeds=(0,), peer_config={"sasrec": {"dim": 8, "blocks": 1, "max_len": 8, "steps": 20,
                                                       "eval_every": 20, "batch_size": 16}})
    s = run_job(changed, work, progress=False, log=said.append)
    assert calls == [False] and s["read_back"] == []  # retrained from scratch, not resumed from the old run
    assert any("fingerprint differs" in m for m in said)
    assert s["seed_runs"][0]["peers"]["sasrec"]["dim"] == 8


def test_interrupted_training_continues_from_its_checkpoint(tmp_path):
    """A seed whose training stopped part-way (a checkpoint at step 20 of 40) continues from it: the
    curve keeps the step-20 validation from the first run and adds step 40."""
    import phoenix_recsys.train.quality as q
    from phoenix_recsys.train.run import JobConfig, train_job

    job = _job(seeds=(0,))
    work = tmp_path / "work"
    ds = job.make_data(work / "data")
    bundle = work / "bundle"
    cfg = job.config
    partial = train_job(work / "data", bundle, ["retrieval"], steps=20, protocol="loo", progress=False,
                        config=JobConfig(cfg["model"], cfg["train"], {}, cfg["retrieval"]))
    q._write_json(bundle / "job_fingerprint.json", {"fingerprint": q.job_fingerprint(job, job.steps, ds), "seed": 0})
    said = []
    s = run_job(job, work, progress=False, log=said.append)
    assert any("continues from" in m for m in said)
    curve = s["seed_runs"][0]["models"]["retrieval"]["val_curve"]
    assert [p["step"] for p in curve] == [20, 40]
    assert curve[0]["ndcg@10"] == partial["retrieval"].history[0]["val"]["ndcg@10"]
    assert s["seed_runs"][0]["models"]["retrieval"]["steps"] == 40


def test_finished_stages_reads_a_stopped_job(tmp_path):
    """`bench report`'s reader: after a stop in seed 1, seed 0's test figures and best step are there,
    seed 1 lists only its finished stages, and the mean covers the seeds that have each figure."""
    import phoenix_recsys.train.quality as q

    job = _job()
    work = tmp_path / "work"
    with pytest.raises(q.JobStopped):
        run_job(job, work, progress=False,
                stop_hook=lambda seed, stage: (_ for _ in ()).throw(q.JobStopped()) if (seed, stage) == (1, "eval") else None)
    out = q.finished_stages(job, work)
    s0, s1 = out["seeds"]
    assert s0["stages"] == ["train", "eval", "peer:sasrec"] and s1["stages"] == ["train", "eval"]
    assert s0["models"]["retrieval"]["best_step"] in (20, 40)
    hr = out["retrieval"]["hr@10"]
    assert hr["model"]["n"] == 2 and hr["sasrec"]["n"] == 1
    assert hr["model"]["mean"] == pytest.approx(np.mean([s0["test"]["retrieval"]["hr@10"]["model"],
                                                         s1["test"]["retrieval"]["hr@10"]["model"]]))
    with pytest.raises(ValueError, match="not started"):
        q.finished_stages(job, tmp_path / "nowhere")


def test_fingerprint_follows_peer_defaults(monkeypatch):
    """A changed peer default (SASRec's `steps`) changes the fingerprint of a job that runs that peer on
    its defaults, so a resumed job cannot mix fits made under the old default with new ones; a job that
    sets the field itself, or runs no peer, keeps its fingerprint."""
    import phoenix_recsys.train.peers as peers
    import phoenix_recsys.train.quality as q

    on_defaults = _job(peer_config={})
    pinned = _job(peer_config={"sasrec": {"steps": 40}})
    no_peers = _job(peers=(), peer_config={})
    before = [q.job_fingerprint(j, 40, "sha") for j in (on_defaults, pinned, no_peers)]

    @dataclasses.dataclass(frozen=True)
    class Longer(peers.SasrecConfig):
        steps: int = 4685

    monkeypatch.setitem(peers._CONFIGS, "sasrec", Longer)
    assert peers.peer_settings("sasrec")["steps"] == 4685
    after = [q.job_fingerprint(j, 40, "sha") for j in (on_defaults, pinned, no_peers)]
    assert after[0] != before[0]
    assert after[1:] == before[1:]


def test_peer_settings_merge_defaults_and_overrides():
    from phoenix_recsys.train.peers import SasrecConfig, peer_settings

    ce = peer_settings("sasrec_ce", {"steps": 7})
    assert ce == {**dataclasses.asdict(SasrecConfig()), "steps": 7, "loss": "softmax"}
    assert peer_settings("sasrec")["loss"] == "bce" and peer_settings("popularity") == {}
    with pytest.raises(ValueError, match="unknown config fields"):
        peer_settings("bpr", {"depth": 3})



def test_peer_fit_alone_gives_the_jobs_peer_figures(tmp_path):
    """`benchmarks/peer_fit.py` fits a job's peer without training our model; its test figures are the
    ones the job's own `peer:sasrec` stage records for the same seed and settings."""
    from benchmarks.peer_fit import fit_job_peer

    job = _job(seeds=(0,))
    s = run_job(job, tmp_path / "work", progress=False)
    alone = fit_job_peer(job, "sasrec", tmp_path / "alone", seed=0)
    assert alone["retrieval"] == s["report"]["baselines"]["sasrec"]["retrieval"]
    assert alone["fit"]["val_curve"] == s["seed_runs"][0]["peers"]["sasrec"]["val_curve"]
    assert json.loads((tmp_path / "alone" / "peer-sasrec-seed0.json").read_text())["seed"] == 0
