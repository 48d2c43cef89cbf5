"""Honest evaluation of a bundle on a dataset split: the model beside baselines and, on synthetic data,
the oracle ceiling computed from the world's true probabilities (SPEC 8).

Protocol (stated in every report): events ordered by (user, timestamp, file position) with a stable
sort; global time split (default 80/10/10 by event time) or leave-one-out; ranker metrics over every
impression of the split; retrieval metrics over the FULL corpus (every post in posts.parquet), with
the user's already-engaged posts (strictly before the target) excluded and the target kept.

Baselines, fitted on the train split only:
  popularity (ranker): per post and action, the smoothed training rate (shrunk to the global rate);
  base_rate (ranker): user rate and post rate combined additively in logit space, both smoothed;
  popularity (retrieval): posts ranked by their number of training positives, same for every user.
Oracle (synthetic only): ranker AUROC etc. of the true probabilities of each impression; retrieval
ranking of the whole corpus by true affinity at the target's time.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from phoenix_recsys._extras import MissingExtraError
from phoenix_recsys.actions import ActionKind
from phoenix_recsys.data.examples import (
    TRAIN,
    RankingExamples,
    RetrievalExamples,
    build_ranking_examples,
    build_retrieval_examples,
    describe_ties,
    post_corpus,
    split_by_time,
)
from phoenix_recsys.data.schema import Dataset
from phoenix_recsys.hashing import HashConfig
from phoenix_recsys.train.bundle import Bundle
from phoenix_recsys.train.inference import (
    SEEN_RULES,
    embedding_scorer,
    encode_corpus,
    encode_users,
    predict_ranker,
    retrieval_eval,
)
from phoenix_recsys.train.inputs import apply_input_mode, apply_input_mode_corpus
from phoenix_recsys.train.metrics import binary_action_metrics, nan_to_none
from phoenix_recsys.train.plots import plot_roc_and_calibration
from phoenix_recsys.train.run import default_positive_actions

SMOOTHING = 20.0  # pseudo-impressions at the global rate for the per-post / per-user baselines
RETRIEVAL_KS = (10, 50, 100, 200, 1000)
MAIN_ACTIONS = ("favorite", "reply", "repost", "click", "follow_author")


@dataclasses.dataclass
class EvalData:
    """Examples and protocol of one evaluation (kept for plots and reports)."""

    protocol: str
    ranking: RankingExamples | None = None
    ranker_scores: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # name -> probs [N, C, A]


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _smoothed_rates(keys: np.ndarray, y: np.ndarray, query: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Per-key smoothed rate `(sum y + a * prior) / (n + a)` of `[E, A]` labels, looked up for `query`."""
    uniq, inv = np.unique(keys, return_inverse=True)
    n = np.bincount(inv, minlength=len(uniq)).astype(np.float64)
    sums = np.zeros((len(uniq), y.shape[1]))
    np.add.at(sums, inv, y)
    rates = (sums + SMOOTHING * prior[None, :]) / (n[:, None] + SMOOTHING)
    pos = np.clip(np.searchsorted(uniq, query), 0, max(len(uniq) - 1, 0))
    hit = (uniq[pos] == query) if len(uniq) else np.zeros(query.shape, bool)
    return np.where(hit[..., None], rates[pos], prior)


def ranker_baselines(ds: Dataset, split_codes: np.ndarray, ex: RankingExamples) -> dict[str, np.ndarray]:
    """Popularity and user x post base-rate predictions `[N, C, A]` fitted on training events."""
    train = split_codes == TRAIN
    y = ds.action_matrix()[train].astype(np.float64)
    y = np.where(y > 0, 1.0, 0.0)  # continuous actions: the baselines predict "happened"
    prior = y.mean(axis=0) if len(y) else np.full(len(ds.actions), 0.5)
    posts = ds.column("post_id")[train]
    users = ds.column("user_id")[train]
    qp = ex.candidate_post_ids
    qu = np.broadcast_to(ex.user_ids[:, None], qp.shape)
    pop = _smoothed_rates(posts, y, qp, prior)
    user_rate = _smoothed_rates(users, y, qu, prior)
    base = _sigmoid(_logit(pop) + _logit(user_rate) - _logit(prior))
    return {"popularity": pop.astype(np.float32), "base_rate": base.astype(np.float32)}


