"""Your own logs: a CSV or Parquet file plus a JSON/TOML column mapping.

Mapping file keys (docs/data.md has an example):
  user, post, timestamp        required column names (or 0-based indices for a header-less CSV)
  author, surface, request     optional columns (author default: the constant 0; surface 0)
  timestamp_unit               "s" (default), "ms", "us", "ns" or "iso" (ISO 8601; naive = UTC)
  actions                      required list of {name, column, kind = "binary" | "continuous",
                               negative = false, scale = 1.0 (continuous only)}
  format                       "csv" | "parquet" (default from the file extension)
  delimiter, header            CSV only (default "," and true)
  name                         dataset name

Binary action values: 0/1, true/false, yes/no (any case) or booleans; continuous values: numbers
>= 0, multiplied by `scale`. Ids that are all non-negative integers are kept, others get dense ids
by first appearance (`ids_<entity>.parquet`). Rows are events in file order.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from phoenix_recsys.actions import Action, ActionKind, ActionVocabulary
from phoenix_recsys.data.importers._common import BadLines, IdMap, finish, iter_csv_records, posts_from_events
from phoenix_recsys.data.schema import PRODUCT_SURFACE_VOCAB_SIZE, Dataset

_KEYS = {
    "user",
    "post",
    "author",
    "timestamp",
    "timestamp_unit",
    "surface",
    "request",
    "actions",
    "format",
    "delimiter",
    "header",
    "name",
}
_UNITS = {"s": 1, "ms": 1000, "us": 1_000_000, "ns": 1_000_000_000}
_TRUE = {"1", "true", "yes", "t", "y"}
_FALSE = {"0", "false", "no", "f", "n"}


def load_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a column-mapping file (`.json` or `.toml`)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such mapping file")
    try:
        if p.suffix.lower() == ".toml":
            m = tomllib.loads(p.read_text(encoding="utf-8"))
        else:
            m = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{p}: cannot parse the mapping: {e}") from None
    if not isinstance(m, dict):
        raise ValueError(f"{p}: the mapping must be an object/table")
    unknown = sorted(set(m) - _KEYS)
    if unknown:
        raise ValueError(f"{p}: unknown mapping keys {unknown} (known: {sorted(_KEYS)})")
    for k in ("user", "post", "timestamp", "actions"):
        if k not in m:
            raise ValueError(f"{p}: mapping lacks the required key {k!r}")
    unit = m.get("timestamp_unit", "s")
    if unit not in (*_UNITS, "iso"):
        raise ValueError(f"{p}: timestamp_unit must be one of {[*_UNITS, 'iso']}, got {unit!r}")
    acts = m["actions"]
    if not isinstance(acts, list) or not acts:
        raise ValueError(f"{p}: 'actions' must be a non-empty list of {{name, column, kind}}")
    for i, a in enumerate(acts):
        if not isinstance(a, dict) or "name" not in a or "column" not in a:
            raise ValueError(f"{p}: actions[{i}] must have 'name' and 'column', got {a!r}")
        extra = sorted(set(a) - {"name", "column", "kind", "negative", "scale"})
        if extra:
            raise ValueError(f"{p}: actions[{i}] has unknown keys {extra}")
    return m


def _vocab(m: dict[str, Any], where: Path) -> ActionVocabulary:
    try:
        return ActionVocabulary(
            tuple(
                Action(name=a["name"], kind=a.get("kind", "binary"), negative=bool(a.get("negative", False)))
                for a in m["actions"]
            )
        )
    except ValueError as e:
        raise ValueError(f"{where}: bad actions: {e}") from None


def _read_csv(
    path: Path, m: dict[str, Any], needed: list[Any], bad: BadLines
) -> tuple[dict[Any, np.ndarray], np.ndarray]:
    delim = m.get("delimiter", ",")
    header = bool(m.get("header", True))
    head: list[str] | None = None
    idx: list[int] = []
    rows: list[list[str]] = []
    lines: list[int] = []
    for lineno, rec in iter_csv_records(path, delim):
        if header and head is None:
            head = [h.strip() for h in rec]
            missing = [c for c in needed if c not in head]
            if missing:
                raise ValueError(f"{path}: line {lineno}: header lacks mapped columns {missing} (has {head})")
            idx = [head.index(c) for c in needed]
            width = len(head)
            continue
        if not header and not idx:
            try:
                idx = [int(c) for c in needed]
            except (TypeError, ValueError):
                raise ValueError(
                    f"{path}: header = false needs 0-based column indices in the mapping, got {needed}"
                ) from None
            width = None
        if not rec or (len(rec) == 1 and not rec[0].strip()):
            continue  # blank line: no data
        if width is not None and len(rec) != width:
            bad.bad(path, lineno, f"expected {width} fields, got {len(rec)}")
            continue
        if max(idx) >= len(rec):
            bad.bad(path, lineno, f"expected at least {max(idx) + 1} fields, got {len(rec)}")
            continue
        rows.append([rec[i] for i in idx])
        lines.append(lineno)
    if header and head is None:
        raise ValueError(f"{path}: empty file (expected a header line)")
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(needed)
    return {c: np.asarray(v, dtype=object) for c, v in zip(needed, cols, strict=True)}, np.asarray(
        lines, dtype=np.int64
    )


def _read_parquet(path: Path, needed: list[Any]) -> tuple[dict[Any, np.ndarray], np.ndarray]:
    try:
        t = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a broken file
        raise ValueError(f"{path}: not a readable Parquet file: {e}") from None
    missing = [c for c in needed if c not in t.column_names]
    if missing:
        raise ValueError(f"{path}: Parquet file lacks mapped columns {missing} (has {t.column_names})")
    for c in needed:
        if t.column(c).null_count:
            row = next(i for i, v in enumerate(t.column(c).to_pylist()) if v is None)
            raise ValueError(f"{path}: row {row}: column {c!r} is null")
    # "Line" numbers of a Parquet file are 1-based row numbers.
    return {c: t.column(c).to_numpy(zero_copy_only=False) for c in needed}, np.arange(1, t.num_rows + 1)


def _ints(
    v: np.ndarray, col: Any, path: Path, lines: np.ndarray, bad: BadLines, ok: np.ndarray
) -> np.ndarray:
    out = np.zeros(v.size, dtype=np.int64)
    if v.dtype.kind in "iu":
        out[:] = v
        neg = out < 0
    elif v.dtype.kind == "f":
        good = np.isfinite(v) & (v == np.round(v))
        out[good] = v[good].astype(np.int64)
        for i in np.flatnonzero(~good):
            if ok[i]:
                bad.bad(path, int(lines[i]), f"column {col!r}: {v[i]!r} is not an integer")
            ok[i] = False
        neg = out < 0
    else:
        for i, x in enumerate(v.tolist()):
            try:
                out[i] = int(str(x).strip())
            except ValueError:
                if ok[i]:
                    bad.bad(path, int(lines[i]), f"column {col!r}: {x!r} is not an integer")
                ok[i] = False
        neg = out < 0
    for i in np.flatnonzero(neg & ok):
        bad.bad(path, int(lines[i]), f"column {col!r}: negative value {out[i]}")
        ok[i] = False
    return out


def _floats(
    v: np.ndarray, col: Any, path: Path, lines: np.ndarray, bad: BadLines, ok: np.ndarray
) -> np.ndarray:
    out = np.zeros(v.size, dtype=np.float64)
    for i, x in enumerate(v.tolist()):
        try:
            out[i] = float(x)
        except (TypeError, ValueError):
            if ok[i]:
                bad.bad(path, int(lines[i]), f"column {col!r}: {x!r} is not a number")
            ok[i] = False
    for i in np.flatnonzero(~(np.isfinite(out) & (out >= 0)) & ok):
        bad.bad(path, int(lines[i]), f"column {col!r}: {out[i]!r} must be a finite number >= 0")
        ok[i] = False
    return out


def _bools(
    v: np.ndarray, col: Any, path: Path, lines: np.ndarray, bad: BadLines, ok: np.ndarray
) -> np.ndarray:
    out = np.zeros(v.size, dtype=bool)
    if v.dtype == bool:
        return v.astype(bool)
    for i, x in enumerate(v.tolist()):
        s = str(x).strip().lower()
        if isinstance(x, bool | np.bool_):
            out[i] = bool(x)
        elif isinstance(x, int | float) and x in (0, 1):
            out[i] = bool(x)
        elif s in _TRUE:
            out[i] = True
        elif s in _FALSE:
            out[i] = False
        else:
            if ok[i]:
                bad.bad(
                    path,
                    int(lines[i]),
                    f"column {col!r}: {x!r} is not a binary value (0/1, true/false, yes/no)",
                )
            ok[i] = False
    return out


def _timestamps(
    v: np.ndarray, unit: str, col: Any, path: Path, lines: np.ndarray, bad: BadLines, ok: np.ndarray
) -> np.ndarray:
    if unit != "iso":
        return _ints(v, col, path, lines, bad, ok) // _UNITS[unit]
    out = np.zeros(v.size, dtype=np.int64)
    for i, x in enumerate(v.tolist()):
        try:
            d = x if isinstance(x, dt.datetime) else dt.datetime.fromisoformat(str(x).strip())
            if d.tzinfo is None:
                d = d.replace(tzinfo=dt.UTC)
            out[i] = int(d.timestamp())
            if out[i] < 0:
                raise ValueError("before 1970")
        except (ValueError, TypeError) as e:
            if ok[i]:
                bad.bad(path, int(lines[i]), f"column {col!r}: {x!r} is not an ISO 8601 time >= 1970 ({e})")
            ok[i] = False
    return out


def import_generic(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    mapping: str | os.PathLike[str],
    skip_bad: bool = False,
    name: str | None = None,
) -> Dataset:
    """Import a CSV/Parquet event log described by a column-mapping file.

    Args:
      path: the log (CSV optionally .gz, or Parquet).
      out: the dataset directory to write.
      mapping: a `.json` or `.toml` mapping file (see the module docstring).
      skip_bad: count and skip malformed rows instead of raising.
      name: dataset name (default: the mapping's `name`, else the file name).
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such file")
    mp = Path(mapping)
    m = load_mapping(mp)
    vocab = _vocab(m, mp)
    fmt = m.get("format") or ("parquet" if p.name.lower().endswith((".parquet", ".pq")) else "csv")
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"{mp}: format must be 'csv' or 'parquet', got {fmt!r}")
    roles = {
        k: m[k] for k in ("user", "post", "author", "timestamp", "surface", "request") if m.get(k) is not None
    }
    needed = list(dict.fromkeys([*roles.values(), *(a["column"] for a in m["actions"])]))
    bad = BadLines(skip_bad)
    raw, lines = _read_parquet(p, needed) if fmt == "parquet" else _read_csv(p, m, needed, bad)
    n = lines.size
    ok = np.ones(n, dtype=bool)
    unit = m.get("timestamp_unit", "s")
    ts = _timestamps(raw[roles["timestamp"]], unit, roles["timestamp"], p, lines, bad, ok)
    surface = np.zeros(n, dtype=np.int64)
    if "surface" in roles:
        surface = _ints(raw[roles["surface"]], roles["surface"], p, lines, bad, ok)
        for i in np.flatnonzero((surface >= PRODUCT_SURFACE_VOCAB_SIZE) & ok):
            bad.bad(
                p,
                int(lines[i]),
                f"column {roles['surface']!r}: {surface[i]} is outside [0, {PRODUCT_SURFACE_VOCAB_SIZE})",
            )
            ok[i] = False
    request = (
        _ints(raw[roles["request"]], roles["request"], p, lines, bad, ok) if "request" in roles else None
    )
    action_vals: dict[str, np.ndarray] = {}
    for a in m["actions"]:
        kind = ActionKind(a.get("kind", "binary"))
        col = a["column"]
        if kind is ActionKind.BINARY:
            action_vals[a["name"]] = _bools(raw[col], col, p, lines, bad, ok)
        else:
            action_vals[a["name"]] = (
                _floats(raw[col], col, p, lines, bad, ok) * float(a.get("scale", 1.0))
            ).astype(np.float32)
    bad.flush()
    keep = np.flatnonzero(ok)
    maps = {"user": IdMap("user"), "post": IdMap("post"), "author": IdMap("author")}
    user = maps["user"].convert(_id_strings(raw[roles["user"]][keep]))
    post = maps["post"].convert(_id_strings(raw[roles["post"]][keep]))
    if "author" in roles:
        author = maps["author"].convert(_id_strings(raw[roles["author"]][keep]))
    else:
        author = np.zeros(keep.size, dtype=np.int64)
    # Events must agree with posts on the author: a post's author is its first row's author.
    uniq, first_idx, inv = np.unique(post, return_index=True, return_inverse=True)
    post_author = author[first_idx]
    conflicts = int((author != post_author[inv.reshape(-1)]).sum())
    author = post_author[inv.reshape(-1)]
    events: dict[str, np.ndarray] = {
        "user_id": user,
        "post_id": post,
        "author_id": author,
        "timestamp": ts[keep],
        "product_surface": surface[keep].astype(np.int32),
    }
    if request is not None:
        events["request_id"] = request[keep]
    for k, v in action_vals.items():
        events[k] = v[keep]
    posts = posts_from_events(post, author, events["timestamp"])
    notes = {
        "importer": "generic",
        "mapping": m,
        "author": f"column {roles['author']!r}"
        if "author" in roles
        else "constant 0 (no author column mapped)",
        "created_at": "first event time of the post",
        "rows_with_conflicting_author": conflicts,
    }
    return finish(
        out,
        events,
        posts,
        vocab,
        name=name or m.get("name") or p.name.split(".")[0],
        source=str(p),
        notes=notes,
        bad=bad,
        id_maps=tuple(maps.values()),
    )


def _id_strings(v: np.ndarray) -> np.ndarray:
    """Ids as given: integer arrays stay integers, everything else becomes strings for `IdMap`."""
    if v.dtype.kind in "iu":
        return v
    return np.asarray([str(x).strip() for x in v.tolist()], dtype=str)
