"""Request and response schemas of the HTTP API: requests strict (no extra fields), responses kept apart."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from phoenix_recsys.serve.api.cursor import MAX_CURSOR_CHARS
from phoenix_recsys.serve.pipeline import HistoryEvent, Relation

INT64_MAX = 2**63 - 1
MAX_EVENT_ID_LEN = 128
Id = Annotated[int, Field(ge=0, le=INT64_MAX, description="Non-negative int64 id.")]
Timestamp = Annotated[int, Field(ge=0, le=INT64_MAX, description="Seconds since the epoch.")]
Surface = Annotated[int, Field(ge=0, le=2**31 - 1, description="Product surface index.")]
ActionValue = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: Schema ceilings on every list, so a huge list is refused while parsing, before it is validated
#: item by item; the server's (lower) configured limits are then checked with a precise message.
MAX_LIST_ITEMS = 10_000
MAX_ACTIONS_PER_EVENT = 64
ActionName = Annotated[str, Field(min_length=1, max_length=64)]
ActionsIn = Annotated[
    Annotated[list[ActionName], Field(max_length=MAX_ACTIONS_PER_EVENT)]
    | Annotated[dict[ActionName, ActionValue], Field(max_length=MAX_ACTIONS_PER_EVENT)],
    Field(description='Action names (each = 1) or a map name -> value, e.g. ["favorite"] or {"dwell_time": 12.5}.'),
]


def _actions_dict(v: list[str] | dict[str, float]) -> dict[str, float]:
    return {name: 1.0 for name in v} if isinstance(v, list) else dict(v)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FeedRequest(_Request):
    """`POST /v1/feed`."""

    user_id: Id
    k: int = Field(20, ge=1, description="Page size, at most the server's max_k.")
    cursor: str | None = Field(
        None, min_length=1, max_length=MAX_CURSOR_CHARS, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Pagination: the `next_cursor` of the previous page (same user); its posts are skipped.",
    )
    session_id: str | None = Field(
        None, max_length=128, deprecated=True,
        description="Removed (it wrote served-marks on the read path): always refused; pass `cursor` instead.",
    )

    @field_validator("session_id")
    @classmethod
    def _no_session(cls, v: str | None) -> str | None:
        # Refused, not ignored: a client that silently lost pagination would repeat posts unnoticed.
        if v is not None:
            raise ValueError("session_id pagination was removed; pass the previous page's next_cursor as cursor")
        return v


class HistoryEventIn(_Request):
    """One event of an explicit history (oldest first)."""

    post_id: Id
    author_id: Id | None = Field(None, description="Looked up in the store when absent.")
    actions: ActionsIn = []
    product_surface: Surface = 0

    def to_domain(self) -> HistoryEvent:
        return HistoryEvent(
            post_id=self.post_id, author_id=self.author_id, actions=_actions_dict(self.actions),
            product_surface=self.product_surface,
        )


class _UserOrHistory(_Request):
    user_id: Id | None = None
    history: list[HistoryEventIn] | None = Field(None, max_length=MAX_LIST_ITEMS, description="Explicit history, oldest first.")

    @model_validator(mode="after")
    def _one_of(self) -> _UserOrHistory:
        if self.user_id is None and self.history is None:
            raise ValueError("give user_id (history read from the store) or history")
        return self

    def domain_history(self) -> list[HistoryEvent] | None:
        return None if self.history is None else [h.to_domain() for h in self.history]


class CandidateIn(_Request):
    """A candidate to rank."""

    post_id: Id
    author_id: Id | None = Field(None, description="Looked up in the store when absent.")
    product_surface: Surface | None = None
    in_network: bool | None = Field(None, description="Viewer follows the author; default: from the store.")


class RankRequest(_UserOrHistory):
    """`POST /v1/rank`."""

    candidates: list[CandidateIn] = Field(min_length=1, max_length=MAX_LIST_ITEMS)
    product_surface: Surface | None = None


class RetrieveRequest(_UserOrHistory):
    """`POST /v1/retrieve`."""

    k: int = Field(100, ge=1, description="Results, at most the server's max_retrieve_k.")
    exclude_seen: bool = True


class EventIn(_Request):
    """An engagement; with no positive action it is recorded as an impression (seen)."""

    user_id: Id
    post_id: Id
    actions: ActionsIn
    timestamp: Timestamp | None = Field(None, description="Default: the server clock.")
    product_surface: Surface = 0
    event_id: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_EVENT_ID_LEN,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="Client id of the event, unique per user: a replay with the same id is not written again.",
    )


class EventsRequest(_Request):
    """`POST /v1/events`: written atomically, all or none."""

    events: list[EventIn] = Field(min_length=1, max_length=MAX_LIST_ITEMS)


class PostIn(_Request):
    """A new (or updated) post."""

    post_id: Id
    author_id: Id
    created_at: Timestamp | None = Field(None, description="Default: the server clock.")
    text: str | None = Field(None, max_length=10_000)
    repost_of: Id | None = None
    video_duration_s: float | None = Field(None, ge=0, allow_inf_nan=False)

    @field_validator("text")
    @classmethod
    def _no_nul(cls, v: str | None) -> str | None:
        if v is not None and "\x00" in v:
            raise ValueError("text must not contain NUL characters")
        return v


class PostsRequest(_Request):
    """`POST /v1/posts`: stored and indexed at once."""

    posts: list[PostIn] = Field(min_length=1, max_length=MAX_LIST_ITEMS)


class Contribution(BaseModel):
    action: str
    contribution: float


class FeedItemPublic(BaseModel):
    """One feed item with its explanation."""

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
    top_contributions: list[Contribution]
    repost_of: int | None = Field(None, description="For a repost: the original post.")
    original_author_id: int | None = Field(None, description="For a repost: the original post's author.")


class DegradedStage(BaseModel):
    """A candidate source left out of this page."""

    stage: str = Field(description="in_network, out_of_network or cold_start.")
    reason: str = Field(description="error (it raised) or timeout (past its budget).")
    detail: str = Field(description="The exception type, or the budget that ran out.")


class FeedResponse(BaseModel):
    user_id: int
    now: int
    cold_start: bool
    history_length: int
    sources: dict[str, int]
    filtered: dict[str, int]
    ranked: int
    items: list[FeedItemPublic]
    timings_ms: dict[str, float]
    degraded: list[DegradedStage] = Field(
        default_factory=list, description="Candidate sources skipped for this page (the rest was served)."
    )
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page (signed, expires).")


class RankedCandidatePublic(BaseModel):
    post_id: int
    author_id: int
    probabilities: dict[str, float]
    weighted_score: float


class RankResponse(BaseModel):
    user_id: int | None
    history_length: int
    candidates: list[RankedCandidatePublic] = Field(description="In request order.")
    ranking: list[int] = Field(description="Candidate indices by weighted score, best first.")


class RetrievedPostPublic(BaseModel):
    post_id: int
    author_id: int
    score: float
    repost_of: int | None = Field(None, description="For a repost: the original post.")
    original_author_id: int | None = Field(None, description="For a repost: the original post's author.")


class RetrieveResponse(BaseModel):
    user_id: int | None
    history_length: int
    items: list[RetrievedPostPublic]


class EventsResponse(BaseModel):
    accepted: int
    duplicates: int = Field(description="Events skipped: their (user_id, event_id) was written before.")
    engagements: int
    impressions: int


class PostsResponse(BaseModel):
    accepted: int
    indexed: bool


class PostStatusResponse(BaseModel):
    post_id: int
    state: Literal["live", "deleted", "taken_down"]
    changed: bool = Field(description="Whether this request changed the post's state (False on a repeat).")


class RelationResponse(BaseModel):
    user_id: int
    author_id: int
    relation: Relation
    active: bool
    changed: bool


class StoredEventPublic(BaseModel):
    post_id: int
    author_id: int
    timestamp: int
    actions: dict[str, float]
    product_surface: int


class UserEventsResponse(BaseModel):
    user_id: int
    events: list[StoredEventPublic] = Field(description="Oldest first.")


class UserSummary(BaseModel):
    user_id: int
    last_active: int | None = Field(description="Timestamp of the newest engagement (order=recent only).")


class UsersResponse(BaseModel):
    order: str
    users: list[UserSummary]
    next_after: int | None = Field(description="With order=id: pass as `after` for the next page; null at the end.")


class HealthResponse(BaseModel):
    status: str  # "ok", or "store_unavailable" while a server store (PostgreSQL) cannot be reached
    schema_version: int | None  # None while the store cannot be reached
    bundle: str
    actions: list[str]
    index_posts: int | None
    index_kind: str | None
    index_follow: dict[str, Any] | None = None
    post_mirror: dict[str, Any] | None = None  # PostMirror.stats(); None when post_mirror is off
    writes_enabled: bool
    clock: str
    now: int