def ranker_metrics(probs: np.ndarray, ex: RankingExamples) -> dict[str, dict[str, Any]]:
    """Per binary action: AUROC, PR-AUC, log-loss, RCE, calibration, positives (valid candidates only)."""
    mask = ex.candidate_mask
    out = {}
    for i, a in enumerate(ex.actions):
        if a.kind is not ActionKind.BINARY:
            continue
        y = ex.labels[..., i][mask]
        m = binary_action_metrics(y, probs[..., i][mask])
        out[a.name] = {k: nan_to_none(v) if isinstance(v, float) else v for k, v in m.items()}
    return out


def _oracle_scorer(world: Any, ex: RetrievalExamples, corpus_ids: np.ndarray):
    from phoenix_recsys.data.synth import true_affinity

    snap = np.searchsorted(world.snapshot_times, ex.target_timestamps, side="right") - 1

    def score(start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, len(corpus_ids)), np.float32)
        for k in np.unique(snap[start:stop]):
            rows = np.flatnonzero(snap[start:stop] == k)
            t = int(world.snapshot_times[max(k, 0)])
            out[rows] = true_affinity(world, ex.user_ids[start:stop][rows], corpus_ids, at_time=t)
        return out

    return score


def _bar(scorer: str, enabled: bool) -> str | None:
    """The progress-bar label of one full-corpus retrieval pass (None: no bar)."""
    return f"retrieval: {scorer} over the corpus" if enabled else None


