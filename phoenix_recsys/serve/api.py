"""The HTTP API over `FeedService` (FastAPI): one router per resource, hand-rendered Prometheus metrics.

Routes are thin: parse the request schema, call one service method, build the response schema.
No SQL and no scoring here. Handlers are plain `def`s, so FastAPI runs them in its thread pool and
the blocking SQLite and JAX calls never stall the event loop.

Trust model (see docs/serving.md): the service sits behind a product backend on a private network.
Reads (feed, rank, retrieve, history, health, metrics) are open by default, because that backend is
the only caller the network lets through; `protect_reads` puts them behind the key too. Writes
always need `Authorization: Bearer <PHOENIX_API_KEY>` (compared in constant time), unless the
server runs with `--insecure-dev` and no key, and `--read-only` turns them off (403).
"""

from __future__ import annotations

import bisect
import hmac
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Security, status
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from phoenix_recsys.serve.pipeline import (
    FeedService,
    HistoryEvent,
    InvalidRequest,
    NewEvent,
    NewPost,
    RankCandidate,
    Relation,
    Unsupported,
)
from phoenix_recsys.serve.settings import ServeSettings

API_VERSION = "1"
INT64_MAX = 2**63 - 1
#: Requests whose Content-Length exceeds this are refused with 413 before the body is read.
MAX_BODY_BYTES = 16 * 1024 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# --------------------------------------------------------------------------------------------
# Schemas: requests (strict, no extra fields) and responses, kept apart
# --------------------------------------------------------------------------------------------
Id = Annotated[int, Field(ge=0, le=INT64_MAX, description="Non-negative int64 id.")]
Timestamp = Annotated[int, Field(ge=0, le=INT64_MAX, description="Seconds since the epoch.")]
Surface = Annotated[int, Field(ge=0, le=2**31 - 1, description="Product surface index.")]
ActionValue = Annotated[float, Field(ge=0, allow_inf_nan=False)]
ActionsIn = Annotated[
    list[str] | dict[str, ActionValue],
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
    session_id: str | None = Field(
        None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$",
        description="Pagination: posts served earlier in this session are skipped.",
    )


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
    history: list[HistoryEventIn] | None = Field(None, description="Explicit history, oldest first.")

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

    candidates: list[CandidateIn] = Field(min_length=1)
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


class EventsRequest(_Request):
    """`POST /v1/events`: written atomically, all or none."""

    events: list[EventIn] = Field(min_length=1)


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

    posts: list[PostIn] = Field(min_length=1)


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


class RetrieveResponse(BaseModel):
    user_id: int | None
    history_length: int
    items: list[RetrievedPostPublic]


class EventsResponse(BaseModel):
    accepted: int
    engagements: int
    impressions: int


class PostsResponse(BaseModel):
    accepted: int
    indexed: bool


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


class HealthResponse(BaseModel):
    status: str
    schema_version: int
    bundle: str
    actions: list[str]
    index_posts: int | None
    index_kind: str | None
    writes_enabled: bool
    clock: str
    now: int


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{_label(str(v))}"' for k, v in kv.items()) + "}"


