"""Published peers trained in our own harness: same split, same corpus, same metrics, same seen rule.

Every peer is fitted on the training split's positive events only (each user's sequence in
(timestamp, file position) order) and scores the full corpus from the evaluation example's own
input window (`RetrievalExamples.history_post_ids`, the S items our model reads), so the peers and
our model see exactly the same evidence at test time.

Peers (`PEERS`):
  popularity  training positive counts, the same list for every user.
  ease        EASE (Steck 2019): closed-form item-item ridge regression, B = I - P / diag(P) with
              P = (X'X + lambda I)^-1, diagonal zero; score = sum of B's rows over the window's items.
  bpr         BPR-MF (Rendle et al. 2009): user and item factors trained with the pairwise BPR loss on
              uniformly sampled negatives (JAX / Optax); users unseen in training fall back to popularity.
  sasrec      SASRec (Kang & McAuley 2018) as published: item embeddings scaled by sqrt(d) plus learned
              absolute positions, dropout, blocks of (layer-normed query) causal self-attention and a
              point-wise feed-forward with residuals, a final layer norm, shared input/output item
              embeddings; the original loss is binary cross-entropy with one random negative per
              position (`loss="bce"`).
  sasrec_ce   the same network trained with a full softmax over the corpus at every position
              (`loss="softmax"`), the variant later papers (and HSTU) report.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from phoenix_recsys.data.examples import TRAIN, RetrievalExamples
from phoenix_recsys.data.schema import Dataset

log = logging.getLogger(__name__)

PEERS = ("popularity", "ease", "bpr", "sasrec", "sasrec_ce")
ScoreFn = Callable[[int, int], np.ndarray]


@dataclasses.dataclass(frozen=True)
class PeerData:
    """Training sequences for the peers.

    Attributes:
      num_items: corpus size P; items are corpus indices 0..P-1 (corpus order = ascending post id).
      users: `[U]` user ids with at least one training positive.
      indptr `[U+1]` / items `[nnz]`: each user's training positives as corpus indices, in order.
    """

    num_items: int
    users: np.ndarray
    indptr: np.ndarray
    items: np.ndarray

    def sequence(self, u: int) -> np.ndarray:
        """Row `u`'s training items in order."""
        return self.items[self.indptr[u] : self.indptr[u + 1]]

    def popularity(self) -> np.ndarray:
        """`[P]` training positive counts."""
        return np.bincount(self.items, minlength=self.num_items).astype(np.float32)


def peer_sequences(
    ds: Dataset,
    split_codes: np.ndarray,
    positive_actions: Sequence[str],
    corpus_ids: np.ndarray,
    *,
    ties: str = "sequence",
    engagement_actions: Sequence[str] | None = None,
) -> PeerData:
    """Each user's training positives (events of the train split with a positive action) in
    (timestamp, file position) order, as corpus indices. `ties` and `engagement_actions` are accepted
    for symmetry with the model's examples: a sequence model's order inside a timestamp is the file
    order either way."""
    del ties, engagement_actions
    rows = np.flatnonzero((split_codes == TRAIN) & ds.engaged(tuple(positive_actions)))
    users, ts = ds.column("user_id")[rows], ds.column("timestamp")[rows]
    rows = rows[np.lexsort((rows, ts, users))]
    users = ds.column("user_id")[rows]
    order = np.argsort(corpus_ids, kind="stable")
    items = order[np.searchsorted(corpus_ids[order], ds.column("post_id")[rows])].astype(np.int64)
    uniq, starts = np.unique(users, return_index=True)
    indptr = np.r_[starts, len(rows)].astype(np.int64)
    return PeerData(num_items=len(corpus_ids), users=uniq.astype(np.int64), indptr=indptr, items=items)


def _window_items(ex: RetrievalExamples, corpus_ids: np.ndarray) -> np.ndarray:
    """`[N, S]` corpus indices of each example's input window (oldest first, packed), -1 padded."""
    order = np.argsort(corpus_ids, kind="stable")
    h = ex.history_post_ids
    pos = np.clip(np.searchsorted(corpus_ids[order], np.where(h >= 0, h, 0)), 0, len(order) - 1)
    return np.where(h >= 0, order[pos], -1)


# -- configs ------------------------------------------------------------------------------------


def _positive(name: str, v: Any, kind: type = int) -> None:
    if not isinstance(v, kind) or isinstance(v, bool) or not v > 0:
        raise ValueError(f"{name} must be a positive {kind.__name__}, got {v!r}")


