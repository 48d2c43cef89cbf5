"""Dependencies of the routes: the service, settings and metrics of the app, and access checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from phoenix_recsys.serve.api.access import KeyRing, Principal, RateLimiter, retry_after_header
from phoenix_recsys.serve.api.metrics import Metrics
from phoenix_recsys.serve.api.schemas import INT64_MAX
from phoenix_recsys.serve.pipeline import FeedService
from phoenix_recsys.serve.settings import Scope, ServeSettings

_bearer = HTTPBearer(auto_error=False, description="A key of PHOENIX_API_KEY / PHOENIX_API_KEYS.")


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


def _authorize(request: Request, creds: HTTPAuthorizationCredentials | None, scope: Scope) -> Principal:
    """The principal of a request allowed `scope`, after its rate limit; else 401/403/429."""
    settings: ServeSettings = request.app.state.settings
    ring: KeyRing = request.app.state.keys
    principal: Principal | None = None
    if creds is not None:
        principal = ring.lookup(creds.credentials)
        if principal is None:
            raise _unauthorized("invalid API key")
        if scope not in principal.scopes:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"key {principal.name!r} lacks the {scope.value!r} scope")
    elif (scope is Scope.READ and settings.public_reads) or (settings.insecure_dev and not len(ring)):
        host = request.client.host if request.client else "unknown"
        principal = Principal(f"anonymous:{host}", frozenset(), anonymous=True)
    else:
        raise _unauthorized("missing Authorization: Bearer <key>")
    limiter: RateLimiter | None = request.app.state.rate_limiter
    if limiter is not None:
        wait = limiter.acquire(principal.name)
        if wait > 0:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                detail=f"rate limit of {settings.rate_limit_per_s:g}/s exceeded",
                headers={"Retry-After": retry_after_header(wait)},
            )
    request.state.principal = principal.name  # for the access log
    return principal


def require_write(request: Request, settings: SettingsDep, creds: Credentials) -> Principal:
    """Write endpoints: 403 when read-only, else a key with the write scope."""
    if not settings.writes_enabled:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="this server is read-only (--read-only)")
    return _authorize(request, creds, Scope.WRITE)


def require_read(request: Request, creds: Credentials) -> Principal:
    """Read endpoints: a key with the read scope, unless `public_reads` (then a wrong key is still 401)."""
    return _authorize(request, creds, Scope.READ)


def require_admin(request: Request, creds: Credentials) -> Principal:
    """Admin endpoints (key reload): a key with the admin scope, never anonymous."""
    if creds is None:
        raise _unauthorized("missing Authorization: Bearer <key>")
    return _authorize(request, creds, Scope.ADMIN)


def require_admin_write(request: Request, settings: SettingsDep, creds: Credentials) -> Principal:
    """Admin endpoints that write (takedowns): 403 when read-only, else a key with the admin scope."""
    if not settings.writes_enabled:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="this server is read-only (--read-only)")
    return require_admin(request, creds)


WriteAccess = Annotated[Principal, Depends(require_write)]
AdminWriteAccess = Annotated[Principal, Depends(require_admin_write)]
ReadAccess = Annotated[Principal, Depends(require_read)]
AdminAccess = Annotated[Principal, Depends(require_admin)]

UserIdPath = Annotated[int, Path(ge=0, le=INT64_MAX)]
AuthorIdPath = Annotated[int, Path(ge=0, le=INT64_MAX)]
PostIdPath = Annotated[int, Path(ge=0, le=INT64_MAX)]

