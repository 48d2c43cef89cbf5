"""Batched, jitted inference shared by training (validation), evaluation and serving.

Axes: N examples, C candidates, A actions, P corpus posts, D width.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

from phoenix_recsys.data._progress import progress_bar
from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.data.examples import PostCorpus, RankingExamples, RetrievalExamples
from phoenix_recsys.model.ranker import PhoenixModel, probabilities_from_logits
from phoenix_recsys.model.retrieval import PhoenixRetrievalModel
from phoenix_recsys.train.metrics import retrieval_metrics, target_positions


def predict_ranker(model: PhoenixModel, ex: RankingExamples, batch_size: int = 256) -> np.ndarray:
    """Probabilities `[N, C, A]` (sigmoid/softplus) of a ranker on examples, batched and jitted."""
    graphdef, state = nnx.split(model)
    fwd = _jitted_forward(graphdef)
    out = []
    for start in range(0, len(ex), batch_size):
        part = ex.take(np.arange(start, min(start + batch_size, len(ex))))
        n = len(part)
        if n < batch_size:  # pad to a fixed shape: one compilation
            part = part.take(np.r_[np.arange(n), np.zeros(batch_size - n, np.int64)])
        logits = fwd(state, part.batch)
        out.append(np.asarray(probabilities_from_logits(logits, model.config.actions))[:n])
    return np.concatenate(out, axis=0) if out else np.zeros((0,) + ex.labels.shape[1:], np.float32)


_FORWARD_CACHE: dict[int, Callable[..., Any]] = {}


def _jitted_forward(graphdef: Any) -> Callable[..., Any]:
    key = hash(graphdef)
    if key not in _FORWARD_CACHE:
        _FORWARD_CACHE[key] = jax.jit(lambda st, b: nnx.merge(graphdef, st)(b).logits)
    return _FORWARD_CACHE[key]


def encode_corpus(model: PhoenixRetrievalModel, corpus: PostCorpus, batch_size: int = 4096) -> np.ndarray:
    """Candidate-tower embeddings `[P, D]` of every corpus post."""
    graphdef, state = nnx.split(model)
    enc = jax.jit(lambda st, p, a: nnx.merge(graphdef, st).encode_posts(p, a))
    out = []
    n = len(corpus.post_ids)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        p, a = corpus.post_hashes[start:stop], corpus.author_hashes[start:stop]
        if stop - start < batch_size and n > batch_size:
            pad = batch_size - (stop - start)
            p, a = np.pad(p, ((0, pad), (0, 0))), np.pad(a, ((0, pad), (0, 0)))
        out.append(np.asarray(enc(state, p, a), np.float32)[: stop - start])
    return np.concatenate(out, axis=0)


def encode_users(model: PhoenixRetrievalModel, batch: RecsysBatch, batch_size: int = 512) -> np.ndarray:
    """User-tower embeddings `[N, D]` for a (possibly large) batch of histories."""
    graphdef, state = nnx.split(model)
    enc = jax.jit(lambda st, b: nnx.merge(graphdef, st).build_user_representation(b)[0])
    n = batch.batch_size
    out = []
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        if len(idx) < batch_size and n > batch_size:
            idx = np.r_[idx, np.zeros(batch_size - len(idx), np.int64)]
        part = RecsysBatch(*[None if f is None else np.asarray(f)[idx] for f in batch])
        out.append(np.asarray(enc(state, part), np.float32)[: min(batch_size, n - start)])
    return np.concatenate(out, axis=0)


ScoreFn = Callable[[int, int], np.ndarray]
SEEN_RULES = ("all", "window")


def embedding_scorer(user_emb: np.ndarray, corpus_emb: np.ndarray) -> ScoreFn:
    """Scores `[b, P]` of examples `start:stop` by dot product of user and corpus embeddings."""
    return lambda start, stop: user_emb[start:stop] @ corpus_emb.T


def retrieval_eval(
    score_fn: ScoreFn,
    corpus_ids: np.ndarray,
    ex: RetrievalExamples,
    ks: tuple[int, ...] = (10, 50, 100, 1000),
    exclude_seen: bool = True,
    chunk: int = 512,
    seen_rule: str = "all",
    progress: str | None = None,
) -> dict[str, float]:
    """Full-corpus retrieval metrics for one target per example.

    Every corpus post is scored; the posts the example's user engaged with strictly before the target
    time are excluded (the target itself never is, so a re-engaged post still counts); ties are
    broken uniformly at random in expectation (see `metrics.retrieval_metrics`).

    Args:
      score_fn: `(start, stop) -> [stop - start, P]` scores of examples start:stop over the corpus.
      corpus_ids: `[P]` post ids in the corpus order of the scores.
      ex: the examples (targets and seen posts).
      ks: cut-offs.
      exclude_seen: drop already-engaged posts from the ranking.
      seen_rule: which posts count as seen: "all" (every engagement strictly before the target) or
        "window" (only the posts of the example's input window of S items, as HSTU's evaluation code).
      chunk: examples scored at a time (memory is chunk x P floats).
      progress: label of a progress bar on stderr (one step per chunk); None: no bar.
    """
    order = np.argsort(corpus_ids, kind="stable")
    sorted_ids = corpus_ids[order]
    tpos = np.minimum(np.searchsorted(sorted_ids, ex.target_post_ids), len(sorted_ids) - 1)
    if np.any(sorted_ids[tpos] != ex.target_post_ids):
        raise ValueError("a retrieval target is not in the corpus (posts.parquet)")
    target_idx = order[tpos]
    if seen_rule not in SEEN_RULES:
        raise ValueError(f"seen_rule must be one of {list(SEEN_RULES)}, got {seen_rule!r}")
    if exclude_seen:
        pairs = ex.seen_pairs if seen_rule == "all" else ex.window_pairs
        ex_rows, seen_posts = pairs(keep_target=True)
    else:
        ex_rows, seen_posts = np.zeros(0, np.int64), np.zeros(0, np.int64)
    sp = np.minimum(np.searchsorted(sorted_ids, seen_posts), len(sorted_ids) - 1)
    known = sorted_ids[sp] == seen_posts
    ex_rows, seen_idx = ex_rows[known], order[sp[known]]
    greater, ties = [], []
    # Scoring every query against the whole corpus is the long part of an evaluation: show it.
    with progress_bar(progress or "", -(-len(ex) // chunk), enabled=progress is not None) as advance:
        for start in range(0, len(ex), chunk):
            stop = min(start + chunk, len(ex))
            scores = np.asarray(score_fn(start, stop), np.float32)
            excl = np.zeros(scores.shape, bool)
            sel = (ex_rows >= start) & (ex_rows < stop)
            excl[ex_rows[sel] - start, seen_idx[sel]] = True
            g, t = target_positions(scores, target_idx[start:stop], excl)
            greater.append(g)
            ties.append(t)
            advance()
    if not greater:
        return {"queries": 0}
    return retrieval_metrics(np.concatenate(greater), np.concatenate(ties), ks, corpus_size=len(corpus_ids))
