"""Prometheus metrics of the HTTP API and the middleware that observes every request."""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.responses import JSONResponse

#: Requests whose Content-Length exceeds this are refused with 413 before the body is read.
MAX_BODY_BYTES = 16 * 1024 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

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

