"""The routers: thin, one service call each (parse the schema, call, build the response)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from phoenix_recsys.serve.api.cursor import CursorCodec, CursorError
from phoenix_recsys.serve.api.deps import (
    AdminAccess,
    AdminWriteAccess,
    AuthorIdPath,
    MetricsDep,
    PostIdPath,
    ReadAccess,
    ServiceDep,
    UserIdPath,
    WriteAccess,
)
from phoenix_recsys.serve.api.schemas import (
    EventsRequest,
    EventsResponse,
    FeedRequest,
    FeedResponse,
    HealthResponse,
    PostsRequest,
    PostsResponse,
    PostStatusResponse,
    RankRequest,
    RankResponse,
    RelationResponse,
    RetrieveRequest,
    RetrieveResponse,
    UserEventsResponse,
    UsersResponse,
    _actions_dict,
)
from phoenix_recsys.serve.api.strict import StrictJSONRoute
from phoenix_recsys.serve.pipeline import InvalidRequest, NewEvent, NewPost, RankCandidate, Relation

feed_router = APIRouter(prefix="/v1", tags=["feed"], route_class=StrictJSONRoute)
rank_router = APIRouter(prefix="/v1", tags=["rank"], route_class=StrictJSONRoute)
retrieve_router = APIRouter(prefix="/v1", tags=["retrieve"], route_class=StrictJSONRoute)
events_router = APIRouter(prefix="/v1", tags=["events"], route_class=StrictJSONRoute)
posts_router = APIRouter(prefix="/v1", tags=["posts"], route_class=StrictJSONRoute)
users_router = APIRouter(prefix="/v1/users", tags=["users"], route_class=StrictJSONRoute)
ops_router = APIRouter(tags=["ops"])
admin_router = APIRouter(prefix="/v1/admin", tags=["admin"])

_422 = {422: {"description": "Invalid body, unknown post/action, or a limit exceeded (the detail names the field)."}}
_401 = {401: {"description": "Missing or wrong bearer key."}, 403: {"description": "The server is read-only."}}


@feed_router.post("/feed", response_model=FeedResponse, responses=_422)
def post_feed(body: FeedRequest, request: Request, service: ServiceDep, metrics: MetricsDep, _: ReadAccess) -> Any:
    """The "For You" feed of a user: top k posts, each with source, probabilities, scores and multipliers.

    An unknown user gets a cold-start feed (popular + fresh posts, ranked by the model). Pages: pass the
    response's `next_cursor` as `cursor`; a cursor that is malformed, tampered with, expired or for
    another user is a 422 naming `cursor`. The feed writes nothing.
    """
    codec: CursorCodec = request.app.state.cursors
    served = np.zeros(0, np.int64)
    if body.cursor is not None:
        try:
            served = codec.verify(body.cursor, body.user_id).served
        except CursorError as e:
            raise InvalidRequest(("cursor",), str(e), kind="invalid_cursor") from None
    result = service.feed(body.user_id, body.k, exclude=served)
    metrics.observe_stages(result.timings_ms)
    metrics.observe_degraded(result.degraded)
    out = result.to_json()
    out["next_cursor"] = codec.issue(body.user_id, [*served.tolist(), *(it.post_id for it in result.items)])
    return out


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
                product_surface=e.product_surface, event_id=e.event_id,
            )
            for e in body.events
        ]
    )
    return {
        "accepted": len(body.events) - result.duplicates,
        "duplicates": result.duplicates,
        "engagements": result.engagements,
        "impressions": result.impressions,
    }


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


_404 = {404: {"description": "The store has no such post."}}


def _post_status(status: Any, post_id: int) -> Any:
    if status is None:
        raise HTTPException(404, detail=f"post {post_id} is not in the store")
    return {"post_id": status.post_id, "state": status.state, "changed": status.changed}


@posts_router.delete("/posts/{post_id}", response_model=PostStatusResponse, responses={**_404, **_401})
def delete_post(post_id: PostIdPath, service: ServiceDep, _: WriteAccess) -> Any:
    """Delete a post (final): gone from every feed and retrieve at once, reposts of it too.

    Write scope: the product backend deletes on its author's behalf, like it writes posts.
    Idempotent: deleting again answers 200 with `changed: false`; an unknown post is 404.
    """
    return _post_status(service.delete_post(post_id), post_id)


@posts_router.post("/posts/{post_id}/takedown", response_model=PostStatusResponse, responses={**_404, **_401})
def post_takedown(post_id: PostIdPath, service: ServiceDep, _: AdminWriteAccess) -> Any:
    """Take a post down (moderation, admin scope): hidden like a deleted post, but reversible."""
    return _post_status(service.set_takedown(post_id, True), post_id)


@posts_router.delete("/posts/{post_id}/takedown", response_model=PostStatusResponse, responses={**_404, **_401})
def delete_takedown(post_id: PostIdPath, service: ServiceDep, _: AdminWriteAccess) -> Any:
    """Lift a takedown (admin scope): the post is served and indexed again (not if it was deleted)."""
    return _post_status(service.set_takedown(post_id, False), post_id)


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


@users_router.get("", response_model=UsersResponse, responses=_422)
def get_users(
    service: ServiceDep,
    _: ReadAccess,
    order: Annotated[Literal["recent", "id"], Query(description="recent: newest engagements first; id: ascending")]
    = "recent",
    limit: Annotated[int, Query(ge=1)] = 50,
    after: Annotated[int | None, Query(ge=0, description="with order=id: ids after this one (the last page's next_after)")]
    = None,
) -> Any:
    """Users with stored engagements: the most recently active (for the explorer's picker) or every id, paged."""
    return service.list_users(limit, after=after, order=order)


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
    body = metrics.render(None if service.index is None else len(service.index))
    return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)


def vars_of(obj: Any) -> dict[str, Any]:
    """A slotted dataclass as a dict (its fields only)."""
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}



@admin_router.post("/reload-keys", responses=_401)
def post_reload_keys(request: Request, _: AdminAccess) -> Any:
    """Re-read the keys from the settings file and environment (rotation without downtime; admin scope)."""
    ring = request.app.state.reload_keys()
    return {"keys": len(ring), "names": ring.names}


@ops_router.get("/readyz", responses={503: {"description": "Not ready: the body names what is missing."}})
def get_ready(service: ServiceDep) -> JSONResponse:
    """Readiness (open): 200 once the ranker, the corpus index (when there is a retriever) and the store answer.

    `/healthz` is liveness only; load balancers should route traffic by this one.
    """
    checks: dict[str, bool] = {"models": getattr(service, "runtime", None) is not None}
    checks["index"] = checks["models"] and (not service.runtime.has_retrieval or service.index is not None)
    try:
        service.store.schema_version()
        checks["store"] = True
    except Exception:  # noqa: BLE001 - any store failure means not ready, never a 500
        checks["store"] = False
    ready = all(checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
