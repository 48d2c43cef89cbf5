"""Request and result types of the feed service: plain frozen dataclasses and errors, no logic."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class InvalidRequest(ValueError):
    """A request the service refuses; nothing was written.

    Attributes:
      loc: where the problem is, relative to `where` (e.g. `("candidates", 3, "author_id")`).
      where: "body", "path" or "query".
      kind: a short machine-readable type ("value_error", "limit_exceeded", "unknown_post" ...).
      ctx: extra machine-readable details (e.g. `{"limit": 200}`).
    """

    def __init__(
        self,
        loc: tuple[str | int, ...],
        msg: str,
        *,
        kind: str = "value_error",
        where: str = "body",
        ctx: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{'.'.join(map(str, loc))}: {msg}")
        self.loc = loc
        self.msg = msg
        self.kind = kind
        self.where = where
        self.ctx = dict(ctx or {})


class RankingUnavailable(RuntimeError):
    """The ranking model failed on this request; the API answers 503 `ranking_unavailable`."""


class Unsupported(RuntimeError):
    """The loaded bundle cannot serve this request (e.g. retrieval without a retrieval model)."""


class Relation(enum.StrEnum):
    """Social-graph edges a user can set on an author."""

    FOLLOWS = "follows"
    BLOCKS = "blocks"
    MUTES = "mutes"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HistoryEvent:
    """One event of an explicit history (oldest first in a request); author None = look it up."""

    post_id: int
    actions: Mapping[str, float]
    author_id: int | None = None
    product_surface: int = 0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RankCandidate:
    """A candidate to rank; author None = look it up; surface None = the configured feed surface;
    in_network None = whether the viewer follows the author in the store (False when anonymous)."""

    post_id: int
    author_id: int | None = None
    product_surface: int | None = None
    in_network: bool | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NewEvent:
    """An engagement (or, with no positive action, an impression) to record."""

    user_id: int
    post_id: int
    actions: Mapping[str, float]
    timestamp: int | None = None
    product_surface: int = 0
    event_id: str | None = None  # client id, unique per user: replays are skipped


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NewPost:
    """A post to add (or update: the latest write wins)."""

    post_id: int
    author_id: int
    created_at: int | None = None
    text: str | None = None
    repost_of: int | None = None
    video_duration_s: float | None = None


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FeedItem:
    """One served post and why it is there.

    Attributes:
      rank: 1-based position in the feed.
      source: where the candidate came from (`in_network`, `out_of_network`, `popular`, `fresh`).
      in_network: the viewer follows the author (what the out-of-network factor looks at).
      age_s: seconds between creation and the request time.
      retrieval_score: two-tower dot product for retrieved posts, else None.
      probabilities: action -> predicted probability (binary) or value (continuous).
      weighted_score / offset_score: sum of weight x prediction, and after the negative offset.
      diversity_multiplier / oon_multiplier: the multipliers applied.
      final_score: offset x diversity x oon, the ranking score.
      top_contributions: the largest |weight x prediction| terms, (action, contribution).
      repost_of / original_author_id: for a repost, the original post and its author (None otherwise).
    """

    rank: int
    post_id: int
    author_id: int
    created_at: int
    age_s: int
    source: str
    in_network: bool
    retrieval_score: float | None
    probabilities: dict[str, float]
    weighted_score: float
    offset_score: float
    diversity_multiplier: float
    oon_multiplier: float
    final_score: float
    top_contributions: tuple[tuple[str, float], ...]
    repost_of: int | None = None
    original_author_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        # Field by field rather than `dataclasses.asdict`, whose deep copies cost ~0.1 ms per item.
        out = {f: getattr(self, f) for f in _FEED_ITEM_FIELDS}
        out["top_contributions"] = [{"action": a, "contribution": c} for a, c in self.top_contributions]
        return out


_FEED_ITEM_FIELDS = tuple(f.name for f in dataclasses.fields(FeedItem))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FeedResult:
    """A feed page with the pipeline's bookkeeping.

    Attributes:
      user_id / now: the viewer and the request time used.
      cold_start: the viewer had no history, so popular + fresh replaced retrieval.
      history_length: events in the model's history.
      sources: candidates per source before filtering.
      filtered: filter name -> candidates it removed.
      ranked: candidates the model scored.
      items: the page, best first.
      timings_ms: stage -> milliseconds.
      degraded: the candidate sources skipped for this page, each `{stage, reason, detail}` with
        reason `error` (it raised; detail = the exception type) or `timeout` (past its budget).
    """

    user_id: int
    now: int
    cold_start: bool
    history_length: int
    sources: dict[str, int]
    filtered: dict[str, int]
    ranked: int
    items: tuple[FeedItem, ...]
    timings_ms: dict[str, float]
    degraded: tuple[dict[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "items"}
        out["items"] = [i.to_json() for i in self.items]
        return out


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RankedCandidate:
    """Model scores of one `/v1/rank` candidate (input order is kept).

    Attributes:
      probabilities: action -> prediction.
      weighted_score: sum of weight x prediction (the model's weighted score, as
        `model.ranking_output` computes it: no video gate, offset or multipliers; the feed adds those).
    """

    post_id: int
    author_id: int
    probabilities: dict[str, float]
    weighted_score: float


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RankResult:
    """`/v1/rank` result: `candidates` in input order, `ranking` their indices best first."""

    user_id: int | None
    history_length: int
    candidates: tuple[RankedCandidate, ...]
    ranking: tuple[int, ...]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RetrievedPost:
    """One retrieval hit: post, author, dot-product score; for a repost the original and its author."""

    post_id: int
    author_id: int
    score: float
    repost_of: int | None = None
    original_author_id: int | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RetrieveResult:
    """`/v1/retrieve` result, best first."""

    user_id: int | None
    history_length: int
    items: tuple[RetrievedPost, ...]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PostStatus:
    """A post's state after a delete or takedown request: `state` is a `store.PostState` value
    ("live", "deleted", "taken_down"); `changed` says whether this request changed it."""

    post_id: int
    state: str
    changed: bool


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EventsResult:
    """Rows written by `FeedService.add_events`."""

    engagements: int
    impressions: int
    duplicates: int = 0  # events skipped because their (user_id, event_id) was already written


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class IndexInfo:
    """How the corpus index was obtained at start ("loaded" from disk or "built") and where it lives."""

    source: str
    directory: Path
    fingerprint: str
    size: int
    #: Post-sequence number of the snapshot loaded (None when built) and changes replayed on top.
    snapshot_seq: int | None = None
    caught_up: int = 0
    #: Posts embedded at start (the whole corpus when built; only the caught-up ones otherwise).
    embedded: int = 0
