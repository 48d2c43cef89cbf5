"""Cold-start candidates computed off the request path, plus the periodic upkeep riding on that thread.

`popular_posts` groups the engagements table (a scan of the window); at 1M engagements it cost
2.6-2.9 s, so a cold-start request must never run it. `ColdStartCache` keeps the popular and fresh
lists in memory and recomputes them every `refresh_s` seconds in a daemon thread; requests only read
the last snapshot (an immutable tuple swapped under a lock). The same thread prunes served rows past
their retention, so pagination state does not grow without bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from phoenix_recsys.serve.filters import SOURCE_FRESH, SOURCE_POPULAR, Candidates
from phoenix_recsys.serve.store import PostRows, Store

_log = logging.getLogger(__name__)


def _without(rows: PostRows, post_ids: np.ndarray) -> PostRows:
    """`rows` minus the given posts (order kept)."""
    keep = ~np.isin(rows.post_ids, post_ids)
    if keep.all():
        return rows
    return rows.take(keep)


@dataclass(frozen=True)
class ColdStartConfig:
    """What `ColdStartCache` computes and how often.

    Attributes:
      popular / fresh: list sizes (`cold_start_popular` / `cold_start_fresh`).
      window_s: popular = most engagement events in the last `window_s` seconds; None = all time.
      refresh_s: recompute period in seconds.
      served_retention_s: delete served rows older than this at each refresh; None = keep.
    """

    popular: int
    fresh: int
    window_s: int | None
    refresh_s: float
    served_retention_s: int | None = None

    def __post_init__(self) -> None:
        for name in ("popular", "fresh"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.window_s is not None and self.window_s <= 0:
            raise ValueError(f"window_s must be > 0 or None, got {self.window_s}")
        if not self.refresh_s > 0:
            raise ValueError(f"refresh_s must be > 0, got {self.refresh_s}")
        if self.served_retention_s is not None and self.served_retention_s <= 0:
            raise ValueError(f"served_retention_s must be > 0 or None, got {self.served_retention_s}")


class ColdStartCache:
    """Popular + fresh posts, recomputed in the background; `candidates()` never touches the store.

    Args:
      store: the store (its connections are per thread, so the refresher has its own).
      config: `ColdStartConfig`.
      now: the service clock (the popular window ends at `now()`).
    """

    def __init__(self, store: Store, config: ColdStartConfig, now: Callable[[], int]) -> None:
        self.store = store
        self.config = config
        self._now = now
        self._lock = threading.Lock()
        self._lists: tuple[PostRows, PostRows] | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refreshes = 0
        #: Refreshes that found the store unchanged since the last one and kept the lists.
        self.unchanged = 0
        self._inputs: tuple[Any, ...] | None = None
        self.last_refresh_s: float | None = None
        self.served_pruned = 0

    def refresh(self) -> None:
        """Recompute both lists now (and prune old served rows), then publish them."""
        t0 = time.perf_counter()
        now = int(self._now())
        c = self.config
        since = None if c.window_s is None else now - c.window_s
        # Same window, same engagements and same posts give the same lists: at 1M posts the popular
        # query groups ~800k events (0.6 s a worker every refresh_s). Read before the queries, so a
        # write racing them changes the next refresh's inputs.
        version = self.store.engagements_version()
        inputs = None if version is None else (since, version, self.store.post_seq())
        keep = inputs is not None and inputs == self._inputs and self._lists is not None
        lists = None if keep else (self.store.popular_posts(c.popular, since=since), self.store.fresh_posts(c.fresh))
        with self._lock:
            if lists is not None:
                self._lists, self._inputs = lists, inputs
            self.refreshes += 1
            self.unchanged += keep
        self.last_refresh_s = time.perf_counter() - t0
        if c.served_retention_s is not None:
            self.served_pruned += self.store.prune_served(now - c.served_retention_s)

    def candidates(self) -> Candidates:
        """The last published popular then fresh lists (computed once synchronously if none yet)."""
        with self._lock:
            lists = self._lists
        if lists is None:  # only before the first refresh (start() refreshes before it returns)
            self.refresh()
            with self._lock:
                lists = self._lists
        assert lists is not None
        return Candidates.concat([lists[0].to_candidates(SOURCE_POPULAR), lists[1].to_candidates(SOURCE_FRESH)])

    def refresh_fresh(self) -> None:
        """Recompute only the fresh list (an indexed read of the newest posts, cheap): after new posts."""
        fresh = self.store.fresh_posts(self.config.fresh)
        with self._lock:
            if self._lists is not None:
                self._lists = (self._lists[0], fresh)

    def discard(self, post_ids: np.ndarray) -> None:
        """Drop posts from the published lists now (deleted or taken down); returns at once.

        Feeds filter such posts at hydration anyway; this keeps them from taking list slots until
        the next refresh. The next refresh recomputes the lists without them.
        """
        ids = np.asarray(post_ids, dtype=np.int64)
        if ids.size == 0:
            return
        with self._lock:
            if self._lists is not None:
                self._lists = tuple(_without(rows, ids) for rows in self._lists)  # type: ignore[assignment]

    def invalidate(self) -> None:
        """Ask the background thread to refresh soon (e.g. many events arrived); returns at once."""
        self._wake.set()

    def start(self) -> None:
        """Compute the lists once, then keep them current from a daemon thread."""
        self.refresh()
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="cold-start-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread (waits for a running refresh)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.config.refresh_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh()
            except Exception:  # a failing refresh keeps serving the last lists; log and retry next period
                _log.exception("cold-start refresh failed")
