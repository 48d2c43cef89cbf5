"""The HTTP API over `FeedService` (FastAPI): one router per resource, hand-rendered Prometheus metrics.

Routes are thin: parse the request schema, call one service method, build the response schema.
No SQL and no scoring here. Handlers are plain `def`s, so FastAPI runs them in its thread pool and
the blocking SQLite and JAX calls never stall the event loop.

Access model (see docs/serving.md and `api.access`): every endpoint but /healthz, /readyz and /ui
needs `Authorization: Bearer <key>` with the endpoint's scope (read, write or admin); keys are held
as SHA-256 digests and compared in constant time; `public_reads` (`--public-reads`) opens the read
endpoints; `--insecure-dev` with no key opens everything; `--read-only` turns writes off (403).
Keys reload without a restart (`reload_keys`), and each key has a token-bucket rate limit (429).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from phoenix_recsys._extras import require_extra

try:  # the HTTP API is the [serve] extra; say so instead of a bare ModuleNotFoundError
    from fastapi import FastAPI, Request, status
except ModuleNotFoundError:
    require_extra("fastapi", "serve", "the HTTP API")
    raise
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from phoenix_recsys.serve.api.access import KeyRing, RateLimiter
from phoenix_recsys.serve.api.cursor import CursorCodec
from phoenix_recsys.serve.api.metrics import MAX_BODY_BYTES, Metrics, _ObserveMiddleware
from phoenix_recsys.serve.api.routes import (
    admin_router,
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
from phoenix_recsys.serve.pipeline import FeedService, InvalidRequest, RankingUnavailable, Unsupported
from phoenix_recsys.serve.settings import ServeSettings
from phoenix_recsys.serve.store import StoreUnavailableError

API_VERSION = "1"

__all__ = ["API_VERSION", "INT64_MAX", "MAX_BODY_BYTES", "Metrics", "create_app"]

def _invalid_request(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidRequest)
    err: dict[str, Any] = {"type": exc.kind, "loc": [exc.where, *exc.loc], "msg": exc.msg}
    if exc.ctx:
        err["ctx"] = exc.ctx
    return JSONResponse({"detail": [err]}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


def _store_error(_: Request, exc: Exception) -> JSONResponse:
    """A store that cannot take writes (disk full, read-only file) is a 503 naming the problem.

    The write's transaction has rolled back by the time this runs, so nothing is half-written;
    the body carries SQLite's message only, never a stack trace.
    """
    msg = str(exc)
    low = msg.lower()
    if "full" in low or "readonly" in low or "read-only" in low or "i/o" in low or "locked" in low:
        detail = {"type": "store_unavailable", "msg": f"the store cannot take this write: {msg}"}
        return JSONResponse({"detail": detail}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return JSONResponse({"detail": {"type": "store_error", "msg": msg}}, status_code=500)


def _store_unavailable(_: Request, exc: Exception) -> JSONResponse:
    """A store that cannot be reached now (PostgreSQL down or restarting) is a 503 the client may retry.

    The service keeps running and reconnects by itself; `Retry-After` says when to try again.
    """
    detail = {"type": "store_unavailable", "msg": str(exc)}
    return JSONResponse({"detail": detail}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                        headers={"Retry-After": "1"})  # fmt: skip


def _ranking_unavailable(_: Request, exc: Exception) -> JSONResponse:
    """The ranker failed (the log has the trace): 503 `ranking_unavailable`, which a client may retry."""
    detail = {"type": "ranking_unavailable", "msg": str(exc)}
    return JSONResponse({"detail": detail}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                        headers={"Retry-After": "1"})  # fmt: skip


def _unsupported(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_409_CONFLICT)


def create_app(
    service: FeedService,
    settings: ServeSettings | None = None,
    *,
    reload_settings: Callable[[], ServeSettings] | None = None,
) -> FastAPI:
    """The FastAPI app over a ready `FeedService` (the caller owns its lifetime and closes it).

    Args:
      service: the feed service.
      settings: default `service.settings`.
      reload_settings: re-reads the settings sources (`serve` passes its `load_settings` call);
        `app.state.reload_keys()` (SIGHUP, POST /v1/admin/reload-keys) takes the keys from it.
        Default: the keys stay as they are.

    Returns:
      The app; OpenAPI at `/openapi.json`, interactive docs at `/docs`, the feed explorer at `/ui`.
    """
    settings = service.settings if settings is None else settings
    app = FastAPI(
        title="phoenix-recsys",
        version=API_VERSION,
        summary="The Phoenix 'For You' feed: retrieval, candidate-isolated ranking, SPEC 7 scoring.",
        description=(
            "Every endpoint but /healthz and /readyz needs `Authorization: Bearer <key>` with the read, "
            "write or admin scope. See docs/serving.md for the access model, limits and guarantees."
        ),
    )
    app.state.service = service
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.keys = KeyRing.from_settings(settings)
    app.state.cursors = CursorCodec.from_settings(settings)
    app.state.rate_limiter = (
        None if settings.rate_limit_per_s is None else RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    )

    def reload_keys() -> KeyRing:
        # Only the keys change: every other setting needs a restart. The swap is one assignment.
        fresh = settings if reload_settings is None else reload_settings()
        app.state.keys = KeyRing.from_settings(fresh)
        return app.state.keys

    app.state.reload_keys = reload_keys
    app.add_exception_handler(InvalidRequest, _invalid_request)
    app.add_exception_handler(Unsupported, _unsupported)
    app.add_exception_handler(RankingUnavailable, _ranking_unavailable)
    app.add_exception_handler(sqlite3.OperationalError, _store_error)
    app.add_exception_handler(StoreUnavailableError, _store_unavailable)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_middleware(_ObserveMiddleware, metrics=app.state.metrics)
    for router in (feed_router, rank_router, retrieve_router, events_router, posts_router, users_router, ops_router,
                   admin_router):
        app.include_router(router)
    mount_explorer(app)  # the feed explorer page at /ui
    return app
