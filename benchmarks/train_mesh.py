"""Training throughput on a device mesh: steady-state training examples/s of the ranker and of the
retriever on one device, on data=2, on data=8 and on data=4,model=2, each in a fresh process (a CPU
mesh needs `XLA_FLAGS=--xla_force_host_platform_device_count=N` before JAX starts). The rate is
taken between the first and the last logged step, so compilation and example building are not
counted; every step ends with the loss on the host, as in real training.

On a CPU machine emulated devices share the machine's cores: up to the core count a data axis can
use cores that one device's small ops leave idle, beyond it the devices only add the cost of sharding
(collectives, gathers over the model axis). On a GPU or TPU host, where each device is its own chip,
the same command measures real scaling. Timings move with other work on the machine; the load
averages beside the machine line say how busy it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, machine_info

# (devices, --mesh); None: plain single-device training, the baseline every row is compared with.
SETUPS: tuple[tuple[int, str | None], ...] = ((1, None), (2, "data=2"), (8, "data=8"), (8, "data=4,model=2"))
KINDS = ("ranker", "retrieval")
STEPS, LOG_EVERY, BATCH = 60, 10, 128
MODEL = {"model": dict(emb_size=64, key_size=32, num_layers=2, num_q_heads=2, num_kv_heads=2),
         "hash_config": dict(user_vocab_size=20_011, item_vocab_size=40_009, author_vocab_size=4_001),
         "emb_size": 64, "history_seq_len": 32, "candidate_seq_len": 16}
WORLD = dict(num_users=2_000, num_posts=4_000, impressions_per_user=40, seed=7)


def _child(kind: str, mesh: str | None, work: Path) -> dict[str, Any]:
    """One measurement, in a process whose device count is already set."""
    import jax

    from phoenix_recsys.data.examples import (
        build_ranking_examples,
        build_retrieval_examples,
        post_corpus,
        split_by_time,
    )
    from phoenix_recsys.data.schema import load_dataset
    from phoenix_recsys.train.loop import TrainConfig, train_ranker, train_retrieval
    from phoenix_recsys.train.mesh import MeshPlan, MeshSpec
    from phoenix_recsys.train.run import JobConfig

    ds = load_dataset(work / "world")
    cfg = JobConfig(MODEL, {}, {}, {}).model_config(ds.actions)
    protocol = split_by_time(ds, 0.1, 0.1)
    hc = cfg.hash_config
    plan = MeshPlan(MeshSpec.parse(mesh)) if mesh else None
    tcfg = TrainConfig(steps=STEPS, batch_size=BATCH, learning_rate=1e-3, warmup_steps=5, eval_every=LOG_EVERY,
                       patience=0, seed=0)
    run_dir = work / f"run-{kind}-{mesh or 'one'}"
    if kind == "ranker":
        ex = build_ranking_examples(ds, hc, history_len=cfg.history_seq_len, max_candidates=cfg.candidate_seq_len,
                                    split="train", protocol=protocol, progress=False)
        _, res = train_ranker(cfg, tcfg, ex, None, run_dir, progress=False, mesh=plan)
    else:
        ex = build_retrieval_examples(ds, hc, history_len=cfg.history_seq_len, split="train", protocol=protocol,
                                      positive_actions=("favorite", "click"), progress=False)
        _, res = train_retrieval(cfg, tcfg, ex, None, post_corpus(ds, hc), run_dir, progress=False, mesh=plan)
    first, last = res.history[0], res.history[-1]
    seconds = last["elapsed_s"] - first["elapsed_s"]
    steps = last["step"] - first["step"]
    return {"kind": kind, "mesh": mesh or "one device", "devices": jax.device_count(), "batch_size": BATCH,
            "timed_steps": steps, "seconds": round(seconds, 3),
            "examples_per_s": round(steps * BATCH / seconds, 1), "final_loss": round(float(last["loss"]), 5)}


def main() -> dict[str, Any]:
    """Build one synthetic world, then measure every (model, mesh) pair in its own process."""
    from phoenix_recsys.data.synth import SynthConfig, synthesize

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        synthesize(work / "world", SynthConfig(**WORLD))
        for kind in KINDS:
            for devices, mesh in SETUPS:
                env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
                t0 = time.perf_counter()
                out = subprocess.run([sys.executable, "-m", "benchmarks.train_mesh", kind, mesh or "", str(work)],
                                     env=env, capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    raise RuntimeError(f"train_mesh {kind} {mesh}: child failed:\n{out.stderr[-3000:]}")
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row["wall_s"] = round(time.perf_counter() - t0, 1)
                rows.append(row)
                print(f"  {kind:9s} {row['mesh']:15s} {row['examples_per_s']:9.1f} examples/s", flush=True)
    base = {r["kind"]: r["examples_per_s"] for r in rows if r["mesh"] == "one device"}
    for r in rows:
        r["vs_one_device"] = round(r["examples_per_s"] / base[r["kind"]], 2)
    result = {"machine": machine_info(), "world": WORLD, "model": MODEL, "steps": STEPS, "rows": rows}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "train_mesh.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def table(result: dict[str, Any]) -> str:
    """The BENCHMARKS.md table."""
    lines = ["| model | mesh | devices | examples/s | vs one device | final loss |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['kind']} | {r['mesh']} | {r['devices']} | {r['examples_per_s']:.1f} | "
                     f"{r['vs_one_device']:.2f}x | {r['final_loss']:.4f} |")
    m = result["model"]
    lines.append("")
    lines.append(f"Batch {BATCH}, {result['steps']} steps (rate over the last {result['steps'] - LOG_EVERY}), "
                 f"D={m['emb_size']}, {m['model']['num_layers']} layers, S={m['history_seq_len']}, "
                 f"C={m['candidate_seq_len']}; synthetic world {result['world']['num_users']} users x "
                 f"{result['world']['num_posts']} posts.")
    return "\n".join(lines)


if __name__ == "__main__":
    kind, mesh, work = sys.argv[1], sys.argv[2] or None, Path(sys.argv[3])
    print(json.dumps(_child(kind, mesh, work)))