def evaluate_bundle(
    bundle: Bundle,
    ds: Dataset,
    *,
    split: str = "test",
    protocol: Any = None,
    max_examples: int | None = None,
    retrieval_positive_actions: Sequence[str] | None = None,
    progress: bool = False,
    seen_rule: str = "all",
    peers: Sequence[str] = (),
    peer_seed: int = 0,
    peer_config: dict[str, dict[str, Any]] | None = None,
    peer_val_examples: int = 3000,
) -> tuple[dict[str, Any], EvalData]:
    """Evaluate every model of `bundle` on `split` of `ds`, with baselines and (synthetic) the oracle.

    Retrieval excludes already-seen posts by `seen_rule` ("all": every earlier engagement; "window":
    only the S items of the input window, as HSTU's code), for the model and every baseline alike;
    `peers` (names from `train.peers.PEERS`) are trained on the same training split and scored beside
    popularity (`peer_config`: per-peer config overrides; SASRec keeps the parameters of its best
    validation NDCG@10 over up to `peer_val_examples` validation queries, as our model is selected).
    Both are recorded in the report's protocol.

    Returns:
      the JSON-ready report `{"protocol", "model", "baselines", "oracle"?}` and the raw data for plots.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    if seen_rule not in SEEN_RULES:
        raise ValueError(f"seen_rule must be one of {list(SEEN_RULES)}, got {seen_rule!r}")
    from phoenix_recsys.train.peers import PEERS

    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise ValueError(f"unknown peers {unknown}; known: {list(PEERS)}")
    protocol = protocol if protocol is not None else split_by_time(ds, 0.1, 0.1)
    cfg = bundle.config
    if cfg.actions.names != ds.actions.names:
        raise ValueError(
            f"the bundle predicts actions {list(cfg.actions.names)} but dataset {ds.name!r} records {list(ds.actions.names)}"
        )
    hc = cfg.hash_config
    codes = protocol.assign(ds)
    world = None
    if ds.has_true_probs:
        from phoenix_recsys.data.synth import load_world

        try:
            world = load_world(ds)
        except ValueError:
            world = None
    report: dict[str, Any] = {
        "protocol": {"split": split, "description": protocol.describe(), "dataset": ds.name},
        "model": {}, "baselines": {"popularity": {}, "base_rate": {}},
    }
    if ds.has_true_probs:
        report["oracle"] = {}
    data = EvalData(protocol=protocol.describe())

    if bundle.ranker is not None:
        engagement = bundle.train_config("ranker").get("engagement_actions")
        ex = build_ranking_examples(ds, hc, history_len=cfg.history_seq_len, max_candidates=cfg.candidate_seq_len,
                                    split=split, protocol=protocol, engagement_actions=engagement, progress=progress)
        if max_examples is not None and len(ex) > max_examples:
            ex = ex.take(np.arange(max_examples))
        if len(ex) == 0:
            raise ValueError(f"the {split} split of {ds.name!r} has no impressions to rank")
        ex = apply_input_mode(ex, bundle.train_config("ranker").get("input_mode", "full"))
        probs = predict_ranker(bundle.ranker, ex)
        data.ranking = ex
        data.ranker_scores["model"] = probs
        report["model"]["ranker"] = ranker_metrics(probs, ex)
        for name, p in ranker_baselines(ds, codes, ex).items():
            data.ranker_scores[name] = p
            report["baselines"][name]["ranker"] = ranker_metrics(p, ex)
        if ex.true_probs is not None:
            data.ranker_scores["oracle"] = ex.true_probs
            report["oracle"]["ranker"] = ranker_metrics(ex.true_probs, ex)
        report["protocol"]["ranker"] = (
            f"{len(ex)} examples, {int(ex.candidate_mask.sum())} impressions; history = last "
            f"{cfg.history_seq_len} engagements ({'/'.join(engagement) if engagement else 'any binary action'}) "
            "strictly before each impression"
        )

    if bundle.retrieval is not None:
        trained = bundle.train_config("retrieval")
        # Evaluate on the targets (and with the history rule) the retriever was trained for, unless told otherwise.
        positives = tuple(retrieval_positive_actions or trained.get("positive_actions")
                          or default_positive_actions(ds.actions))
        ties = trained.get("history_ties", "strict")
        rex = build_retrieval_examples(ds, hc, history_len=cfg.history_seq_len, split=split, protocol=protocol,
                                       positive_actions=positives, history_ties=ties,
                                       engagement_actions=trained.get("engagement_actions"), progress=progress)
        if max_examples is not None and len(rex) > max_examples:
            rex = rex.take(np.arange(max_examples))
        if len(rex) == 0:
            raise ValueError(f"the {split} split of {ds.name!r} has no {'/'.join(positives)} events to retrieve")
        input_mode = trained.get("input_mode", "full")
        corpus = post_corpus(ds, hc)
        ks = tuple(k for k in RETRIEVAL_KS if k <= len(corpus.post_ids)) or (len(corpus.post_ids),)
        mex, mcorpus = apply_input_mode(rex, input_mode), apply_input_mode_corpus(corpus, input_mode)
        scorer = embedding_scorer(encode_users(bundle.retrieval, mex.batch), encode_corpus(bundle.retrieval, mcorpus))
        report["model"]["retrieval"] = retrieval_eval(scorer, corpus.post_ids, rex, ks, seen_rule=seen_rule,
                                                      progress=_bar("model", progress))
        train = codes == TRAIN
        pos_mask = np.zeros(ds.num_events, bool)
        for a in positives:
            pos_mask |= ds.column(a) > 0
        counts_ids = ds.column("post_id")[train & pos_mask]
        pop = np.zeros(len(corpus.post_ids), np.float32)
        order = np.argsort(corpus.post_ids)
        idx = order[np.searchsorted(corpus.post_ids[order], counts_ids)]
        np.add.at(pop, idx, 1.0)
        report["baselines"]["popularity"]["retrieval"] = retrieval_eval(
            lambda s, e: np.broadcast_to(pop, (e - s, len(pop))), corpus.post_ids, rex, ks, seen_rule=seen_rule,
            progress=_bar("popularity", progress))
        if peers:
            for name, sec in score_peers(ds, codes, hc, rex, corpus.post_ids, peers, history_len=cfg.history_seq_len,
                                         positives=positives, ties=ties, protocol=protocol,
                                         engagement_actions=trained.get("engagement_actions"), ks=ks,
                                         seen_rule=seen_rule, peer_seed=peer_seed, peer_config=peer_config,
                                         peer_val_examples=peer_val_examples, progress=progress).items():
                report["baselines"].setdefault(name, {}).update(sec)
        if world is not None:
            report["oracle"]["retrieval"] = retrieval_eval(_oracle_scorer(world, rex, corpus.post_ids),
                                                           corpus.post_ids, rex, ks, seen_rule=seen_rule,
                                                           progress=_bar("oracle", progress))
        seen_text = ("already-engaged posts excluded" if seen_rule == "all"
                     else f"the posts of the {cfg.history_seq_len}-item input window excluded")
        report["protocol"]["seen_rule"] = seen_rule
        report["protocol"]["input_mode"] = input_mode
        report["protocol"]["retrieval"] = (
            f"{len(rex)} queries ({'/'.join(positives)} events), full corpus of {len(corpus.post_ids)} posts, "
            f"{seen_text} (seen rule {seen_rule!r}), ties broken uniformly at random (in expectation); history = "
            f"last {cfg.history_seq_len} engagements {describe_ties(ties, 'each target')}; model inputs: {input_mode}"
        )
    for k in [k for k, v in report["baselines"].items() if not v]:
        del report["baselines"][k]
    return report, data


def score_peers(
    ds: Dataset,
    codes: np.ndarray,
    hash_config: HashConfig,
    rex: RetrievalExamples,
    corpus_ids: np.ndarray,
    peers: Sequence[str],
    *,
    history_len: int,
    positives: Sequence[str],
    ties: str,
    protocol: Any,
    engagement_actions: Sequence[str] | None = None,
    ks: Sequence[int] = RETRIEVAL_KS,
    seen_rule: str = "all",
    peer_seed: int = 0,
    peer_config: dict[str, dict[str, Any]] | None = None,
    peer_val_examples: int = 3000,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Fit each peer (`train.peers.PEERS`, popularity excluded: `evaluate_bundle` scores it itself) on
    the training split (`codes`) and score it on the queries `rex` over the corpus `corpus_ids`.

    This is the peer half of `evaluate_bundle`, callable without a trained bundle (a peer needs only the
    split, the corpus and the queries' input windows). SASRec peers keep the parameters of their best
    NDCG@10 over up to `peer_val_examples` validation queries (built with the same history rule).

    Returns:
      `{name: {"retrieval": metrics, "fit": the peer's fit record}}`.
    """
    from phoenix_recsys.train.peers import fit_peer, peer_sequences

    seqs = peer_sequences(ds, codes, positives, corpus_ids, ties=ties, engagement_actions=engagement_actions)
    validate = None
    if any(p.startswith("sasrec") for p in peers):
        vex = build_retrieval_examples(ds, hash_config, history_len=history_len, split="val", protocol=protocol,
                                       positive_actions=positives, history_ties=ties,
                                       engagement_actions=engagement_actions)
        vex = vex.take(np.arange(min(len(vex), peer_val_examples)))
        if len(vex):
            def validate(peer: Any) -> float:
                return retrieval_eval(peer.scorer(vex, corpus_ids), corpus_ids, vex, (10,),
                                      seen_rule=seen_rule)["ndcg@10"]

    out: dict[str, dict[str, Any]] = {}
    for name in (p for p in peers if p != "popularity"):  # popularity is always scored by the caller
        peer = fit_peer(name, seqs, seed=peer_seed, config=(peer_config or {}).get(name),
                        validate=validate if name.startswith("sasrec") else None)
        out[name] = {"retrieval": retrieval_eval(peer.scorer(rex, corpus_ids), corpus_ids, rex, tuple(ks),
                                                 seen_rule=seen_rule, progress=_bar(name, progress)),
                     "fit": peer.describe()}
    return out


