"""Fit and score one quality job's peers alone, on that job's split, without training our model.

`python -m benchmarks.peer_fit ml1m-pure sasrec --seed 0 --set steps=4700 --out runs/peer-fit`

The data, protocol, input window (S), positive actions, history rule and seen rule are the job's own
(`train.quality.jobs()`), and the peer goes through `train.evaluate.score_peers`, the function
`evaluate_bundle` (and so `run_job`) calls, so the figures are the ones a job's `peer:NAME` stage
records for the same peer settings. Writes `OUT/peer-NAME-seedN.json` with the test metrics, the fit
record (validation curve, best step, epochs, seconds) and the machine's load before and after.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from phoenix_recsys.data.examples import build_retrieval_examples, post_corpus
from phoenix_recsys.train.evaluate import RETRIEVAL_KS, score_peers
from phoenix_recsys.train.quality import QualityJob, jobs
from phoenix_recsys.train.run import JobConfig, make_protocol


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def fit_job_peer(
    job: QualityJob | str, peer: str, out: Path, *, seed: int = 0, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Fit `peer` on `job`'s split (a job or a name from `jobs()`; seed `seed`, the job's `peer_config`
    plus `overrides`) and score it on the job's test queries; returns (and writes) the record."""
    job = jobs()[job] if isinstance(job, str) else job
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    ds = job.make_data(out / "data")
    cfg = JobConfig(
        job.config.get("model", {}), job.config.get("train", {}), {}, job.config.get("retrieval", {})
    )
    model_cfg = cfg.model_config(ds.actions)
    hc, s = model_cfg.hash_config, model_cfg.history_seq_len
    retrieval = job.config.get("retrieval", {})
    positives = tuple(retrieval.get("positive_actions") or ("favorite",))
    ties = retrieval.get("history_ties", "strict")
    engagement = retrieval.get("engagement_actions")
    protocol = make_protocol(ds, job.protocol)
    codes = protocol.assign(ds)
    rex = build_retrieval_examples(
        ds,
        hc,
        history_len=s,
        split="test",
        protocol=protocol,
        positive_actions=positives,
        history_ties=ties,
        engagement_actions=engagement,
    )
    if job.max_eval_examples is not None and len(rex) > job.max_eval_examples:
        rex = rex.take(np.arange(job.max_eval_examples))
    corpus = post_corpus(ds, hc)
    ks = tuple(k for k in RETRIEVAL_KS if k <= len(corpus.post_ids)) or (len(corpus.post_ids),)
    peer_config = {**job.peer_config.get(peer, {}), **(overrides or {})}
    res = score_peers(
        ds,
        codes,
        hc,
        rex,
        corpus.post_ids,
        (peer,),
        history_len=s,
        positives=positives,
        ties=ties,
        protocol=protocol,
        engagement_actions=engagement,
        ks=ks,
        seen_rule=job.seen_rule,
        peer_seed=seed,
        peer_config={peer: peer_config},
    )[peer]
    rec = {
        "job": job.name,
        "peer": peer,
        "seed": seed,
        "overrides": peer_config,
        "seen_rule": job.seen_rule,
        "queries": len(rex),
        "corpus": len(corpus.post_ids),
        **res,
        "seconds": round(time.perf_counter() - t0, 1),
        "cores": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load0],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"peer-{peer}-seed{seed}.json").write_text(json.dumps(rec, indent=2) + "\n")
    return rec


def main() -> None:
    """CLI: job, peer, `--seed`, repeated `--set FIELD=VALUE` (peer config overrides), `--out DIR`."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("job")
    ap.add_argument("peer")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--out", type=Path, default=Path("runs/peer-fit"))
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    overrides = {k: _value(v) for k, v in (kv.split("=", 1) for kv in a.set)}
    rec = fit_job_peer(a.job, a.peer, a.out, seed=a.seed, overrides=overrides)
    fit = rec["fit"]
    print(
        json.dumps(
            {
                "test": {k: rec["retrieval"][k] for k in ("hr@10", "ndcg@10") if k in rec["retrieval"]},
                "steps_run": fit.get("steps_run"),
                "best_step": fit.get("best_step"),
                "epochs": fit.get("epochs"),
                "fit_seconds": fit.get("fit_seconds"),
                "seconds": rec["seconds"],
                "load": rec["loadavg_after"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
