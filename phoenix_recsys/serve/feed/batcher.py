"""Micro-batching of ranking across concurrent requests (`ServeSettings.rank_batch_window_ms`).

A request thread calls `RankBatcher.predict(batch)`; one background thread takes the first waiting
request, keeps collecting for `window_s` (or until `max_requests` are waiting), then scores the ones
of one candidate bucket together with `ModelRuntime.predict_many` (one compiled call for all of them)
and hands each its own rows. A request alone in its window, or with more candidates than one chunk,
goes through `ModelRuntime.predict` as without the batcher.

Scores are bitwise those of ranking each request alone: `predict_many` runs each request with
exactly the shapes it has alone (see `CachedRanker.score_each`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from concurrent.futures import Future

import numpy as np

from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.serve.runtime import ModelRuntime, padded_size


class RankBatcher:
    """Collects concurrent `predict` calls for a short window and scores them in one call per bucket.

    Attributes:
      runtime: the shared `ModelRuntime`.
      window_s: how long the first request of a batch waits for others (seconds, > 0).
      max_requests: a batch is scored at once when this many requests wait (a power of two >= 2).
    """

    def __init__(self, runtime: ModelRuntime, *, window_s: float, max_requests: int = 8) -> None:
        """Start the batching thread (a daemon; `close` stops it)."""
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s!r}")
        if max_requests < 2 or max_requests & (max_requests - 1):
            raise ValueError(f"max_requests must be a power of two >= 2, got {max_requests!r}")
        self.runtime = runtime
        self.window_s = float(window_s)
        self.max_requests = int(max_requests)
        self._queue: queue.SimpleQueue[tuple[RecsysBatch, Future[np.ndarray]] | None] = queue.SimpleQueue()
        self._closed = False
        self.batches = 0  # calls of predict_many, and requests they served (for tests and metrics)
        self.batched_requests = 0
        self._thread = threading.Thread(target=self._run, name="rank-batcher", daemon=True)
        self._thread.start()

    def batch_sizes(self) -> tuple[int, ...]:
        """The request counts `predict_many` is called with (to compile at warm-up): 2, 4 .. max."""
        out, n = [], 2
        while n <= self.max_requests:
            out.append(n)
            n *= 2
        return tuple(out)

    def predict(self, batch: RecsysBatch) -> np.ndarray:
        """`ModelRuntime.predict(batch)`, possibly scored together with other threads' requests."""
        if self._closed or not self.runtime.batchable(batch):
            return self.runtime.predict(batch)
        fut: Future[np.ndarray] = Future()
        self._queue.put((batch, fut))
        return fut.result()

    def close(self) -> None:
        """Stop the thread once the waiting requests are scored."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout=10)

    # -- the batching thread ------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            pending = [first]
            deadline = time.monotonic() + self.window_s
            stop = False
            while len(pending) < self.max_requests:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                pending.append(item)
            self._score(pending)
            if stop:
                return

    def _score(self, pending: list[tuple[RecsysBatch, Future[np.ndarray]]]) -> None:
        # Only requests of one candidate bucket and one layout (history length, optional fields) stack.
        groups: dict[tuple[object, ...], list[tuple[RecsysBatch, Future[np.ndarray]]]] = defaultdict(list)
        for batch, fut in pending:
            key = (padded_size(batch.num_candidates, self.runtime.ranker.chunk_size),
                   np.shape(batch.history_post_hashes), tuple(f is None for f in batch))
            groups[key].append((batch, fut))
        for items in groups.values():
            try:
                if len(items) == 1:
                    results = [self.runtime.predict(items[0][0])]
                else:
                    results = self.runtime.predict_many([b for b, _ in items])
                    self.batches += 1
                    self.batched_requests += len(items)
            except BaseException as e:  # every waiting request gets the error, the thread lives on
                for _, fut in items:
                    fut.set_exception(e)
                continue
            for (_, fut), res in zip(items, results, strict=True):
                fut.set_result(res)
