"""Training/evaluation examples from a dataset: time splits, leave-one-out, ranking and retrieval examples.

Axes: N examples, S history length, C candidates, A actions, h_u / h_i / h_a hashes, E events, P posts.

Protocol (SPEC 8), stated once here and in docs/data.md:
  * Event order is the file order of `events.parquet`: per user by timestamp, ties in source order.
  * A candidate's history holds the user's last S *engaged* events (any engagement action, default
    every binary action) strictly before the candidate's impression time -- events of the same second
    never see each other. History may come from any split (a test example's history holds train
    events: that is the past, not leakage); candidates and labels come only from the requested split.
  * Splits: `TimeSplit` (global cut times, train < t1 <= val < t2 <= test) or `LeaveOneOut` (per user:
    last interaction test, second-to-last validation, the rest train).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import NamedTuple, Protocol

import numpy as np

from phoenix_recsys.actions import ActionVocabulary
from phoenix_recsys.data._progress import concat_ranges, progress_bar
from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.data.schema import Dataset
from phoenix_recsys.hashing import HashConfig

TRAIN, VAL, TEST = 0, 1, 2
SPLIT_CODES: dict[str, int] = {"train": TRAIN, "val": VAL, "test": TEST}
SPLITS = ("train", "val", "test", "all")
HISTORY_TIES = ("strict", "sequence")


def describe_ties(ties: str, target: str) -> str:
    """Where a history ends relative to `target` (e.g. "the target"), as protocol descriptions say it."""
    return f"strictly before {target}" if ties == "strict" else f"before {target} in (time, file) order"
_CHUNK = 1 << 16  # examples per gather chunk: bounds temporary memory and paces the progress bar


class SplitProtocol(Protocol):
    """Assigns every event row a split code (0 train, 1 val, 2 test)."""

    def assign(self, dataset: Dataset) -> np.ndarray:
        """`[E]` int8 split codes of the dataset's events."""
        ...

    def describe(self) -> str:
        """One line stating the protocol, to print next to every number."""
        ...


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TimeSplit:
    """Global time cut points: train `ts < t1`, val `t1 <= ts < t2`, test `ts >= t2` (seconds)."""

    t1: int
    t2: int

    def __post_init__(self) -> None:
        if self.t1 > self.t2:
            raise ValueError(f"TimeSplit needs t1 <= t2, got t1={self.t1}, t2={self.t2}")

    def assign(self, dataset: Dataset) -> np.ndarray:
        """`[E]` int8 split codes of the dataset's events."""
        ts = dataset.column("timestamp")
        return np.where(ts < self.t1, TRAIN, np.where(ts < self.t2, VAL, TEST)).astype(np.int8)

    def time_range(self, split: str) -> tuple[int | None, int | None]:
        """`[lo, hi)` of `split` (None = unbounded)."""
        return {"train": (None, self.t1), "val": (self.t1, self.t2), "test": (self.t2, None)}[split]

    def describe(self) -> str:
        """One line stating the protocol."""
        return f"time split: train ts < {self.t1} <= val < {self.t2} <= test"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LeaveOneOut:
    """Per user: the last interaction is test, the second-to-last validation, everything else train.

    Interactions are events with any of `actions` (None: the engagement definition, every binary
    action). "Last" follows the stable event order, so of several interactions in the user's final
    second the one later in the source file is the test target. Users with fewer than 3 interactions
    stay entirely in train (the SASRec convention).
    """

    actions: tuple[str, ...] | None = None

    def assign(self, dataset: Dataset) -> np.ndarray:
        """`[E]` int8 split codes of the dataset's events."""
        inter = dataset.engaged(self.actions)
        users = dataset.column("user_id")
        codes = np.zeros(dataset.num_events, dtype=np.int8)
        rows = np.flatnonzero(inter)
        if rows.size == 0:
            return codes
        u = users[rows]
        last = np.r_[u[1:] != u[:-1], True]  # last interaction of each user block
        starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
        counts = np.diff(np.r_[starts, u.size])
        enough = np.repeat(counts >= 3, counts)
        test_rows = rows[last & enough]
        second = np.r_[last[1:], False] & enough  # the interaction just before a user's last
        val_rows = rows[second]
        codes[test_rows] = TEST
        codes[val_rows] = VAL
        return codes

    def describe(self) -> str:
        """One line stating the protocol."""
        acts = "engagement actions" if self.actions is None else "/".join(self.actions)
        return f"leave-one-out over {acts}: last interaction test, second-to-last val (users with >= 3)"


