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

from typing import Any

from phoenix_recsys._extras import require_extra

try:  # the HTTP API is the [serve] extra; say so instead of a bare ModuleNotFoundError
    from fastapi import FastAPI, Request, status
except ModuleNotFoundError:
    require_extra("fastapi", "serve", "the HTTP API")
    raise
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from phoenix_recsys.serve.api.metrics import MAX_BODY_BYTES, Metrics, _ObserveMiddleware
from phoenix_recsys.serve.api.routes import (
    events_router,
    feed_router,
    ops_router,
    posts_router,
    rank_router,
    retrieve_router,
    users_router,
)
from phoenix_recsys.serve.api.schemas import INT64_MAX
from phoenix_recsys.serve.api.strict import validation_error_handler
from phoenix_recsys.serve.explorer import mount_explorer
from phoenix_recsys.serve.pipeline import FeedService, InvalidRequest, Unsupported
from phoenix_recsys.serve.settings import ServeSettings

API_VERSION = "1"

__all__ = ["API_VERSION", "INT64_MAX", "MAX_BODY_BYTES", "Metrics", "create_app"]

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
      The app; OpenAPI at `/openapi.json`, interactive docs at `/docs`, the feed explorer at `/ui`.
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
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_middleware(_ObserveMiddleware, metrics=app.state.metrics)
    for router in (feed_router, rank_router, retrieve_router, events_router, posts_router, users_router, ops_router):
        app.include_router(router)
    mount_explorer(app)  # the feed explorer page at /ui
    return app
