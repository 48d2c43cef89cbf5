"""Prometheus metrics of the HTTP API (prometheus-client, one registry per app) and the middleware
that observes every request: request ids, the streamed body limit, counts and latencies."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, generate_latest

from phoenix_recsys.serve.logs import log_access

#: Request bodies larger than this are refused with 413: from Content-Length before reading, or
#: while streaming (chunked bodies included), without reading the rest.
MAX_BODY_BYTES = 16 * 1024 * 1024
#: A client's `X-Request-ID` is kept when it matches this; otherwise the server makes one.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Request counters, latency histograms and feed stage timings in an app-owned registry.

    Labels use the route template (`/v1/users/{user_id}/...`), never the raw path, so label
    cardinality stays bounded. The registry is per app (not prometheus-client's global one), so
    several apps in one process (tests) never share or clash over series.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.started = time.time()
        r = self.registry
        self.requests = Counter(
            "phoenix_http_requests", "HTTP requests by method, route template and status code.",
            ["method", "route", "status"], registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "phoenix_http_errors", "HTTP responses with a 4xx or 5xx status.", ["method", "route", "status_class"], registry=r
        )
        self.exceptions = Counter(
            "phoenix_http_unhandled_exceptions", "Requests that raised (answered 500).", ["route"], registry=r
        )
        self.latency = Histogram(
            "phoenix_http_request_duration_seconds", "Request latency.", ["method", "route"], buckets=_LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.stages = Summary("phoenix_feed_stage_seconds", "Time spent in each feed pipeline stage.", ["stage"], registry=r)
        self.degraded = Counter(
            "phoenix_feed_degraded", "Feed candidate sources skipped (raised or past budget).", ["stage", "reason"],
            registry=r,
        )
        self.up = Gauge("phoenix_up", "1 while the server answers.", registry=r)
        self.up.set(1)
        Gauge("phoenix_start_time_seconds", "Server start, seconds since the epoch.", registry=r).set(round(self.started, 3))
        self.index_posts = Gauge("phoenix_index_posts", "Posts in the corpus index.", registry=r)

    def observe_request(self, method: str, route: str, status_code: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        self.requests.labels(method, route, str(status_code)).inc()
        if status_code >= 400:
            self.errors.labels(method, route, f"{status_code // 100}xx").inc()
        self.latency.labels(method, route).observe(seconds)

    def observe_exception(self, route: str) -> None:
        """Count a request whose handler raised."""
        self.exceptions.labels(route).inc()

    def observe_stages(self, timings_ms: dict[str, float]) -> None:
        """Record one feed request's per-stage milliseconds."""
        for stage, ms in timings_ms.items():
            self.stages.labels(stage).observe(ms / 1e3)

    def observe_degraded(self, degraded: Sequence[Mapping[str, str]]) -> None:
        """Count the candidate sources one feed request skipped."""
        for d in degraded:
            self.degraded.labels(d["stage"], d["reason"]).inc()

    def render(self, index_posts: int | None) -> bytes:
        """Prometheus text exposition of the registry, the index size gauge refreshed first."""
        self.index_posts.set(0 if index_posts is None else index_posts)
        return generate_latest(self.registry)


class BodyTooLarge(Exception):
    """Raised inside `receive` once a streamed body passes the limit."""


class _ObserveMiddleware:
    """Pure ASGI middleware: request id, body limit (413, counted on the stream), metrics.

    It sits inside Starlette's error middleware, so an exception escaping a route is counted
    here as a 500 before the error middleware answers it. The body is counted as it arrives, so a
    chunked body without Content-Length is refused once it passes the limit, without buffering it.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self.max_body_bytes} bytes"}, status_code=413,
            headers={"X-Request-ID": request_id, "Connection": "close"},
        )  # fmt: skip
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status_code = 500
        request_id = ""
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                v = value.decode("latin-1")
                request_id = v if _REQUEST_ID.match(v) else ""
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_body_bytes):
                await self._too_large(scope, receive, send, request_id)
                self.metrics.observe_request(scope["method"], "unmatched", 413, time.perf_counter() - start)
                _access_log(scope, request_id, 413, time.perf_counter() - start)
                return

        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge
            return message

        async def send_observed(message: Message) -> None:
            nonlocal status_code, started
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
                started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, counted_receive, send_observed)
        except BodyTooLarge:
            status_code = 413
            if not started:
                await self._too_large(scope, receive, send, request_id)
        except Exception:
            status_code = 500
            self.metrics.observe_exception(_route_of(scope))
            raise
        finally:
            seconds = time.perf_counter() - start
            self.metrics.observe_request(scope["method"], _route_of(scope), status_code, seconds)
            _access_log(scope, request_id, status_code, seconds)


def _access_log(scope: Scope, request_id: str, status_code: int, seconds: float) -> None:
    client = scope.get("client")
    log_access({
        "request_id": request_id, "method": scope["method"], "path": scope.get("path", ""), "status": status_code,
        "duration_ms": round(seconds * 1e3, 3),
        # The key's name as the access check recorded it (never the key or its digest).
        "key": scope.get("state", {}).get("principal"), "client": client[0] if client else None,
    })  # fmt: skip


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"
