"""Training on a device mesh (`train.mesh`): parity with one device, sharded tables, checkpoints that
move between mesh shapes, bundles and evaluation from a sharded run, and two real processes.

The mesh tests need 8 devices, which on CPU means XLA_FLAGS=--xla_force_host_platform_device_count=8
before JAX starts. An ordinary run (one device) therefore runs them in a child pytest with that flag
(`test_mesh_cases_on_8_emulated_devices`) and skips them itself; run with the flag set, they run
directly and the launcher skips.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from phoenix_recsys.data.synth import SynthConfig, synthesize
from phoenix_recsys.train.mesh import MeshPlan, MeshSpec, ShardRule, path_str

HERE = Path(__file__).resolve().parent
DEVICES = 8
MESH_FLAG = f"--xla_force_host_platform_device_count={DEVICES}"
needs_mesh = pytest.mark.skipif(jax.device_count() < DEVICES, reason="needs 8 devices (runs in the child pytest)")

WORLD = SynthConfig(num_users=120, num_posts=150, impressions_per_user=30, seed=3)
# Table rows 1009 / 2003 / 307 are odd, so model=2 pads every table by one row.
JOB = {"model": {"model": dict(emb_size=16, key_size=8, num_layers=1, num_q_heads=2, num_kv_heads=2),
                 "hash_config": dict(user_vocab_size=1009, item_vocab_size=2003, author_vocab_size=307),
                 "emb_size": 16, "history_seq_len": 8, "candidate_seq_len": 8},
       "train": dict(batch_size=16, learning_rate=1e-2, warmup_steps=3, eval_every=20, patience=0, seed=0,
                     eval_max_examples=64),
       "retrieval": {"positive_actions": ["favorite", "click"]}}
STEPS = 20
MESHES = ("data=8", "data=4,model=2")


# -- no devices needed ------------------------------------------------------------------------


def test_mesh_spec_parses_and_refuses():
    assert MeshSpec.parse("data=4,model=2") == MeshSpec(4, 2)
    assert MeshSpec.parse(" model=2 , data=4 ") == MeshSpec(4, 2)
    assert MeshSpec.parse("data=8") == MeshSpec(8, 1)
    assert str(MeshSpec.parse("data=2,model=2,transformer=tensor")) == "data=2,model=2,transformer=tensor"
    for bad in ("model=2", "data=0", "data=2,data=2", "data=x", "data=2,pipe=2", "data=2,transformer=diag", "4"):
        with pytest.raises(ValueError):
            MeshSpec.parse(bad)


def test_mesh_needs_its_device_count():
    with pytest.raises(ValueError, match="needs 16 devices"):
        MeshPlan(MeshSpec(data=8, model=2))


def test_path_str_drops_nnx_value_field():
    tree = nnx.State({"tables": {"item": nnx.Param(np.zeros((3, 2)))}})
    (path, _), = jax.tree_util.tree_flatten_with_path(tree)[0]
    assert path_str(path) == "tables/item"
    assert ShardRule("x", jax.sharding.PartitionSpec()).pad is False


def test_two_processes_train_together(tmp_path):
    """Two real processes on 127.0.0.1 (gloo CPU collectives), one device each, mesh data=2: each
    trains on its own users' examples and both end with the same parameters."""
    synthesize(tmp_path / "world", SynthConfig(num_users=60, num_posts=80, impressions_per_user=20, seed=3))
    (tmp_path / "job.json").write_text(json.dumps({"model": JOB["model"]}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [subprocess.Popen([sys.executable, str(HERE / "mesh_worker.py"), f"127.0.0.1:{port}", str(i), str(tmp_path)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=240)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-4000:]
    a, b = (np.load(tmp_path / f"params-{i}.npz") for i in range(2))
    assert int(a["examples"]) + int(b["examples"]) > 0 and int(a["examples"]) != 0 and int(b["examples"]) != 0
    assert float(a["loss"]) == float(b["loss"])
    names = [k for k in a.files if k not in ("examples", "loss")]
    assert "tables/item" in names
    for k in names:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    meta = json.loads((tmp_path / "run" / "checkpoints" / "latest" / "meta.json").read_text())
    assert meta["processes"] == 2 and meta["mesh"] == "data=2,model=1"


def test_mesh_cases_on_8_emulated_devices():
    """Runs this file's 8-device tests in a child pytest with 8 emulated CPU devices."""
    if jax.device_count() >= DEVICES:
        pytest.skip("already on 8 devices: the mesh tests run directly")
    env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + MESH_FLAG).strip()}
    proc = subprocess.run([sys.executable, "-m", "pytest", str(Path(__file__).resolve()), "-p", "no:cacheprovider",
                           "-k", "on_mesh", "-rs"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert "6 passed" in summary and "skipped" not in summary, proc.stdout[-2000:]


# -- on 8 devices -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mesh_world(tmp_path_factory):
    from phoenix_recsys.data.schema import load_dataset

    root = tmp_path_factory.mktemp("mesh_world")
    synthesize(root / "world", WORLD)
    return load_dataset(root / "world")


@pytest.fixture(scope="module")
def bundles(mesh_world, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """Both models trained for 20 steps by `train_job` on one device and on data=4,model=2, the ranker
    also on data=8 (same examples, same global batches)."""
    from phoenix_recsys.train.run import JobConfig, train_job

    out = {}
    for name in ("1", *MESHES):
        plan = None if name == "1" else MeshPlan(MeshSpec.parse(name))
        path = tmp_path_factory.mktemp(f"bundle_{name.replace('=', '').replace(',', '_')}")
        kinds = ["ranker"] if name == "data=8" else ["ranker", "retrieval"]
        res = train_job(mesh_world.path, path, kinds, config=JobConfig(**JOB, ranker={}),
                        steps=STEPS, progress=False, mesh=plan)
        out[name] = (path, res)
    return out


def _params(bundle_dir: Path, kind: str) -> dict[str, np.ndarray]:
    from phoenix_recsys.train import checkpoint as ckpt
    from phoenix_recsys.train.bundle import load_bundle

    model = getattr(load_bundle(bundle_dir, (kind,)), kind)
    flat = jax.tree_util.tree_flatten_with_path(ckpt.model_state(model))[0]
    return {path_str(p): np.asarray(x) for p, x in flat}


@needs_mesh
@pytest.mark.parametrize(("kind", "mesh"), [("ranker", "data=8"), ("ranker", "data=4,model=2"),
                                            ("retrieval", "data=4,model=2")])
def test_on_mesh_training_equals_one_device(bundles, kind, mesh):
    """20 steps on the mesh end where 20 steps on one device end: same loss, same parameters (fp32;
    only the order of XLA's sums differs)."""
    one_dir, one_res = bundles["1"]
    mesh_dir, mesh_res = bundles[mesh]
    assert mesh_res[kind].steps == one_res[kind].steps == STEPS
    for a, b in zip(one_res[kind].history, mesh_res[kind].history, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6, abs=1e-7)
    one, other = _params(one_dir, kind), _params(mesh_dir, kind)
    assert one.keys() == other.keys() and any("tables/item" in k for k in one)
    moved = 0.0
    for k in one:
        assert other[k].shape == one[k].shape, k  # bundles hold logical (unpadded) one-device shapes
        np.testing.assert_allclose(other[k], one[k], rtol=0, atol=2e-5, err_msg=k)
        moved = max(moved, float(np.abs(one[k]).max()))
    assert moved > 0


@needs_mesh
def test_on_mesh_tables_are_row_sharded(bundles, mesh_world):
    """On data=4,model=2 each device holds half of every (padded) table and all transformer weights;
    the checkpoint was written sharded; with transformer=tensor the FFN is split too."""
    from phoenix_recsys.train import checkpoint as ckpt

    latest = bundles["data=4,model=2"][0] / "ranker" / "checkpoints" / "latest"
    plan = MeshPlan(MeshSpec(4, 2))
    meta = ckpt.verify_checkpoint(latest)
    assert meta["mesh"] == "data=4,model=2"
    padded = meta["padded_rows"]
    assert padded["model/tables/item"] == 2003
    assert sorted(k for k in padded if k.endswith("tables/item")) == sorted(
        ["model/tables/item", *(k for k in padded if k.endswith("/mu/tables/item") or k.endswith("/nu/tables/item"))])
    assert len([k for k in padded if k.endswith("tables/item")]) == 3  # the parameter and Adam's two moments
    target = _ranker_target(mesh_world.actions)
    restored, _ = ckpt.load_checkpoint(latest, plan.abstract(target))
    leaves = {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(restored)[0]}
    for name, rows in (("user", 1009), ("item", 2003), ("author", 307)):
        tables = [x for k, x in leaves.items() if k.endswith(f"tables/{name}")]
        assert len(tables) == 3
        for table in tables:
            assert table.shape == (rows + 1, 16)
            shapes = {s.data.shape for s in table.addressable_shards}
            assert shapes == {((rows + 1) // 2, 16)}, (name, shapes)
            assert len({s.index[0].start for s in table.addressable_shards}) == 2  # two distinct row blocks
    ffn = restored["model"]["transformer"]["layers"][0]["ffn"]["linear"]["w"]
    assert {s.data.shape for s in ffn.addressable_shards} == {tuple(ffn.shape)}
    saved = ckpt._checkpointer(True).metadata(latest / "state").item_metadata.tree
    assert tuple(saved["model"]["tables"]["item"].sharding.partition_spec) == ("model", None)

    tensor = MeshPlan(MeshSpec(4, 2, transformer="tensor"))
    placed = tensor.place(target)
    w = placed["model"]["transformer"]["layers"][0]["ffn"]["linear"]["w"]
    assert {s.data.shape for s in w.addressable_shards} == {(w.shape[0], w.shape[1] // 2)}
    w1 = placed["model"]["transformer"]["layers"][0]["ffn"]["linear_1"]["w"]
    assert {s.data.shape for s in w1.addressable_shards} == {(w1.shape[0] // 2, w1.shape[1])}


def _ranker_target(actions) -> dict:
    """A training checkpoint's structure (logical shapes): the ranker's parameters and optimizer state."""
    from phoenix_recsys.model.ranker import PhoenixModel
    from phoenix_recsys.train import checkpoint as ckpt
    from phoenix_recsys.train.loop import TrainConfig, make_optimizer
    from phoenix_recsys.train.run import JobConfig

    cfg = JobConfig(**JOB, ranker={}).model_config(actions)
    model = PhoenixModel(cfg, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, make_optimizer(TrainConfig(steps=STEPS), STEPS), wrt=nnx.Param)
    return {"model": ckpt.model_state(model), "opt": nnx.to_pure_dict(nnx.state(opt, nnx.optimizer.OptState))}


@needs_mesh
def test_on_mesh_checkpoint_restores_on_other_meshes(bundles, mesh_world):
    """The data=4,model=2 checkpoint restores onto one device, data=8 and data=2,model=4 (other
    padding) and predicts identically everywhere."""
    from phoenix_recsys.data.examples import build_ranking_examples, split_by_time
    from phoenix_recsys.model.ranker import PhoenixModel
    from phoenix_recsys.train import checkpoint as ckpt
    from phoenix_recsys.train.bundle import load_bundle
    from phoenix_recsys.train.inference import predict_ranker

    bundle_dir = bundles["data=4,model=2"][0]
    latest = bundle_dir / "ranker" / "checkpoints" / "latest"
    trained = load_bundle(bundle_dir, ("ranker",)).ranker
    cfg = trained.config
    test = build_ranking_examples(mesh_world, cfg.hash_config, history_len=cfg.history_seq_len,
                                  max_candidates=cfg.candidate_seq_len, split="test",
                                  protocol=split_by_time(mesh_world, 0.1, 0.1), progress=False)
    test = test.take(np.arange(min(len(test), 32)))
    want = predict_ranker(trained, test)
    target = _ranker_target(mesh_world.actions)

    one, _ = ckpt.load_checkpoint(latest, target)  # host arrays, logical shapes
    assert one["model"]["tables"]["item"].shape == (2003, 16)
    model = PhoenixModel(cfg, rngs=nnx.Rngs(1))
    ckpt.restore_model(model, one["model"])
    np.testing.assert_array_equal(predict_ranker(model, test), want)

    for spec in (MeshSpec(8, 1), MeshSpec(2, 4)):
        plan = MeshPlan(spec)
        restored, _ = ckpt.load_checkpoint(latest, plan.abstract(target))
        item = restored["model"]["tables"]["item"]
        assert item.shape == plan.layout("model/tables/item", (2003, 16))[1]
        assert len(item.sharding.device_set) == DEVICES
        model = PhoenixModel(cfg, rngs=nnx.Rngs(1))
        ckpt.restore_model(model, jax.tree.map(lambda x: x, restored["model"]))
        local = plan.to_local(nnx.state(model, nnx.Param), jax.eval_shape(lambda: nnx.state(trained, nnx.Param)))
        nnx.update(model, local)
        np.testing.assert_allclose(predict_ranker(model, test), want, rtol=0, atol=1e-6, err_msg=str(spec))


@needs_mesh
def test_on_mesh_bundle_serves_and_evaluates(bundles, mesh_world):
    """The bundle of a sharded run holds one-device models that evaluate like the one-device run's."""
    from phoenix_recsys.train.bundle import load_bundle
    from phoenix_recsys.train.evaluate import evaluate_bundle

    reports = {}
    for name in ("1", "data=4,model=2"):
        bundle = load_bundle(bundles[name][0])
        assert bundle.meta["models"]["ranker"]["result"].get("mesh") == (None if name == "1" else name)
        reports[name], _ = evaluate_bundle(bundle, mesh_world, split="test", max_examples=64)
    a, b = reports["1"]["model"], reports["data=4,model=2"]["model"]
    assert b["retrieval"]["hr@10"] == pytest.approx(a["retrieval"]["hr@10"], abs=1e-6)
    for action, m in a["ranker"].items():
        # Parameters agree to ~1e-6, which can reorder near-tied scores: AUROC agrees to a few ties.
        assert b["ranker"][action]["auroc"] == pytest.approx(m["auroc"], abs=2e-3), action