def write_report(report: dict[str, Any], data: EvalData, out_dir: str | os.PathLike[str]) -> Path:
    """Write `report.md`, `eval.json` and `roc_calibration.png` into `out_dir`; returns report.md's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Evaluation: {report['protocol']['dataset']} ({report['protocol']['split']} split)", "",
             f"Protocol: {report['protocol']['description']}."]
    for key in ("ranker", "retrieval"):
        if key in report["protocol"]:
            lines.append(f"{key.capitalize()}: {report['protocol'][key]}.")
    lines += ["", *metrics_markdown(report), "", "![ROC and calibration](roc_calibration.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    if data.ranking is not None:
        ex = data.ranking
        mask = ex.candidate_mask
        curves = {}
        names = [a for a in MAIN_ACTIONS if a in ex.actions] or [a.name for a in ex.actions if a.kind is ActionKind.BINARY][:4]
        for a in names:
            i = ex.actions.index(a)
            y = ex.labels[..., i][mask]
            if y.sum() == 0 or y.sum() == y.size:
                continue
            curves[a] = {n: (y, s[..., i][mask]) for n, s in data.ranker_scores.items()}
        try:
            plot_roc_and_calibration(curves, out / "roc_calibration.png")
        except MissingExtraError:
            pass  # the PNG is the [plots] extra; the report and eval.json do not need it
    return out / "report.md"


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def scorers(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, section) for the model, each baseline and the oracle, in display order."""
    out = [("model", report["model"])]
    out += [(name, sec) for name, sec in report.get("baselines", {}).items()]
    if "oracle" in report:
        out.append(("oracle", report["oracle"]))
    return out