def split_by_time(
    dataset: Dataset,
    val_frac: float = 0.1,
    test_frac: float = 0.1,
    *,
    cut_times: tuple[int, int] | None = None,
) -> TimeSplit:
    """Global time cut points at event-time quantiles (or explicit `cut_times=(t1, t2)`).

    t1 is the timestamp below which `1 - val_frac - test_frac` of the events lie, t2 likewise for
    `1 - test_frac`; whole seconds go to one side, so with ties the fractions are approximate.
    """
    if cut_times is not None:
        return TimeSplit(t1=int(cut_times[0]), t2=int(cut_times[1]))
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ValueError(
            f"val_frac and test_frac must be in [0, 1) with a sum < 1, got {val_frac}, {test_frac}"
        )
    ts = np.sort(dataset.column("timestamp"))
    if ts.size == 0:
        raise ValueError(f"dataset {dataset.name!r} has no events to split")

    def cut(frac_before: float) -> int:
        i = int(np.floor(frac_before * ts.size))
        return int(ts[i]) if i < ts.size else int(ts[-1]) + 1

    return TimeSplit(t1=cut(1 - val_frac - test_frac), t2=cut(1 - test_frac))


def leave_one_out(actions: Sequence[str] | None = None) -> LeaveOneOut:
    """The leave-one-out protocol of sequential benchmarks (see `LeaveOneOut`)."""
    return LeaveOneOut(actions=None if actions is None else tuple(actions))


# -- shared per-event context ------------------------------------------------------------------


class PostCorpus(NamedTuple):
    """Every post of a dataset, hashed: `post_ids [P]`, `post_hashes [P, h_i]`, `author_hashes [P, h_a]`."""

    post_ids: np.ndarray
    post_hashes: np.ndarray
    author_hashes: np.ndarray


def post_corpus(dataset: Dataset, hash_config: HashConfig) -> PostCorpus:
    """The full retrieval corpus: all posts of `posts.parquet`, ascending post_id, hashed.

    Returns:
      `(post_ids [P] int64, post_hashes [P, h_i] int32, author_hashes [P, h_a] int32)`.
    """
    pids = dataset.column("post_id", "posts")
    authors = dataset.column("author_id", "posts")
    return PostCorpus(pids, hash_config.hash_items(pids), _hash_by_unique(authors, hash_config.hash_authors))


def _pair_key(users: np.ndarray, authors: np.ndarray) -> np.ndarray:
    """One int64 per (user, author) pair for membership tests (ids below 2**31 stay collision-free)."""
    return users.astype(np.int64) * np.int64(2**31) + authors.astype(np.int64)


def _hash_by_unique(ids: np.ndarray, fn) -> np.ndarray:
    uniq, inv = np.unique(ids, return_inverse=True)
    return fn(uniq)[inv.reshape(-1)]