@dataclasses.dataclass(frozen=True)
class EaseConfig:
    """EASE: `l2` is the ridge penalty lambda; corpora above `max_items` are refused (P x P inverse)."""

    l2: float = 500.0
    max_items: int = 20_000

    def __post_init__(self) -> None:
        _positive("EaseConfig.l2", float(self.l2), float)
        _positive("EaseConfig.max_items", self.max_items)


@dataclasses.dataclass(frozen=True)
class BprConfig:
    """BPR-MF: factors `dim`, `steps` of `batch_size` (user, positive, negative) triples, L2 `reg`."""

    dim: int = 64
    steps: int = 3000
    batch_size: int = 1024
    learning_rate: float = 5e-3
    reg: float = 1e-5

    def __post_init__(self) -> None:
        for f in ("dim", "steps", "batch_size"):
            _positive(f"BprConfig.{f}", getattr(self, f))
        _positive("BprConfig.learning_rate", float(self.learning_rate), float)
        if self.reg < 0:
            raise ValueError(f"BprConfig.reg must be >= 0, got {self.reg!r}")


@dataclasses.dataclass(frozen=True)
class SasrecConfig:
    """SASRec; defaults are the paper's MovieLens-1M settings (d = 50, 2 blocks, 1 head, n = 200,
    dropout 0.2, Adam lr 1e-3 with beta2 0.98, batch 128), except `steps`, kept CPU-sized.

    `loss`: "bce" (one uniformly drawn negative per position, the original) or "softmax" (full corpus).
    `eval_every` / `patience`: with validation examples, validate every that many steps and keep the
    parameters of the best validation NDCG@10 (early stop after `patience` validations without gain).
    """

    dim: int = 50
    blocks: int = 2
    heads: int = 1
    max_len: int = 200
    dropout: float = 0.2
    learning_rate: float = 1e-3
    batch_size: int = 128
    steps: int = 2000
    l2_emb: float = 0.0
    loss: str = "bce"
    eval_every: int = 250
    patience: int = 8

    def __post_init__(self) -> None:
        for f in ("dim", "blocks", "heads", "max_len", "batch_size", "steps", "eval_every", "patience"):
            _positive(f"SasrecConfig.{f}", getattr(self, f))
        if self.dim % self.heads:
            raise ValueError(f"SasrecConfig.dim ({self.dim}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SasrecConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.loss not in ("bce", "softmax"):
            raise ValueError(f"SasrecConfig.loss must be 'bce' or 'softmax', got {self.loss!r}")


# -- fitted peers -------------------------------------------------------------------------------


@dataclasses.dataclass
class FittedPeer:
    """A trained peer: `scorer(ex, corpus_ids)` gives `(start, stop) -> [b, P]` corpus scores."""

    name: str
    make_scorer: Callable[[RetrievalExamples, np.ndarray], ScoreFn]
    info: dict[str, Any]

    def scorer(self, ex: RetrievalExamples, corpus_ids: np.ndarray) -> ScoreFn:
        """Scores of the examples `ex` over the corpus `corpus_ids` (the order the peer was fitted in)."""
        return self.make_scorer(ex, corpus_ids)

    def describe(self) -> dict[str, Any]:
        """The peer's settings, fit time and (when validated) curve and best step, JSON-ready."""
        return self.info


def fit_popularity(data: PeerData) -> FittedPeer:
    """Training positive counts, the same for every user."""
    pop = data.popularity()
    return FittedPeer("popularity", lambda ex, ids: lambda s, e: np.broadcast_to(pop, (e - s, len(pop))),
                      {"peer": "popularity"})


def fit_ease(data: PeerData, cfg: EaseConfig = EaseConfig()) -> FittedPeer:
    """EASE's closed form on the binary user x item matrix of training positives."""
    p = data.num_items
    if p > cfg.max_items:
        raise ValueError(f"EASE inverts a P x P matrix; the corpus has {p} items (> max_items {cfg.max_items})")
    t0 = time.perf_counter()
    rows = np.repeat(np.arange(len(data.users)), np.diff(data.indptr))
    x = np.zeros((len(data.users), p), np.float32)
    x[rows, data.items] = 1.0
    g = (x.T @ x).astype(np.float64)
    g[np.diag_indices(p)] += cfg.l2
    inv = np.linalg.inv(g)
    b = (-inv / np.diag(inv)[None, :]).astype(np.float32)
    b[np.diag_indices(p)] = 0.0

    def make(ex: RetrievalExamples, ids: np.ndarray) -> ScoreFn:
        win = _window_items(ex, ids)

        def score(s: int, e: int) -> np.ndarray:
            w = win[s:e]
            xs = np.zeros((e - s, p), np.float32)
            r, c = np.nonzero(w >= 0)
            xs[r, w[r, c]] = 1.0
            return xs @ b

        return score

    return FittedPeer("ease", make, {"peer": "ease", **dataclasses.asdict(cfg),
                                     "fit_seconds": round(time.perf_counter() - t0, 2)})


def fit_bpr(data: PeerData, cfg: BprConfig = BprConfig(), *, seed: int = 0) -> FittedPeer:
    """BPR-MF by Adam on sampled (user, positive, uniform negative) triples."""
    t0 = time.perf_counter()
    n_users, p = len(data.users), data.num_items
    if len(data.items) == 0:
        raise ValueError("BPR needs at least one training positive")
    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    k1, k2 = jax.random.split(key)
    params = {"u": 0.1 * jax.random.normal(k1, (n_users, cfg.dim)), "i": 0.1 * jax.random.normal(k2, (p, cfg.dim)),
              "b": jnp.zeros((p,))}
    opt = optax.adam(cfg.learning_rate)
    state = opt.init(params)
    row_of = np.repeat(np.arange(n_users), np.diff(data.indptr))

    def loss_fn(prm: dict, u: jax.Array, i: jax.Array, j: jax.Array) -> jax.Array:
        eu, ei, ej = prm["u"][u], prm["i"][i], prm["i"][j]
        x = jnp.sum(eu * (ei - ej), -1) + prm["b"][i] - prm["b"][j]
        reg = cfg.reg * (jnp.sum(eu**2) + jnp.sum(ei**2) + jnp.sum(ej**2))
        return -jnp.mean(jax.nn.log_sigmoid(x)) + reg / u.shape[0]

    @jax.jit
    def step(prm: dict, st: Any, u: jax.Array, i: jax.Array, j: jax.Array) -> tuple[dict, Any, jax.Array]:
        loss, g = jax.value_and_grad(loss_fn)(prm, u, i, j)
        upd, st = opt.update(g, st, prm)
        return optax.apply_updates(prm, upd), st, loss

    for _ in range(cfg.steps):
        pick = rng.integers(0, len(data.items), cfg.batch_size)
        params, state, loss = step(params, state, row_of[pick], data.items[pick], rng.integers(0, p, cfg.batch_size))
    uf, itf, ib = (np.asarray(params[k], np.float32) for k in ("u", "i", "b"))
    pop = data.popularity()
    pop_scores = (pop / max(pop.max(), 1.0)).astype(np.float32)

    def make(ex: RetrievalExamples, ids: np.ndarray) -> ScoreFn:
        pos = np.clip(np.searchsorted(data.users, ex.user_ids), 0, max(n_users - 1, 0))
        known = data.users[pos] == ex.user_ids

        def score(s: int, e: int) -> np.ndarray:
            out = uf[pos[s:e]] @ itf.T + ib[None, :]
            return np.where(known[s:e, None], out, pop_scores[None, :])

        return score

    return FittedPeer("bpr", make, {"peer": "bpr", **dataclasses.asdict(cfg), "seed": seed,
                                    "final_loss": float(loss), "fit_seconds": round(time.perf_counter() - t0, 2)})


def fit_sasrec(
    data: PeerData,
    cfg: SasrecConfig = SasrecConfig(),
    *,
    seed: int = 0,
    validate: Callable[[FittedPeer], float] | None = None,
) -> FittedPeer:
    """SASRec trained on every user's training sequence (inputs s[:-1], targets s[1:], last `max_len`).

    With `validate` (a fitted peer -> validation NDCG@10), the parameters of the best validation are
    kept and the curve is recorded in `describe()`.
    """
    t0 = time.perf_counter()
    p, n, d = data.num_items, cfg.max_len, cfg.dim
    seqs = [data.sequence(u) for u in range(len(data.users))]
    train_users = np.array([u for u, s in enumerate(seqs) if len(s) >= 2], np.int64)
    if train_users.size == 0:
        raise ValueError("SASRec needs users with at least two training positives")
    # Right-aligned [U, n] inputs / targets (item index + 1; 0 = padding), built once.
    inp = np.zeros((len(seqs), n), np.int32)
    tgt = np.zeros((len(seqs), n), np.int32)
    for u in train_users:
        s = seqs[u][-(n + 1):] + 1
        inp[u, n - (len(s) - 1):] = s[:-1]
        tgt[u, n - (len(s) - 1):] = s[1:]

    model = _SasrecNet(p, cfg, nnx.Rngs(params=seed, dropout=seed + 1))
    opt = nnx.Optimizer(model, optax.adam(cfg.learning_rate, b1=0.9, b2=0.98), wrt=nnx.Param)

    def loss_fn(m: _SasrecNet, x: jax.Array, y: jax.Array, neg: jax.Array) -> jax.Array:
        h = m(x, deterministic=False)  # [B, n, d]
        valid = (y > 0).astype(jnp.float32)
        table = m.item.embedding[...]
        if cfg.loss == "bce":
            pos_l = jnp.sum(h * table[y], -1)
            neg_l = jnp.sum(h * table[neg], -1)
            per = -(jax.nn.log_sigmoid(pos_l) + jax.nn.log_sigmoid(-neg_l))
        else:
            logits = h @ table[1:].T  # [B, n, P]
            per = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(y - 1, 0))
        loss = jnp.sum(per * valid) / jnp.maximum(jnp.sum(valid), 1.0)
        return loss + cfg.l2_emb * jnp.sum(table**2)

    @nnx.jit
    def train_step(m: _SasrecNet, o: nnx.Optimizer, x: jax.Array, y: jax.Array, neg: jax.Array) -> jax.Array:
        loss, g = nnx.value_and_grad(loss_fn)(m, x, y, neg)
        o.update(m, g)
        return loss

    @nnx.jit
    def encode(m: _SasrecNet, x: jax.Array) -> jax.Array:
        return m(x, deterministic=True)[:, -1]

    def snapshot() -> FittedPeer:
        table = np.asarray(model.item.embedding[...], np.float32)[1:]

        def make(ex: RetrievalExamples, ids: np.ndarray) -> ScoreFn:
            win = _window_items(ex, ids)
            x = np.zeros((len(ex), n), np.int32)
            for r in range(len(ex)):
                w = win[r][win[r] >= 0][-n:] + 1
                if w.size:
                    x[r, n - w.size:] = w
            users = np.concatenate([np.asarray(encode(model, x[s:s + 256])) for s in range(0, len(ex), 256)]
                                   ) if len(ex) else np.zeros((0, d), np.float32)
            return lambda s, e: users[s:e] @ table.T

        return FittedPeer(name, make, info)

    name = "sasrec" if cfg.loss == "bce" else "sasrec_ce"
    info: dict[str, Any] = {"peer": name, **dataclasses.asdict(cfg), "seed": seed}
    rng = np.random.default_rng(seed)
    curve: list[dict[str, float]] = []
    best, best_step, best_state, bad = -math.inf, 0, None, 0
    loss = jnp.zeros(())
    step = 0
    for step in range(1, cfg.steps + 1):
        u = train_users[rng.integers(0, len(train_users), cfg.batch_size)]
        # The original draws a negative outside the user's sequence; a uniform draw collides with it
        # with probability |s| / P, which the BCE loss tolerates (and the published code's rejection
        # loop costs a Python loop per position).
        neg = rng.integers(1, p + 1, (cfg.batch_size, n)).astype(np.int32)
        loss = train_step(model, opt, inp[u], tgt[u], neg)
        if validate is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
            v = float(validate(snapshot()))
            curve.append({"step": step, "loss": float(loss), "val_ndcg@10": v})
            # A long fit (200 epochs is ~40 min on 2 cores) says how it goes while it runs.
            log.info("%s step %d/%d loss %.4f val ndcg@10 %.4f (%.0f s)", name, step, cfg.steps, float(loss), v,
                     time.perf_counter() - t0)
            if v > best:
                best, best_step, bad = v, step, 0
                best_state = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
    if best_state is not None:
        nnx.update(model, best_state)
    # Passes over the training users actually made: the published recipe trains 200 epochs, and on a
    # CPU-sized `steps` the figure shows how far short a fit stopped (issue 19: 2000 steps ~ 85 epochs).
    info.update({"steps_run": step, "train_users": int(train_users.size),
                 "epochs": round(step * cfg.batch_size / train_users.size, 2),
                 "final_loss": float(loss), "fit_seconds": round(time.perf_counter() - t0, 2),
                 **({"val_curve": curve, "best_step": best_step, "best_val_ndcg@10": best} if curve else {})})
    return snapshot()


