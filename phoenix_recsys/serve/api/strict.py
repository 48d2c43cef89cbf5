"""Strict JSON bodies and error bodies that always encode: malformed input is a 422, never a 500.

Python's `json` accepts `NaN`, `Infinity` and numbers like `1e400` (parsed as inf), and keeps lone
UTF-16 surrogates (`"\\ud800"`) in strings, which then fail to encode when an error echoes them;
very deep nesting raises RecursionError. `StrictJSONRoute` parses the body itself with those
refused (a 422 naming the place), and `validation_error_handler` makes every echoed value safe.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

#: Deepest nesting of arrays/objects accepted (the schemas need 4).
MAX_JSON_DEPTH = 32
#: Longest echoed input in an error body.
_MAX_ECHO_CHARS = 200


class _Malformed(ValueError):
    def __init__(self, loc: list[str | int], msg: str) -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg


def _refuse_constant(name: str) -> Any:
    raise _Malformed([], f"{name} is not valid JSON (numbers must be finite)")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise _Malformed([], f"number {text[:40]} is out of range (numbers must be finite)")
    return v


def _check(value: Any, loc: list[str | int], depth: int) -> None:
    """Refuse lone surrogates anywhere and nesting deeper than `MAX_JSON_DEPTH`."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Malformed(loc, "string holds a lone UTF-16 surrogate (not valid Unicode)") from None
        return
    if isinstance(value, dict | list):
        if depth >= MAX_JSON_DEPTH:
            raise _Malformed(loc, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            if isinstance(k, str):
                _check(k, loc, depth + 1)
            _check(v, [*loc, k], depth + 1)


def parse_strict_json(body: bytes) -> Any:
    """Parse a request body as strict JSON (RFC 8259: finite numbers, valid Unicode, bounded depth).

    Raises:
      RequestValidationError: with a `json_invalid` error whose `loc` points into the body.
    """
    try:
        text = body.decode("utf-8")
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
        _check(value, [], 0)
    except _Malformed as e:
        raise _error(["body", *e.loc], e.msg) from None
    except UnicodeDecodeError:
        raise _error(["body"], "body is not UTF-8") from None
    except json.JSONDecodeError as e:
        raise _error(["body", e.pos], f"JSON decode error: {e.msg}") from None
    except RecursionError:
        raise _error(["body"], f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63:
        raise _error(["body"], "number out of range")
    return value


def _error(loc: list[str | int], msg: str) -> RequestValidationError:
    return RequestValidationError([{"type": "json_invalid", "loc": tuple(loc), "msg": msg, "input": None}])


class StrictJSONRoute(APIRoute):
    """An APIRoute whose JSON body is parsed by `parse_strict_json` before FastAPI validates it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            body = await request.body()
            if body:
                request._json = parse_strict_json(body)  # Starlette's Request.json() returns this
            return await handler(request)

        return strict_handler


def safe_value(v: Any, depth: int = 0) -> Any:
    """`v` made JSON-encodable and short: non-finite floats and odd strings become text."""
    if v is None or isinstance(v, bool | int):
        return v if not isinstance(v, int) or abs(v) < 2**63 else str(v)[:_MAX_ECHO_CHARS]
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, str):
        s = v[:_MAX_ECHO_CHARS]
        return s.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(v, list | tuple) and depth < 2 and len(v) <= 8:
        return [safe_value(x, depth + 1) for x in v]
    if isinstance(v, dict) and depth < 2 and len(v) <= 8:
        return {str(safe_value(k, depth + 1)): safe_value(x, depth + 1) for k, x in v.items()}
    return safe_value(repr(v), depth)


def validation_error_handler(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 shape (`{"detail": [{type, loc, msg, input?, ctx?}]}`), every value encodable."""
    assert isinstance(exc, RequestValidationError)
    out = []
    for err in exc.errors():
        e: dict[str, Any] = {
            "type": str(err.get("type", "value_error")),
            "loc": [safe_value(p) for p in err.get("loc", ())],
            "msg": safe_value(str(err.get("msg", ""))),
        }
        if err.get("input") is not None:
            e["input"] = safe_value(err["input"])
        if err.get("ctx"):
            e["ctx"] = {str(k): safe_value(v) for k, v in err["ctx"].items()}
        out.append(e)
    return JSONResponse({"detail": out}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