class Metrics:
    """Request counters, latency histograms and feed stage timings, rendered as Prometheus text.

    Labels use the route template (`/v1/users/{user_id}/...`), never the raw path, so label
    cardinality stays bounded. One lock guards everything; updates are a few dict operations.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self._requests: dict[tuple[str, str, int], int] = {}
        self._latency: dict[tuple[str, str], list[float]] = {}  # bucket counts..., sum, count
        self._exceptions: dict[str, int] = {}
        self._stages: dict[str, list[float]] = {}  # sum seconds, count

    def observe_request(self, method: str, route: str, status_code: int, seconds: float) -> None:
        with self._lock:
            key = (method, route, status_code)
            self._requests[key] = self._requests.get(key, 0) + 1
            h = self._latency.setdefault((method, route), [0.0] * (len(_LATENCY_BUCKETS) + 2))
            i = bisect.bisect_left(_LATENCY_BUCKETS, seconds)
            if i < len(_LATENCY_BUCKETS):
                h[i] += 1  # stored per bucket, made cumulative when rendered
            h[-2] += seconds
            h[-1] += 1

    def observe_exception(self, route: str) -> None:
        with self._lock:
            self._exceptions[route] = self._exceptions.get(route, 0) + 1

    def observe_stages(self, timings_ms: dict[str, float]) -> None:
        with self._lock:
            for stage, ms in timings_ms.items():
                s = self._stages.setdefault(stage, [0.0, 0.0])
                s[0] += ms / 1e3
                s[1] += 1

    def render(self, gauges: dict[str, tuple[str, float]]) -> str:
        """Prometheus text format 0.0.4; `gauges` maps name -> (help, value)."""
        with self._lock:
            requests = dict(self._requests)
            latency = {k: list(v) for k, v in self._latency.items()}
            exceptions = dict(self._exceptions)
            stages = {k: list(v) for k, v in self._stages.items()}
        out = [
            "# HELP phoenix_http_requests_total HTTP requests by method, route template and status code.",
            "# TYPE phoenix_http_requests_total counter",
        ]
        for (m, r, s), n in sorted(requests.items()):
            out.append(f"phoenix_http_requests_total{_labels(method=m, route=r, status=str(s))} {n}")
        out += [
            "# HELP phoenix_http_errors_total HTTP responses with a 4xx or 5xx status.",
            "# TYPE phoenix_http_errors_total counter",
        ]
        errors: dict[tuple[str, str, str], int] = {}
        for (m, r, s), n in requests.items():
            if s >= 400:
                key = (m, r, f"{s // 100}xx")
                errors[key] = errors.get(key, 0) + n
        for (m, r, c), n in sorted(errors.items()):
            out.append(f"phoenix_http_errors_total{_labels(method=m, route=r, status_class=c)} {n}")
        out += [
            "# HELP phoenix_http_unhandled_exceptions_total Requests that raised (answered 500).",
            "# TYPE phoenix_http_unhandled_exceptions_total counter",
        ]
        for r, n in sorted(exceptions.items()):
            out.append(f"phoenix_http_unhandled_exceptions_total{_labels(route=r)} {n}")
        out += [
            "# HELP phoenix_http_request_duration_seconds Request latency.",
            "# TYPE phoenix_http_request_duration_seconds histogram",
        ]
        for (m, r), h in sorted(latency.items()):
            cum = 0.0
            for b, c in zip(_LATENCY_BUCKETS, h[: len(_LATENCY_BUCKETS)], strict=True):
                cum += c
                out.append(f"phoenix_http_request_duration_seconds_bucket{_labels(method=m, route=r, le=repr(b))} {int(cum)}")
            out.append(f"phoenix_http_request_duration_seconds_bucket{_labels(method=m, route=r, le='+Inf')} {int(h[-1])}")
            out.append(f"phoenix_http_request_duration_seconds_sum{_labels(method=m, route=r)} {h[-2]:.6f}")
            out.append(f"phoenix_http_request_duration_seconds_count{_labels(method=m, route=r)} {int(h[-1])}")
        out += [
            "# HELP phoenix_feed_stage_seconds Time spent in each feed pipeline stage.",
            "# TYPE phoenix_feed_stage_seconds summary",
        ]
        for stage, (total, n) in sorted(stages.items()):
            out.append(f"phoenix_feed_stage_seconds_sum{_labels(stage=stage)} {total:.6f}")
            out.append(f"phoenix_feed_stage_seconds_count{_labels(stage=stage)} {int(n)}")
        for name, (help_, value) in sorted(gauges.items()):
            out += [f"# HELP {name} {help_}", f"# TYPE {name} gauge", f"{name} {value}"]
        return "\n".join(out) + "\n"


class _ObserveMiddleware:
    """Pure ASGI middleware: refuse oversized bodies (413), time and count every HTTP request.

    It sits inside Starlette's error middleware, so an exception escaping a route is counted
    here as a 500 before the error middleware answers it.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status_code = 500
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                response = JSONResponse(
                    {"detail": f"request body larger than {self.max_body_bytes} bytes"}, status_code=413
                )
                await response(scope, receive, send)
                self.metrics.observe_request(scope["method"], "unmatched", 413, time.perf_counter() - start)
                return

        async def send_observed(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        except Exception:
            status_code = 500
            self.metrics.observe_exception(_route_of(scope))
            raise
        finally:
            self.metrics.observe_request(scope["method"], _route_of(scope), status_code, time.perf_counter() - start)


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


# --------------------------------------------------------------------------------------------
# Dependencies
# --------------------------------------------------------------------------------------------
_bearer = HTTPBearer(auto_error=False, description="The server's PHOENIX_API_KEY.")


def get_service(request: Request) -> FeedService:
    return request.app.state.service


def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


ServiceDep = Annotated[FeedService, Depends(get_service)]
SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]


def _unauthorized(msg: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=msg, headers={"WWW-Authenticate": "Bearer"})


