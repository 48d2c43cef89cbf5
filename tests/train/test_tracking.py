"""Every training run writes TensorBoard event files (loss, per-action loss, validation metrics), and
logs to MLflow when it is importable and configured (a fake module stands in for it here)."""

from __future__ import annotations

import sys
import types

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from phoenix_recsys.data.synth import SynthConfig, synthesize
from phoenix_recsys.train.run import JobConfig, train_job
from phoenix_recsys.train.tracking import TB_DIR

JOB = {"model": {"model": {"emb_size": 8, "key_size": 4, "num_layers": 1, "num_q_heads": 2, "num_kv_heads": 1},
                 "emb_size": 8, "history_seq_len": 4, "candidate_seq_len": 4,
                 "hash_config": {"user_vocab_size": 101, "item_vocab_size": 211, "author_vocab_size": 31}},
       "train": {"batch_size": 16, "eval_every": 2, "patience": 0, "seed": 0}}


class FakeMlflow(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("mlflow")
        self.calls: list[tuple] = []

    def start_run(self, run_name=None):
        self.calls.append(("start", run_name))

    def log_params(self, params):
        self.calls.append(("params", params))

    def log_metrics(self, metrics, step=None):
        self.calls.append(("metrics", step, metrics))

    def end_run(self):
        self.calls.append(("end",))


def test_training_writes_event_files_and_mlflow(tmp_path, monkeypatch):
    fake = FakeMlflow()
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.setenv("PHOENIX_MLFLOW", "1")
    world = synthesize(tmp_path / "w", SynthConfig(num_users=40, num_posts=40, seed=1))
    res = train_job(world.path, tmp_path / "b", ["ranker"], config=JobConfig.from_dict(JOB), steps=4, progress=False)
    run_dir = res["ranker"].run_dir
    acc = EventAccumulator(str(run_dir / TB_DIR))
    acc.Reload()
    tags = set(acc.Tags()["tensors"]) | set(acc.Tags()["scalars"])
    actions = list(world.actions.names)
    assert {"loss", "grad_norm", "val/mean_auroc"} <= tags
    assert {f"loss/{a}" for a in actions} <= tags
    loss_events = acc.Tensors("loss") if "loss" in acc.Tags()["tensors"] else acc.Scalars("loss")
    assert [e.step for e in loss_events] == [2, 4]
    logged = [h["loss"] for h in res["ranker"].history]
    got = [float(e.tensor_proto.float_val[0]) if hasattr(e, "tensor_proto") else e.value for e in loss_events]
    assert got == [float(v) for v in np.float32(logged)]  # TB stores float32
    kinds = [c[0] for c in fake.calls]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("metrics") == 2
    params = next(c[1] for c in fake.calls if c[0] == "params")
    assert params["batch_size"] == 16 and params["kind"] == "ranker"
    assert [c[1] for c in fake.calls if c[0] == "metrics"] == [2, 4]
    assert "val/mean_auroc" in fake.calls[-2][2]


def test_no_mlflow_without_configuration(tmp_path, monkeypatch):
    from phoenix_recsys.train.tracking import RunTracker

    fake = FakeMlflow()
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.delenv("PHOENIX_MLFLOW", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with RunTracker(tmp_path / "run") as t:
        t.log({"step": 1, "loss": 0.5, "val": {"hr@10": 0.25}})
    assert fake.calls == []
    acc = EventAccumulator(str(tmp_path / "run" / TB_DIR))
    acc.Reload()
    assert set(acc.Tags()["tensors"]) | set(acc.Tags()["scalars"]) == {"loss", "val/hr@10"}
