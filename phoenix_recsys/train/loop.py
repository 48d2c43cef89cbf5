"""Training loops for the ranker and the retriever: AdamW + clipping + warmup/cosine, a jitted step,
periodic validation, early stopping, Orbax checkpoints (latest + best, resumable), metrics.jsonl and
a training-curves plot.

The step is one jitted pure function over the split (model, optimizer) state, donated so parameters
are updated in place; the Python loop only does I/O.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from phoenix_recsys._fields import reject_unknown_fields
from phoenix_recsys.actions import ActionKind, ActionVocabulary
from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.data.examples import (
    HISTORY_TIES,
    PostCorpus,
    RankingExamples,
    RetrievalExamples,
    window_ends,
)
from phoenix_recsys.model.config import HistoryAttention, PhoenixModelConfig, UserPooling
from phoenix_recsys.model.ranker import PhoenixModel
from phoenix_recsys.model.retrieval import PhoenixRetrievalModel
from phoenix_recsys.train import checkpoint as ckpt
from phoenix_recsys.train import losses
from phoenix_recsys.train.inference import (
    embedding_scorer,
    encode_corpus,
    encode_users,
    predict_ranker,
    retrieval_eval,
)
from phoenix_recsys.train.inputs import apply_input_mode
from phoenix_recsys.train.mesh import MeshPlan
from phoenix_recsys.train.metrics import auroc
from phoenix_recsys.train.tracking import RunTracker

MIN_EVAL_POSITIVES = 10
RETRIEVAL_OBJECTIVES = ("last", "every_position")
NEGATIVES = ("in_batch", "corpus")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TrainConfig:
    """Optimisation and bookkeeping settings (the model's own shape lives in `PhoenixModelConfig`).

    Attributes:
      steps: optimizer steps (None: derive from `epochs`).
      epochs: passes over the training examples (used when `steps` is None).
      batch_size: examples per step.
      learning_rate: peak learning rate of the warmup + cosine schedule.
      warmup_steps: linear warmup length.
      end_lr_fraction: final learning rate as a fraction of the peak.
      weight_decay: AdamW decoupled weight decay.
      grad_clip: global-norm clipping threshold.
      eval_every: steps between validations (and checkpoints).
      eval_max_examples: cap on validation examples per evaluation (speed).
      patience: validations without improvement before early stopping (0 = never stop early).
      seed: shuffling and initialisation seed.
      action_loss_weights: ranker loss weight per action name (default 1 each).
      init_bias_from_base_rates: start each action's logit bias at its training base rate, so very rare
        actions (report) do not spend the first steps learning "almost never".
      temperature: retrieval softmax temperature.
      positive_actions: which actions make a retrieval positive (favorite by default).
      log_q_correction: subtract log item frequency from in-batch logits.
      retrieval_objective: "last": one (history, next positive) pair per example, the user tower pooled
        as the model says. "every_position": causal next-item training, every history position
        predicting the positive that follows it in one forward (needs history_attention "causal" and
        user_pooling "last", so serving scores with exactly the trained position).
      sequence_stride: with "every_position", one training window per user every this many positives,
        counted back from the newest (None: the history length S, so windows tile each sequence).
      negatives: "in_batch" (sampled softmax over the batch's targets, log-Q corrected) or "corpus"
        (full softmax over every corpus post each step: exact, no sampling bias, cost grows with the
        corpus; meant for corpora up to some tens of thousands of posts).
      history_ties: how training and evaluation examples treat events sharing the target's timestamp
        (see `build_retrieval_examples`): "strict" or "sequence".
      engagement_actions: which actions make an event enter histories (and the retriever's `seen`);
        None = every binary action. Naming a continuous action counts `value > 0`, e.g. "play_time"
        on a random-exposure log puts every watched impression, clicked or not, into the history, so
        the model sees the user's recent click rate. Evaluation and serving read it from the bundle.
      selection_metric: the validation metric that picks the best checkpoint and drives early stopping
        (None: "mean_auroc" for the ranker, "hr@100" for the retriever; also "auroc/<action>", "hr@10",
        "ndcg@10").
      token_dropout: the fraction of input token features (the ranker's whole sequence, the retriever's
        user tower) zeroed at each training step (embedding dropout; 0 = off). Evaluation and serving
        never drop.
      targets_per_step: with "every_position", score only this many (history position, target) pairs
        per step, drawn from the batch's valid ones (padded when fewer): padding positions then cost
        nothing in the softmax, which dominates the step. None: every position of the batch.
      input_mode: "full" (every feature) or "pure_id" (item ids and order only: one shared user token,
        no author/genre, no action flags), for like-for-like rows beside SASRec / HSTU; see
        `train.inputs`. Evaluation reads it from the bundle.
    """

    steps: int | None = 1000
    epochs: float | None = None
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    end_lr_fraction: float = 0.05
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_max_examples: int = 4000
    patience: int = 4
    seed: int = 0
    action_loss_weights: dict[str, float] | None = None
    init_bias_from_base_rates: bool = True
    temperature: float = 0.05
    positive_actions: tuple[str, ...] = ("favorite",)
    log_q_correction: bool = True
    retrieval_objective: str = "last"
    sequence_stride: int | None = None
    negatives: str = "in_batch"
    history_ties: str = "strict"
    targets_per_step: int | None = None
    engagement_actions: tuple[str, ...] | None = None
    token_dropout: float = 0.0
    selection_metric: str | None = None
    input_mode: str = "full"

    def __post_init__(self) -> None:
        if self.steps is None and self.epochs is None:
            raise ValueError("TrainConfig needs steps or epochs")
        if self.steps is not None and (not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1):
            raise ValueError(f"TrainConfig.steps must be a positive int, got {self.steps!r}")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"TrainConfig.epochs must be > 0, got {self.epochs!r}")
        for f in ("batch_size", "eval_every", "eval_max_examples"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"TrainConfig.{f} must be a positive int, got {v!r}")
        for f in ("learning_rate", "temperature", "grad_clip"):
            if not getattr(self, f) > 0:
                raise ValueError(f"TrainConfig.{f} must be > 0, got {getattr(self, f)!r}")
        for f in ("warmup_steps", "patience", "weight_decay"):
            if getattr(self, f) < 0:
                raise ValueError(f"TrainConfig.{f} must be >= 0, got {getattr(self, f)!r}")
        if not 0.0 <= self.token_dropout < 1.0:
            raise ValueError(f"TrainConfig.token_dropout must be in [0, 1), got {self.token_dropout!r}")
        for f, choices in (("retrieval_objective", RETRIEVAL_OBJECTIVES), ("negatives", NEGATIVES),
                           ("history_ties", HISTORY_TIES), ("input_mode", ("full", "pure_id"))):
            if getattr(self, f) not in choices:
                raise ValueError(f"TrainConfig.{f} must be one of {list(choices)}, got {getattr(self, f)!r}")
        for f in ("sequence_stride", "targets_per_step"):
            v = getattr(self, f)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"TrainConfig.{f} must be a positive int or null, got {v!r}")
        object.__setattr__(self, "positive_actions", tuple(self.positive_actions))
        if self.engagement_actions is not None:
            if isinstance(self.engagement_actions, str) or not self.engagement_actions:
                raise ValueError("TrainConfig.engagement_actions must be a non-empty list of action names or null, "
                                 f"got {self.engagement_actions!r}")
            object.__setattr__(self, "engagement_actions", tuple(self.engagement_actions))

    def window_stride(self, history_len: int) -> int:
        """Positives between every-position training windows: `sequence_stride`, else S."""
        return self.sequence_stride or history_len

    def total_steps(self, num_examples: int) -> int:
        """Steps to run for a training set of `num_examples`."""
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(self.epochs * num_examples / self.batch_size))

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["positive_actions"] = list(self.positive_actions)
        if self.engagement_actions is not None:
            d["engagement_actions"] = list(self.engagement_actions)
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        reject_unknown_fields(cls, data)
        return cls(**data)


@dataclasses.dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    steps: int
    best_step: int
    best_metric: float
    metric_name: str
    history: list[dict[str, Any]]
    stopped_early: bool


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """AdamW with global-norm clipping and a linear-warmup cosine schedule."""
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=cfg.learning_rate * cfg.end_lr_fraction,
    )
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adamw(schedule, weight_decay=cfg.weight_decay))


def _batches(n: int, batch_size: int, seed: int, start_step: int, stream: int | None = None) -> Iterator[np.ndarray]:
    """Endless shuffled index batches; epoch e uses permutation seed (seed, e) (or (seed, e, stream):
    one stream per process of a multi-process run), so resuming at a step reproduces the same order."""
    per_epoch = max(1, n // batch_size)
    step = start_step
    while True:
        epoch, k = divmod(step, per_epoch)
        perm = np.random.default_rng([seed, epoch] if stream is None else [seed, epoch, stream]).permutation(n)
        if n < batch_size:
            perm = np.resize(perm, batch_size)
        yield perm[k * batch_size : (k + 1) * batch_size]
        step += 1


# -- ranker -----------------------------------------------------------------------------------


def step_key(cfg: TrainConfig, step: jax.Array) -> jax.Array:
    """The PRNG key of training step `step`'s dropout masks (0-based; seeded by the run's seed, so a
    resumed run draws the same masks)."""
    return jax.random.fold_in(jax.random.key(cfg.seed), step)


def init_action_bias(model: PhoenixModel, train: RankingExamples) -> None:
    """Set the logit bias to each action's training base rate (inverse sigmoid / softplus)."""
    if model.action_bias is None:
        return
    mask = train.candidate_mask
    vals = train.labels[mask]  # [n, A]
    bias = np.zeros(vals.shape[1], np.float32)
    for i, a in enumerate(train.actions):
        m = float(vals[:, i].mean()) if vals.size else 0.0
        if a.kind is ActionKind.BINARY:
            p = min(max(m, 1e-5), 1 - 1e-5)
            bias[i] = math.log(p / (1 - p))
        else:
            v = max(m, 1e-3)
            bias[i] = math.log(math.expm1(v)) if v < 20 else v
    model.action_bias.value = jnp.asarray(bias)


def ranker_validation(probs: np.ndarray, ex: RankingExamples) -> dict[str, float]:
    """Per-action AUROC on valid candidates and their mean over actions with enough positives."""
    mask = ex.candidate_mask
    out: dict[str, float] = {}
    aucs = []
    for i, a in enumerate(ex.actions):
        if a.kind is not ActionKind.BINARY:
            continue
        y = ex.labels[..., i][mask]
        pos = int(y.sum())
        if pos < MIN_EVAL_POSITIVES or pos > y.size - MIN_EVAL_POSITIVES:
            continue
        v = auroc(y, probs[..., i][mask])
        out[f"auroc/{a.name}"] = v
        aucs.append(v)
    out["mean_auroc"] = float(np.mean(aucs)) if aucs else float("nan")
    return out


def train_ranker(
    model_cfg: PhoenixModelConfig,
    cfg: TrainConfig,
    train: RankingExamples,
    val: RankingExamples | None,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool = True,
    mesh: MeshPlan | None = None,
) -> tuple[PhoenixModel, TrainResult]:
    """Train a `PhoenixModel` on ranking examples.

    Args:
      model_cfg: the ranker's configuration; its action vocabulary must equal the examples'.
      cfg: optimisation settings.
      train / val: examples (val drives early stopping and the best checkpoint; None = train only).
      run_dir: where checkpoints, metrics.jsonl and training_curves.png go.
      resume: continue from `run_dir/checkpoints/latest` (refused if the configs differ).
      progress: show a Rich progress bar.
      mesh: train on this device mesh (batch over its data axis, tables over its model axis; with
        several processes, `train` holds this process's shard of the examples). None: one device.

    Returns:
      the model at its best validation step (the last step without validation) and a `TrainResult`.
    """
    _check_vocab(model_cfg.actions, train.actions, "training examples")
    if len(train) == 0:
        raise ValueError("no training examples: the train split is empty")
    model = PhoenixModel(model_cfg, rngs=nnx.Rngs(cfg.seed))
    if cfg.init_bias_from_base_rates:
        init_action_bias(model, train)
    acts = model_cfg.actions
    weights = np.ones(len(acts), np.float32)
    for name, w in (cfg.action_loss_weights or {}).items():
        weights[acts.index(name)] = w
    is_binary = jnp.asarray(acts.binary_mask())
    weights_j = jnp.asarray(weights)

    def loss_fn(m: PhoenixModel, step: jax.Array, batch: RecsysBatch, labels: jax.Array, mask: jax.Array):
        logits = m(batch, dropout_rate=cfg.token_dropout, dropout_key=step_key(cfg, step)).logits
        out = losses.ranker_loss(logits, labels, mask, is_binary, weights_j)
        return out.total, out.per_action

    def get_batch(idx: np.ndarray):
        part = train.take(idx)
        return (part.batch, part.labels, part.candidate_mask)

    def evaluate(m: PhoenixModel) -> dict[str, float]:
        sub = val.take(np.arange(min(len(val), cfg.eval_max_examples)))
        return ranker_validation(predict_ranker(m, sub), sub)

    result = _fit(
        model, loss_fn, get_batch, len(train), evaluate if val is not None and len(val) else None,
        cfg.selection_metric or "mean_auroc", cfg, Path(run_dir), resume, {"kind": "ranker", "model": model_cfg.to_json()}, progress,
        loss_names=list(acts.names), mesh=mesh,
    )
    return model, result


# -- retrieval --------------------------------------------------------------------------------


def item_log_q(train_post_ids: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """log frequency of each post among training positives, as a vectorised lookup (unseen -> min)."""
    uniq, counts = np.unique(train_post_ids, return_counts=True)
    logq = np.log(counts / counts.sum()).astype(np.float32)
    floor = float(np.log(0.5 / counts.sum()))

    def lookup(ids: np.ndarray) -> np.ndarray:
        pos = np.clip(np.searchsorted(uniq, ids), 0, len(uniq) - 1)
        hit = uniq[pos] == ids
        return np.where(hit, logq[pos], floor).astype(np.float32)

    return lookup


def sequence_targets(
    part: RetrievalExamples, positive_index: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Next-item targets of every `[user | history]` position of a window.

    Position 0 (the user token) predicts history item 0, position 1+j predicts item j+1, and the
    newest valid position predicts the example's own target. A position counts only when its target
    is a positive (any action in `positive_index`); positions past the newest are padding.

    Returns:
      post hashes `[B, 1+S, h_i]`, author hashes `[B, 1+S, h_a]`, post ids `[B, 1+S]` (-1 = none) and
      valid `[B, 1+S]` bool.
    """
    b = part.batch
    hist_p, hist_a = np.asarray(b.history_post_hashes), np.asarray(b.history_author_hashes)
    n, s = hist_p.shape[:2]
    length = (hist_p[:, :, 0] != 0).sum(axis=1)
    rows = np.arange(n)
    tp = np.concatenate([hist_p, np.zeros_like(hist_p[:, :1])], axis=1)
    ta = np.concatenate([hist_a, np.zeros_like(hist_a[:, :1])], axis=1)
    ids = np.concatenate([part.history_post_ids, np.full((n, 1), -1, np.int64)], axis=1)
    hist_pos = np.asarray(b.history_actions)[:, :, positive_index].any(axis=-1)
    valid = np.concatenate([hist_pos & (np.arange(s)[None, :] < length[:, None]), np.zeros((n, 1), bool)], axis=1)
    tp[rows, length] = np.asarray(b.candidate_post_hashes)[:, 0]
    ta[rows, length] = np.asarray(b.candidate_author_hashes)[:, 0]
    ids[rows, length] = part.target_post_ids
    valid[rows, length] = True
    return tp, ta, ids, valid


def training_targets(
    part: RetrievalExamples, positive_index: np.ndarray, every: bool, input_mode: str
) -> tuple[RetrievalExamples, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A training batch's examples under `input_mode` and its targets: post hashes, author hashes,
    post ids and valid, per position (`every`, see `sequence_targets`) or per example.

    The targets are read before the input mode is applied: pure-id blanks the history's action flags,
    which are what marks a history item as a positive target, so reading them afterwards would leave
    every-position training with one target per window (the newest) instead of one per position.
    Pure-id targets carry no author hash, as its corpus does not."""
    if every:
        tp, ta, ids, valid = sequence_targets(part, positive_index)
    else:
        tp = np.asarray(part.batch.candidate_post_hashes)[:, 0]
        ta = np.asarray(part.batch.candidate_author_hashes)[:, 0]
        ids, valid = part.target_post_ids, np.ones(len(part), bool)
    if input_mode != "full":
        part = apply_input_mode(part, input_mode)
        ta = np.zeros_like(ta)
    return part, tp, ta, ids, valid


def check_retrieval_setup(model_cfg: PhoenixModelConfig, cfg: TrainConfig) -> None:
    """Refuse model/training settings that cannot train together (before any example is built)."""
    if cfg.retrieval_objective == "every_position" and (
        model_cfg.history_attention is not HistoryAttention.CAUSAL or model_cfg.user_pooling is not UserPooling.LAST
    ):
        raise ValueError(
            'retrieval_objective "every_position" needs model.history_attention "causal" (a position must not see '
            'the items it predicts) and model.user_pooling "last" (serving must score the trained position); got '
            f"{model_cfg.history_attention.value!r} / {model_cfg.user_pooling.value!r}"
        )


def pick_targets(valid: np.ndarray, count: int | None, rng: np.random.Generator) -> np.ndarray:
    """Flat indices of `count <= valid.size` positions: valid ones first (a random subset when there are
    more), then invalid ones as padding; all positions, in order, when `count` is None."""
    if count is None:
        return np.arange(valid.size)
    good, bad = np.flatnonzero(valid), np.flatnonzero(~valid)
    if good.size >= count:
        return np.sort(rng.choice(good, count, replace=False))
    return np.concatenate([good, bad[: count - good.size]])


def train_retrieval(
    model_cfg: PhoenixModelConfig,
    cfg: TrainConfig,
    train: RetrievalExamples,
    val: RetrievalExamples | None,
    corpus: PostCorpus,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool = True,
    mesh: MeshPlan | None = None,
) -> tuple[PhoenixRetrievalModel, TrainResult]:
    """Train the two-tower retriever with a softmax over in-batch targets (+ log-Q correction) or over
    the whole corpus, on one target per example or on every history position (`cfg.retrieval_objective`).

    Validation: full-corpus HR@100 on up to `eval_max_examples` validation examples.
    """
    if len(train) == 0:
        raise ValueError("no retrieval training examples: no positive events in the train split")
    check_retrieval_setup(model_cfg, cfg)
    every = cfg.retrieval_objective == "every_position"
    model = PhoenixRetrievalModel(model_cfg, rngs=nnx.Rngs(cfg.seed))
    logq = item_log_q(train.target_post_ids)
    temperature = cfg.temperature
    use_logq = cfg.log_q_correction and cfg.negatives == "in_batch"
    positive_index = np.asarray([model_cfg.actions.index(a) for a in cfg.positive_actions])
    windows = np.arange(len(train))
    if every:
        stride = cfg.window_stride(model_cfg.history_seq_len)
        if train.window_stride is None:
            windows = window_ends(train.user_ids, stride)
        elif train.window_stride != stride:
            raise ValueError(f"the training examples hold windows every {train.window_stride} targets but "
                             f"sequence_stride is {stride}; build them with window_stride={stride}")
    corpus_p, corpus_a = jnp.asarray(corpus.post_hashes), jnp.asarray(corpus.author_hashes)
    # Which positions a step scores when targets_per_step subsamples; seeded, but unlike the batch
    # order not replayed exactly on --resume (it only picks among equally valid targets).
    rng = np.random.default_rng([cfg.seed, 1])
    per_step = None if cfg.targets_per_step is None else min(cfg.targets_per_step,
                                                             cfg.batch_size * (model_cfg.history_seq_len + 1))
    if mesh is not None and per_step is not None:  # each process picks among its own rows
        if per_step % mesh.process_count:
            raise ValueError(f"targets_per_step {per_step} must divide over the {mesh.process_count} processes")
        per_step //= mesh.process_count

    def loss_fn(m: PhoenixRetrievalModel, step: jax.Array, batch: RecsysBatch, tp: jax.Array, ta: jax.Array,
                ids: jax.Array, log_q: jax.Array, corpus_idx: jax.Array, valid: jax.Array, picked: jax.Array):
        drop = {"dropout_rate": cfg.token_dropout, "dropout_key": step_key(cfg, step)}
        if every:
            reps, _ = m.user_sequence_representations(batch, **drop)
            user = reps.reshape(-1, reps.shape[-1])[picked]
        else:
            user, _ = m.build_user_representation(batch, **drop)
        if cfg.negatives == "corpus":
            items = m.encode_posts(corpus_p, corpus_a)
            logits = (user @ items.astype(jnp.float32).T) / temperature
            loss = losses.masked_softmax_loss(logits, corpus_idx, valid)
        else:
            item = m.encode_posts(tp, ta)
            loss = losses.retrieval_loss(user, item, ids, log_q if use_logq else jnp.zeros_like(log_q), temperature,
                                         valid)
        return loss, jnp.zeros((1,))

    def get_batch(idx: np.ndarray):
        part, tp, ta, ids, valid = training_targets(train.take(windows[idx]), positive_index, every, cfg.input_mode)
        if every:
            picked = pick_targets(valid.reshape(-1), per_step, rng)
            tp, ta = tp.reshape(-1, tp.shape[-1])[picked], ta.reshape(-1, ta.shape[-1])[picked]
            ids, valid = ids.reshape(-1)[picked], valid.reshape(-1)[picked]
        else:
            picked = np.arange(len(part))
        if mesh is not None:  # this process's rows start here in the global batch (flattened positions)
            picked = picked + mesh.batch_offset(len(idx)) * ((model_cfg.history_seq_len + 1) if every else 1)
        corpus_idx = np.clip(np.searchsorted(corpus.post_ids, ids), 0, len(corpus.post_ids) - 1)
        return (part.batch, tp, ta, ids, logq(ids), corpus_idx.astype(np.int32), valid, picked.astype(np.int32))

    def evaluate(m: PhoenixRetrievalModel) -> dict[str, float]:
        sub = val.take(np.arange(min(len(val), cfg.eval_max_examples)))
        scorer = embedding_scorer(encode_users(m, sub.batch), encode_corpus(m, corpus))
        res = retrieval_eval(scorer, corpus.post_ids, sub, ks=(10, 100))
        return {"hr@10": res["hr@10"], "hr@100": res["hr@100"], "ndcg@10": res["ndcg@10"]}

    result = _fit(
        model, loss_fn, get_batch, len(windows), evaluate if val is not None and len(val) else None,
        cfg.selection_metric or "hr@100", cfg, Path(run_dir), resume, {"kind": "retrieval", "model": model_cfg.to_json()}, progress,
        loss_names=[], mesh=mesh,
    )
    return model, result


# -- the shared loop --------------------------------------------------------------------------


def _check_vocab(model_vocab: ActionVocabulary, data_vocab: ActionVocabulary, what: str) -> None:
    if model_vocab.names != data_vocab.names:
        raise ValueError(
            f"model actions {list(model_vocab.names)} differ from the {what}' actions {list(data_vocab.names)}"
        )


def _fit(
    model: nnx.Module,
    loss_fn: Callable[..., Any],
    get_batch: Callable[[np.ndarray], tuple],
    num_examples: int,
    evaluate: Callable[[nnx.Module], dict[str, float]] | None,
    metric_name: str,
    cfg: TrainConfig,
    run_dir: Path,
    resume: bool,
    identity: dict[str, Any],
    progress: bool,
    loss_names: list[str],
    mesh: MeshPlan | None = None,
) -> TrainResult:
    total = cfg.total_steps(num_examples if mesh is None else mesh.total(num_examples))
    optimizer = nnx.Optimizer(model, make_optimizer(cfg, total), wrt=nnx.Param)
    primary = mesh is None or mesh.is_primary
    # Logical (unpadded, one-device) shapes: what the model, evaluation and bundles see.
    logical = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.state((model, optimizer)))
    padded_rows = None if mesh is None else mesh.logical_rows(
        {"model": ckpt.model_state(model), "opt": nnx.to_pure_dict(nnx.state(optimizer, nnx.optimizer.OptState))})
    run_dir.mkdir(parents=True, exist_ok=True)
    latest_dir, best_dir = run_dir / "checkpoints" / "latest", run_dir / "checkpoints" / "best"
    metrics_path = run_dir / "metrics.jsonl"
    identity = {**identity, "train": cfg.to_json()}
    identity_key = {k: v for k, v in identity.items() if k != "train"} | {
        "train": {k: v for k, v in cfg.to_json().items() if k not in ("steps", "epochs", "patience", "eval_every")}
    }

    start_step, best_metric, best_step, bad_evals, history = 0, -math.inf, 0, 0, []
    if resume:
        meta = ckpt.verify_checkpoint(latest_dir)
        if meta.get("identity_key") != json.loads(json.dumps(identity_key)):
            raise ValueError(
                f"cannot resume from {latest_dir}: it was trained with another configuration "
                "(model or optimisation settings differ); start a new run directory or pass the same config"
            )
        target = {"model": ckpt.model_state(model), "opt": nnx.to_pure_dict(nnx.state(optimizer, nnx.optimizer.OptState))}
        restored, meta = ckpt.load_checkpoint(latest_dir, target if mesh is None else mesh.abstract(target))
        ckpt.restore_model(model, restored["model"])
        opt_state = nnx.state(optimizer, nnx.optimizer.OptState)
        nnx.replace_by_pure_dict(opt_state, jax.tree.map(jnp.asarray, restored["opt"]))
        nnx.update(optimizer, opt_state)
        start_step = int(meta["step"])
        best_metric, best_step, bad_evals = float(meta["best_metric"]), int(meta["best_step"]), int(meta["bad_evals"])
        if metrics_path.exists():
            history = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
            history = [h for h in history if h["step"] <= start_step]
    elif metrics_path.exists() and primary:
        metrics_path.unlink()

    graphdef, state = nnx.split((model, optimizer))

    def step_fn(state: Any, step: jax.Array, batch: tuple):
        m, opt = nnx.merge(graphdef, state)
        (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(m, step, *batch)
        grad_norm = optax.global_norm(grads)
        opt.update(m, grads)
        return nnx.state((m, opt)), loss, aux, grad_norm

    if mesh is None:
        train_step = jax.jit(step_fn)
    else:  # explicit shardings: state by the mesh's rules, batch over data, scalars replicated
        state = mesh.place(state)
        train_step = mesh.jit_step(step_fn, state)

    def sync_model() -> None:
        nnx.update((model, optimizer), state if mesh is None else mesh.to_local(state, logical))

    def save(directory: Path, step: int) -> None:
        nnx.update((model, optimizer), state)
        ckpt.save_checkpoint(
            directory,
            {"model": ckpt.model_state(model), "opt": nnx.to_pure_dict(nnx.state(optimizer, nnx.optimizer.OptState))},
            {"step": step, "best_metric": best_metric if math.isfinite(best_metric) else -1e30, "best_step": best_step,
             "bad_evals": bad_evals, "metric_name": metric_name, "identity_key": identity_key, "identity": identity,
             **({} if mesh is None else {"mesh": str(mesh.spec), "processes": mesh.process_count})},
            padded_rows=padded_rows,
        )

    batches = (_batches(num_examples, cfg.batch_size, cfg.seed, start_step) if mesh is None else
               _batches(num_examples, mesh.local_batch_size(cfg.batch_size), cfg.seed, start_step,
                        mesh.process_index if mesh.process_count > 1 else None))
    stopped_early = False
    step = start_step
    losses_window: list[float] = []
    t0 = time.perf_counter()
    cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn()]
    tracker = RunTracker(run_dir, params={**cfg.to_json(), "kind": identity["kind"]}, enabled=primary)
    with (Progress(*cols, disable=not progress, transient=False) as bar,
          open(metrics_path if primary else os.devnull, "a") as log, tracker):
        task = bar.add_task(f"train {identity['kind']}", total=total, completed=start_step, info="")
        while step < total:
            batch = get_batch(next(batches))
            if mesh is None:
                state, loss, aux, gnorm = train_step(state, np.int32(step), batch)
            else:
                state, loss, aux, gnorm = train_step(state, mesh.scalar(np.int32(step)), mesh.put_batch(batch))
            step += 1
            losses_window.append(float(loss))
            if not math.isfinite(losses_window[-1]):
                raise ValueError(f"training diverged at step {step}: loss is {losses_window[-1]}; lower the learning rate")
            do_eval = step % cfg.eval_every == 0 or step == total
            if do_eval:
                rec: dict[str, Any] = {"step": step, "loss": float(np.mean(losses_window)), "grad_norm": float(gnorm),
                                       "elapsed_s": round(time.perf_counter() - t0, 2)}
                if loss_names:
                    rec["loss_per_action"] = dict(zip(loss_names, np.asarray(aux).round(5).tolist(), strict=True))
                losses_window = []
                if evaluate is not None:
                    sync_model()
                    metrics = evaluate(model) if mesh is None else mesh.agree(evaluate(model))
                    rec["val"] = metrics
                    if metric_name not in metrics:
                        raise ValueError(f"selection_metric {metric_name!r} is not a validation metric of this "
                                         f"model; choose one of {sorted(metrics)}")
                    value = metrics[metric_name]
                    if math.isfinite(value) and value > best_metric:
                        best_metric, best_step, bad_evals = value, step, 0
                        save(best_dir, step)
                    else:
                        bad_evals += 1
                log.write(json.dumps(rec) + "\n")
                log.flush()
                tracker.log(rec)
                history.append(rec)
                save(latest_dir, step)
                val_txt = f" val {metric_name} {rec['val'].get(metric_name, float('nan')):.4f}" if "val" in rec else ""
                bar.update(task, info=f"loss {rec['loss']:.4f}{val_txt}")
                if evaluate is not None and cfg.patience and bad_evals >= cfg.patience:
                    stopped_early = True
                    bar.update(task, completed=step)
                    break
            elif step % 10 == 0:
                bar.update(task, info=f"loss {np.mean(losses_window):.4f}")
            bar.update(task, completed=step)

    sync_model()
    if evaluate is not None and best_dir.exists():
        restored, _ = ckpt.load_checkpoint(best_dir, {"model": ckpt.model_state(model),
                                                      "opt": nnx.to_pure_dict(nnx.state(optimizer, nnx.optimizer.OptState))})
        ckpt.restore_model(model, restored["model"])
    if primary:
        from phoenix_recsys._extras import MissingExtraError
        from phoenix_recsys.train.plots import plot_training_curves

        try:
            plot_training_curves(history, run_dir / "training_curves.png", metric_name)
        except MissingExtraError:
            pass  # the PNG is the [plots] extra; metrics.jsonl has the same numbers
    return TrainResult(run_dir, step, best_step, best_metric, metric_name, history, stopped_early)
