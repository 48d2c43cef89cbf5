"""Dependencies of the routes: the service, settings and metrics of the app, and access checks."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from phoenix_recsys.serve.api.metrics import Metrics
from phoenix_recsys.serve.api.schemas import INT64_MAX
from phoenix_recsys.serve.pipeline import FeedService
from phoenix_recsys.serve.settings import ServeSettings

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

