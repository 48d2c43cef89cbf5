"""End-to-end training jobs: dataset -> examples -> train -> bundle (what `phoenix-recsys train` runs)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from phoenix_recsys.actions import ActionKind, ActionVocabulary
from phoenix_recsys.data.examples import (
    build_ranking_examples,
    build_retrieval_examples,
    leave_one_out,
    post_corpus,
    split_by_time,
)
from phoenix_recsys.data.schema import Dataset, load_dataset
from phoenix_recsys.hashing import HashConfig
from phoenix_recsys.model.config import PhoenixModelConfig, TransformerConfig
from phoenix_recsys.train.bundle import save_model
from phoenix_recsys.train.inputs import apply_input_mode, apply_input_mode_corpus
from phoenix_recsys.train.loop import (
    TrainConfig,
    TrainResult,
    check_retrieval_setup,
    train_ranker,
    train_retrieval,
)
from phoenix_recsys.train.mesh import MeshPlan, shard_examples


def default_model_config(actions: ActionVocabulary, **overrides: Any) -> PhoenixModelConfig:
    """A CPU-friendly default: D=64, 2 layers, 4 query / 2 kv heads, S=32, C=16, fp32, with the
    in-network candidate feature (whether the viewer follows the author).

    Tables of 50k user / 100k item / 20k author buckets; collisions are rare at the dataset sizes this
    trains on in minutes, and the config can grow with `--config`.
    """
    base: dict[str, Any] = dict(
        model=TransformerConfig(emb_size=64, key_size=16, num_layers=2, num_q_heads=4, num_kv_heads=2),
        emb_size=64,
        actions=actions,
        history_seq_len=32,
        candidate_seq_len=16,
        hash_config=HashConfig(user_vocab_size=50_021, item_vocab_size=100_003, author_vocab_size=20_011),
        fprop_dtype="float32",
        embedding_init_std=0.05,
        in_network_feature=True,
    )
    base.update(overrides)
    return PhoenixModelConfig(**base)


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """Model and training settings of one job, as read from `--config FILE` (JSON).

    File format: `{"model": {...PhoenixModelConfig fields...}, "train": {...TrainConfig fields...},
    "ranker": {...TrainConfig overrides for the ranker...}, "retrieval": {...}, "tune": {...}}`; every
    key optional. The file is validated by the pydantic models of `train/jobfile.py` (unknown or
    mistyped fields are errors naming the field); this keeps the given fields only, so the dataclass
    defaults stay the single source of defaults.
    """

    model: dict[str, Any]
    train: dict[str, Any]
    ranker: dict[str, Any]
    retrieval: dict[str, Any]
    tune: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "job config") -> JobConfig:
        """Validate a job document (the parsed JSON file, or a dict built in Python)."""
        from phoenix_recsys.train.jobfile import validate_job

        return cls(**validate_job(data, where))

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None) -> JobConfig:
        if path is None:
            return cls({}, {}, {}, {})
        from phoenix_recsys.train.jobfile import load_job_file

        return cls(**load_job_file(path))

    def to_dict(self) -> dict[str, Any]:
        """The job document (given sections only), as `from_dict` reads it."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v}

    def model_config(self, actions: ActionVocabulary) -> PhoenixModelConfig:
        m = dict(self.model)
        if "model" in m and isinstance(m["model"], dict):
            m["model"] = TransformerConfig(**m["model"])
        if "hash_config" in m and isinstance(m["hash_config"], dict):
            m["hash_config"] = HashConfig(**m["hash_config"])
        if "actions" in m:
            raise ValueError("the action vocabulary comes from the dataset's manifest; remove model.actions")
        if "emb_size" not in m and "model" in m:
            m["emb_size"] = m["model"].emb_size
        return default_model_config(actions, **m)

    def train_config(self, kind: str, **overrides: Any) -> TrainConfig:
        fields = {**self.train, **getattr(self, kind)}
        fields.update({k: v for k, v in overrides.items() if v is not None})
        if fields.get("steps") is None and fields.get("epochs") is None:
            fields["steps"] = TrainConfig().steps
        if "epochs" in overrides and overrides["epochs"] is not None:
            fields["steps"] = None
        return TrainConfig.from_json(fields)


RECIPES = ("auto", "default", "sequential")
# Corpora up to this size get the exact full-corpus softmax in the sequential recipe; larger ones the
# log-Q corrected in-batch softmax (the full softmax's cost grows with the corpus every step).
SEQUENTIAL_CORPUS_SOFTMAX_MAX = 50_000


