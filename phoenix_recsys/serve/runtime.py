"""`ModelRuntime`: a bundle's jitted predict / user_embedding / post_embeddings, compiled once and shared.

Axes: N candidates, A actions, D embedding width, S history length.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from phoenix_recsys._extras import require_extra
from phoenix_recsys.actions import ActionVocabulary
from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.model.cached import CachedRanker
from phoenix_recsys.serve import history as hist
from phoenix_recsys.serve.settings import ServeSettings
from phoenix_recsys.serve.store import History
from phoenix_recsys.serve.types import (
    Unsupported,
)
from phoenix_recsys.train.bundle import Bundle, load_bundle

faiss = require_extra("faiss", "serve", "serving (FAISS)")

_log = logging.getLogger(__name__)
#: Candidate-block sizes the ranker is compiled for: a request pads its N candidates up to the
#: next size (powers of 2 from 64 up to the chunk size; over a chunk, whole chunks plus the rest's
#: bucket). Each size is one compiled scoring program (about a second of warm-up each on CPU), so
#: there are few; but padding rows cost what real rows do (a feed's ~1,450 candidates padded to
#: 2,048 under powers of 4 spent a third of the ranking time on padding: 19 vs 13 ms at 1M posts),
#: so the sizes step by 2x, not 4x: at most 2x padding, usually much less.
_CANDIDATE_BUCKET_MIN = 64
#: Batch sizes the candidate tower is compiled for: small online adds and bulk corpus encoding.
_POST_CHUNK_MIN, _POST_CHUNK_MAX = 64, 4096


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def candidate_buckets(chunk_size: int) -> tuple[int, ...]:
    """The padded candidate-block sizes up to one chunk: 64, 128, 256, 512, 1024 ... capped at `chunk_size`."""
    out, b = [], _CANDIDATE_BUCKET_MIN
    while b < chunk_size:
        out.append(b)
        b *= 2
    out.append(chunk_size)
    return tuple(out)


def padded_size(n: int, chunk_size: int) -> int:
    """The block size a request of `n` candidates is padded to (see `candidate_buckets`).

    Over one chunk: whole chunks, then the rest padded to its own bucket (1,100 -> 1,024 + 128).
    """
    full = (n // chunk_size) * chunk_size if n > chunk_size else 0
    rest = n - full
    return full + (0 if rest == 0 else next(b for b in candidate_buckets(chunk_size) if b >= rest))


def _probabilities(logits: np.ndarray, binary: np.ndarray) -> np.ndarray:
    """NumPy twin of `model.ranker.probabilities_from_logits` (sigmoid / softplus, float32).

    NumPy rather than jnp because N differs per request and each new shape would compile a new
    eager XLA program; the two agree to float32 rounding.
    """
    x = np.asarray(logits, dtype=np.float32)
    out = np.empty_like(x)
    # Each column gets only its own function, and the sigmoid one exp (of -|x|, which cannot
    # overflow): computing both everywhere and selecting cost ~1 ms a feed at 1,500 x 19.
    b = x[..., binary]
    e = np.exp(-np.abs(b))
    out[..., binary] = np.where(b >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    out[..., ~binary] = np.logaddexp(np.float32(0.0), x[..., ~binary])
    return out


class ModelRuntime:
    """The bundle's models behind jitted functions, built once and shared by services and threads.

    Compiled programs: one context encoder and one candidate scorer per candidate bucket
    (`candidate_buckets`: 64, 128, 256, 512, 1024 by default), one user tower (B = 1, S fixed) and two
    candidate-tower batch sizes. Every request pads to these shapes, so nothing compiles after
    `warmup`.
    """

    def __init__(self, bundle: Bundle, *, chunk_size: int = 1024) -> None:
        """Wrap a loaded bundle; it must hold a ranker (the retriever is optional)."""
        if bundle.ranker is None:
            raise ValueError(f"bundle {bundle.path} has no ranker; the feed needs one")
        for kind in ("ranker", "retrieval"):
            # Serving builds full-feature inputs; a model trained on pure ids would get inputs it never
            # saw and answer wrongly without any error, so refuse it.
            if bundle.train_config(kind).get("input_mode", "full") != "full":
                raise ValueError(f"bundle {bundle.path}: its {kind} was trained with input_mode="
                                 f"{bundle.train_config(kind)['input_mode']!r} (an evaluation-only setting); "
                                 "serving needs input_mode='full'")
        self.bundle = bundle
        self.config = bundle.ranker.config
        self.vocab: ActionVocabulary = self.config.actions
        self.hash_config = self.config.hash_config
        self.ranker = CachedRanker(bundle.ranker, chunk_size=chunk_size)
        self._binary = np.array(self.vocab.binary_mask(), dtype=bool)
        self.retrieval_config = None if bundle.retrieval is None else bundle.retrieval.config
        if bundle.retrieval is not None:
            graphdef, state = nnx.split(bundle.retrieval)
            self._tower_state = state
            self._user_tower = jax.jit(lambda st, b: nnx.merge(graphdef, st).build_user_representation(b)[0])
            self._post_tower = jax.jit(lambda st, p, a: nnx.merge(graphdef, st).encode_posts(p, a))

    @classmethod
    def load(cls, bundle_dir: str | Path, *, chunk_size: int = 1024) -> ModelRuntime:
        """Load a bundle directory and wrap it."""
        return cls(load_bundle(bundle_dir), chunk_size=chunk_size)

    @property
    def has_retrieval(self) -> bool:
        return self.retrieval_config is not None

    @property
    def fingerprint(self) -> str:
        """The bundle's parameter fingerprint."""
        return self.bundle.fingerprint()

    def _padded(self, batch: RecsysBatch) -> RecsysBatch:
        """`batch` with its candidate block padded (hash 0 = padding) to `padded_size(N)`."""
        n = batch.num_candidates
        size = padded_size(n, self.ranker.chunk_size)
        if size == n:
            return batch
        pad = size - n

        def grow(x: np.ndarray | None) -> np.ndarray | None:
            if x is None:
                return None
            x = np.asarray(x)
            return np.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))

        return batch.with_candidates(
            grow(batch.candidate_post_hashes),
            grow(batch.candidate_author_hashes),
            grow(batch.candidate_product_surface),
            grow(batch.candidate_impr_ts),
            grow(batch.candidate_post_creation_ts),
            grow(batch.candidate_in_network),
        )

    def predict(self, batch: RecsysBatch) -> np.ndarray:
        """Predictions `[N, A]` float32 for the N candidates of a B = 1 batch (N >= 1).

        The candidate block is padded (hash 0 = padding) to `padded_size(N)`, so only the few
        bucket sizes are ever compiled; candidate isolation makes the padding invisible.
        """
        n = batch.num_candidates
        out = self.ranker.score(self._padded(batch))
        return _probabilities(np.asarray(out.logits, np.float32)[0, :n], self._binary)

    def batchable(self, batch: RecsysBatch) -> bool:
        """Whether `predict_many` can take this request (B = 1, at most one chunk of candidates)."""
        return batch.batch_size == 1 and 1 <= batch.num_candidates <= self.ranker.chunk_size

    def predict_many(self, batches: list[RecsysBatch]) -> list[np.ndarray]:
        """`predict` of several requests of one candidate bucket in one compiled call, bitwise equal.

        Every request must be `batchable` and pad to the same `padded_size`. The count is rounded up
        to a power of two (the last request repeated, its copies' results dropped), so only
        log2(`max_requests`) programs per bucket are compiled.
        """
        if not batches:
            return []
        sizes = {padded_size(b.num_candidates, self.ranker.chunk_size) for b in batches}
        if len(sizes) != 1 or not all(self.batchable(b) for b in batches):
            raise ValueError(f"predict_many needs B = 1 requests of one candidate bucket; got buckets {sorted(sizes)}")
        padded = [self._padded(b) for b in batches]
        padded += [padded[-1]] * (_next_pow2(len(padded)) - len(padded))
        outs = self.ranker.score_each(padded)
        return [_probabilities(o.logits[0, : b.num_candidates], self._binary) for o, b in zip(outs[: len(batches)], batches, strict=True)]

    def user_embedding(self, batch: RecsysBatch) -> np.ndarray:
        """User-tower embedding `[D]` of a B = 1 context batch."""
        if not self.has_retrieval:
            raise Unsupported("the bundle has no retrieval model")
        return np.asarray(self._user_tower(self._tower_state, batch), np.float32)[0]

    def post_embeddings(self, post_ids: np.ndarray, author_ids: np.ndarray) -> np.ndarray:
        """Candidate-tower embeddings `[P, D]` of posts with their authors."""
        if not self.has_retrieval:
            raise Unsupported("the bundle has no retrieval model")
        assert self.retrieval_config is not None
        post_ids = np.asarray(post_ids, np.int64)
        n = post_ids.shape[0]
        d = self.retrieval_config.emb_size
        if n == 0:
            return np.zeros((0, d), np.float32)
        hc = self.hash_config
        p_all = hc.hash_items(post_ids)
        a_all = hist.hash_by_unique(np.asarray(author_ids, np.int64), hc.hash_authors)
        k = _POST_CHUNK_MIN if n <= _POST_CHUNK_MIN else _POST_CHUNK_MAX
        out = []
        for start in range(0, n, k):
            stop = min(start + k, n)
            # Pad to the chunk size: the same few compiled programs serve every call.
            p = np.pad(p_all[start:stop], ((0, k - (stop - start)), (0, 0)))
            a = np.pad(a_all[start:stop], ((0, k - (stop - start)), (0, 0)))
            out.append(np.asarray(self._post_tower(self._tower_state, p, a), np.float32)[: stop - start])
        return np.concatenate(out, axis=0)

    def context(self, user_id: int | None, history: History, *, for_retrieval: bool = False) -> RecsysBatch:
        """The `[user | history]` batch for the ranker (or the user tower), padded to its S."""
        cfg = self.retrieval_config if for_retrieval and self.retrieval_config is not None else self.config
        return hist.context_batch(
            user_id, history, hash_config=self.hash_config, vocab=self.vocab, history_len=cfg.history_seq_len
        )

    def warmup(self, max_candidates: int, *, batch_sizes: tuple[int, ...] = ()) -> float:
        """Compile every program a request of up to `max_candidates` candidates can use.

        Args:
          max_candidates: the largest request.
          batch_sizes: also compile `predict_many` for these request counts (powers of two).

        Returns:
          Seconds spent.
        """
        t0 = time.perf_counter()
        empty = hist.make_history([], [], [])
        ctx = self.context(0, empty)
        top = padded_size(max(1, max_candidates), self.ranker.chunk_size)
        for k in candidate_buckets(self.ranker.chunk_size):
            if k > top:
                break
            batch = hist.with_candidates(
                ctx, np.arange(k), np.zeros(k, np.int64), hash_config=self.hash_config, product_surface=0, now=0
            )
            self.predict(batch)
            for count in batch_sizes:
                self.predict_many([batch] * count)
        if self.has_retrieval:
            self.user_embedding(self.context(0, empty, for_retrieval=True))
            self.post_embeddings(np.arange(1), np.zeros(1, np.int64))
            self.post_embeddings(np.arange(_POST_CHUNK_MIN + 1), np.zeros(_POST_CHUNK_MIN + 1, np.int64))
        return time.perf_counter() - t0


def apply_process_settings(settings: ServeSettings) -> None:
    """Apply the settings that are process-wide by nature (FAISS's OpenMP threads).

    Kept out of `FeedService.open`, so a library user's process is changed only on request; the
    `serve` and `feed` commands, which own their process, call it.
    """
    if settings.faiss_threads is not None:
        faiss.omp_set_num_threads(settings.faiss_threads)