def _check_key(settings: ServeSettings, creds: HTTPAuthorizationCredentials | None) -> None:
    if settings.api_key is None:
        if settings.writes_need_key:  # unreachable: settings refuse this state; fail closed anyway
            raise _unauthorized("no API key is configured")
        return
    if creds is None:
        raise _unauthorized("missing Authorization: Bearer <key>")
    # Constant-time comparison, so response timing reveals nothing about the key.
    if not hmac.compare_digest(creds.credentials.encode(), settings.api_key.get_secret_value().encode()):
        raise _unauthorized("invalid API key")


def require_write(settings: SettingsDep, creds: Credentials) -> None:
    """Write endpoints: 403 when read-only, else the bearer key (unless insecure dev without key)."""
    if not settings.writes_enabled:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="this server is read-only (--read-only)")
    _check_key(settings, creds)


def require_read(settings: SettingsDep, creds: Credentials) -> None:
    """Read endpoints: open unless `protect_reads`."""
    if settings.protect_reads:
        _check_key(settings, creds)


WriteAccess = Annotated[None, Depends(require_write)]
ReadAccess = Annotated[None, Depends(require_read)]

UserIdPath = Annotated[int, Path(ge=0, le=INT64_MAX)]
AuthorIdPath = Annotated[int, Path(ge=0, le=INT64_MAX)]


# --------------------------------------------------------------------------------------------
# Routers
# --------------------------------------------------------------------------------------------
feed_router = APIRouter(prefix="/v1", tags=["feed"])
rank_router = APIRouter(prefix="/v1", tags=["rank"])
retrieve_router = APIRouter(prefix="/v1", tags=["retrieve"])
events_router = APIRouter(prefix="/v1", tags=["events"])
posts_router = APIRouter(prefix="/v1", tags=["posts"])
users_router = APIRouter(prefix="/v1/users", tags=["users"])
ops_router = APIRouter(tags=["ops"])

_422 = {422: {"description": "Invalid body, unknown post/action, or a limit exceeded (the detail names the field)."}}
_401 = {401: {"description": "Missing or wrong bearer key."}, 403: {"description": "The server is read-only."}}


@feed_router.post("/feed", response_model=FeedResponse, responses=_422)
def post_feed(body: FeedRequest, service: ServiceDep, metrics: MetricsDep, _: ReadAccess) -> Any:
    """The "For You" feed of a user: top k posts, each with source, probabilities, scores and multipliers.

    An unknown user gets a cold-start feed (popular + fresh posts, ranked by the model).
    """
    result = service.feed(body.user_id, body.k, session_id=body.session_id)
    metrics.observe_stages(result.timings_ms)
    return result.to_json()


@rank_router.post("/rank", response_model=RankResponse, responses=_422)
def post_rank(body: RankRequest, service: ServiceDep, _: ReadAccess) -> Any:
    """Model scores of explicit candidates, in input order (same numbers as the offline model)."""
    result = service.rank(
        [
            RankCandidate(
                post_id=c.post_id, author_id=c.author_id, product_surface=c.product_surface, in_network=c.in_network
            )
            for c in body.candidates
        ],
        user_id=body.user_id,
        history=body.domain_history(),
        product_surface=body.product_surface,
    )
    return {
        "user_id": result.user_id,
        "history_length": result.history_length,
        "candidates": [vars_of(c) for c in result.candidates],
        "ranking": list(result.ranking),
    }


@retrieve_router.post("/retrieve", response_model=RetrieveResponse, responses={**_422, 409: {"description": "No retrieval model."}})
def post_retrieve(body: RetrieveRequest, service: ServiceDep, _: ReadAccess) -> Any:
    """The k posts nearest the user-tower embedding of the user's (or the given) history."""
    result = service.retrieve(body.k, user_id=body.user_id, history=body.domain_history(), exclude_seen=body.exclude_seen)
    return {
        "user_id": result.user_id,
        "history_length": result.history_length,
        "items": [vars_of(i) for i in result.items],
    }


@events_router.post("/events", response_model=EventsResponse, responses={**_422, **_401})
def post_events(body: EventsRequest, service: ServiceDep, _: WriteAccess) -> Any:
    """Record engagements (durable once acknowledged); events without a positive action are impressions."""
    result = service.add_events(
        [
            NewEvent(
                user_id=e.user_id, post_id=e.post_id, actions=_actions_dict(e.actions), timestamp=e.timestamp,
                product_surface=e.product_surface,
            )
            for e in body.events
        ]
    )
    return {"accepted": len(body.events), "engagements": result.engagements, "impressions": result.impressions}


