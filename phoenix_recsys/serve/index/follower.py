"""`IndexFollower`: keeps one server's corpus index current from the store's post sequence.

Every post change (upsert, delete, takedown) gets a number in the store's post sequence
(`Store.posts_since`). The follower applies them in order to its own index, whichever server or
worker wrote them, so a post written anywhere is retrievable everywhere within about one poll
interval. The same mechanism serves several workers on one SQLite file and several servers on
one PostgreSQL store.

* `sync()` applies everything pending; the write path calls it right after its own store write
  (passing the embeddings it already computed), so a server's own posts are searchable at once
  and each post is embedded once per server.
* A background thread waits for new numbers with the store's `wait_for_posts(seq, timeout)`
  (LISTEN/NOTIFY on PostgreSQL, a 50 ms poll on SQLite); a store without it is polled with
  `post_seq()` every `poll_interval_s`.
* A second background thread does the slow work off the request path: snapshots (every
  `snapshot_interval_s`, or after `snapshot_every_posts` changes) and rebuilds (tombstones above
  `compact_fraction` of the stored vectors, or a flat index grown past its exact limit). A
  rebuild copies the live vectors into a new index while searches and applies go on against the
  old one; changes applied meanwhile are journaled and replayed onto the new index, which then
  replaces the old one in one assignment.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from phoenix_recsys.serve.index.config import IndexKind
from phoenix_recsys.serve.index.corpus import CorpusIndex
from phoenix_recsys.serve.index.snapshot import clean_server_id, snapshot_fingerprint, write_snapshot_blobs

_log = logging.getLogger(__name__)

#: `(post_ids [n], author_ids [n]) -> embeddings [n, D]`.
EmbedFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FollowConfig:
    """How the follower tails the store and maintains the index.

    Attributes:
      poll_interval_s: how often the post sequence is polled when the store cannot notify.
      batch_size: post-sequence entries fetched per query.
      snapshot_interval_s: seconds between snapshots while posts keep changing; None = never
        (only at close).
      snapshot_every_posts: also snapshot after this many applied changes; None = off.
      snapshot_keep: this server's snapshots kept on disk.
      compact_fraction: rebuild when tombstones exceed this fraction of the stored vectors ...
      compact_min: ... and number at least this many.
      maintenance_interval_s: how often the maintenance thread checks for work.
    """

    poll_interval_s: float = 0.2
    batch_size: int = 10_000
    snapshot_interval_s: float | None = 60.0
    snapshot_every_posts: int | None = 10_000
    snapshot_keep: int = 2
    compact_fraction: float = 0.2
    compact_min: int = 1000
    maintenance_interval_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("poll_interval_s", "maintenance_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"FollowConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.snapshot_interval_s is not None and not self.snapshot_interval_s > 0:
            raise ValueError(
                f"FollowConfig.snapshot_interval_s must be > 0 or None, got {self.snapshot_interval_s!r}"
            )
        for name in ("batch_size", "snapshot_keep"):
            if getattr(self, name) < 1:
                raise ValueError(f"FollowConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.snapshot_every_posts is not None and self.snapshot_every_posts < 1:
            raise ValueError(
                f"FollowConfig.snapshot_every_posts must be >= 1 or None, got {self.snapshot_every_posts!r}"
            )
        if not 0 < self.compact_fraction <= 1:
            raise ValueError(
                f"FollowConfig.compact_fraction must be in (0, 1], got {self.compact_fraction!r}"
            )
        if self.compact_min < 0:
            raise ValueError(f"FollowConfig.compact_min must be >= 0, got {self.compact_min!r}")


class IndexFollower:
    """One server's index plus the threads that keep it current and compact (module docstring)."""

    def __init__(
        self,
        store: Any,
        index: CorpusIndex,
        seq: int,
        embed: EmbedFn,
        *,
        config: FollowConfig | None = None,
        snapshot_root: str | Path | None = None,
        server_id: str = "server",
        base_fingerprint: str = "",
        snapshot_seq: int | None = None,
    ) -> None:
        """Args:
        store: the `Store` (its `posts_since`, `post_seq`, `get_posts`, optional `wait_for_posts`).
        index: the index, current to post-sequence number `seq`.
        seq: see `index`.
        embed: the candidate tower.
        config: `FollowConfig()` by default.
        snapshot_root: the index directory snapshots go to; None = no snapshots.
        server_id: this server's (worker's) id in snapshot names.
        base_fingerprint: bundle + store fingerprint of snapshots.
        snapshot_seq: the seq of the snapshot `index` came from (None: none on disk yet).
        """
        self.store = store
        self._index = index
        self._seq = int(seq)
        self._embed = embed
        self.config = FollowConfig() if config is None else config
        self._root = None if snapshot_root is None else Path(snapshot_root)
        self.server_id = clean_server_id(server_id)
        self._base_fp = base_fingerprint
        self._apply_lock = threading.Lock()
        self._journal: list[tuple[str, np.ndarray, np.ndarray | None]] | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.snapshot_seq = snapshot_seq
        self._snapshot_time = time.monotonic()
        self._snapshot_lock = threading.Lock()
        #: Posts this follower embedded (the write path's own embeddings are not counted twice).
        self.posts_embedded = 0
        self.changes_applied = 0
        self.rebuilds = 0
        self.last_error: str | None = None
        #: Called with the post ids each apply removed (deleted, taken down), whoever wrote the
        #: change; the service drops them from its cold-start lists. Must be quick and not raise.
        self.on_removed: Callable[[np.ndarray], None] | None = None

    # -- state ----------------------------------------------------------------------------------
    @property
    def index(self) -> CorpusIndex:
        """The current index (a rebuild replaces it; read it once per request)."""
        return self._index

    @property
    def seq(self) -> int:
        """The post-sequence number the index is current to."""
        return self._seq

    def stats(self) -> dict[str, Any]:
        """Counters for health and metrics."""
        return {
            "seq": self._seq, "snapshot_seq": self.snapshot_seq, "posts_embedded": self.posts_embedded,
            "changes_applied": self.changes_applied, "rebuilds": self.rebuilds, "server_id": self.server_id,
            "last_error": self.last_error,
        }  # fmt: skip

    # -- applying changes -----------------------------------------------------------------------
    def sync(self, known: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> int:
        """Apply every pending post change to the index; returns how many entries were applied.

        Args:
          known: `(post_ids, author_ids, embeddings)` the caller has already computed (its own
            writes); an upsert of one of these posts with the same author reuses the embedding.
        """
        n = 0
        with self._apply_lock:
            while True:
                changes = self.store.posts_since(self._seq, self.config.batch_size)
                if not len(changes):
                    return n
                self._apply(changes, known)
                self._seq = int(changes.last_seq)
                n += len(changes)
                self.changes_applied += len(changes)

    def _apply(self, changes: Any, known: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> None:
        ids, ops = changes.latest()
        upsert = ids[ops == "upsert"]
        gone = ids[ops != "upsert"]
        if upsert.size:
            rows = self.store.get_posts(upsert)
            missing = rows.author_ids < 0  # written, then deleted before we read it
            gone = np.concatenate([gone, upsert[missing]])
            upsert, authors = upsert[~missing], rows.author_ids[~missing]
        if upsert.size:
            emb = self._embeddings(upsert, authors, known)
            self._index.add(upsert, emb)
            if self._journal is not None:
                self._journal.append(("add", upsert, emb))
        if gone.size:
            self._index.remove(gone)
            if self._journal is not None:
                self._journal.append(("remove", gone, None))
            if self.on_removed is not None:
                self.on_removed(gone)

    def _embeddings(
        self, ids: np.ndarray, authors: np.ndarray, known: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    ) -> np.ndarray:
        out: np.ndarray | None = None
        todo = np.ones(ids.shape[0], dtype=bool)
        if known is not None:
            k_ids, k_auth, k_emb = known
            pos = {int(p): i for i, p in enumerate(np.asarray(k_ids).tolist())}
            for j, (p, a) in enumerate(zip(ids.tolist(), authors.tolist(), strict=True)):
                i = pos.get(p)
                if i is not None and int(k_auth[i]) == a:
                    if out is None:
                        out = np.zeros((ids.shape[0], k_emb.shape[1]), np.float32)
                    out[j] = k_emb[i]
                    todo[j] = False
        if todo.any():
            fresh = np.asarray(self._embed(ids[todo], authors[todo]), np.float32)
            self.posts_embedded += int(todo.sum())
            if out is None:
                return fresh
            out[todo] = fresh
        assert out is not None
        return out

    # -- background threads ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the tail and maintenance threads (daemon threads; `stop` ends them)."""
        if self._threads:
            return
        self._stop.clear()
        for target, name in ((self._tail, "index-follow"), (self._maintain, "index-maintain")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, *, snapshot: bool = True) -> None:
        """Stop the threads; with `snapshot`, apply what is pending and write a final snapshot."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        self._threads = []
        if snapshot and self._root is not None:
            try:
                self.sync()
                self.snapshot(force=False)
            except Exception as e:  # a read-only disk or closed store must not stop shutdown
                _log.warning("final index snapshot failed: %s", e)

    def _tail(self) -> None:
        # `Store.wait_for_posts` (LISTEN/NOTIFY on PostgreSQL, a fast poll on SQLite) when the store
        # has it; a plain poll of `post_seq` otherwise. Either way a late or spurious wake-up only
        # costs one `posts_since`, since `sync` reads from the applied seq.
        wait = getattr(self.store, "wait_for_posts", None)
        while not self._stop.is_set():
            try:
                if wait is not None:
                    head = int(wait(self._seq, 1.0))
                else:
                    if self._stop.wait(self.config.poll_interval_s):
                        return
                    head = int(self.store.post_seq())
                if head > self._seq:
                    self.sync()
                self.last_error = None
            except Exception as e:  # keep following: a transient store error must not freeze the index
                self.last_error = f"{type(e).__name__}: {e}"
                _log.warning("index follower: %s", self.last_error)
                if self._stop.wait(1.0):
                    return

    def _maintain(self) -> None:
        while not self._stop.wait(self.config.maintenance_interval_s):
            try:
                if self.needs_rebuild():
                    self.rebuild()
                if self._snapshot_due():
                    self.snapshot()
            except Exception as e:
                self.last_error = f"{type(e).__name__}: {e}"
                _log.warning("index maintenance: %s", self.last_error)

    # -- maintenance ----------------------------------------------------------------------------
    def needs_rebuild(self) -> bool:
        """Too many tombstones, a flat index grown past its exact-search limit, or an IVF index
        grown past `ivf_retrain_growth` x the corpus its lists were trained on."""
        idx = self._index
        live, dead = len(idx), idx.num_tombstones
        if dead >= self.config.compact_min and dead > self.config.compact_fraction * (live + dead):
            return True
        if idx.needs_retrain():
            return True
        return idx.kind is IndexKind.FLAT and idx.config.kind_for(live) is not IndexKind.FLAT

    def rebuild(self) -> CorpusIndex:
        """Compact (re-picking flat vs ANN, retraining IVF lists on the live posts) without stopping
        searches or applies; returns the new index."""
        with self._apply_lock:
            old = self._index
            self._journal = []
        try:
            new = old.compact()  # the slow part: no apply lock held
            with self._apply_lock:
                for op, ids, emb in self._journal:
                    if op == "add":
                        new.add(ids, emb)
                    else:
                        new.remove(ids)
                self._index = new
                self.rebuilds += 1
        finally:
            with self._apply_lock:
                self._journal = None
        _log.info("index rebuilt: %d posts, %s", len(new), new.kind.value)
        return new

    def _snapshot_due(self) -> bool:
        if self._root is None:
            return False
        pending = self._seq - (self.snapshot_seq or 0)
        if pending <= 0:
            return False
        c = self.config
        if c.snapshot_every_posts is not None and pending >= c.snapshot_every_posts:
            return True
        return (
            c.snapshot_interval_s is not None
            and time.monotonic() - self._snapshot_time >= c.snapshot_interval_s
        )

    def snapshot(self, *, force: bool = True) -> Path | None:
        """Write a snapshot of the index as of the current seq (unless one at this seq exists and not `force`)."""
        if self._root is None:
            return None
        with self._snapshot_lock:
            if not force and self.snapshot_seq == self._seq:
                return None
            # The apply lock is held only while the index is serialised (so the bytes match the
            # seq); the files are written without it, so following goes on meanwhile.
            with self._apply_lock:
                seq = self._seq
                blobs, meta = self._index.to_blobs(snapshot_fingerprint(self._base_fp, seq))
            path = write_snapshot_blobs(
                self._root, blobs, meta, seq=seq, server_id=self.server_id, keep=self.config.snapshot_keep
            )
            self.snapshot_seq = seq
            self._snapshot_time = time.monotonic()
        _log.info("index snapshot at seq %d: %s", seq, path)
        return path