class _SasrecNet(nnx.Module):
    """SASRec's network: embeddings, causal blocks, final layer norm; output `[B, n, d]`."""

    def __init__(self, num_items: int, cfg: SasrecConfig, rngs: nnx.Rngs) -> None:
        d = cfg.dim
        self.cfg = cfg
        init = nnx.initializers.normal(1.0 / math.sqrt(d))
        self.item = nnx.Embed(num_items + 1, d, rngs=rngs, embedding_init=init)
        self.pos = nnx.Embed(cfg.max_len, d, rngs=rngs, embedding_init=init)
        self.drop = nnx.Dropout(cfg.dropout, rngs=rngs)
        self.attn_ln = nnx.List([nnx.LayerNorm(d, epsilon=1e-8, rngs=rngs) for _ in range(cfg.blocks)])
        self.attn = nnx.List([nnx.MultiHeadAttention(cfg.heads, d, dropout_rate=cfg.dropout, decode=False, rngs=rngs)
                              for _ in range(cfg.blocks)])
        self.ffn_ln = nnx.List([nnx.LayerNorm(d, epsilon=1e-8, rngs=rngs) for _ in range(cfg.blocks)])
        self.ffn1 = nnx.List([nnx.Linear(d, d, rngs=rngs) for _ in range(cfg.blocks)])
        self.ffn2 = nnx.List([nnx.Linear(d, d, rngs=rngs) for _ in range(cfg.blocks)])
        self.last_ln = nnx.LayerNorm(d, epsilon=1e-8, rngs=rngs)

    def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
        n = x.shape[1]
        keep = (x > 0)[..., None].astype(jnp.float32)
        h = self.item(x) * math.sqrt(self.cfg.dim) + self.pos(jnp.arange(n))[None]
        h = self.drop(h, deterministic=deterministic) * keep
        # Future blinding plus key masking, as the published code: a padding position is never attended
        # to. Without the key mask a short sequence's few items share each query's attention with up to
        # n padding keys (whose key is the projection's bias), which dilutes them.
        causal = jnp.tril(jnp.ones((n, n), bool))[None, None] & (x > 0)[:, None, None, :]
        for b in range(self.cfg.blocks):
            q = self.attn_ln[b](h)
            # Queries are layer-normed, keys/values are not, and the query is the residual (as published).
            h = q + self.attn[b](q, h, h, mask=causal, deterministic=deterministic)
            z = self.ffn_ln[b](h)
            f = self.drop(jax.nn.relu(self.ffn1[b](z)), deterministic=deterministic)
            h = (z + self.drop(self.ffn2[b](f), deterministic=deterministic)) * keep
        return self.last_ln(h)