@posts_router.post("/posts", response_model=PostsResponse, responses={**_422, **_401})
def post_posts(body: PostsRequest, service: ServiceDep, _: WriteAccess) -> Any:
    """Add or update posts; they are embedded and added to the corpus index, retrievable at once."""
    n = service.add_posts(
        [
            NewPost(
                post_id=p.post_id, author_id=p.author_id, created_at=p.created_at, text=p.text,
                repost_of=p.repost_of, video_duration_s=p.video_duration_s,
            )
            for p in body.posts
        ]
    )
    return {"accepted": n, "indexed": service.index is not None}


@users_router.put("/{user_id}/{relation}/{author_id}", response_model=RelationResponse, responses={**_422, **_401})
def put_relation(
    user_id: UserIdPath, relation: Relation, author_id: AuthorIdPath, service: ServiceDep, _: WriteAccess
) -> Any:
    """Follow, block or mute an author (idempotent; a block or mute applies to the next feed)."""
    changed = service.set_relation(user_id, relation, author_id, True)
    return {"user_id": user_id, "author_id": author_id, "relation": relation, "active": True, "changed": changed}


@users_router.delete("/{user_id}/{relation}/{author_id}", response_model=RelationResponse, responses={**_422, **_401})
def delete_relation(
    user_id: UserIdPath, relation: Relation, author_id: AuthorIdPath, service: ServiceDep, _: WriteAccess
) -> Any:
    """Undo a follow, block or mute (idempotent)."""
    changed = service.set_relation(user_id, relation, author_id, False)
    return {"user_id": user_id, "author_id": author_id, "relation": relation, "active": False, "changed": changed}


@users_router.get("/{user_id}/events", response_model=UserEventsResponse, responses=_422)
def get_user_events(
    user_id: UserIdPath, service: ServiceDep, _: ReadAccess, limit: Annotated[int, Query(ge=1)] = 100
) -> Any:
    """The user's most recent stored engagements, oldest first."""
    h = service.user_events(user_id, limit)
    events = [
        {"post_id": p, "author_id": a, "timestamp": t, "actions": acts, "product_surface": s}
        for p, a, t, acts, s in zip(
            h.post_ids.tolist(), h.author_ids.tolist(), h.timestamps.tolist(), h.actions, h.product_surface.tolist(),
            strict=True,
        )
    ]
    return {"user_id": user_id, "events": events}


@ops_router.get("/healthz", response_model=HealthResponse)
def get_health(service: ServiceDep) -> Any:
    """Liveness and what is loaded (always open: load balancers call it)."""
    return service.health()


@ops_router.get("/metrics", response_class=PlainTextResponse)
def get_metrics_text(service: ServiceDep, metrics: MetricsDep, _: ReadAccess) -> PlainTextResponse:
    """Prometheus text: request counts, latency histograms, errors, feed stage timings."""
    gauges = {
        "phoenix_up": ("1 while the server answers.", 1.0),
        "phoenix_start_time_seconds": ("Server start, seconds since the epoch.", round(metrics.started, 3)),
        "phoenix_index_posts": ("Posts in the corpus index.", float(len(service.index)) if service.index is not None else 0.0),
    }
    return PlainTextResponse(metrics.render(gauges), media_type="text/plain; version=0.0.4; charset=utf-8")


def vars_of(obj: Any) -> dict[str, Any]:
    """A slotted dataclass as a dict (its fields only)."""
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


# --------------------------------------------------------------------------------------------
# App
# --------------------------------------------------------------------------------------------
def _invalid_request(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidRequest)
    err: dict[str, Any] = {"type": exc.kind, "loc": [exc.where, *exc.loc], "msg": exc.msg}
    if exc.ctx:
        err["ctx"] = exc.ctx
    return JSONResponse({"detail": [err]}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


def _unsupported(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_409_CONFLICT)


def create_app(service: FeedService, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app over a ready `FeedService` (the caller owns its lifetime and closes it).

    Args:
      service: the feed service.
      settings: default `service.settings`.

    Returns:
      The app; OpenAPI at `/openapi.json`, interactive docs at `/docs`.
    """
    settings = service.settings if settings is None else settings
    app = FastAPI(
        title="phoenix-recsys",
        version=API_VERSION,
        summary="The Phoenix 'For You' feed: retrieval, candidate-isolated ranking, SPEC 7 scoring.",
        description=(
            "Reads are open to the trusted product backend; writes need `Authorization: Bearer <key>`. "
            "See docs/serving.md for the trust model, limits and guarantees."
        ),
    )
    app.state.service = service
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.add_exception_handler(InvalidRequest, _invalid_request)
    app.add_exception_handler(Unsupported, _unsupported)
    app.add_middleware(_ObserveMiddleware, metrics=app.state.metrics)
    for router in (feed_router, rank_router, retrieve_router, events_router, posts_router, users_router, ops_router):
        app.include_router(router)
    return app