def sequential_recipe(ds: Dataset) -> dict[str, dict[str, Any]]:
    """The sequential (next-item) recipe `bench ml1m` trains with, as `--config` sections.

    Causal user tower pooled at the newest position, every position predicting the interaction that
    follows it, every interaction a positive, each user's log one sequence in (time, file) order,
    S = 200 as SASRec / HSTU use, embedding dropout 0.2, a full softmax over the corpus when it has at
    most `SEQUENTIAL_CORPUS_SOFTMAX_MAX` posts, and the checkpoint of best validation NDCG@10.
    """
    corpus = len(ds.column("post_id", "posts"))
    return {
        "model": {"history_seq_len": 200, "history_attention": "causal", "user_pooling": "last"},
        "train": {"eval_every": 250, "batch_size": 32, "learning_rate": 2e-3, "warmup_steps": 100, "patience": 100,
                  "eval_max_examples": 3000, "selection_metric": "ndcg@10"},
        "retrieval": {"positive_actions": [a.name for a in ds.actions if a.kind is ActionKind.BINARY],
                      "retrieval_objective": "every_position", "history_ties": "sequence", "token_dropout": 0.2,
                      "negatives": "corpus" if corpus <= SEQUENTIAL_CORPUS_SOFTMAX_MAX else "in_batch",
                      "targets_per_step": 4096},
    }


def is_interaction_log(ds: Dataset) -> bool:
    """True for a ratings / interaction log: every event is an engagement (no shown-but-ignored
    impressions), so there are no negatives to rank and the signal is the order of interactions."""
    return ds.num_events > 0 and bool(ds.engaged().all())


def resolve_recipe(ds: Dataset, recipe: str) -> tuple[str, str]:
    """(`"default"` or `"sequential"`, why) for `recipe` (`auto` decides from the data)."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {list(RECIPES)}, got {recipe!r}")
    if recipe != "auto":
        return recipe, "as requested (--recipe)"
    if is_interaction_log(ds):
        return "sequential", (f"chosen automatically: every event of {ds.name!r} is an interaction "
                              "(a ratings / interaction log)")
    return "default", f"chosen automatically: {ds.name!r} logs impressions without actions (an impression log)"


def apply_recipe(config: JobConfig, recipe: str, ds: Dataset) -> JobConfig:
    """`config` over the recipe's settings (the config file wins field by field)."""
    if recipe == "default":
        return config
    base = sequential_recipe(ds)
    return JobConfig({**base["model"], **config.model}, {**base["train"], **config.train}, dict(config.ranker),
                     {**base["retrieval"], **config.retrieval})


def default_positive_actions(actions: ActionVocabulary) -> tuple[str, ...]:
    """Retrieval positives when none are configured: favorite, else like, else click, else the first action."""
    for name in ("favorite", "like", "click"):
        if name in actions:
            return (name,)
    return (actions.names[0],)


def make_protocol(ds: Dataset, protocol: str):
    """`time` (global 80/10/10 time split) or `loo` (leave-one-out per user)."""
    if protocol == "time":
        return split_by_time(ds, 0.1, 0.1)
    if protocol == "loo":
        return leave_one_out()
    raise ValueError(f"protocol must be 'time' or 'loo', got {protocol!r}")


