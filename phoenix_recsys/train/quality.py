"""Quality benchmarks: train on a dataset and evaluate with the protocol stated next to every number.

Each job imports (or synthesises) its data into a work directory, trains a bundle, evaluates it and
returns a JSON-ready summary. Real datasets are read from where the user keeps them (by default
`../shared/data/...` relative to the repository); nothing is downloaded and nothing is copied into
the repository.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from phoenix_recsys.data.schema import Dataset, load_dataset
from phoenix_recsys.train.bundle import load_bundle
from phoenix_recsys.train.evaluate import evaluate_bundle, write_report
from phoenix_recsys.train.run import JobConfig, make_protocol, train_job

SHARED_DATA = Path(os.environ.get("PHOENIX_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
MAIN_ACTIONS = ("favorite", "reply", "repost", "click", "follow_author")


@dataclasses.dataclass(frozen=True)
class QualityJob:
    """One benchmark: how to get the data, how to train, how to evaluate."""

    name: str
    description: str
    make_data: Callable[[Path], Dataset]
    kinds: tuple[str, ...]
    config: dict[str, Any]
    steps: int
    protocol: str = "time"
    max_eval_examples: int | None = None
    # Tiny test splits (KuaiRand's 15 test clicks) make one run's AUROC swing by +-0.07 with the seed:
    # such jobs train once per seed and report the mean and spread.
    seeds: tuple[int, ...] = (0,)
    # Retrieval evaluation: which earlier items are excluded ("all" / "window"), and the peers trained
    # on the same split and scored beside popularity (names of `train.peers.PEERS`, with config overrides).
    seen_rule: str = "all"
    peers: tuple[str, ...] = ()
    peer_config: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        from phoenix_recsys.train.inference import SEEN_RULES
        from phoenix_recsys.train.peers import PEERS

        if self.seen_rule not in SEEN_RULES:
            raise ValueError(f"QualityJob {self.name!r}: seen_rule must be one of {list(SEEN_RULES)}")
        bad = [p for p in (*self.peers, *self.peer_config) if p not in PEERS]
        if bad:
            raise ValueError(f"QualityJob {self.name!r}: unknown peers {bad}; known: {list(PEERS)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"QualityJob {self.name!r}: seeds must be distinct and at least one")


def _synth(users: int, posts: int, impressions: float, seed: int = 0) -> Callable[[Path], Dataset]:
    def make(out: Path) -> Dataset:
        from phoenix_recsys.data.synth import SynthConfig, synthesize

        return synthesize(out, SynthConfig(num_users=users, num_posts=posts, impressions_per_user=impressions, seed=seed))

    return make


def _imported(fmt: str, rel: str, **kw: Any) -> Callable[[Path], Dataset]:
    def make(out: Path) -> Dataset:
        from phoenix_recsys.data.importers import import_dataset

        src = SHARED_DATA / rel
        if not src.exists():
            raise ValueError(f"{src} not found: set PHOENIX_SHARED_DATA to the folder holding the public datasets")
        import_dataset(fmt, src, out, **kw)
        return load_dataset(out)

    return make


def _kuairand_file() -> str:
    d = SHARED_DATA / "kuairand-1k"
    files = sorted(p.name for p in d.glob("*.csv*")) if d.exists() else []
    return f"kuairand-1k/{files[0]}" if files else "kuairand-1k/missing.csv"


# The sequential-recommendation recipe: causal user tower, every position predicting the next rating,
# full softmax over the 3,615 movies, embedding dropout, S = 200 as SASRec / HSTU use; selected on
# validation NDCG@10.
ML1M_CONFIG: dict[str, Any] = {
    "train": {"eval_every": 250, "batch_size": 32, "learning_rate": 2e-3, "warmup_steps": 100, "patience": 100,
              "eval_max_examples": 3000, "selection_metric": "ndcg@10"},
    "retrieval": {"positive_actions": ["click"], "retrieval_objective": "every_position", "negatives": "corpus",
                  "history_ties": "sequence", "targets_per_step": 4096, "token_dropout": 0.2},
    "model": {"history_seq_len": 200, "history_attention": "causal", "user_pooling": "last"},
}


def jobs() -> dict[str, QualityJob]:
    """The benchmarks `phoenix-recsys bench` knows."""
    return {
        "synthetic": QualityJob(
            "synthetic", "synthetic world, 1,000 users x 1,000 posts x ~300 impressions (seed 0); global 80/10/10 "
            "time split", _synth(1000, 1000, 300.0), ("ranker", "retrieval"),
            {"train": {"eval_every": 250, "batch_size": 64, "learning_rate": 3e-3}}, 2000),
        "movielens-small": QualityJob(
            "movielens-small", "ml-latest-small ratings (every rating a click, >= 4 a favorite); leave-last-out by time; "
            "retrieval over the full corpus, seen movies excluded",
            _imported("movielens", "ml-latest-small/ratings.csv"), ("retrieval",),
            {"train": {"eval_every": 200, "batch_size": 128, "learning_rate": 3e-3},
             "retrieval": {"positive_actions": ["click"]}, "model": {"history_seq_len": 50}}, 1500, protocol="loo"),
        "ml1m": QualityJob(
            "ml1m", "MovieLens-1M, first 2,998 users; every rating an interaction; each user's ratings one sequence in "
            "(time, file) order; leave-one-out; full-corpus ranking excluding seen items",
            _imported("movielens", "ml-1m-part/ratings.dat.gz"), ("retrieval",),
            ML1M_CONFIG, 2500, protocol="loo"),
        # Like for like with SASRec / HSTU: item ids only, only the input window excluded, 3 seeds, our
        # SASRec (both losses) on the same users, split and seeds, every model selected on validation NDCG@10.
        "ml1m-pure": QualityJob(
            "ml1m-pure", "MovieLens-1M, first 2,998 users; pure-id inputs (no user id, genre or rating flag); "
            "leave-one-out; full-corpus ranking excluding only the 200-item input window (HSTU's rule); 3 seeds",
            _imported("movielens", "ml-1m-part/ratings.dat.gz"), ("retrieval",),
            {**ML1M_CONFIG, "retrieval": {**ML1M_CONFIG["retrieval"], "input_mode": "pure_id"}},
            2500, protocol="loo", seeds=(0, 1, 2), seen_rule="window", peers=("sasrec", "sasrec_ce")),
        "kuairand": QualityJob(
            "kuairand", "KuaiRand-1K random-exposure slice (27 users); global 80/10/10 time split; history = "
            "every watched impression (play_time > 0), clicked or not", _imported("kuairand", _kuairand_file()),
            ("ranker",),
            # ~900 training impressions: validate often and stop early, or the model memorises them. On a
            # random-exposure log the unclicked impressions are informative too: with play_time as an
            # engagement the history shows the user's recent click rate, not only their clicks.
            {"train": {"eval_every": 10, "patience": 6, "batch_size": 16, "learning_rate": 1e-3,
                       "weight_decay": 0.05, "engagement_actions": ["click", "long_view", "play_time"]},
             "model": {"history_seq_len": 64, "candidate_seq_len": 8}}, 300, seeds=(0, 1, 2, 3, 4)),
        "taobao": QualityJob(
            "taobao", "Taobao UserBehavior prefix; a pv is an impression, cart/fav/buy its actions; 80/10/10 time split",
            _imported("taobao", "taobao-userbehavior-part/UserBehavior-part.csv.gz"), ("ranker",),
            # Most of the 55k items are seen once: validate often and stop early against memorising them.
            # S=128 covers nearly a user's whole prefix (~78 events), so the history shows how often they
            # favorite; favorite AUROC 0.884 at S=32, 0.896 at S=128.
            {"train": {"eval_every": 50, "patience": 5, "batch_size": 64, "learning_rate": 1e-3,
                       "weight_decay": 0.05}, "model": {"history_seq_len": 128}}, 1000),
    }


RECORD_DIR = "seed-records"


class JobStopped(Exception):
    """Raised by a `run_job` stop hook to end a job between stages (what a kill does, minus the mess)."""


def job_fingerprint(job: QualityJob, steps: int, ds: Dataset | str | None) -> str:
    """sha256 of what decides a job's figures: its training config, steps, protocol, evaluation options,
    peers, their config overrides and resolved settings (`train.peers.peer_settings`: the defaults
    count too), and the dataset's content hash. A seed record or an unfinished training run
    with another fingerprint is not reused (the code version is not part of it: rerun from scratch,
    `--fresh`, after changing the code)."""
    doc = {"name": job.name, "kinds": list(job.kinds), "config": job.config, "steps": steps, "protocol": job.protocol,
           "max_eval_examples": job.max_eval_examples, "seen_rule": job.seen_rule, "peers": list(job.peers),
           "peer_config": job.peer_config,
           "data": ds.manifest.get("content_sha256") if isinstance(ds, Dataset) else ds}
    if job.peers:
        from phoenix_recsys.train.peers import peer_settings

        # The peers' resolved settings (class defaults under the job's overrides), not only the overrides:
        # a changed default must not let a resumed job mix fits of the old setting with the new.
        # Added only for jobs with peers, so the other jobs' fingerprints (and seed records) stay valid.
        doc["peer_settings"] = {p: peer_settings(p, job.peer_config.get(p)) for p in job.peers}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write `doc` atomically (a kill mid-write leaves the old file or none, never half a record)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


def _read_record(path: Path, fingerprint: str, say: Callable[[str], None]) -> dict[str, Any] | None:
    """A seed's record when it exists and matches `fingerprint`; otherwise None (and say why)."""
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        say(f"{path}: unreadable seed record; that seed is rerun")
        return None
    if rec.get("fingerprint") != fingerprint:
        say(f"{path}: recorded for another job config or dataset (fingerprint differs); that seed is rerun")
        return None
    return rec


