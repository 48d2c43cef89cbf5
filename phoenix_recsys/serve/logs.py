"""Server logs: one line per record, plain text or JSON (`serve --log-format json`).

Every record of the process (the app's, uvicorn's, warnings) goes through one root handler on
stderr, so with `json` every line of the log stream is one JSON object. The access log is the
logger `phoenix_recsys.access`, one record per request, written by the request middleware
(`api.metrics`): `request_id` (the response's `X-Request-ID`), `method`, `path`, `status`,
`duration_ms`, `key` (the key's *name*, never the key or its hash) and `client` (peer address).
Structured fields travel in a record's `fields` attribute (`logger.info(msg, extra={"fields": {...}})`).
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import logging
import sys
from collections.abc import Callable
from typing import Any, TextIO

ACCESS_LOGGER = "phoenix_recsys.access"
#: uvicorn's own loggers: their handlers are dropped so their records reach our root handler.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
#: uvicorn's TRACE level (below DEBUG), so `--log-level trace` also means something here.
TRACE = 5


class LogFormat(enum.StrEnum):
    """How log lines are written: TEXT for people, JSON (one object per line) for log pipelines."""

    TEXT = "text"
    JSON = "json"


def _ts(created: float) -> str:
    return _dt.datetime.fromtimestamp(created, tz=_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC, ISO 8601), level, logger, msg, the record's `fields`, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _ts(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update({k: v for k, v in fields.items() if k not in ("ts", "level", "logger", "msg")})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        # default=str: a field that is not JSON (a Path, an enum) must never make a log line fail.
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`ts level logger: msg key=value ...` (fields appended, so the text log carries them too)."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_ts(record.created)} {record.levelname.lower():<7} {record.name}: {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def level_number(level: str | int) -> int:
    """A level name (uvicorn's spelling, `trace` included) or number as a `logging` level number."""
    if isinstance(level, int):
        return level
    name = str(level).upper()
    if name == "TRACE":
        return TRACE
    value = logging.getLevelName(name)
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r}")
    return value


def configure_logging(
    fmt: LogFormat | str, level: str | int = "info", *, stream: TextIO | None = None
) -> Callable[[], None]:
    """Route every record of the process through one handler in `fmt` on `stream` (default stderr).

    Replaces the root logger's handlers, makes uvicorn's loggers propagate to it (run uvicorn with
    `log_config=None, access_log=False`: our middleware writes the access log) and captures Python
    warnings, so nothing else writes to the stream in another format.

    Returns:
      A function that puts the previous configuration back (the `serve` command calls it on exit,
      so running it in-process, as tests do, leaves no handler on a stream that is gone).
    """
    formatter: logging.Formatter = JsonFormatter() if LogFormat(fmt) is LogFormat.JSON else TextFormatter()
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved_uv = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate) for n in _UVICORN_LOGGERS}
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level_number(level))
    for name in _UVICORN_LOGGERS:
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    logging.captureWarnings(True)

    def restore() -> None:
        logging.captureWarnings(False)
        root.handlers[:] = saved_root[0]
        root.setLevel(saved_root[1])
        for name, (handlers, propagate) in saved_uv.items():
            lg = logging.getLogger(name)
            lg.handlers[:] = handlers
            lg.propagate = propagate

    return restore


def log_access(fields: dict[str, Any]) -> None:
    """Write one access-log record (INFO; 5xx as ERROR) with `fields` (see the module docstring)."""
    status = int(fields.get("status", 0))
    lg = logging.getLogger(ACCESS_LOGGER)
    level = logging.ERROR if status >= 500 else logging.INFO
    if lg.isEnabledFor(level):
        msg = f"{fields.get('method')} {fields.get('path')} {status} {fields.get('duration_ms')} ms"
        lg.log(level, msg, extra={"fields": fields})