def train_job(
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    kinds: Sequence[str],
    *,
    config: JobConfig | None = None,
    steps: int | None = None,
    epochs: float | None = None,
    resume: bool = False,
    protocol: str = "time",
    progress: bool = True,
    mesh: MeshPlan | None = None,
    recipe: str = "default",
) -> dict[str, TrainResult]:
    """Train the requested models on a dataset directory and write them into the bundle `out_dir`.

    `recipe`: "default" (the settings of `config` alone), "sequential" (`sequential_recipe` under
    `config`) or "auto" (sequential on a ratings / interaction log, see `resolve_recipe`).

    With `mesh`, training runs on that device mesh; across processes each process keeps only its
    users' training examples (`shard_examples`), and process 0 writes the bundle (single-device
    parameters, as `serve` loads them).
    """
    config = config or JobConfig({}, {}, {}, {})
    ds = load_dataset(data_dir)
    recipe, _ = resolve_recipe(ds, recipe)
    config = apply_recipe(config, recipe, ds)
    model_cfg = config.model_config(ds.actions)
    proto = make_protocol(ds, protocol)
    hc = model_cfg.hash_config
    dataset_info = {"name": ds.name, "content_hash": ds.manifest.get("content_sha256"), "path": str(Path(data_dir)),
                    "protocol": proto.describe(), "split_protocol": protocol,  # the name: `evaluate`'s default
                    "recipe": recipe}
    results: dict[str, TrainResult] = {}
    out = Path(out_dir)
    # Check every model's settings before training any, so a bad retrieval setting does not surface
    # after the ranker has been trained and written.
    tcfgs = {kind: _checked_train_config(config, kind, ds, model_cfg, steps, epochs) for kind in kinds}
    for kind in kinds:
        tcfg = tcfgs[kind]
        run_dir = out / kind
        if kind == "ranker":
            tr, va = (build_ranking_examples(ds, hc, history_len=model_cfg.history_seq_len,
                                             max_candidates=model_cfg.candidate_seq_len, split=split, protocol=proto,
                                             engagement_actions=tcfg.engagement_actions, progress=progress)
                      for split in ("train", "val"))
            tr, va = apply_input_mode(tr, tcfg.input_mode), apply_input_mode(va, tcfg.input_mode)
            tr = tr if mesh is None else shard_examples(tr, mesh.process_index, mesh.process_count)
            model, res = train_ranker(model_cfg, tcfg, tr, va, run_dir, resume=resume, progress=progress, mesh=mesh)
        else:
            every = tcfg.retrieval_objective == "every_position"
            tr, va = (build_retrieval_examples(ds, hc, history_len=model_cfg.history_seq_len, split=split,
                                               protocol=proto, positive_actions=tcfg.positive_actions,
                                               history_ties=tcfg.history_ties,
                                               engagement_actions=tcfg.engagement_actions, progress=progress,
                                               window_stride=tcfg.window_stride(model_cfg.history_seq_len)
                                               if every and split == "train" else None)
                      for split in ("train", "val"))
            # Training examples keep their inputs: the loop applies the input mode per batch, after reading
            # the targets from the history's action flags (which pure-id blanks).
            va = apply_input_mode(va, tcfg.input_mode)
            tr = tr if mesh is None else shard_examples(tr, mesh.process_index, mesh.process_count)
            corpus = apply_input_mode_corpus(post_corpus(ds, hc), tcfg.input_mode)
            model, res = train_retrieval(model_cfg, tcfg, tr, va, corpus, run_dir, resume=resume,
                                         progress=progress, mesh=mesh)
        results[kind] = res
        if mesh is not None and not mesh.is_primary:
            continue
        save_model(out, kind, model, dataset=dataset_info, train_config=tcfg.to_json(),
                   result={"steps": res.steps, "best_step": res.best_step, "best_metric": res.best_metric,
                           "metric": res.metric_name, "stopped_early": res.stopped_early,
                           **({} if mesh is None else {"mesh": str(mesh.spec), "processes": mesh.process_count})})
    if mesh is not None:
        mesh.barrier(f"bundle-{out}")
    return results


def _checked_train_config(
    config: JobConfig, kind: str, ds: Dataset, model_cfg: PhoenixModelConfig, steps: int | None, epochs: float | None
) -> TrainConfig:
    """`kind`'s TrainConfig with dataset-dependent defaults, checked against the dataset and the model."""
    if kind not in ("ranker", "retrieval"):
        raise ValueError(f"unknown model kind {kind!r}; use ranker, retrieval or all")
    tcfg = config.train_config(kind, steps=steps, epochs=epochs)
    for a in tcfg.engagement_actions or ():
        if a not in ds.actions:
            raise ValueError(f"engagement action {a!r} is not in dataset {ds.name!r} ({list(ds.actions.names)}); "
                             'fix "train": {"engagement_actions": [...]} in --config')
    if kind == "retrieval":
        if "positive_actions" not in {**config.train, **config.retrieval}:
            tcfg = dataclasses.replace(tcfg, positive_actions=default_positive_actions(ds.actions))
        for a in tcfg.positive_actions:
            if a not in ds.actions:
                raise ValueError(
                    f"retrieval positive action {a!r} is not in dataset {ds.name!r} ({list(ds.actions.names)}); "
                    'set "retrieval": {"positive_actions": [...]} in --config'
                )
        check_retrieval_setup(model_cfg, tcfg)
    return tcfg
