"""Input checks and encodings shared by every backend (ids, times, action maps, column tables).

Each check raises ValueError naming the offending field, before anything is written.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

def to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "to_numpy") and not isinstance(x, np.ndarray):  # pyarrow Array / ChunkedArray
        return x.to_numpy(zero_copy_only=False)
    return np.asarray(x)


def int_array(name: str, x: Any, n: int | None = None, *, nonneg: bool = True) -> np.ndarray:
    """1-D int64 array from ints or integral floats; ValueError naming `name` otherwise."""
    arr = to_numpy(x)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} must have length {n}, got {arr.shape[0]}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.floor(arr)):
            raise ValueError(f"{name} must hold integers (no NaN / null or fractions)")
    out = arr.astype(np.int64)
    if nonneg and out.min() < 0:
        raise ValueError(f"{name} must be >= 0, got {int(out.min())}")
    return out


def scalar_int(name: str, x: Any, *, nonneg: bool = True) -> int:
    if isinstance(x, bool) or not isinstance(x, int | np.integer):
        raise ValueError(f"{name} must be an int, got {x!r}")
    if nonneg and x < 0:
        raise ValueError(f"{name} must be >= 0, got {x}")
    return int(x)


def now() -> int:
    return int(time.time())


def _json_number(v: float) -> float | int:
    # Binary actions are stored as 1, not 1.0: a third of the bytes per action in the file.
    return int(v) if float(v).is_integer() else float(v)


def actions_json_from_matrix(names: Sequence[str], values: np.ndarray) -> list[str]:
    """One compact JSON object of the non-zero actions per row of `values [N, A]`."""
    if values.shape[0] == 0:
        return []
    # Rows repeat a lot (multi-hot patterns), so encode each distinct row once.
    uniq, inverse = np.unique(values, axis=0, return_inverse=True)
    encoded = [
        json.dumps({names[j]: _json_number(row[j]) for j in np.flatnonzero(row)}, separators=(",", ":"))
        for row in uniq
    ]
    return [encoded[i] for i in inverse.ravel().tolist()]


def check_action_matrix(names: Sequence[str], values: np.ndarray, field: str) -> None:
    if values.ndim != 2 or values.shape[1] != len(names):
        raise ValueError(
            f"{field} must be [N, {len(names)}] (one column per action name), got {values.shape}"
        )
    if not np.all(np.isfinite(values)) or (values.size and values.min() < 0):
        raise ValueError(f"{field} must be finite and >= 0")
    for n in names:
        if not isinstance(n, str) or not n:
            raise ValueError(f"action names must be non-empty strings, got {n!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"action names must be unique, got {list(names)}")


def columns(table: Any, what: str) -> dict[str, Any]:
    """Column name -> column for a pyarrow Table or a mapping of columns."""
    if hasattr(table, "column_names") and hasattr(table, "column"):
        return {n: table.column(n) for n in table.column_names}
    if isinstance(table, Mapping):
        return dict(table)
    raise ValueError(
        f"{what} must be a pyarrow Table or a mapping of column name -> array, got {type(table).__name__}"
    )


def require(cols: Mapping[str, Any], names: Sequence[str], what: str) -> None:
    missing = [n for n in names if n not in cols]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; it has {sorted(cols)}")


def action_column(name: str, col: Any) -> np.ndarray:
    """A bool/number action column as float64; nulls mean 'not done' (0)."""
    if hasattr(col, "fill_null"):  # pyarrow: cast first, so bool columns can take the 0.0 fill
        try:
            col = col.cast("float64")
        except (TypeError, ValueError, NotImplementedError):
            raise ValueError(f"events.{name} must be bool or numeric, got type {col.type}") from None
        col = col.fill_null(0.0) if col.null_count else col
    arr = to_numpy(col)
    if arr.dtype == object:
        arr = np.array([0.0 if v is None else v for v in arr], dtype=np.float64)
    try:
        out = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"events.{name} must be bool or numeric, got dtype {arr.dtype}") from None
    if out.ndim != 1:
        raise ValueError(f"events.{name} must be 1-D")
    return out



def encode_action_maps(actions: Sequence[Mapping[str, float]], n: int) -> list[str]:
    """One compact JSON object of the positive actions per event; ValueError naming the event."""
    if len(actions) != n:
        raise ValueError(f"actions must have length {n}, got {len(actions)}")
    encoded = []
    for i, acts in enumerate(actions):
        if not isinstance(acts, Mapping):
            raise ValueError(f"actions[{i}] must be a mapping of action name -> value, got {acts!r}")
        clean: dict[str, float | int] = {}
        for k, v in acts.items():
            if not isinstance(k, str) or not k:
                raise ValueError(f"actions[{i}] has a bad action name {k!r}")
            fv = float(v)
            if not math.isfinite(fv) or fv < 0:
                raise ValueError(f"actions[{i}][{k!r}] must be finite and >= 0, got {v!r}")
            if fv > 0:
                clean[k] = _json_number(fv)
        if not clean:
            raise ValueError(f"actions[{i}] has no positive action; record impressions with mark_seen")
        encoded.append(json.dumps(clean, separators=(",", ":")))
    return encoded


def encode_action_matrix(values: Any, action_names: Sequence[str] | None, n: int) -> list[str]:
    """The JSON objects of an `[E, A]` action array whose columns are `action_names`."""
    if action_names is None:
        raise ValueError("action_names is required when actions is an array")
    vals = np.asarray(values).astype(np.float64)
    check_action_matrix(action_names, vals, "actions")
    if vals.shape[0] != n:
        raise ValueError(f"actions must have {n} rows, got {vals.shape[0]}")
    empty = np.flatnonzero(~(vals > 0).any(axis=1))
    if empty.size:
        raise ValueError(f"actions[{int(empty[0])}] has no positive action; record impressions with mark_seen")
    return actions_json_from_matrix(action_names, vals)


def post_columns(
    post_ids: Any, author_ids: Any, created_at: Any, text: Any, repost_of: Any, video_duration_s: Any
) -> list[tuple]:
    """Checked `(post_id, author_id, created_at, text, repost_of, video_duration_s)` rows."""
    pid = int_array("post_ids", post_ids)
    n = pid.shape[0]
    if np.unique(pid).shape[0] != n:
        raise ValueError("post_ids must be unique within one add_posts call")
    aid = int_array("author_ids", author_ids, n)
    cat = int_array("created_at", created_at, n, nonneg=False)
    txt: list[str | None] = [None] * n
    if text is not None:
        txt = list(to_numpy(text).tolist()) if not isinstance(text, list) else list(text)
        if len(txt) != n:
            raise ValueError(f"text must have length {n}, got {len(txt)}")
        if any(t is not None and not isinstance(t, str) for t in txt):
            raise ValueError("text must hold str or None")
    rep: list[int | None] = [None] * n
    if repost_of is not None:
        r = int_array("repost_of", repost_of, n, nonneg=False)
        rep = [None if v < 0 else v for v in r.tolist()]
    vid: list[float | None] = [None] * n
    if video_duration_s is not None:
        v = to_numpy(video_duration_s).astype(np.float64)
        if v.shape != (n,):
            raise ValueError(f"video_duration_s must be [{n}], got {v.shape}")
        if np.any(v[~np.isnan(v)] < 0):
            raise ValueError("video_duration_s must be >= 0 (NaN = no video)")
        vid = [None if math.isnan(x) else x for x in v.tolist()]
    return list(zip(pid.tolist(), aid.tolist(), cat.tolist(), txt, rep, vid, strict=True))
