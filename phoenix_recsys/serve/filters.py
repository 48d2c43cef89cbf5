"""Candidate filters before ranking, in SPEC 7 order, over a small columnar `Candidates` set.

Axis: N candidates. Each filter is one vectorised mask over the candidates still alive, so a
candidate removed by an earlier filter is counted only there and the report adds up to N - kept.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from phoenix_recsys.serve._ids import member

#: Where a candidate came from; free text on purpose (a pipeline may add sources), these are the usual.
SOURCE_IN_NETWORK = "in_network"
SOURCE_OUT_OF_NETWORK = "out_of_network"
SOURCE_POPULAR = "popular"
SOURCE_FRESH = "fresh"

#: SPEC 7's production maximum post age, seconds.
PRODUCTION_MAX_AGE_S = 48 * 3600


class FilterName(enum.StrEnum):
    """The filters, declared in the order `apply_filters` runs them (SPEC 7)."""

    DUPLICATE = "duplicate"
    MISSING_AUTHOR = "missing_author"
    TOO_OLD = "too_old"
    OWN_POST = "own_post"
    REPEATED_REPOST = "repeated_repost"
    SEEN = "seen"
    SERVED_IN_SESSION = "served_in_session"
    MUTED_KEYWORD = "muted_keyword"
    BLOCKED_OR_MUTED_AUTHOR = "blocked_or_muted_author"


FILTER_ORDER: tuple[FilterName, ...] = tuple(FilterName)


def _int_column(name: str, x: Any) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"Candidates.{name} must be 1-D [N], got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"Candidates.{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Candidates:
    """Columnar candidate posts; every column is `[N]` and row i of each describes one candidate.

    Attributes:
      post_ids: int64 post ids.
      author_ids: int64 author ids, -1 (any negative) = missing.
      created_at: int64 post creation time, seconds.
      source: str source per candidate (`SOURCE_*`).
      repost_of: optional int64 id of the reposted original, -1 = not a repost.
      text: optional object array of str (None = no text).
      retrieval_score: optional float32 score from the source (e.g. two-tower dot product).
      video_duration_s: optional float64 video length, NaN = no video (the vqv gate in scoring).
      original_author_ids: optional int64 author of the reposted original (hydration fills it), -1 =
        not a repost. The blocked/muted filter looks at it too, so a hidden author's post cannot
        come back as someone else's repost.
    """

    post_ids: np.ndarray
    author_ids: np.ndarray
    created_at: np.ndarray
    source: np.ndarray
    repost_of: np.ndarray | None = None
    text: np.ndarray | None = None
    retrieval_score: np.ndarray | None = None
    video_duration_s: np.ndarray | None = None
    original_author_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        post_ids = _int_column("post_ids", self.post_ids)
        n = post_ids.shape[0]
        cols: dict[str, np.ndarray | None] = {"post_ids": post_ids}
        cols["author_ids"] = _int_column("author_ids", self.author_ids)
        cols["created_at"] = _int_column("created_at", self.created_at)
        source = np.asarray(self.source)
        if source.ndim == 0:  # one source for all, a convenience for single-source batches
            source = np.full(n, source.item(), dtype=object)
        cols["source"] = source.astype(object, copy=False)
        cols["repost_of"] = None if self.repost_of is None else _int_column("repost_of", self.repost_of)
        cols["original_author_ids"] = (
            None if self.original_author_ids is None else _int_column("original_author_ids", self.original_author_ids)
        )
        cols["text"] = None if self.text is None else np.asarray(self.text, dtype=object)
        cols["retrieval_score"] = (
            None if self.retrieval_score is None else np.asarray(self.retrieval_score, dtype=np.float32)
        )
        cols["video_duration_s"] = (
            None if self.video_duration_s is None else np.asarray(self.video_duration_s, dtype=np.float64)
        )
        for name, col in cols.items():
            if col is None:
                continue
            if col.ndim != 1 or col.shape[0] != n:
                raise ValueError(f"Candidates.{name} must be [N={n}] like post_ids, got shape {col.shape}")
            object.__setattr__(self, name, col)

    def __len__(self) -> int:
        return int(self.post_ids.shape[0])

    @classmethod
    def empty(cls) -> Candidates:
        """A zero-length candidate set."""
        z = np.zeros(0, dtype=np.int64)
        return cls(post_ids=z, author_ids=z, created_at=z, source=np.zeros(0, dtype=object))

    @classmethod
    def concat(cls, parts: Sequence[Candidates]) -> Candidates:
        """Row-wise concatenation (sources in priority order: duplicates keep the first).

        An optional column present in only some parts is filled with its missing value elsewhere
        (-1 repost_of / original_author_ids, None text, NaN retrieval_score / video_duration_s).
        """
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        fills = {"repost_of": -1, "original_author_ids": -1, "text": None, "retrieval_score": np.nan, "video_duration_s": np.nan}
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            cols = [getattr(p, f.name) for p in parts]
            if all(c is None for c in cols):
                continue
            if f.name in fills:
                dtype = next(c for c in cols if c is not None).dtype
                cols = [
                    c if c is not None else np.full(len(p), fills[f.name], dtype=dtype)
                    for c, p in zip(cols, parts, strict=True)
                ]
            kwargs[f.name] = np.concatenate(cols)
        return cls(**kwargs)

    def take(self, mask_or_idx: np.ndarray) -> Candidates:
        """The candidates selected by a `[N]` bool mask or an int index array (any order/repeats).

        Returns:
          A new `Candidates`; the inputs are not modified.
        """
        sel = np.asarray(mask_or_idx)
        if sel.dtype == np.bool_ and sel.shape != (len(self),):
            raise ValueError(f"take: bool mask must be [N={len(self)}], got shape {sel.shape}")
        if sel.dtype != np.bool_ and sel.size and not np.issubdtype(sel.dtype, np.integer):
            raise ValueError(f"take: expected a bool mask or int indices, got dtype {sel.dtype}")
        if sel.dtype != np.bool_:
            sel = sel.astype(np.int64, copy=False)
        return Candidates(
            **{
                f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[sel])
                for f in dataclasses.fields(self)
            }
        )

    def in_network(self, followed_author_ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """`[N]` bool: author followed by the viewer (SPEC 7's in-network, whatever the source)."""
        return np.isin(self.author_ids, _id_array(followed_author_ids))


def _id_array(ids: Iterable[int] | np.ndarray | None) -> np.ndarray:
    if ids is None:
        return np.zeros(0, dtype=np.int64)
    if isinstance(ids, np.ndarray):
        return ids.astype(np.int64, copy=False).ravel()
    return np.fromiter((int(i) for i in ids), dtype=np.int64)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FilterContext:
    """What the filters need to know about this request's viewer.

    Attributes:
      viewer_id: the requesting user (own posts are removed).
      now_s: request time, seconds; required when `FilterConfig.max_age_s` is set.
      seen_post_ids: posts the viewer has already seen (`Store.seen_posts`).
      served_post_ids: posts already served in this session (`Store.served_posts(user, session)`).
      blocked_or_muted_author_ids: authors hidden from the viewer: those it blocked or muted, and
        those who blocked it (reverse blocks). Applies to a post's author and, for a repost, to the
        original's author.
      muted_keywords: words or phrases; a post whose text contains one (case-insensitive, on word
        boundaries) is removed.
    """

    viewer_id: int
    now_s: int | None = None
    seen_post_ids: Iterable[int] | np.ndarray = ()
    served_post_ids: Iterable[int] | np.ndarray = ()
    blocked_or_muted_author_ids: Iterable[int] | np.ndarray = ()
    muted_keywords: Sequence[str] = ()

    def __post_init__(self) -> None:
        for name in ("viewer_id", "now_s"):
            v = getattr(self, name)
            if v is None and name == "now_s":
                continue
            if isinstance(v, bool) or not isinstance(v, int | np.integer):
                raise ValueError(f"FilterContext.{name} must be an int, got {v!r}")
            object.__setattr__(self, name, int(v))
        for name in ("seen_post_ids", "served_post_ids", "blocked_or_muted_author_ids"):
            try:
                object.__setattr__(self, name, _id_array(getattr(self, name)))
            except (TypeError, ValueError):
                raise ValueError(f"FilterContext.{name} must be integer ids") from None
        if isinstance(self.muted_keywords, str):
            raise ValueError("FilterContext.muted_keywords must be a list of strings, not one string")
        kws = tuple(k.strip() for k in self.muted_keywords)
        if any(not isinstance(k, str) for k in self.muted_keywords) or any(not k for k in kws):
            raise ValueError(
                f"FilterContext.muted_keywords must be non-empty strings, got {self.muted_keywords!r}"
            )
        object.__setattr__(self, "muted_keywords", kws)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FilterConfig:
    """Which filters run and with what limits.

    Attributes:
      max_age_s: drop posts older than this many seconds at `now_s` (strictly older); None = off,
        the choice for public datasets spanning years. Default: production's 48 h.
      disabled: filters to skip (their report count is 0).
    """

    max_age_s: int | None = PRODUCTION_MAX_AGE_S
    disabled: frozenset[FilterName] = frozenset()

    def __post_init__(self) -> None:
        if self.max_age_s is not None:
            if int(self.max_age_s) != self.max_age_s or self.max_age_s <= 0:
                raise ValueError(
                    f"FilterConfig.max_age_s must be a positive int or None, got {self.max_age_s!r}"
                )
            object.__setattr__(self, "max_age_s", int(self.max_age_s))
        try:
            disabled = frozenset(FilterName(d) for d in self.disabled)
        except ValueError:
            raise ValueError(
                f"FilterConfig.disabled names unknown filters {sorted(map(str, self.disabled))}; "
                f"known: {[f.value for f in FilterName]}"
            ) from None
        object.__setattr__(self, "disabled", disabled)


def _first_occurrence(keys: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """`[N]` bool: alive and the first alive row with its key (input order)."""
    idx = np.flatnonzero(alive)
    _, first = np.unique(keys[idx], return_index=True)  # return_index gives the first occurrence
    keep = np.zeros(keys.shape[0], dtype=bool)
    keep[idx[first]] = True
    return keep


def _keyword_pattern(keywords: Sequence[str]) -> re.Pattern[str]:
    # Word boundaries so "cat" does not mute "category"; whitespace inside a phrase matches any run
    # of whitespace. Longest first so a phrase wins over its prefix word (same verdict either way,
    # but it keeps the regex's behaviour obvious).
    parts = [r"\s+".join(map(re.escape, k.split())) for k in sorted(set(keywords), key=len, reverse=True)]
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


def _removal_mask(
    name: FilterName, c: Candidates, alive: np.ndarray, ctx: FilterContext, cfg: FilterConfig
) -> np.ndarray | None:
    """`[N]` bool of candidates this filter removes (only alive rows matter); None = not applicable."""
    if name is FilterName.DUPLICATE:
        return ~_first_occurrence(c.post_ids, alive)
    if name is FilterName.MISSING_AUTHOR:
        return c.author_ids < 0
    if name is FilterName.TOO_OLD:
        if cfg.max_age_s is None:
            return None
        if ctx.now_s is None:
            raise ValueError("FilterContext.now_s is required while FilterConfig.max_age_s is set")
        return (ctx.now_s - c.created_at) > cfg.max_age_s
    if name is FilterName.OWN_POST:
        return c.author_ids == ctx.viewer_id
    if name is FilterName.REPEATED_REPOST:
        if c.repost_of is None:
            return None
        # One key per original: a repost stands for its original, an original for itself, so the
        # original and its reposts compete and only the first of them survives (production's rule).
        key = np.where(c.repost_of >= 0, c.repost_of, c.post_ids)
        return ~_first_occurrence(key, alive)
    if name is FilterName.SEEN:
        return member(c.post_ids, ctx.seen_post_ids)
    if name is FilterName.SERVED_IN_SESSION:
        return member(c.post_ids, ctx.served_post_ids)
    if name is FilterName.MUTED_KEYWORD:
        if c.text is None or not ctx.muted_keywords:
            return None
        pattern = _keyword_pattern(ctx.muted_keywords)
        out = np.zeros(len(c), dtype=bool)
        # Regex matching is per string by nature; only alive rows with text are looked at.
        for i in np.flatnonzero(alive):
            t = c.text[i]
            out[i] = isinstance(t, str) and pattern.search(t) is not None
        return out
    if name is FilterName.BLOCKED_OR_MUTED_AUTHOR:
        hidden = np.isin(c.author_ids, ctx.blocked_or_muted_author_ids)
        if c.original_author_ids is not None:
            hidden |= np.isin(c.original_author_ids, ctx.blocked_or_muted_author_ids)
        return hidden
    raise AssertionError(f"unhandled filter {name}")  # unreachable: FilterName is closed


def filter_masks(
    candidates: Candidates, context: FilterContext, config: FilterConfig | None = None
) -> tuple[np.ndarray, dict[str, int]]:
    """Run the filters in SPEC 7 order and say which candidates survive.

    Args:
      candidates: `[N]` candidates, sources concatenated in priority order.
      context: the viewer's state.
      config: limits and disabled filters; default `FilterConfig()`.

    Returns:
      `(kept [N] bool, report)` with `report[filter_name] = number removed by that filter`, every
      filter present in run order.
    """
    config = FilterConfig() if config is None else config
    alive = np.ones(len(candidates), dtype=bool)
    report: dict[str, int] = {}
    for name in FILTER_ORDER:
        mask = None if name in config.disabled else _removal_mask(name, candidates, alive, context, config)
        if mask is None:
            report[name.value] = 0
            continue
        removed = alive & mask
        report[name.value] = int(removed.sum())
        alive &= ~removed
    return alive, report


def apply_filters(
    candidates: Candidates, context: FilterContext, config: FilterConfig | None = None
) -> tuple[Candidates, dict[str, int]]:
    """Filter candidates before ranking (SPEC 7 order: duplicates, missing author, too old, own posts,
    repeated reposts, seen, served in session, muted keywords, blocked/muted authors).

    Args:
      candidates: `[N]` candidates; duplicates keep their first occurrence, so concatenate sources
        in priority order.
      context: the viewer's state.
      config: limits and disabled filters; default `FilterConfig()` (production's 48 h max age).

    Returns:
      `(kept, report)`: the surviving candidates in input order, and filter name -> number removed.

    >>> c = Candidates(post_ids=[1, 1, 2, 3], author_ids=[7, 7, -1, 9], created_at=[0] * 4, source="fresh")
    >>> kept, report = apply_filters(c, FilterContext(viewer_id=9), FilterConfig(max_age_s=None))
    >>> kept.post_ids.tolist(), report["duplicate"], report["missing_author"], report["own_post"]
    ([1], 1, 1, 1)
    """
    kept, report = filter_masks(candidates, context, config)
    return candidates.take(kept), report