def run_job(
    job: QualityJob,
    work_dir: str | os.PathLike[str],
    *,
    steps: int | None = None,
    progress: bool = True,
    fresh: bool = False,
    stop_hook: Callable[[int, str], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run one benchmark end to end (once per seed in `job.seeds`); returns the summary (also written to
    `work_dir/summary.json`). With several seeds, `report` is the first seed's, `seed_reports` all of
    them, and `summary` their mean (`model`) with `model_sd` and `model_per_seed`.

    Each seed's model is selected on validation only (its `selection_metric`); the test split is read
    once, after training, by `evaluate_bundle`. `seed_runs` keeps, per seed, the validation curve, the
    best step and metric, and the peers' fit records (SASRec's own validation curve and best step).

    Resume: each seed's stages (model trained; model and popularity scored; each peer fitted and scored)
    are recorded in `work_dir/seed-records/seed-N.json` with `job_fingerprint` as they finish, so a
    stopped job rerun on the same work directory reads finished stages back instead of redoing them; a
    model whose training stopped part-way continues from its last checkpoint (`checkpoints/latest`,
    every `eval_every` steps); a peer stopped part-way is refitted from the start. Records of another
    fingerprint are ignored and redone. `fresh` ignores every record. `stop_hook(seed, stage)` is called
    after each stage is recorded (a test raises `JobStopped` there to simulate a kill).
    """
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    work = Path(work_dir)
    data_dir = work / "data"
    t0 = time.perf_counter()
    ds = job.make_data(data_dir)
    n_steps = steps or job.steps
    fingerprint = job_fingerprint(job, n_steps, ds)
    protocol = make_protocol(ds, job.protocol)
    reports, runs, t_train, read_back = [], [], 0.0, []
    for seed in job.seeds:
        bundle_dir = work / ("bundle" if len(job.seeds) == 1 else f"bundle-seed{seed}")
        rec_path = work / RECORD_DIR / f"seed-{seed}.json"
        rec = None if fresh else _read_record(rec_path, fingerprint, say)
        rec = rec or {"fingerprint": fingerprint, "seed": seed, "stages": {}}
        stages = rec["stages"]
        done = [s for s in ("train", "eval", *(f"peer:{p}" for p in job.peers if p != "popularity")) if s in stages]
        if done:
            say(f"{job.name} seed {seed}: read back {', '.join(done)} from {rec_path}")
            read_back.append({"seed": seed, "stages": done})

        def record(stage: str, value: Any, seed: int = seed, rec: dict[str, Any] = rec,
                   rec_path: Path = rec_path) -> None:
            rec["stages"][stage] = value
            _write_json(rec_path, rec)
            if stop_hook is not None:
                stop_hook(seed, stage)

        if "train" not in stages:
            train_cfg = {**job.config.get("train", {}), "seed": seed} if len(job.seeds) > 1 else job.config.get("train", {})
            cfg = JobConfig(job.config.get("model", {}), train_cfg, job.config.get("ranker", {}),
                            job.config.get("retrieval", {}))
            fp_path = bundle_dir / "job_fingerprint.json"
            resumable = (not fresh and fp_path.exists() and json.loads(fp_path.read_text()).get("fingerprint") == fingerprint
                         and all((bundle_dir / k / "checkpoints" / "latest").exists() for k in job.kinds))
            if resumable:
                say(f"{job.name} seed {seed}: training continues from {bundle_dir}/*/checkpoints/latest")
            else:
                if bundle_dir.exists():
                    if any((bundle_dir / k / "checkpoints" / "latest").exists() for k in job.kinds):
                        say(f"{job.name} seed {seed}: the unfinished run in {bundle_dir} is of another config or "
                            "not resumable; training restarts")
                    shutil.rmtree(bundle_dir)
                _write_json(fp_path, {"fingerprint": fingerprint, "seed": seed})
            t1 = time.perf_counter()
            results = train_job(data_dir, bundle_dir, list(job.kinds), config=cfg, steps=n_steps,
                                protocol=job.protocol, progress=progress, resume=resumable)
            record("train", {"models": {kind: seed_run(r) for kind, r in results.items()},
                             "seconds": round(time.perf_counter() - t1, 1), "resumed": resumable})
        t_train += stages["train"]["seconds"]
        bundle = None
        if "eval" not in stages:
            bundle = load_bundle(bundle_dir)
            report, raw = evaluate_bundle(bundle, ds, split="test", protocol=protocol,
                                          max_examples=job.max_eval_examples, seen_rule=job.seen_rule, peers=(),
                                          peer_seed=seed, peer_config=job.peer_config)
            write_report(report, raw, bundle_dir)
            record("eval", report)
        report = json.loads(json.dumps(stages["eval"]))
        if job.peers:
            report["protocol"]["peers"] = list(job.peers)
        for name in (p for p in job.peers if p != "popularity"):
            stage = f"peer:{name}"
            if stage not in stages:
                bundle = bundle or load_bundle(bundle_dir)
                # The peer is fitted and scored alone; the model's and popularity's figures are recomputed
                # by the same call and dropped (the recorded ones are identical: same bundle, same queries).
                rep, _ = evaluate_bundle(bundle, ds, split="test", protocol=protocol,
                                         max_examples=job.max_eval_examples, seen_rule=job.seen_rule, peers=(name,),
                                         peer_seed=seed, peer_config=job.peer_config)
                record(stage, rep["baselines"][name])
            report["baselines"][name] = stages[stage]
        reports.append(report)
        runs.append({"seed": seed, "models": stages["train"]["models"],
                     "peers": {n: sec["fit"] for n, sec in report.get("baselines", {}).items() if "fit" in sec},
                     "test": summarize(report), "train_seconds": stages["train"]["seconds"]})
    summary = {"job": job.name, "description": job.description, "steps": n_steps,
               "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
               "seconds": round(time.perf_counter() - t0, 1), "train_seconds": round(t_train, 1),
               "protocol": reports[0]["protocol"], "seen_rule": job.seen_rule, "peers": list(job.peers),
               "selection": "each seed's checkpoint of best validation metric (see seed_runs); test read once at the end",
               "fingerprint": fingerprint, "read_back": read_back,
               "report": reports[0], "seed_runs": runs}
    if len(job.seeds) > 1:
        summary["seeds"] = list(job.seeds)
        summary["seed_reports"] = reports
    summary["summary"] = summarize_result(summary)
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def finished_stages(job: QualityJob, work_dir: str | os.PathLike[str], *, steps: int | None = None) -> dict[str, Any]:
    """What a (possibly still running or stopped) job has recorded so far, read from its seed records
    without training anything: per seed the stages done, the model's validation curve, best step and
    test figures, and each finished peer's; then, per retrieval metric and scorer, the mean, sd
    (population) and per-seed values over the seeds that have it (`n` says how many)."""
    work = Path(work_dir)
    manifest = work / "data" / "manifest.json"
    if not manifest.exists():
        raise ValueError(f"{work} holds no imported data ({manifest} missing): the job has not started there")
    fingerprint = job_fingerprint(job, steps or job.steps, json.loads(manifest.read_text()).get("content_sha256"))
    seeds: list[dict[str, Any]] = []
    for seed in job.seeds:
        rec = _read_record(work / RECORD_DIR / f"seed-{seed}.json", fingerprint, lambda _msg: None)
        stages = (rec or {}).get("stages", {})
        entry: dict[str, Any] = {"seed": seed, "stages": list(stages)}
        if "train" in stages:
            entry["models"] = stages["train"]["models"]
            entry["train_seconds"] = stages["train"]["seconds"]
        if "eval" in stages:
            report = json.loads(json.dumps(stages["eval"]))
            for name in job.peers:
                if f"peer:{name}" in stages:
                    report["baselines"][name] = stages[f"peer:{name}"]
            entry["test"] = summarize(report)
            entry["peers"] = {n: sec["fit"] for n, sec in report["baselines"].items() if "fit" in sec}
        seeds.append(entry)
    agg: dict[str, dict[str, Any]] = {}
    for entry in (e for e in seeds if "test" in e):
        for key, row in entry["test"].get("retrieval", {}).items():
            for col, v in row.items():
                if isinstance(v, int | float):
                    agg.setdefault(key, {}).setdefault(col, []).append((entry["seed"], float(v)))
    means = {key: {col: {"mean": float(np.mean([v for _, v in vals])), "sd": float(np.std([v for _, v in vals])),
                         "per_seed": {str(s): round(v, 4) for s, v in vals}, "n": len(vals)}
                   for col, vals in cols.items()} for key, cols in agg.items()}
    return {"job": job.name, "fingerprint": fingerprint, "seeds": seeds, "retrieval": means}


def seed_run(result: Any) -> dict[str, Any]:
    """One training run's selection record: metric, best step and value, and the validation curve."""
    curve = [{"step": h["step"], "loss": h.get("loss"), **h.get("val", {})} for h in result.history]
    return {"selection_metric": result.metric_name, "best_step": result.best_step,
            "best_val": result.best_metric, "steps": result.steps, "stopped_early": result.stopped_early,
            "val_curve": curve}


def summarize_result(result: dict[str, Any]) -> dict[str, Any]:
    """`summarize` of a result file: of its one report, or the mean over its `seed_reports` with the
    spread (`model_sd`, population sd) and each seed's value (`model_per_seed`) beside it."""
    reports = result.get("seed_reports") or [result["report"]]
    first = summarize(reports[0])
    if len(reports) == 1:
        return first
    each = [summarize(r) for r in reports]
    for section, rows in first.items():
        for key, row in rows.items():
            for col in [c for c in row if c not in ("positives", "ratio_to_oracle")]:
                vals = [e[section][key].get(col) for e in each]
                if any(not isinstance(v, int | float) for v in vals):
                    continue
                # Peers trained per seed vary too; fixed baselines (popularity) do not and stay as they are.
                if col != "model" and len(set(vals)) == 1:
                    continue
                row[col] = float(np.mean(vals))
                row[f"{col}_sd"] = float(np.std(vals))
                row[f"{col}_per_seed"] = [round(float(v), 4) for v in vals]
            if "ratio_to_oracle" in row and row.get("oracle", 0) > 0.5:
                row["ratio_to_oracle"] = (row["model"] - 0.5) / (row["oracle"] - 0.5)
    return first


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers: per main action AUROC of model/baselines/oracle and the ratio
    (AUROC - 0.5) / (oracle AUROC - 0.5); retrieval HR/NDCG@10 and Recall@100 vs popularity/oracle."""
    out: dict[str, Any] = {}
    rk = report["model"].get("ranker")
    if rk:
        # The five main actions on synthetic data; on public data every action it records.
        acts = [a for a in MAIN_ACTIONS if a in rk] if "oracle" in report else []
        acts = acts or [a for a, m in rk.items() if m["positives"]]
        rows = {}
        for a in acts:
            row = {"model": rk[a]["auroc"], "positives": rk[a]["positives"]}
            for name, sec in report.get("baselines", {}).items():
                row[name] = sec.get("ranker", {}).get(a, {}).get("auroc")
            if "oracle" in report:
                o = report["oracle"]["ranker"][a]["auroc"]
                row["oracle"] = o
                if o is not None and row["model"] is not None and o > 0.5:
                    row["ratio_to_oracle"] = (row["model"] - 0.5) / (o - 0.5)
            rows[a] = row
        out["ranker_auroc"] = rows
    rt = report["model"].get("retrieval")
    if rt:
        keys = [k for k in ("hr@10", "ndcg@10", "hr@50", "recall@100", "hr@200", "mrr") if k in rt]
        out["retrieval"] = {k: {"model": rt[k], **{n: s.get("retrieval", {}).get(k) for n, s in report.get("baselines", {}).items()
                                                   if "retrieval" in s},
                                **({"oracle": report["oracle"]["retrieval"].get(k)} if "oracle" in report and "retrieval" in report["oracle"] else {})}
                            for k in keys}
    return out