_CONFIGS: dict[str, type] = {"ease": EaseConfig, "bpr": BprConfig, "sasrec": SasrecConfig, "sasrec_ce": SasrecConfig}


def _peer_config(name: str, config: dict[str, Any] | None) -> Any:
    """Peer `name`'s config object: its class defaults under `config`'s overrides (None for popularity)."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; known: {list(PEERS)}")
    if name == "popularity":
        return None
    cfg = dict(config or {})
    cls = _CONFIGS[name]
    if name.startswith("sasrec"):
        cfg.setdefault("loss", "bce" if name == "sasrec" else "softmax")
    unknown = sorted(set(cfg) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"peer {name!r}: unknown config fields {unknown}")
    return cls(**cfg)


def peer_settings(name: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings peer `name` is fitted with: every field of its config class, defaults merged with
    the overrides `config` (`{}` for popularity, which has none). A job's fingerprint holds these, so a
    changed default (say SASRec's `steps`) is a different job, not a silent mix of old and new fits."""
    cfg = _peer_config(name, config)
    return {} if cfg is None else dataclasses.asdict(cfg)


def fit_peer(
    name: str,
    data: PeerData,
    *,
    seed: int = 0,
    config: dict[str, Any] | None = None,
    validate: Callable[[FittedPeer], float] | None = None,
) -> FittedPeer:
    """Fit peer `name` (one of `PEERS`) with optional config overrides (fields of its config class)."""
    cfg = _peer_config(name, config)
    if name == "popularity":
        return fit_popularity(data)
    if name == "ease":
        return fit_ease(data, cfg)
    if name == "bpr":
        return fit_bpr(data, cfg, seed=seed)
    return fit_sasrec(data, cfg, seed=seed, validate=validate)