def metrics_markdown(report: dict[str, Any]) -> list[str]:
    """The report's tables (ranker per action; retrieval per metric) as markdown lines."""
    lines: list[str] = []
    rows = scorers(report)
    if "ranker" in report["model"]:
        lines += ["## Ranker", "", "| action | positives | " + " | ".join(f"{n} AUROC" for n, _ in rows)
                  + " | model PR-AUC | model RCE | model calib. |", "|" + "---|" * (len(rows) + 5)]
        for action, m in report["model"]["ranker"].items():
            aucs = [_fmt(sec.get("ranker", {}).get(action, {}).get("auroc")) for _, sec in rows]
            lines.append(f"| {action} | {m['positives']} | " + " | ".join(aucs)
                         + f" | {_fmt(m['pr_auc'])} | {_fmt(m['rce'], 2)} | {_fmt(m['calibration'], 3)} |")
    if "retrieval" in report["model"]:
        keys = [k for k in report["model"]["retrieval"] if k != "queries" and not k.startswith("recall@")]
        rows = [(n, sec) for n, sec in rows if "retrieval" in sec]
        lines += ["", "## Retrieval (full corpus)", "", "| metric | " + " | ".join(n for n, _ in rows) + " |",
                  "|" + "---|" * (len(rows) + 1)]
        for k in keys:
            vals = [_fmt(sec.get("retrieval", {}).get(k)) for _, sec in rows]
            lines.append(f"| {k} | " + " | ".join(vals) + " |")
    return lines


def trained_protocol(meta: dict[str, Any]) -> str | None:
    """The split protocol ("time" / "loo") a bundle was trained with; None when unknown (imported
    weights). Bundles record its name (`dataset.split_protocol`); older ones only its description,
    which starts with the protocol's kind."""
    ds = meta.get("dataset") or {}
    name = ds.get("split_protocol")
    if name in ("time", "loo"):
        return name
    desc = str(ds.get("protocol") or "")
    if desc.startswith("time split"):
        return "time"
    if desc.startswith("leave-one-out"):
        return "loo"
    return None


def check_bundle_dataset(meta: dict[str, Any], ds_name: str, ds_hash: str | None) -> None:
    """Refuse to evaluate a bundle on another dataset than it was trained on (content hash differs).

    Raises:
      ValueError: both hashes are known and differ; the message names both and the override flag.
    """
    trained = meta.get("dataset") or {}
    want = trained.get("content_hash")
    if want is None or ds_hash is None or want == ds_hash:
        return
    raise ValueError(
        f"dataset mismatch: the bundle was trained on {trained.get('name')!r} (content sha256 {want[:12]}...), "
        f"but --data is {ds_name!r} (content sha256 {ds_hash[:12]}...); its splits differ from the training "
        "splits, so test events may have been trained on. Pass --ignore-dataset-mismatch to evaluate anyway."
    )
