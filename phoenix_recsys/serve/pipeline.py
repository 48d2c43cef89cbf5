"""`FeedService`, which owns bundle, store and index and wires the feed stages (`serve.feed`) together.

Axes: N candidates, A actions, D embedding width, S history length.

One feed request runs, in order:
  history   the viewer's last S engaged events from the store (`history.fetch_history`)
  sources   in-network: newest posts of followed authors (per-author cap); out-of-network: ANN
            retrieval with the user tower over that history, excluding seen posts. A viewer without
            history (unknown user, cold start) gets popular + fresh posts instead of retrieval.
  hydrate   author, creation time, repost/text/video from the store (the store is the truth)
  filters   SPEC 7 order (`filters.apply_filters`)
  rank      cached-context scoring of every surviving candidate in one request (no 32 limit)
  score     weighted score -> negative offset -> author diversity -> out-of-network factor
  select    top-k, each item with its source, probabilities, scores and multipliers

The stage functions (`serve.feed`) take plain inputs, so each can be tested alone; `FeedService.feed`
wires them. Types live in `serve.types`, the jitted models in `serve.runtime`; the names stay
importable from here.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import numpy as np

from phoenix_recsys.serve import history as hist
from phoenix_recsys.serve.feed import (
    cap_followed,
    cold_start_sources,
    explain_items,
    feed_scoring_config,
    hydrate,
    in_network_source,
    out_of_network_source,
    rank_candidates,
    score_feed,
)
from phoenix_recsys.serve.feed.batcher import RankBatcher
from phoenix_recsys.serve.feed.coldstart import ColdStartCache, ColdStartConfig
from phoenix_recsys.serve.filters import (
    SOURCE_IN_NETWORK,
    Candidates,
    FilterConfig,
    FilterContext,
    apply_filters,
)
from phoenix_recsys.serve.index import CorpusIndex, IndexConfig, make_fingerprint
from phoenix_recsys.serve.index.follower import FollowConfig, IndexFollower
from phoenix_recsys.serve.index.snapshot import load_newest
from phoenix_recsys.serve.runtime import ModelRuntime, apply_process_settings, candidate_buckets, padded_size
from phoenix_recsys.serve.seed import seed_store
from phoenix_recsys.serve.settings import Clock, ServeSettings
from phoenix_recsys.serve.store import History, PostState, Store, StoreUnavailableError
from phoenix_recsys.serve.store.mirror import PostMirror, PostReads
from phoenix_recsys.serve.types import (
    EventsResult,
    FeedItem,
    FeedResult,
    HistoryEvent,
    IndexInfo,
    InvalidRequest,
    NewEvent,
    NewPost,
    PostStatus,
    RankCandidate,
    RankedCandidate,
    RankingUnavailable,
    RankResult,
    Relation,
    RetrievedPost,
    RetrieveResult,
    Unsupported,
)
from phoenix_recsys.train.bundle import Bundle

_log = logging.getLogger(__name__)

#: Event and post times may run this far ahead of the wall clock (client clock skew); later ones
#: are refused, since one far-future timestamp would move the data clock for good.
MAX_FUTURE_S = 86_400

__all__ = ["EventsResult", "FeedItem", "FeedResult", "FeedService", "HistoryEvent", "IndexInfo", "InvalidRequest", "MAX_FUTURE_S", "ModelRuntime", "NewEvent", "NewPost", "RankCandidate", "RankResult", "RankingUnavailable", "RankedCandidate", "Relation", "RetrieveResult", "RetrievedPost", "Unsupported", "apply_process_settings", "candidate_buckets", "cold_start_sources", "explain_items", "feed_scoring_config", "hydrate", "in_network_source", "index_fingerprint", "out_of_network_source", "padded_size", "rank_candidates", "score_feed", "seed_store"]


class _Timer:
    """Per-stage wall time in milliseconds."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._t0 = self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        t = time.perf_counter()
        self.ms[stage] = round((t - self._last) * 1e3, 3)
        self._last = t

    def total(self) -> dict[str, float]:
        self.ms["total"] = round((time.perf_counter() - self._t0) * 1e3, 3)
        return self.ms


def _store_corpus(store: Store) -> tuple[np.ndarray, np.ndarray]:
    """All `(post_ids, author_ids)` of the store, ascending post id."""
    ids, authors = [], []
    for rows in store.iter_posts():
        ids.append(rows.post_ids)
        authors.append(rows.author_ids)
    if not ids:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(ids), np.concatenate(authors)


def index_fingerprint(bundle_fingerprint: str, post_ids: np.ndarray, author_ids: np.ndarray) -> str:
    """What a saved index depends on: the bundle's parameters and every (post, author) pair."""
    return make_fingerprint("phoenix-corpus-index", bundle_fingerprint, post_ids.astype(np.int64), author_ids.astype(np.int64))


def snapshot_base_fingerprint(bundle_fingerprint: str, store: Store) -> str:
    """What an index snapshot depends on besides its seq: the bundle and which store it follows."""
    where = str(store.path.resolve()) if store.path is not None else store.location
    return make_fingerprint("phoenix-corpus-index-v2", bundle_fingerprint, store.backend, where)


