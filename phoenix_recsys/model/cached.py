"""Cached-context scoring: the serving hot path.

Because a candidate attends only to user+history and itself, each layer's keys/values of
`[user | history]` are computed once per request; candidates are then scored in fixed-size chunks
against that cache. The numbers equal the full forward's (to float tolerance) and there is no limit on
candidates per request. Chunk sizes are powers of two (8 .. `chunk_size`), so a handful of compiled
programs serve every request size and a small request is not padded to a large chunk.

Axes: B batch (requests), S history, N candidates in a request, K chunk size, A actions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.model.ranker import ContextCache, PhoenixModel, RecsysModelOutput
from phoenix_recsys.model.validation import validate_batch

MIN_CHUNK = 8


def _chunk_for(n: int) -> int:
    """The compiled block size for `n` candidates: the next power of two, at least `MIN_CHUNK`."""
    return max(MIN_CHUNK, 1 << max(0, n - 1).bit_length())


def _pad_axis1(x: np.ndarray | None, size: int) -> np.ndarray | None:
    if x is None:
        return None
    x = np.asarray(x)
    pad = size - x.shape[1]
    if pad <= 0:
        return x
    widths = [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2)
    return np.pad(x, widths)


@dataclasses.dataclass
class CachedRanker:
    """Jitted context encoding + chunked candidate scoring for a `PhoenixModel`.

    Build it once per model (it splits the module into a graph and a state so the jitted functions
    are pure and cheap to call), then call `score(batch)` with any number of candidates.

    Attributes:
      model: the ranker.
      chunk_size: the largest chunk of candidates scored in one compiled call.
    """

    model: PhoenixModel
    chunk_size: int = 1024
    _encode: Callable[..., Any] = dataclasses.field(init=False, repr=False)
    _score: Callable[..., Any] = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {self.chunk_size!r}")
        graphdef, state = nnx.split(self.model)
        self._state = state

        def encode(state: Any, batch: RecsysBatch) -> ContextCache:
            return nnx.merge(graphdef, state).encode_context(batch)

        def score(state: Any, cache: ContextCache, batch: RecsysBatch, slot_offset: jax.Array) -> RecsysModelOutput:
            return nnx.merge(graphdef, state).score_with_context(cache, batch, slot_offset=slot_offset)

        def score_each(state: Any, stacked: RecsysBatch) -> RecsysModelOutput:
            # One request per step of a loop inside one program: every step has exactly the shapes of
            # a request scored alone (B = 1, one chunk), so its arithmetic, and its bits, are the same.
            model = nnx.merge(graphdef, state)

            def one(batch: RecsysBatch) -> RecsysModelOutput:
                cache = model.encode_context(_context_only(batch))
                return model.score_with_context(cache, _candidates_only(batch), slot_offset=jnp.int32(0))

            return jax.lax.map(one, stacked)

        self._encode = jax.jit(encode)
        self._score = jax.jit(score)
        self._score_each = jax.jit(score_each)

    def refresh(self) -> None:
        """Pick up new parameter values after the model was trained or reloaded in place."""
        self._state = nnx.state(self.model)

    def encode(self, batch: RecsysBatch) -> ContextCache:
        """Per-layer KV of `[user | history]` for `batch` (its candidate block is ignored)."""
        return self._encode(self._state, _context_only(batch))

    def score_cached(self, cache: ContextCache, batch: RecsysBatch) -> RecsysModelOutput:
        """Score all `N` candidates of `batch` against `cache`, `chunk_size` at a time.

        Returns:
          logits `[B, N, A]` float32 (and continuous predictions when configured).
        """
        n = batch.num_candidates
        k = min(self.chunk_size, _chunk_for(n))
        logits, conts = [], []
        for start in range(0, n, k):
            stop = min(start + k, n)
            # A partial last chunk is padded only to the next power of two (one of the sizes already
            # compiled for smaller requests), not to a whole chunk: 1,100 candidates cost 1,024 + 128
            # rows, not 2,048.
            kk = min(k, _chunk_for(stop - start))
            chunk = batch.with_candidates(
                _pad_axis1(np.asarray(batch.candidate_post_hashes)[:, start:stop], kk),
                _pad_axis1(np.asarray(batch.candidate_author_hashes)[:, start:stop], kk),
                _pad_axis1(np.asarray(batch.candidate_product_surface)[:, start:stop], kk),
                _slice_opt(batch.candidate_impr_ts, start, stop, kk),
                _slice_opt(batch.candidate_post_creation_ts, start, stop, kk),
                _slice_opt(batch.candidate_in_network, start, stop, kk),
            )
            # A NumPy scalar, not jnp.int32: that would run an eager device op per chunk on the hot path.
            out = self._score(self._state, cache, _candidates_only(chunk), np.int32(start))
            # Slice on the host: a device-side slice compiles one program per distinct length.
            logits.append(np.asarray(out.logits, np.float32)[:, : stop - start])
            if out.continuous_preds is not None:
                conts.append(np.asarray(out.continuous_preds, np.float32)[:, : stop - start])
        return RecsysModelOutput(
            logits=np.concatenate(logits, axis=1), continuous_preds=np.concatenate(conts, axis=1) if conts else None
        )

    def score_each(self, batches: list[RecsysBatch]) -> list[RecsysModelOutput]:
        """Score several B = 1 requests of one candidate-block size in one call; bitwise `score` of each.

        Each request must have the same history length and `N` candidates with `N` a chunk size of
        `score` (a power of two from 8 to `chunk_size`), so that alone it is one chunk. The requests run
        one after another inside one compiled loop (`jax.lax.map`): the saving is the per-call work
        (dispatch, host copies, one program launch per request), not wider matrices, because
        stacking requests along B changes how XLA blocks some reductions and so the last bits.

        Returns:
          one `RecsysModelOutput` per request: logits `[1, N, A]` float32.
        """
        if not batches:
            return []
        n = batches[0].num_candidates
        k = min(self.chunk_size, _chunk_for(n))
        if k != n or any(b.batch_size != 1 or b.num_candidates != n for b in batches):
            raise ValueError(f"score_each needs B = 1 requests of one chunk size; got N = "
                             f"{[b.num_candidates for b in batches]} (chunk size for {n}: {k})")
        for b in batches:
            validate_batch(b, self.model.config)
        fields = [_present(f) for f in zip(*batches, strict=True)]
        out = self._score_each(self._state, RecsysBatch(*fields))
        logits = np.asarray(out.logits, np.float32)
        conts = None if out.continuous_preds is None else np.asarray(out.continuous_preds, np.float32)
        return [RecsysModelOutput(logits[i], None if conts is None else conts[i]) for i in range(len(batches))]

    def score(self, batch: RecsysBatch) -> RecsysModelOutput:
        """Validate, encode the context once and score every candidate of `batch`."""
        validate_batch(batch, self.model.config)
        return self.score_cached(self.encode(batch), batch)


def _present(values: tuple[Any, ...]) -> np.ndarray | None:
    # One batch field across requests: None everywhere, or stacked into `[n, 1, ...]`.
    if all(v is None for v in values):
        return None
    if any(v is None for v in values):
        raise ValueError("score_each: every request must carry the same optional fields")
    return np.stack([np.asarray(v) for v in values])


def _slice_opt(x: np.ndarray | None, start: int, stop: int, k: int) -> np.ndarray | None:
    return None if x is None else _pad_axis1(np.asarray(x)[:, start:stop], k)


def _context_only(batch: RecsysBatch) -> RecsysBatch:
    b = batch.batch_size
    hc = np.shape(batch.candidate_post_hashes)[2]
    ha = np.shape(batch.candidate_author_hashes)[2]
    # An empty candidate block keeps the jitted encoder's input shapes independent of N.
    return batch.with_candidates(
        np.zeros((b, 0, hc), np.int32), np.zeros((b, 0, ha), np.int32), np.zeros((b, 0), np.int32)
    )


def _candidates_only(batch: RecsysBatch) -> RecsysBatch:
    # Only the candidate fields are read when scoring against a cache; dropping the rest keeps the
    # jitted scorer from recompiling when history shapes differ.
    return RecsysBatch(
        user_hashes=None,  # type: ignore[arg-type]
        history_post_hashes=None,  # type: ignore[arg-type]
        history_author_hashes=None,  # type: ignore[arg-type]
        history_actions=None,  # type: ignore[arg-type]
        history_product_surface=None,  # type: ignore[arg-type]
        candidate_post_hashes=batch.candidate_post_hashes,
        candidate_author_hashes=batch.candidate_author_hashes,
        candidate_product_surface=batch.candidate_product_surface,
        candidate_impr_ts=batch.candidate_impr_ts,
        candidate_post_creation_ts=batch.candidate_post_creation_ts,
        candidate_in_network=batch.candidate_in_network,
    )
