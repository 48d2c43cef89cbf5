"""One process of the two-process training test (`test_mesh.py`): joins the job, trains the ranker on
its shard of a synthetic world on a data=2 mesh, and writes the parameters it ends with.

Usage: python mesh_worker.py COORDINATOR PROCESS_ID WORK_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(coordinator: str, process_id: int, work: Path) -> None:
    from phoenix_recsys.train.mesh import MeshPlan, MeshSpec, init_distributed

    init_distributed(coordinator, 2, process_id)

    import numpy as np

    from phoenix_recsys.data.examples import build_ranking_examples, split_by_time
    from phoenix_recsys.data.schema import load_dataset
    from phoenix_recsys.train import checkpoint as ckpt
    from phoenix_recsys.train.loop import TrainConfig, train_ranker
    from phoenix_recsys.train.mesh import shard_examples
    from phoenix_recsys.train.run import JobConfig

    ds = load_dataset(work / "world")
    cfg = JobConfig.load(work / "job.json").model_config(ds.actions)
    train = build_ranking_examples(ds, cfg.hash_config, history_len=cfg.history_seq_len,
                                   max_candidates=cfg.candidate_seq_len, split="train",
                                   protocol=split_by_time(ds, 0.1, 0.1), progress=False)
    plan = MeshPlan(MeshSpec(data=2))
    mine = shard_examples(train, plan.process_index, plan.process_count)
    tcfg = TrainConfig(steps=4, batch_size=8, learning_rate=1e-2, warmup_steps=1, eval_every=2, patience=0)
    model, result = train_ranker(cfg, tcfg, mine, None, work / "run", progress=False, mesh=plan)
    params = {"/".join(map(str, k)): np.asarray(v) for k, v in _flat(ckpt.model_state(model))}
    np.savez(work / f"params-{process_id}.npz", examples=len(mine), loss=result.history[-1]["loss"], **params)


def _flat(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flat(v, (*prefix, k))
        else:
            yield (*prefix, k), v


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