def default_server_id(settings: ServeSettings) -> str:
    """`<hostname>-<port>`: stable across restarts (so a server prunes its own old snapshots)."""
    return f"{socket.gethostname()}-{settings.port}"


def settings_follow_config(settings: ServeSettings) -> FollowConfig:
    """The follower's configuration from the service settings."""
    return FollowConfig(
        poll_interval_s=settings.follow_poll_interval_s,
        snapshot_interval_s=settings.index_snapshot_interval_s,
        snapshot_every_posts=settings.index_snapshot_every_posts,
    )


class FeedService:
    """The feed behind the API and the `feed` command: bundle models, store, corpus index.

    Thread-safe: the store gives each thread its own connection, the index locks itself, the
    jitted functions are pure. Build it with `FeedService.open`.
    """

    def __init__(
        self,
        *,
        runtime: ModelRuntime,
        store: Store,
        settings: ServeSettings,
        index: CorpusIndex | None,
        index_info: IndexInfo | None,
        follower: IndexFollower | None = None,
    ) -> None:
        """Use `open`."""
        self.runtime = runtime
        self.store = store
        self.settings = settings
        self._index = index
        self.follower = follower
        self.index_info = index_info
        self.vocab = runtime.vocab
        self.scoring = feed_scoring_config(runtime.vocab, settings.scoring)
        self.filter_config: FilterConfig = settings.filter_config()
        # Unset: the history rule the ranker was trained with (every binary action when unrecorded).
        self._engagement = hist.engagement_names(
            runtime.vocab, settings.engagement_actions or runtime.bundle.train_config("ranker").get("engagement_actions"))
        self._latest = store.latest_timestamp()
        self._clock_lock = threading.Lock()
        self._post_lock = threading.Lock()
        self.warmup_s: float | None = None
        # Micro-batching of ranking across concurrent requests (off unless rank_batch_window_ms > 0).
        self.batcher: RankBatcher | None = None
        if settings.rank_batch_window_ms > 0:
            self.batcher = RankBatcher(
                runtime, window_s=settings.rank_batch_window_ms / 1e3, max_requests=settings.rank_batch_max_requests
            )
        self.predict = runtime.predict if self.batcher is None else self.batcher.predict
        # Candidate sources run here so each can be given up on at its budget. A source past its
        # budget keeps its thread until it returns (Python cannot stop a thread), so the pool is
        # wide: a hung store fills it, and then every source times out instead of every request.
        self._sources_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="feed-source")
        self.cold_start = ColdStartCache(
            store,
            ColdStartConfig(
                popular=settings.cold_start_popular, fresh=settings.cold_start_fresh,
                window_s=settings.popular_window_s, refresh_s=settings.cold_start_refresh_s,
                served_retention_s=settings.served_retention_s if settings.writes_enabled else None,
            ),
            self.now,
        )  # fmt: skip
        # The feed's post reads: the store, or an in-memory copy giving the store's answers (started by open).
        self.post_mirror = PostMirror(store) if settings.post_mirror else None
        self.post_reads: PostReads = store if self.post_mirror is None else self.post_mirror
        if follower is not None:
            # Every server's follower applies every delete/takedown, whoever wrote it.
            follower.on_removed = self.cold_start.discard

    @property
    def index(self) -> CorpusIndex | None:
        """The corpus index (the follower's current one: a background rebuild may replace it)."""
        return self.follower.index if self.follower is not None else self._index

    # -- lifecycle ------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        bundle: str | Path | Bundle | ModelRuntime,
        *,
        settings: ServeSettings | None = None,
        data_dir: str | Path | None = None,
        store_path: str | Path | None = None,
    ) -> FeedService:
        """Load (or reuse) the models, open the store, seed it if empty, load or build the index.

        Args:
          bundle: a bundle directory, a loaded `Bundle`, or a `ModelRuntime` to share compiled
            programs between services (tests, several stores).
          settings: default `ServeSettings(writes_enabled=False)` (library use, no HTTP).
          data_dir: dataset directory seeding an empty store; ignored once the store has posts.
          store_path: the SQLite file or postgresql:// URL; default `settings.store_path` or `<bundle>/store.sqlite`.

        Returns:
          A ready service (warmed up when `settings.warmup`).
        """
        settings = ServeSettings(writes_enabled=False) if settings is None else settings
        if isinstance(bundle, ModelRuntime):
            runtime = bundle
        elif isinstance(bundle, Bundle):
            runtime = ModelRuntime(bundle, chunk_size=settings.chunk_size)
        else:
            runtime = ModelRuntime.load(bundle, chunk_size=settings.chunk_size)
        target = store_path or settings.store_path or runtime.bundle.path / "store.sqlite"
        if not str(target).startswith(("postgresql://", "postgres://")):  # a URL is opened as given
            target = Path(target)
            target.parent.mkdir(parents=True, exist_ok=True)
        # Several processes on one SQLite file (workers, replicas) must say so: each then follows
        # the post sequence for the others' posts.
        store = Store.open(target, **({"multi_writer": True} if settings.store_multi_writer else {}))
        try:
            if data_dir is not None:
                seed_store(store, data_dir, runtime.vocab)
            follower, info = cls._prepare_index(runtime, store, settings)
            service = cls(
                runtime=runtime, store=store, settings=settings, index=None, index_info=info, follower=follower
            )
            if settings.warmup:
                service.warmup_s = runtime.warmup(
                    service.max_feed_candidates(),
                    batch_sizes=() if service.batcher is None else service.batcher.batch_sizes(),
                )
            if follower is not None and settings.index_follow:
                follower.start()
            service.cold_start.start()
            if service.post_mirror is not None:
                service.post_mirror.start()
        except BaseException:
            if "follower" in locals() and follower is not None:
                follower.stop(snapshot=False)
            if "service" in locals() and service.batcher is not None:
                service.batcher.close()
            store.close()
            raise
        return service

    @staticmethod
    def _index_dir(runtime: ModelRuntime, settings: ServeSettings) -> Path:
        return Path(settings.index_dir) if settings.index_dir is not None else runtime.bundle.path / "index"

    @classmethod
    def _prepare_index(
        cls, runtime: ModelRuntime, store: Store, settings: ServeSettings
    ) -> tuple[IndexFollower | None, IndexInfo | None]:
        """The newest valid snapshot plus the post changes since, or a full build (then snapshotted)."""
        if not runtime.has_retrieval:
            _log.warning("bundle has no retrieval model: no out-of-network source, /v1/retrieve disabled")
            return None, None
        directory = cls._index_dir(runtime, settings)
        config: IndexConfig = settings.index_config()
        base_fp = snapshot_base_fingerprint(runtime.fingerprint, store)
        head = store.post_seq()
        loaded = load_newest(directory, base_fp, max_seq=head, config=config)
        embedded = 0
        if loaded is not None:
            index, snap = loaded
            seq, snapshot_seq, source = snap.seq, snap.seq, "loaded"
        else:
            # Read the seq before the posts: a change racing the scan is then replayed (idempotently).
            seq, snapshot_seq, source = head, None, "built"
            ids, authors = _store_corpus(store)
            index = CorpusIndex.build(ids, runtime.post_embeddings(ids, authors), config=config)
            embedded = int(ids.shape[0])
        follower = IndexFollower(
            store, index, seq, runtime.post_embeddings, config=settings_follow_config(settings),
            snapshot_root=directory, server_id=settings.server_id or default_server_id(settings),
            base_fingerprint=base_fp, snapshot_seq=snapshot_seq,
        )  # fmt: skip
        caught_up = follower.sync()
        embedded += follower.posts_embedded
        if source == "built" or caught_up:
            # Snapshot now, so a crash soon after start does not redo this work.
            try:
                follower.snapshot()
            except OSError as e:  # a read-only bundle still serves; it just rebuilds at every start
                _log.warning("could not write an index snapshot to %s: %s", directory, e)
        _log.info(
            "corpus index %s: %d posts, snapshot seq %s, %d changes caught up, %d posts embedded",
            source, len(index), snapshot_seq, caught_up, embedded,
        )  # fmt: skip
        info = IndexInfo(
            source=source, directory=directory, fingerprint=base_fp, size=len(follower.index),
            snapshot_seq=snapshot_seq, caught_up=caught_up, embedded=embedded,
        )  # fmt: skip
        return follower, info

    def close(self) -> None:
        """Stop following, write a final index snapshot, then close the store."""
        try:
            self.cold_start.stop()
            if self.post_mirror is not None:
                self.post_mirror.stop()
            if self.batcher is not None:
                self.batcher.close()
            if self.follower is not None:
                self.follower.stop(snapshot=True)
            self._sources_pool.shutdown(wait=False, cancel_futures=True)
        finally:
            self.store.close()

    def __enter__(self) -> FeedService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def max_feed_candidates(self) -> int:
        """The most candidates one feed request can rank (sizes of its largest source mix)."""
        s = self.settings
        return s.in_network_limit + max(s.out_of_network_limit, s.cold_start_popular + s.cold_start_fresh)

    # -- time -----------------------------------------------------------------------------------
    def now(self) -> int:
        """The request time under `settings.clock` (see `Clock`)."""
        wall = int(time.time())
        if self.settings.clock is Clock.WALL:
            return wall
        with self._clock_lock:
            return wall if self._latest is None else self._latest

    def _observe_time(self, t: int) -> None:
        with self._clock_lock:
            self._latest = t if self._latest is None else max(self._latest, t)

    # -- validation helpers ---------------------------------------------------------------------
    def _check_limit(
        self, loc: tuple[str | int, ...], value: int, limit: int, what: str, *, where: str = "body"
    ) -> None:
        if value > limit:
            raise InvalidRequest(
                loc, f"{what} must be at most {limit}, got {value}", kind="limit_exceeded", where=where,
                ctx={"limit": limit},
            )

    def _check_actions(self, loc: tuple[str | int, ...], actions: Mapping[str, float]) -> dict[str, float]:
        out = {}
        for name, v in actions.items():
            if name not in self.vocab:
                raise InvalidRequest(
                    (*loc, name), f"unknown action {name!r}; this bundle's actions are {list(self.vocab.names)}"
                )
            fv = float(v)
            if not math.isfinite(fv) or fv < 0:
                raise InvalidRequest((*loc, name), f"action values must be finite and >= 0, got {v!r}")
            out[name] = fv
        return out

    def _check_time(self, loc: tuple[str | int, ...], t: int | None) -> None:
        if t is not None and t > time.time() + MAX_FUTURE_S:
            raise InvalidRequest(loc, f"{t} is more than {MAX_FUTURE_S} s ahead of the server clock")

    def _check_surface(self, loc: tuple[str | int, ...], surface: int) -> int:
        vs = self.runtime.config.product_surface_vocab_size
        if not 0 <= surface < vs:
            raise InvalidRequest(loc, f"product_surface must be in [0, {vs}), got {surface}")
        return int(surface)

    def _authors_for(self, loc: str, post_ids: list[int], authors: list[int | None]) -> tuple[np.ndarray, np.ndarray]:
        """Fill missing authors from the store; `(authors, created_at)` with created_at -1 = unknown."""
        rows = self.store.get_posts(np.asarray(post_ids, dtype=np.int64)) if post_ids else None
        out_a = np.zeros(len(post_ids), np.int64)
        out_c = np.full(len(post_ids), -1, np.int64)
        for i, (pid, a) in enumerate(zip(post_ids, authors, strict=True)):
            known = rows is not None and rows.author_ids[i] >= 0
            if known:
                out_c[i] = rows.created_at[i]
            if a is not None:
                out_a[i] = a
            elif known:
                out_a[i] = rows.author_ids[i]
            else:
                raise InvalidRequest(
                    (loc, i, "author_id"), f"post {pid} is not in the store, so its author_id is required",
                    kind="unknown_post",
                )
        return out_a, out_c

    def _explicit_history(self, events: Sequence[HistoryEvent]) -> History:
        self._check_limit(("history",), len(events), self.settings.max_history_items, "history length")
        pids = [int(e.post_id) for e in events]
        authors, _ = self._authors_for("history", pids, [e.author_id for e in events])
        acts = [self._check_actions(("history", i, "actions"), e.actions) for i, e in enumerate(events)]
        surf = [self._check_surface(("history", i, "product_surface"), e.product_surface) for i, e in enumerate(events)]
        return hist.make_history(pids, authors, acts, surf)

    def _history(self, user_id: int | None, events: Sequence[HistoryEvent] | None) -> History:
        if events is not None:
            return self._explicit_history(events)
        if user_id is None:
            raise InvalidRequest(("user_id",), "give user_id or history")
        return self.user_model_history(user_id)

    def user_model_history(self, user_id: int) -> History:
        """The events the model sees for `user_id`: the last S engaged ones, oldest first."""
        return hist.fetch_history(
            self.store,
            user_id,
            self.runtime.config.history_seq_len,
            self.vocab,
            engagement_actions=self._engagement,
        )

    def seen_set(self, user_id: int, now: int) -> np.ndarray:
        """The posts a feed excludes as seen, bounded by `seen_window_s` and `seen_limit`."""
        s = self.settings
        since = None if s.seen_window_s is None else now - s.seen_window_s
        return self.store.seen_posts(user_id, since=since, limit=s.seen_limit)

    # -- reads ----------------------------------------------------------------------------------
    def feed(self, user_id: int, k: int, *, now: int | None = None, exclude: Sequence[int] | None = None) -> FeedResult:
        """The "For You" feed of `user_id`: top `k` posts with per-item explanations.

        Args:
          user_id: the viewer; an unknown user gets a cold-start feed (popular + fresh), not an error.
          k: page size, 1..`settings.max_k`.
          now: request time (default: `settings.clock`).
          exclude: pagination: posts served on earlier pages (from the API's signed cursor), filtered
            out as `served_in_session`. Nothing is written: a feed is a pure read.

        Returns:
          `FeedResult`.

        Raises:
          InvalidRequest: k out of range.
        """
        if k < 1:
            raise InvalidRequest(("k",), f"k must be >= 1, got {k}")
        self._check_limit(("k",), k, self.settings.max_k, "k")
        s = self.settings
        timer = _Timer()
        now = self.now() if now is None else int(now)
        history = self.user_model_history(user_id)
        followed = self.store.followed_authors(user_id)
        seen = self.seen_set(user_id, now)
        blocked = self._hidden_authors(user_id)
        served = np.zeros(0, np.int64) if exclude is None else np.asarray(exclude, np.int64)
        timer.lap("history")

        cold = len(history) == 0
        authors = cap_followed(followed, history.author_ids, s.in_network_max_authors)
        index = self.index
        jobs: dict[str, tuple[Callable[[], Candidates], float | None]] = {
            "in_network": (
                lambda: in_network_source(
                    self.post_reads, authors, limit=s.in_network_limit, per_author_cap=s.in_network_per_author
                ),
                s.source_budget_in_network_ms,
            )
        }
        early: list[dict[str, str]] = []
        if cold or index is None:
            jobs["cold_start"] = (self.cold_start.candidates, None)  # an in-memory snapshot: no budget
        else:
            # The embedding runs here, outside the budget: a cold jit compile (warm-up off) takes
            # seconds and must not cost the first feed its out-of-network posts.
            try:
                emb = self.runtime.user_embedding(self.runtime.context(user_id, history, for_retrieval=True))
            except Exception as exc:  # without an embedding there is no ANN query: skip that source only
                _log.warning("user embedding failed; serving without out-of-network posts", exc_info=True)
                early.append({"stage": "out_of_network", "reason": "error", "detail": type(exc).__name__})
            else:
                jobs["out_of_network"] = (
                    lambda: out_of_network_source(index, emb, limit=s.out_of_network_limit, exclude=seen),
                    s.source_budget_out_of_network_ms,
                )
        parts, degraded = self._run_sources(jobs)
        degraded = early + degraded
        candidates = Candidates.concat(parts) if parts else Candidates.empty()
        # A Counter over the few source names: np.unique sorted ~2,000 strings a request.
        sources = {str(n): c for n, c in sorted(Counter(candidates.source.tolist()).items())}
        timer.lap("sources")

        candidates = hydrate(self.post_reads, candidates, read_now=candidates.source == SOURCE_IN_NETWORK)
        timer.lap("hydrate")

        ctx = FilterContext(
            viewer_id=user_id, now_s=now, seen_post_ids=seen, served_post_ids=served, blocked_or_muted_author_ids=blocked
        )
        kept, report = apply_filters(candidates, ctx, self.filter_config)
        timer.lap("filter")

        in_net = kept.in_network(followed)
        context = self.runtime.context(user_id, history)
        try:
            probs = rank_candidates(
                self.runtime, context, kept, in_network=in_net, now=now, product_surface=s.product_surface,
                predict=self.predict,
            )  # fmt: skip
        except (InvalidRequest, StoreUnavailableError):
            raise
        except Exception as exc:  # no feed without the ranker: a 503 naming it, not a 500 trace
            _log.error("ranking failed for a feed request", exc_info=True)
            raise RankingUnavailable(f"the ranking model failed on this request ({type(exc).__name__})") from exc
        timer.lap("rank")

        breakdown = score_feed(probs, kept, in_net, self.vocab, self.scoring)
        order = breakdown.ranking()[:k]
        items = explain_items(order, kept, in_net, probs, breakdown, self.vocab, self.scoring, now)
        timer.lap("score")

        return FeedResult(
            user_id=user_id,
            now=now,
            cold_start=cold,
            history_length=len(history),
            sources=sources,
            filtered=report,
            ranked=len(kept),
            items=items,
            timings_ms=timer.total(),
            degraded=tuple(degraded),
        )

    def _run_sources(
        self, jobs: Mapping[str, tuple[Callable[[], Candidates], float | None]]
    ) -> tuple[list[Candidates], list[dict[str, str]]]:
        """Run the candidate sources concurrently; skip any that raises or is not done at its budget.

        Each budget counts from dispatch, so the sources' budgets overlap rather than add up. A
        budget of None runs the source inline (no thread hop) and only catches its errors.

        Returns:
          The candidates of the sources that finished, in `jobs` order, and one
          `{stage, reason, detail}` per skipped source.
        """
        t0 = time.monotonic()
        futures: dict[str, Future[Candidates]] = {
            name: self._sources_pool.submit(fn) for name, (fn, budget) in jobs.items() if budget is not None
        }
        parts: list[Candidates] = []
        degraded: list[dict[str, str]] = []
        for name, (fn, budget_ms) in jobs.items():
            try:
                if budget_ms is None:
                    parts.append(fn())
                else:
                    left = budget_ms / 1e3 - (time.monotonic() - t0)
                    parts.append(futures[name].result(timeout=max(left, 0.0)))
            except FutureTimeout:
                futures[name].cancel()  # drops it if it never started; a running one finishes unseen
                degraded.append({"stage": name, "reason": "timeout", "detail": f"budget {budget_ms:g} ms"})
            except Exception as exc:  # a failing source costs its candidates, not the feed
                degraded.append({"stage": name, "reason": "error", "detail": type(exc).__name__})
                _log.warning("feed source %s failed; serving without it", name, exc_info=True)
        for d in degraded:
            if d["reason"] == "timeout":
                _log.warning("feed source %s skipped: %s", d["stage"], d["detail"])
        return parts, degraded

    def rank(
        self,
        candidates: Sequence[RankCandidate],
        *,
        user_id: int | None = None,
        history: Sequence[HistoryEvent] | None = None,
        product_surface: int | None = None,
        now: int | None = None,
    ) -> RankResult:
        """Model scores of explicit candidates for a user (history from the store) or a given history.

        Args:
          candidates: 1..`settings.max_rank_candidates`; their order is kept in the result.
          user_id: the viewer; its history is read from the store unless `history` is given.
          history: an explicit history, oldest first (then `user_id`, if given, is only the user
            token; an anonymous request hashes `history.ANONYMOUS_USER`).
          product_surface: the candidates' default surface (default: the feed surface).
          now: the impression time of the candidates (default: `settings.clock`).

        Returns:
          `RankResult`; scores equal the offline model's for the same inputs.
        """
        n = len(candidates)
        if n == 0:
            raise InvalidRequest(("candidates",), "give at least one candidate")
        self._check_limit(("candidates",), n, self.settings.max_rank_candidates, "the number of candidates")
        h = self._history(user_id, history)
        surface = self.settings.product_surface if product_surface is None else product_surface
        self._check_surface(("product_surface",), surface)
        pids = [int(c.post_id) for c in candidates]
        authors, created = self._authors_for("candidates", pids, [c.author_id for c in candidates])
        surfaces = np.array(
            [
                self._check_surface(("candidates", i, "product_surface"), surface if c.product_surface is None else c.product_surface)
                for i, c in enumerate(candidates)
            ],
            dtype=np.int32,
        )
        followed = self.store.followed_authors(user_id) if user_id is not None else np.zeros(0, np.int64)
        in_net = np.isin(authors, followed)
        for i, c in enumerate(candidates):
            if c.in_network is not None:
                in_net[i] = c.in_network
        now = self.now() if now is None else int(now)
        batch = hist.with_candidates(
            self.runtime.context(user_id, h),
            np.asarray(pids, np.int64),
            authors,
            hash_config=self.runtime.hash_config,
            product_surface=surfaces,
            now=now,
            created_at=created,
            in_network=in_net,
        )
        probs = self.predict(batch)
        weighted = probs.astype(np.float64) @ self.scoring.weight_vector(self.vocab)
        names = self.vocab.names
        out = tuple(
            RankedCandidate(
                post_id=pids[i],
                author_id=int(authors[i]),
                probabilities={a: float(p) for a, p in zip(names, probs[i].tolist(), strict=True)},
                weighted_score=float(weighted[i]),
            )
            for i in range(n)
        )
        ranking = tuple(int(i) for i in np.argsort(-weighted, kind="stable"))
        return RankResult(user_id=user_id, history_length=min(len(h), self.runtime.config.history_seq_len), candidates=out, ranking=ranking)

    def retrieve(
        self,
        k: int,
        *,
        user_id: int | None = None,
        history: Sequence[HistoryEvent] | None = None,
        exclude_seen: bool = True,
    ) -> RetrieveResult:
        """The k posts nearest the user-tower embedding (ANN over the corpus index).

        Args:
          k: 1..`settings.max_retrieve_k`.
          user_id / history: as in `rank`.
          exclude_seen: skip the posts the user has seen (needs `user_id`).

        Raises:
          Unsupported: the bundle has no retrieval model.
        """
        if k < 1:
            raise InvalidRequest(("k",), f"k must be >= 1, got {k}")
        self._check_limit(("k",), k, self.settings.max_retrieve_k, "k")
        if self.index is None:
            raise Unsupported("the bundle has no retrieval model, so there is no corpus index")
        h = self._history(user_id, history)
        emb = self.runtime.user_embedding(self.runtime.context(user_id, h, for_retrieval=True))
        exclude = self.seen_set(user_id, self.now()) if exclude_seen and user_id is not None else np.zeros(0, np.int64)
        res = self.index.search(emb[None, :], k=k, exclude=[exclude])
        ok = res.ids[0] >= 0
        ids, scores = res.ids[0][ok], res.scores[0][ok]
        # Hydrated like feed candidates: the store is the truth, so a post deleted or taken down
        # (or a repost of one) is dropped here even before this server's index has caught up, and
        # blocks and mutes (both directions, on a post's author and a repost's original author)
        # hold for retrieval too. Dropped after the search, so the answer may hold fewer than k.
        c = hydrate(self.post_reads, Candidates(post_ids=ids, author_ids=np.full(ids.shape[0], -1, np.int64),
                                           created_at=np.full(ids.shape[0], -1, np.int64), source="retrieve"))
        keep = c.author_ids >= 0
        if user_id is not None and ids.size:
            hidden = self._hidden_authors(user_id)
            keep &= ~np.isin(c.author_ids, hidden) & ~np.isin(c.original_author_ids, hidden)
        c, scores = c.take(keep), scores[keep]
        assert c.repost_of is not None and c.original_author_ids is not None
        items = tuple(
            RetrievedPost(
                post_id=p, author_id=a, score=float(sc), repost_of=r if r >= 0 else None,
                original_author_id=o if r >= 0 else None,
            )
            for p, a, sc, r, o in zip(c.post_ids.tolist(), c.author_ids.tolist(), scores.tolist(),
                                      c.repost_of.tolist(), c.original_author_ids.tolist(), strict=True)
        )  # fmt: skip
        s = self.runtime.retrieval_config.history_seq_len if self.runtime.retrieval_config else len(h)
        return RetrieveResult(user_id=user_id, history_length=min(len(h), s), items=items)

    def _hidden_authors(self, user_id: int) -> np.ndarray:
        """Authors whose posts `user_id` must not see: those it blocked or muted, and those who blocked it."""
        return np.union1d(self.store.blocked_or_muted_authors(user_id), self.store.authors_blocking(user_id))

    def user_events(self, user_id: int, limit: int) -> History:
        """The user's `limit` most recent stored events (every engagement), oldest first."""
        self._check_limit(("limit",), limit, self.settings.max_history_items, "limit", where="query")
        return self.store.get_history(user_id, limit)

    #: The most users one `list_users` call returns (a page; `after` continues).
    MAX_USERS_PAGE = 1000

    def list_users(self, limit: int, *, after: int | None = None, order: str = "recent") -> dict[str, Any]:
        """A page of users with stored engagements, for pickers such as the explorer page.

        `order="recent"`: users with the newest engagements first, each with `last_active`;
        `order="id"`: ascending ids after `after`, with `next_after` for the next page.
        """
        self._check_limit(("limit",), limit, self.MAX_USERS_PAGE, "limit", where="query")
        if order == "recent":
            if after is not None:
                raise InvalidRequest(("after",), "after pages by id: use it with order=id", where="query")
            users, last = self.store.recent_users(limit)
            return {"order": order, "users": [{"user_id": u, "last_active": t} for u, t in
                                              zip(users.tolist(), last.tolist(), strict=True)], "next_after": None}
        users = self.store.list_users(limit, after=after)
        nxt = int(users[-1]) if len(users) == limit else None
        return {"order": order, "users": [{"user_id": u, "last_active": None} for u in users.tolist()],
                "next_after": nxt}

    def health(self) -> dict[str, Any]:
        """Liveness plus what is loaded (touches the store, so a broken file shows here).

        A store that cannot be reached now (PostgreSQL down or restarting) is reported as
        `status: store_unavailable`, not raised: the process is alive and recovers by itself, so
        a liveness probe must not restart it (`/readyz` takes it out of the balancer meanwhile).
        """
        try:
            schema: int | None = self.store.schema_version()
        except StoreUnavailableError:
            schema = None
        return {
            "status": "ok" if schema is not None else "store_unavailable",
            "schema_version": schema,
            "bundle": self.runtime.fingerprint,
            "actions": list(self.vocab.names),
            "index_posts": None if self.index is None else len(self.index),
            "index_kind": None if self.index is None else self.index.kind.value,
            "index_follow": None if self.follower is None else self.follower.stats(),
            "post_mirror": None if self.post_mirror is None else self.post_mirror.stats(),
            "writes_enabled": self.settings.writes_enabled,
            "clock": self.settings.clock.value,
            "now": self.now(),
        }

    # -- writes ---------------------------------------------------------------------------------
    def add_events(self, events: Sequence[NewEvent]) -> EventsResult:
        """Record engagements (events with a positive action) and impressions (no positive action).

        Everything is validated first and written in one transaction: a refused request writes
        nothing. A missing timestamp is the service clock's `now`.

        Raises:
          InvalidRequest: naming the first bad event field (unknown post or action, bad surface).
        """
        n = len(events)
        if n == 0:
            raise InvalidRequest(("events",), "give at least one event")
        self._check_limit(("events",), n, self.settings.max_events_per_request, "the number of events")
        now = self.now()
        clean = []
        for i, e in enumerate(events):
            acts = self._check_actions(("events", i, "actions"), e.actions)
            surf = self._check_surface(("events", i, "product_surface"), e.product_surface)
            self._check_time(("events", i, "timestamp"), e.timestamp)
            ts = now if e.timestamp is None else int(e.timestamp)
            clean.append((int(e.user_id), int(e.post_id), ts, {a: v for a, v in acts.items() if v > 0}, surf))
        pids = np.array([c[1] for c in clean], dtype=np.int64)
        missing = self.store.get_posts(pids).author_ids < 0
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise InvalidRequest(
                ("events", i, "post_id"), f"post {int(pids[i])} is not in the store; add it with POST /v1/posts first",
                kind="unknown_post",
            )
        n_imp = n_dup = 0
        with self.store.transaction():
            # Claim client event ids in the writing transaction: a replay is skipped, and a
            # request that fails claims nothing, so its retry is written.
            with_id = [i for i, e in enumerate(events) if e.event_id is not None]
            if with_id:
                fresh = self.store.claim_event_ids(
                    [clean[i][0] for i in with_id], [str(events[i].event_id) for i in with_id]
                )
                dup = {i for i, f in zip(with_id, fresh.tolist(), strict=True) if not f}
                n_dup = len(dup)
                clean = [c for i, c in enumerate(clean) if i not in dup]
            eng = [c for c in clean if c[3]]
            imp = [c for c in clean if not c[3]]
            if eng:
                self.store.add_engagements(
                    [c[0] for c in eng], [c[1] for c in eng], [c[2] for c in eng], [c[3] for c in eng],
                    product_surface=[c[4] for c in eng],
                )
            for c in imp:
                n_imp += self.store.mark_seen(c[0], [c[1]], seen_at=c[2])
        if clean:
            self._observe_time(max(c[2] for c in clean))
        return EventsResult(engagements=len(eng), impressions=n_imp, duplicates=n_dup)

    def add_posts(self, posts: Sequence[NewPost]) -> int:
        """Add (or update) posts in the store and the corpus index, so they are retrievable at once.

        Posts are embedded before anything is written, so a failure writes nothing; the store
        write and the index add happen under one lock, so concurrent updates of a post leave the
        two agreeing. Returns the number of posts written.
        """
        n = len(posts)
        if n == 0:
            raise InvalidRequest(("posts",), "give at least one post")
        self._check_limit(("posts",), n, self.settings.max_posts_per_request, "the number of posts")
        seen_ids: dict[int, int] = {}
        for i, p in enumerate(posts):
            if p.post_id in seen_ids:
                raise InvalidRequest(("posts", i, "post_id"), f"post {p.post_id} appears twice (also at {seen_ids[p.post_id]})")
            seen_ids[p.post_id] = i
            if p.video_duration_s is not None and not (math.isfinite(p.video_duration_s) and p.video_duration_s >= 0):
                raise InvalidRequest(("posts", i, "video_duration_s"), "must be finite and >= 0")
            self._check_time(("posts", i, "created_at"), p.created_at)
        now = self.now()
        ids = np.array([p.post_id for p in posts], dtype=np.int64)
        states = self.store.post_states(ids)
        for i, st in enumerate(states.tolist()):
            if st is not None and st != PostState.LIVE:
                # A deleted id is never reused, and an upsert must not lift a takedown (the store
                # keeps both flags on upsert anyway, so a racing delete still wins).
                raise InvalidRequest(
                    ("posts", i, "post_id"), f"post {int(ids[i])} is {st.replace('_', ' ')}; it cannot be written again",
                    kind="post_removed",
                )
        authors = np.array([p.author_id for p in posts], dtype=np.int64)
        created = np.array([now if p.created_at is None else p.created_at for p in posts], dtype=np.int64)
        emb = self.runtime.post_embeddings(ids, authors) if self.index is not None else None
        with self._post_lock:
            self.store.add_posts(
                ids,
                authors,
                created,
                text=[p.text for p in posts],
                repost_of=np.array([-1 if p.repost_of is None else p.repost_of for p in posts], dtype=np.int64),
                video_duration_s=np.array(
                    [np.nan if p.video_duration_s is None else p.video_duration_s for p in posts], dtype=np.float64
                ),
            )
            if self.follower is not None and emb is not None:
                # Applies this write (and any other server's before it) from the post sequence,
                # reusing the embeddings computed above.
                self.follower.sync(known=(ids, authors, emb))
        self._observe_time(int(created.max()))
        self.cold_start.refresh_fresh()  # a new post is a fresh cold-start candidate at once
        return n

    def delete_post(self, post_id: int) -> PostStatus | None:
        """Delete a post (final) from the store's servable set, this server's index and cold-start lists.

        Every server's next feed and retrieve drop it at once (hydration reads the store), and every
        follower removes it from its index. Reposts of it are no longer served. Its row stays, text
        erased; engagement history is kept. None when the store has no such post; deleting again
        answers `changed=False`.
        """
        return self._remove(post_id, lambda ids: self.store.delete_posts(ids))

    def set_takedown(self, post_id: int, active: bool) -> PostStatus | None:
        """Take a post down (moderation) or lift the takedown; like `delete_post`, but reversible.

        Lifting it re-adds the post to every index (an UPSERT entry). A deleted post stays deleted.
        None when the store has no such post.
        """
        return self._remove(post_id, lambda ids: self.store.set_takedown(ids, active), restore=not active)

    def _remove(self, post_id: int, change: Any, *, restore: bool = False) -> PostStatus | None:
        ids = np.array([post_id], dtype=np.int64)
        if self.store.post_states(ids)[0] is None:
            return None
        with self._post_lock:
            changed = bool(change(ids)[0])
            if self.follower is not None:
                self.follower.sync()  # this server's index now, the others' within a poll
        if restore:
            self.cold_start.refresh_fresh()
            self.cold_start.invalidate()
        else:
            self.cold_start.discard(ids)
        return PostStatus(post_id=int(post_id), state=str(self.store.post_states(ids)[0]), changed=changed)

    def set_relation(self, user_id: int, relation: Relation | str, author_id: int, active: bool) -> bool:
        """Follow/block/mute (active=True) or undo it; returns whether anything changed.

        Raises:
          InvalidRequest: user_id == author_id.
        """
        rel = Relation(relation)
        if user_id == author_id:
            raise InvalidRequest(("author_id",), f"user {user_id} cannot {rel.value[:-1]} themselves", where="path")
        fn = {
            (Relation.FOLLOWS, True): self.store.follow,
            (Relation.FOLLOWS, False): self.store.unfollow,
            (Relation.BLOCKS, True): self.store.block,
            (Relation.BLOCKS, False): self.store.unblock,
            (Relation.MUTES, True): self.store.mute,
            (Relation.MUTES, False): self.store.unmute,
        }[(rel, active)]
        return bool(fn(user_id, author_id))