class _Context:
    """Per-event arrays shared by the example builders (computed once per call)."""

    def __init__(self, dataset: Dataset, hc: HashConfig, engagement_actions: Sequence[str] | None):
        self.ds = dataset
        self.users = dataset.column("user_id")
        self.ts = dataset.column("timestamp")
        self.surface = dataset.column("product_surface").astype(np.int32)
        pids = dataset.column("post_id", "posts")
        self.post_idx = np.searchsorted(pids, dataset.column("post_id"))  # load_dataset checked membership
        self.corpus = post_corpus(dataset, hc)
        self.created = dataset.column("created_at", "posts")
        self.labels = dataset.action_matrix()  # [E, A]
        self.multi_hot = (self.labels > 0).astype(np.float32)
        self.true_probs = dataset.true_prob_matrix()
        self.engaged = dataset.engaged(engagement_actions)
        self.eng_rows = np.flatnonzero(self.engaged)
        self.ceng = np.concatenate([[0], np.cumsum(self.engaged, dtype=np.int64)])  # engaged rows < i
        e = self.users.size
        idx = np.arange(e)
        new_user = np.r_[True, self.users[1:] != self.users[:-1]] if e else np.zeros(0, bool)
        new_run = new_user | (np.r_[True, self.ts[1:] != self.ts[:-1]] if e else np.zeros(0, bool))
        self.user_start = np.maximum.accumulate(np.where(new_user, idx, 0)) if e else idx
        # First row of the (user, timestamp) run: history must end before it (strictly earlier time).
        self.run_start = np.maximum.accumulate(np.where(new_run, idx, 0)) if e else idx
        self.user_hashes_fn = hc.hash_users
        self.post_author = dataset.column("author_id", "posts")
        self.follow_keys = np.zeros(0, np.int64)
        if dataset.follows is not None and dataset.follows.num_rows:
            self.follow_keys = np.unique(_pair_key(dataset.column("user_id", "follows"), dataset.column("author_id", "follows")))

    def history_end(self, cut_rows: np.ndarray, ties: str) -> np.ndarray:
        """Engaged-event count before each cut row: strictly earlier time ("strict") or earlier in the
        stable (user, timestamp, file position) order ("sequence")."""
        return self.ceng[self.run_start[cut_rows] if ties == "strict" else cut_rows]

    def history(self, cut_rows: np.ndarray, s: int, ties: str = "strict") -> np.ndarray:
        """`[N, S]` event rows of the last S engaged events before each cut row (-1 padded, front
        packed); see `history_end` for `ties`."""
        end = self.history_end(cut_rows, ties)
        begin = self.ceng[self.user_start[cut_rows]]
        length = np.minimum(end - begin, s)
        pos = (end - length)[:, None] + np.arange(s)[None, :]
        valid = np.arange(s)[None, :] < length[:, None]
        if self.eng_rows.size == 0:
            return np.full((cut_rows.size, s), -1, dtype=np.int64)
        return np.where(valid, self.eng_rows[np.clip(pos, 0, self.eng_rows.size - 1)], -1)

    def fill_history(self, rows: np.ndarray, out: dict[str, np.ndarray], sl: slice) -> None:
        """Write the history block of examples `sl` from event rows `[n, S]` (-1 = padding)."""
        valid = rows >= 0
        r = np.where(valid, rows, 0)
        pidx = self.post_idx[r]
        out["history_post_hashes"][sl] = np.where(valid[..., None], self.corpus.post_hashes[pidx], 0)
        out["history_author_hashes"][sl] = np.where(valid[..., None], self.corpus.author_hashes[pidx], 0)
        out["history_actions"][sl] = np.where(valid[..., None], self.multi_hot[r], 0.0)
        out["history_product_surface"][sl] = np.where(valid, self.surface[r], 0)
        out["history_timestamps"][sl] = np.where(valid, self.ts[r], -1)
        out["history_event_rows"][sl] = rows

    def fill_candidates(self, rows: np.ndarray, out: dict[str, np.ndarray], sl: slice) -> None:
        """Write the candidate block of examples `sl` from event rows `[n, C]` (-1 = padding)."""
        valid = rows >= 0
        r = np.where(valid, rows, 0)
        pidx = self.post_idx[r]
        out["candidate_post_hashes"][sl] = np.where(valid[..., None], self.corpus.post_hashes[pidx], 0)
        out["candidate_author_hashes"][sl] = np.where(valid[..., None], self.corpus.author_hashes[pidx], 0)
        out["candidate_product_surface"][sl] = np.where(valid, self.surface[r], 0)
        out["candidate_impr_ts"][sl] = np.where(valid, self.ts[r], 0)
        out["candidate_post_creation_ts"][sl] = np.where(valid, self.created[pidx], 0)
        # Follows are a static graph in our format: "follows the author" is known at impression time.
        keys = _pair_key(self.users[r], self.post_author[pidx])
        pos = np.clip(np.searchsorted(self.follow_keys, keys), 0, max(self.follow_keys.size - 1, 0))
        hit = (self.follow_keys[pos] == keys) if self.follow_keys.size else np.zeros(keys.shape, bool)
        out["candidate_in_network"][sl] = (valid & hit).astype(np.int32)

    def split_rows(self, split: str, protocol: SplitProtocol | None) -> tuple[np.ndarray, str]:
        """Event rows of `split` (file order) and the protocol description."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        proto = protocol if protocol is not None else split_by_time(self.ds)
        if split == "all":
            return np.arange(self.users.size), proto.describe() + "; split=all"
        codes = proto.assign(self.ds)
        return np.flatnonzero(codes == SPLIT_CODES[split]), proto.describe() + f"; split={split}"


def _alloc(n: int, s: int, c: int, hc: HashConfig, a: int) -> dict[str, np.ndarray]:
    return {
        "user_hashes": np.zeros((n, hc.num_user_hashes), np.int32),
        "history_post_hashes": np.zeros((n, s, hc.num_item_hashes), np.int32),
        "history_author_hashes": np.zeros((n, s, hc.num_author_hashes), np.int32),
        "history_actions": np.zeros((n, s, a), np.float32),
        "history_product_surface": np.zeros((n, s), np.int32),
        "history_timestamps": np.zeros((n, s), np.int64),
        "history_event_rows": np.zeros((n, s), np.int64),
        "candidate_post_hashes": np.zeros((n, c, hc.num_item_hashes), np.int32),
        "candidate_author_hashes": np.zeros((n, c, hc.num_author_hashes), np.int32),
        "candidate_product_surface": np.zeros((n, c), np.int32),
        "candidate_impr_ts": np.zeros((n, c), np.int64),
        "candidate_post_creation_ts": np.zeros((n, c), np.int64),
        "candidate_in_network": np.zeros((n, c), np.int32),
    }


def _batch(arrs: dict[str, np.ndarray]) -> RecsysBatch:
    return RecsysBatch(**{f: arrs[f] for f in RecsysBatch._fields if f in arrs})


def _take_batch(batch: RecsysBatch, idx: np.ndarray) -> RecsysBatch:
    return RecsysBatch(*(None if v is None else v[idx] for v in batch))


def _iter_indices(
    n: int, batch_size: int, shuffle: bool, seed: int, drop_remainder: bool
) -> Iterator[np.ndarray]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_remainder else n
    for i in range(0, stop, batch_size):
        yield order[i : i + batch_size]


def _check_sizes(history_len: int, max_candidates: int | None = None) -> None:
    if not isinstance(history_len, int) or history_len < 1:
        raise ValueError(f"history_len must be an int >= 1, got {history_len!r}")
    if max_candidates is not None and (not isinstance(max_candidates, int) or max_candidates < 1):
        raise ValueError(f"max_candidates must be an int >= 1, got {max_candidates!r}")


# -- ranking --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RankingExamples:
    """Ranker examples: one shared history and up to C impressions (candidates) per example.

    Attributes:
      batch: model input; `candidate_impr_ts` / `candidate_post_creation_ts` are set (0 padded).
      labels: `[N, C, A]` float32, binary actions 0/1, continuous actions their value; 0 when padded.
      candidate_mask: `[N, C]` bool, False for padded candidate slots.
      true_probs: `[N, C, A]` float32 true probabilities (synthetic data), else None.
      user_ids: `[N]` int64.
      candidate_post_ids: `[N, C]` int64, -1 padded.
      candidate_timestamps: `[N, C]` int64 impression times, -1 padded.
      candidate_event_rows: `[N, C]` int64 rows of events.parquet, -1 padded.
      history_timestamps / history_event_rows: `[N, S]` int64, -1 padded.
      actions: the action vocabulary (the A axis).
      protocol: how the examples were built (split, history rule), to print next to any number.
    """

    batch: RecsysBatch
    labels: np.ndarray
    candidate_mask: np.ndarray
    true_probs: np.ndarray | None
    user_ids: np.ndarray
    candidate_post_ids: np.ndarray
    candidate_timestamps: np.ndarray
    candidate_event_rows: np.ndarray
    history_timestamps: np.ndarray
    history_event_rows: np.ndarray
    actions: ActionVocabulary
    protocol: str = ""

    def __len__(self) -> int:
        return int(self.user_ids.shape[0])

    def take(self, indices: np.ndarray | Sequence[int]) -> RankingExamples:
        """The examples at `indices` (any integer index array), all arrays indexed alike."""
        idx = np.asarray(indices, dtype=np.int64)
        return dataclasses.replace(
            self,
            batch=_take_batch(self.batch, idx),
            labels=self.labels[idx],
            candidate_mask=self.candidate_mask[idx],
            true_probs=None if self.true_probs is None else self.true_probs[idx],
            user_ids=self.user_ids[idx],
            candidate_post_ids=self.candidate_post_ids[idx],
            candidate_timestamps=self.candidate_timestamps[idx],
            candidate_event_rows=self.candidate_event_rows[idx],
            history_timestamps=self.history_timestamps[idx],
            history_event_rows=self.history_event_rows[idx],
        )

    def iter_batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0, drop_remainder: bool = False
    ) -> Iterator[RankingExamples]:
        """Consecutive (or, with `shuffle`, seeded-permuted) slices of `batch_size` examples."""
        for idx in _iter_indices(len(self), batch_size, shuffle, seed, drop_remainder):
            yield self.take(idx)


def build_ranking_examples(
    dataset: Dataset,
    hash_config: HashConfig,
    *,
    history_len: int = 32,
    max_candidates: int = 16,
    split: str = "train",
    protocol: SplitProtocol | None = None,
    engagement_actions: Sequence[str] | None = None,
    session_gap_s: int = 1800,
    progress: bool = False,
) -> RankingExamples:
    """Group the impressions of `split` into ranker examples.

    Candidates are grouped per (user, request_id) when events have a request_id, else per user
    session (a new session starts after a gap > `session_gap_s` seconds between consecutive
    impressions of the split). A group larger than C is cut into consecutive examples of C (the last
    padded). Each example's history is the user's last S engaged events strictly before the earliest
    candidate of the example, oldest first, packed at the front.

    Args:
      dataset: a loaded dataset.
      hash_config: how ids become hashes.
      history_len: S; max_candidates: C.
      split: "train" | "val" | "test" | "all" (every event).
      protocol: a `TimeSplit` / `LeaveOneOut`; default `split_by_time(dataset, 0.1, 0.1)`.
      engagement_actions: which actions make an event enter histories (default: every binary one).
      session_gap_s: session cut when there is no request_id.
      progress: Rich progress bar.

    Returns:
      `RankingExamples` with N examples.
    """
    _check_sizes(history_len, max_candidates)
    s, c = history_len, max_candidates
    ctx = _Context(dataset, hash_config, engagement_actions)
    rows, desc = ctx.split_rows(split, protocol)
    users = ctx.users[rows]
    if "request_id" in dataset.events.column_names:
        req = dataset.column("request_id")[rows]
        order = np.lexsort((rows, req, users))  # grouped by (user, request), canonical order inside
        rows, users, req = rows[order], users[order], req[order]
        new_group = (
            np.r_[True, (users[1:] != users[:-1]) | (req[1:] != req[:-1])] if rows.size else np.zeros(0, bool)
        )
        grouping = "per (user, request_id)"
    else:
        ts = ctx.ts[rows]
        new_group = (
            np.r_[True, (users[1:] != users[:-1]) | (np.diff(ts) > session_gap_s)]
            if rows.size
            else np.zeros(0, bool)
        )
        grouping = f"per user session (gap > {session_gap_s} s starts a new one)"
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.r_[starts, rows.size])
    n_chunks = -(-sizes // c)  # ceil
    ex_offset = np.cumsum(n_chunks) - n_chunks
    rank = np.arange(rows.size) - np.repeat(starts, sizes)
    ex_of_row = np.repeat(ex_offset, sizes) + rank // c
    slot = rank % c
    n = int(n_chunks.sum())
    cand_rows = np.full((n, c), -1, dtype=np.int64)
    cand_rows[ex_of_row, slot] = rows
    first_rows = cand_rows[:, 0]  # earliest candidate of each example (canonical order)

    a = len(dataset.actions)
    arrs = _alloc(n, s, c, hash_config, a)
    labels = np.zeros((n, c, a), np.float32)
    true_probs = None if ctx.true_probs is None else np.zeros((n, c, a), np.float32)
    ex_users = ctx.users[first_rows] if n else np.zeros(0, np.int64)
    arrs["user_hashes"][:] = _hash_by_unique(ex_users, hash_config.hash_users) if n else 0
    n_chunks_total = -(-n // _CHUNK)
    with progress_bar("ranking examples", total=n_chunks_total, enabled=progress) as advance:
        for lo in range(0, n, _CHUNK):
            sl = slice(lo, min(n, lo + _CHUNK))
            ctx.fill_history(ctx.history(first_rows[sl], s), arrs, sl)
            cr = cand_rows[sl]
            ctx.fill_candidates(cr, arrs, sl)
            valid = cr >= 0
            r = np.where(valid, cr, 0)
            labels[sl] = np.where(valid[..., None], ctx.labels[r], 0.0)
            if true_probs is not None and ctx.true_probs is not None:
                true_probs[sl] = np.where(valid[..., None], ctx.true_probs[r], 0.0)
            advance()
    mask = cand_rows >= 0
    safe = np.where(mask, cand_rows, 0)
    return RankingExamples(
        batch=_batch(arrs),
        labels=labels,
        candidate_mask=mask,
        true_probs=true_probs,
        user_ids=ex_users.astype(np.int64),
        candidate_post_ids=np.where(mask, dataset.column("post_id")[safe], -1),
        candidate_timestamps=np.where(mask, ctx.ts[safe], -1),
        candidate_event_rows=cand_rows,
        history_timestamps=arrs["history_timestamps"],
        history_event_rows=arrs["history_event_rows"],
        actions=dataset.actions,
        protocol=f"{desc}; candidates grouped {grouping}, C={c}; history: last {s} engaged events strictly before the example's first impression",
    )


# -- retrieval ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RetrievalExamples:
    """(history before t, next positive post at t) pairs for the two-tower retriever.

    Attributes:
      batch: model input with C = 1 candidate, the target post (and its surface and times).
      target_post_ids / target_timestamps / target_event_rows / user_ids: `[N]` int64.
      history_timestamps / history_event_rows / history_post_ids: `[N, S]` int64, -1 padded.
      seen_indptr `[U+1]` / seen_post_ids `[nnz]`: per example-user (CSR), the posts of the user's
        engaged events in event order; example i has seen the first `seen_counts[i]` of them, i.e.
        exactly the engagements strictly before its target time. Use for excluding already-engaged
        posts in full-corpus evaluation (`seen_pairs`).
      example_user_index: `[N]` row of each example in the CSR; seen_counts `[N]`.
      protocol: how the examples were built.
      window_stride: None when there is one example per positive event; else only the examples that
        end an every-position training window were kept (see `window_ends`).
    """

    batch: RecsysBatch
    target_post_ids: np.ndarray
    target_timestamps: np.ndarray
    target_event_rows: np.ndarray
    user_ids: np.ndarray
    history_timestamps: np.ndarray
    history_event_rows: np.ndarray
    seen_indptr: np.ndarray
    seen_post_ids: np.ndarray
    example_user_index: np.ndarray
    seen_counts: np.ndarray
    history_post_ids: np.ndarray
    protocol: str = ""
    window_stride: int | None = None

    def __len__(self) -> int:
        return int(self.user_ids.shape[0])

    def seen_posts(self, i: int) -> np.ndarray:
        """Posts example `i`'s user engaged with strictly before the target time (may repeat)."""
        start = self.seen_indptr[self.example_user_index[i]]
        return self.seen_post_ids[start : start + self.seen_counts[i]]

    def seen_pairs(self, *, keep_target: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """All (example index, seen post id) pairs, vectorised, for building an exclusion mask.

        With `keep_target` (default) pairs whose post is the example's own target are left out, so
        excluding seen posts never excludes the answer (a re-engaged post stays retrievable).
        """
        starts = self.seen_indptr[self.example_user_index]
        pos = concat_ranges(starts, self.seen_counts)
        ex = np.repeat(np.arange(len(self)), self.seen_counts)
        posts = self.seen_post_ids[pos]
        if keep_target:
            keep = posts != self.target_post_ids[ex]
            ex, posts = ex[keep], posts[keep]
        return ex, posts

    def window_pairs(self, *, keep_target: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(example index, post id) pairs of each example's input window (its S history slots), the
        exclusion set of HSTU's evaluation code; with `keep_target` the example's own target is kept."""
        ex, slot = np.nonzero(self.history_post_ids >= 0)
        posts = self.history_post_ids[ex, slot]
        if keep_target:
            keep = posts != self.target_post_ids[ex]
            ex, posts = ex[keep], posts[keep]
        return ex.astype(np.int64), posts.astype(np.int64)

    def take(self, indices: np.ndarray | Sequence[int]) -> RetrievalExamples:
        """The examples at `indices`; the seen CSR is shared, only per-example arrays are indexed."""
        idx = np.asarray(indices, dtype=np.int64)
        return dataclasses.replace(
            self,
            batch=_take_batch(self.batch, idx),
            target_post_ids=self.target_post_ids[idx],
            target_timestamps=self.target_timestamps[idx],
            target_event_rows=self.target_event_rows[idx],
            user_ids=self.user_ids[idx],
            history_timestamps=self.history_timestamps[idx],
            history_event_rows=self.history_event_rows[idx],
            history_post_ids=self.history_post_ids[idx],
            example_user_index=self.example_user_index[idx],
            seen_counts=self.seen_counts[idx],
        )

    def iter_batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0, drop_remainder: bool = False
    ) -> Iterator[RetrievalExamples]:
        """Consecutive (or, with `shuffle`, seeded-permuted) slices of `batch_size` examples."""
        for idx in _iter_indices(len(self), batch_size, shuffle, seed, drop_remainder):
            yield self.take(idx)


def window_ends(users: np.ndarray, stride: int) -> np.ndarray:
    """Indices of the examples that end a training window: per user, the newest example and every
    `stride`-th one before it, so windows of `stride` items tile each user's sequence from its newest
    end. `users` `[N]` must be grouped by user (as the builders emit them)."""
    n = users.size
    if n == 0:
        return np.zeros(0, np.int64)
    end = np.flatnonzero(np.r_[users[1:] != users[:-1], True])
    from_end = end[np.searchsorted(end, np.arange(n))] - np.arange(n)
    return np.flatnonzero(from_end % stride == 0).astype(np.int64)


def build_retrieval_examples(
    dataset: Dataset,
    hash_config: HashConfig,
    *,
    history_len: int = 32,
    split: str = "train",
    protocol: SplitProtocol | None = None,
    positive_actions: Sequence[str] = ("favorite",),
    engagement_actions: Sequence[str] | None = None,
    history_ties: str = "strict",
    window_stride: int | None = None,
    progress: bool = False,
) -> RetrievalExamples:
    """One example per positive event of `split`: its history strictly before it, its post the target.

    Args:
      dataset: a loaded dataset.
      hash_config: how ids become hashes.
      history_len: S.
      split: "train" | "val" | "test" | "all".
      protocol: a `TimeSplit` / `LeaveOneOut`; default `split_by_time(dataset, 0.1, 0.1)`.
      positive_actions: an event is a target when any of these is set (SPEC 8: favorite by default).
      engagement_actions: which actions make an event enter histories and `seen` (default: binary).
      history_ties: "strict" (default, leak-free): events at the target's own timestamp never enter its
        history. "sequence": the published sequential-recommendation protocol, where a user's events
        form one sequence in (timestamp, file position) order and everything earlier in it is history,
        ties included (MovieLens rates many movies within one second).
      window_stride: keep only the examples that end an every-position training window (`window_ends`)
        instead of one per positive event: the same training signal in a fraction of the memory.
      progress: Rich progress bar.
    """
    _check_sizes(history_len)
    if history_ties not in HISTORY_TIES:
        raise ValueError(f"history_ties must be one of {list(HISTORY_TIES)}, got {history_ties!r}")
    if not positive_actions:
        raise ValueError("positive_actions must name at least one action")
    for name in positive_actions:
        dataset.actions.index(name)  # ValueError listing the vocabulary
    s = history_len
    ctx = _Context(dataset, hash_config, engagement_actions)
    rows, desc = ctx.split_rows(split, protocol)
    rows = rows[dataset.engaged(positive_actions)[rows]]
    if window_stride is not None:
        if not isinstance(window_stride, int) or isinstance(window_stride, bool) or window_stride < 1:
            raise ValueError(f"window_stride must be a positive int or None, got {window_stride!r}")
        rows = rows[window_ends(ctx.users[rows], window_stride)]
    n = rows.size
    arrs = _alloc(n, s, 1, hash_config, len(dataset.actions))
    users = ctx.users[rows]
    if n:
        arrs["user_hashes"][:] = _hash_by_unique(users, hash_config.hash_users)
    with progress_bar("retrieval examples", total=-(-n // _CHUNK), enabled=progress) as advance:
        for lo in range(0, n, _CHUNK):
            sl = slice(lo, min(n, lo + _CHUNK))
            ctx.fill_history(ctx.history(rows[sl], s, history_ties), arrs, sl)
            ctx.fill_candidates(rows[sl, None], arrs, sl)
            advance()
    # Seen CSR over the examples' users: each user's engaged rows form one contiguous run of eng_rows.
    uniq_users, first_idx, inv = np.unique(users, return_index=True, return_inverse=True)
    urow = rows[first_idx]
    u_begin = ctx.ceng[ctx.user_start[urow]]
    # A user's block ends where the next user's starts; events are sorted by user_id.
    block_end = np.searchsorted(ctx.users, uniq_users, side="right")
    u_count = ctx.ceng[block_end] - u_begin
    indptr = np.concatenate([[0], np.cumsum(u_count)]).astype(np.int64)
    seen_rows = ctx.eng_rows[concat_ranges(u_begin, u_count)] if ctx.eng_rows.size else np.zeros(0, np.int64)
    seen_counts = ctx.history_end(rows, history_ties) - ctx.ceng[ctx.user_start[rows]]
    return RetrievalExamples(
        batch=_batch(arrs),
        target_post_ids=dataset.column("post_id")[rows],
        target_timestamps=ctx.ts[rows],
        target_event_rows=rows.astype(np.int64),
        user_ids=users.astype(np.int64),
        history_timestamps=arrs["history_timestamps"],
        history_event_rows=arrs["history_event_rows"],
        seen_indptr=indptr,
        seen_post_ids=dataset.column("post_id")[seen_rows],
        example_user_index=inv.reshape(-1).astype(np.int64),
        seen_counts=seen_counts.astype(np.int64),
        history_post_ids=np.where(arrs["history_event_rows"] >= 0,
                                  dataset.column("post_id")[np.maximum(arrs["history_event_rows"], 0)], -1),
        protocol=f"{desc}; targets: events with {'/'.join(positive_actions)}; history: last {s} engaged events "
        + describe_ties(history_ties, "the target")
        + (f"; windows ending every {window_stride} targets per user" if window_stride else ""),
        window_stride=window_stride,
    )
