"""The on-disk dataset format: Parquet tables plus `manifest.json`, written and validated here.

A dataset directory holds:
  events.parquet   one row per impression (shown post), engaged or not; sorted by (user_id, timestamp)
                   with ties kept in the order the writer was given them (the source-file order).
  posts.parquet    one row per post, sorted by post_id.
  follows.parquet  optional (user_id, author_id) pairs, sorted, unique.
  manifest.json    format version, name, source, action vocabulary, per-table row counts and sha256,
                   the content hash over all Parquet bytes, and free-form importer notes.

`docs/data.md` is the human-readable specification; the constants below are its machine form.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from phoenix_recsys.actions import ActionKind, ActionVocabulary

FORMAT_NAME = "phoenix-recsys-dataset"
FORMAT_VERSION = 1
PRODUCT_SURFACE_VOCAB_SIZE = 16
"""Surfaces are int32 in [0, 16): the seeds' `product_surface_vocab_size`."""

MANIFEST_FILE = "manifest.json"
TABLE_FILES: dict[str, str] = {
    "events": "events.parquet",
    "posts": "posts.parquet",
    "follows": "follows.parquet",
}

EVENT_COLUMNS: dict[str, pa.DataType] = {
    "user_id": pa.int64(),
    "post_id": pa.int64(),
    "author_id": pa.int64(),
    "timestamp": pa.int64(),
    "product_surface": pa.int32(),
}
OPTIONAL_EVENT_COLUMNS: dict[str, pa.DataType] = {"request_id": pa.int64()}
POST_COLUMNS: dict[str, pa.DataType] = {
    "post_id": pa.int64(),
    "author_id": pa.int64(),
    "created_at": pa.int64(),
}
OPTIONAL_POST_COLUMNS: dict[str, pa.DataType] = {
    "video_duration": pa.float32(),  # seconds; 0 = not a video
    "has_photo": pa.bool_(),
    "topic": pa.int32(),  # synthetic worlds: the post's main latent topic
}
FOLLOW_COLUMNS: dict[str, pa.DataType] = {"user_id": pa.int64(), "author_id": pa.int64()}

_NON_NEGATIVE = {"user_id", "post_id", "author_id", "timestamp", "created_at", "request_id"}
#: Columns holding Unix seconds: a datetime/date column given here is converted to seconds (UTC for a
#: naive datetime); anywhere else a datetime is refused. A plain cast would keep the source unit
#: (a pandas datetime64[ns] became nanoseconds), a silently wrong clock.
_TIME_COLUMNS = {"timestamp", "created_at"}


def action_column_type(kind: ActionKind) -> pa.DataType:
    """Arrow type of an action column: bool for binary actions, float32 for continuous ones."""
    return pa.bool_() if kind is ActionKind.BINARY else pa.float32()


def prob_column(name: str) -> str:
    """Name of the true-probability column of action `name` (synthetic data only)."""
    return f"p_{name}"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A loaded, validated dataset.

    Attributes:
      path: the dataset directory.
      events: `events.parquet` (sorted by (user_id, timestamp), ties in source order).
      posts: `posts.parquet` (sorted by post_id).
      follows: `follows.parquet`, or None when the dataset has no follow graph.
      actions: the dataset's action vocabulary; its order fixes the action axis A.
      manifest: the parsed `manifest.json`.
    """

    path: Path
    events: pa.Table
    posts: pa.Table
    follows: pa.Table | None
    actions: ActionVocabulary
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        """The manifest's name (default: the directory name)."""
        return str(self.manifest.get("name", self.path.name))

    @property
    def num_events(self) -> int:
        """Rows of events.parquet."""
        return self.events.num_rows

    @property
    def has_true_probs(self) -> bool:
        """True when every action has a `p_<action>` column (synthetic worlds)."""
        cols = set(self.events.column_names)
        return all(prob_column(n) in cols for n in self.actions.names)

    def column(self, name: str, table: str = "events") -> np.ndarray:
        """One column of `table` as a NumPy array (zero-copy where Arrow allows)."""
        t = {"events": self.events, "posts": self.posts, "follows": self.follows}[table]
        if t is None:
            raise ValueError(f"dataset {self.name!r} has no {table} table")
        return t.column(name).to_numpy()

    def action_matrix(self) -> np.ndarray:
        """Labels `[E, A]` float32: binary actions as 0/1, continuous actions as their values."""
        out = np.empty((self.num_events, len(self.actions)), dtype=np.float32)
        for j, name in enumerate(self.actions.names):
            out[:, j] = self.column(name)
        return out

    def true_prob_matrix(self) -> np.ndarray | None:
        """True probabilities `[E, A]` float32 (expected values for continuous actions), or None."""
        if not self.has_true_probs:
            return None
        out = np.empty((self.num_events, len(self.actions)), dtype=np.float32)
        for j, name in enumerate(self.actions.names):
            out[:, j] = self.column(prob_column(name))
        return out

    def engaged(self, actions: Sequence[str] | None = None) -> np.ndarray:
        """`[E]` bool: the event has at least one of `actions` (default: every binary action).

        Continuous actions (dwell or play time) are left out of the default because they are
        recorded on nearly every impression and would make every impression an engagement; name
        them explicitly to count `value > 0` as engaged.
        """
        if actions is None:
            names = tuple(self.actions.names[i] for i in self.actions.binary_indices)
        else:
            names = tuple(actions)
        out = np.zeros(self.num_events, dtype=bool)
        for name in names:
            self.actions.index(name)  # ValueError naming the known actions
            out |= self.column(name) > 0
        return out


# -- writing ----------------------------------------------------------------------------------


def write_dataset(
    directory: str | os.PathLike[str],
    events: pa.Table | Mapping[str, Any],
    posts: pa.Table | Mapping[str, Any],
    follows: pa.Table | Mapping[str, Any] | None,
    actions: ActionVocabulary,
    *,
    name: str,
    source: str,
    notes: Mapping[str, Any] | None = None,
    import_report: Mapping[str, Any] | None = None,
) -> Dataset:
    """Normalise, sort, validate and write a dataset directory; returns it loaded.

    Column types are cast to the format's types (e.g. int32 ids to int64, 0/1 ints to bool); a value
    that cannot be cast safely raises. Events are stably sorted by (user_id, timestamp), so rows that
    tie keep the order they are given in -- callers pass events in source-file order, which makes the
    tie order that of the source (SPEC 8). Posts are sorted by post_id, follows deduplicated.

    Args:
      directory: created if missing; existing dataset files in it are replaced.
      events / posts / follows: Arrow tables or mappings of column name -> array.
      actions: the vocabulary; `events` needs one column per action.
      name / source: recorded in the manifest.
      notes: free-form JSON-able importer notes (mapping choices, placeholders ...).
      import_report: JSON-able import statistics (e.g. skipped lines), stored as `manifest["import"]`.

    Raises:
      ValueError: a table breaks the format (the message names the file, column and value).
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ev = _normalise_events(_as_table(events, "events"), actions)
    po = _normalise(_as_table(posts, "posts"), POST_COLUMNS, OPTIONAL_POST_COLUMNS, "posts.parquet")
    po = po.take(pc.sort_indices(po, [("post_id", "ascending")]))
    fo = None
    if follows is not None:
        fo = _normalise(_as_table(follows, "follows"), FOLLOW_COLUMNS, {}, "follows.parquet")
        fo = fo.select(list(FOLLOW_COLUMNS))
        u, a = fo.column("user_id").to_numpy(), fo.column("author_id").to_numpy()
        order = np.lexsort((a, u))
        u, a = u[order], a[order]
        keep = np.ones(len(u), dtype=bool)
        keep[1:] = (u[1:] != u[:-1]) | (a[1:] != a[:-1])
        fo = pa.table({"user_id": u[keep], "author_id": a[keep]})
    # np.lexsort is stable: ties in (user_id, timestamp) keep the given (source) order.
    order = np.lexsort((ev.column("timestamp").to_numpy(), ev.column("user_id").to_numpy()))
    ev = ev.take(pa.array(order))
    tables = {"events": ev, "posts": po, "follows": fo}
    _validate_tables(ev, po, fo, actions)

    hasher = hashlib.sha256()
    table_info: dict[str, Any] = {}
    for key, table in tables.items():
        path = out / TABLE_FILES[key]
        if table is None:
            path.unlink(missing_ok=True)
            continue
        tmp = path.with_suffix(".parquet.tmp")
        # zstd + fixed writer settings: the bytes depend only on the data, so the content hash is
        # reproducible for a seed / source file.
        pq.write_table(table, tmp, compression="zstd", row_group_size=1 << 20)
        tmp.replace(path)
        data = path.read_bytes()
        hasher.update(data)
        table_info[key] = {
            "file": TABLE_FILES[key],
            "rows": table.num_rows,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "name": name,
        "source": source,
        "actions": actions.to_json(),
        "tables": table_info,
        "content_sha256": hasher.hexdigest(),
        "notes": dict(notes or {}),
    }
    if import_report is not None:
        manifest["import"] = dict(import_report)
    text = json.dumps(manifest, indent=2, sort_keys=False, default=_json_default)
    (out / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")
    return load_dataset(out)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _as_table(data: pa.Table | Mapping[str, Any], what: str) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, Mapping):
        try:
            return pa.table(
                {
                    k: (v if isinstance(v, pa.Array | pa.ChunkedArray) else np.asarray(v))
                    for k, v in data.items()
                }
            )
        except (pa.ArrowInvalid, ValueError) as e:
            raise ValueError(f"{what}: cannot build a table from the given columns: {e}") from None
    raise ValueError(f"{what} must be a pyarrow Table or a mapping of columns, got {type(data).__name__}")


def _cast(table: pa.Table, col: str, typ: pa.DataType, file: str) -> pa.Array | pa.ChunkedArray:
    arr = table.column(col)
    if arr.null_count:  # reported here, before events are sorted, so the row is the caller's row
        row = int(np.flatnonzero(pc.is_null(arr).to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"{file}: column {col!r} has a null value at row {row}")
    if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
        if col not in _TIME_COLUMNS or not pa.types.is_integer(typ):
            raise ValueError(f"{file}: column {col!r} holds {arr.type} values; it needs {typ} ids, not times")
        return _unix_seconds(arr)
    if arr.type == typ:
        return arr
    if pa.types.is_floating(arr.type) and pa.types.is_integer(typ):
        vals = arr.to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(np.isfinite(vals) & (vals != np.round(vals)) | ~np.isfinite(vals))
        if bad.size:
            raise ValueError(
                f"{file}: column {col!r} must hold integers, got {vals[bad[0]]!r} at row {bad[0]}"
            )
    if pa.types.is_integer(arr.type) and pa.types.is_boolean(typ):
        vals = arr.to_numpy(zero_copy_only=False)
        bad = np.flatnonzero((vals != 0) & (vals != 1))
        if bad.size:
            raise ValueError(
                f"{file}: column {col!r} must be 0/1 (binary action), got {vals[bad[0]]!r} at row {bad[0]}"
            )
    try:
        return pc.cast(arr, typ, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ValueError(
            f"{file}: column {col!r} cannot be converted from {arr.type} to {typ}: {e}"
        ) from None


def _unix_seconds(arr: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A datetime or date column as int64 Unix seconds (sub-second parts floored)."""
    if pa.types.is_date(arr.type):
        days = pc.cast(pc.cast(arr, pa.date32()), pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)
        return pa.array(days * 86_400)
    unit = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[arr.type.unit]
    ticks = pc.cast(arr, pa.int64()).to_numpy(zero_copy_only=False)  # the epoch count in its own unit
    return pa.array(np.floor_divide(ticks, unit))


def _normalise(
    table: pa.Table, required: Mapping[str, pa.DataType], optional: Mapping[str, pa.DataType], file: str
) -> pa.Table:
    cols: dict[str, Any] = {}
    for col, typ in required.items():
        if col not in table.column_names:
            raise ValueError(f"{file}: missing required column {col!r} (has {table.column_names})")
        cols[col] = _cast(table, col, typ, file)
    for col, typ in optional.items():
        if col in table.column_names:
            cols[col] = _cast(table, col, typ, file)
    for col in table.column_names:
        if col not in cols:
            cols[col] = table.column(col)
    return pa.table(cols)


def _normalise_events(table: pa.Table, actions: ActionVocabulary) -> pa.Table:
    file = TABLE_FILES["events"]
    base = _normalise(table, EVENT_COLUMNS, OPTIONAL_EVENT_COLUMNS, file)
    cols: dict[str, Any] = {c: base.column(c) for c in EVENT_COLUMNS}
    for c in OPTIONAL_EVENT_COLUMNS:
        if c in base.column_names:
            cols[c] = base.column(c)
    for a in actions:
        if a.name not in base.column_names:
            raise ValueError(f"{file}: missing action column {a.name!r} (vocabulary {list(actions.names)})")
        cols[a.name] = _cast(base, a.name, action_column_type(a.kind), file)
    for a in actions:
        p = prob_column(a.name)
        if p in base.column_names:
            cols[p] = _cast(base, p, pa.float32(), file)
    for c in base.column_names:
        if c not in cols:
            cols[c] = base.column(c)
    return pa.table(cols)


# -- loading and validation ------------------------------------------------------------------


def load_dataset(directory: str | os.PathLike[str], *, verify_hash: bool = True) -> Dataset:
    """Load and validate a dataset directory.

    Args:
      directory: a directory written by `write_dataset` (or by hand, following docs/data.md).
      verify_hash: recompute the sha256 of every Parquet file and compare with the manifest.

    Raises:
      ValueError: the manifest or a table breaks the format; the message names the file, the column
        and the offending value (missing column, wrong type, negative timestamp, unknown post_id,
        missing action column, content hash mismatch, ...).
    """
    path = Path(directory)
    mpath = path / MANIFEST_FILE
    if not path.is_dir():
        raise ValueError(f"{path}: not a dataset directory (it does not exist or is not a directory)")
    if not mpath.is_file():
        raise ValueError(f"{mpath}: missing; a dataset directory needs a {MANIFEST_FILE}")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{mpath}: not valid JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{mpath}: must hold a JSON object")
    for key in ("format_version", "actions", "tables", "content_sha256"):
        if key not in manifest:
            raise ValueError(f"{mpath}: missing key {key!r}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{mpath}: format_version {manifest['format_version']!r} is not supported (expected {FORMAT_VERSION})"
        )
    try:
        actions = ActionVocabulary.from_json(manifest["actions"])
    except ValueError as e:
        raise ValueError(f"{mpath}: bad 'actions': {e}") from None
    tables_meta = manifest["tables"]
    if not isinstance(tables_meta, dict):
        raise ValueError(f"{mpath}: 'tables' must be an object")
    for key in ("events", "posts"):
        if key not in tables_meta:
            raise ValueError(f"{mpath}: 'tables' has no {key!r} entry")

    hasher = hashlib.sha256()
    loaded: dict[str, pa.Table | None] = {"events": None, "posts": None, "follows": None}
    for key, file in TABLE_FILES.items():
        fpath = path / file
        meta = tables_meta.get(key)
        if meta is None:
            if fpath.exists():
                raise ValueError(f"{fpath}: present but not listed in the manifest's 'tables'")
            continue
        if not fpath.is_file():
            raise ValueError(f"{fpath}: missing (the manifest lists it)")
        data = fpath.read_bytes()
        if verify_hash:
            hasher.update(data)
            digest = hashlib.sha256(data).hexdigest()
            if meta.get("sha256") not in (None, digest):
                raise ValueError(
                    f"{fpath}: content hash mismatch: manifest says sha256 {meta.get('sha256')}, file has {digest}"
                )
        try:
            table = pq.read_table(pa.BufferReader(data))
        except (pa.ArrowInvalid, OSError) as e:
            raise ValueError(f"{fpath}: not a readable Parquet file: {e}") from None
        if meta.get("rows") != table.num_rows:
            raise ValueError(f"{fpath}: has {table.num_rows} rows, the manifest says {meta.get('rows')}")
        loaded[key] = table
    if verify_hash and hasher.hexdigest() != manifest["content_sha256"]:
        raise ValueError(
            f"{mpath}: content hash mismatch: manifest content_sha256 {manifest['content_sha256']}, "
            f"files hash to {hasher.hexdigest()}"
        )
    events, posts, follows = loaded["events"], loaded["posts"], loaded["follows"]
    if events is None or posts is None:  # unreachable: the 'tables' check above requires both
        raise ValueError(f"{mpath}: events and posts tables are required")
    _validate_tables(events, posts, follows, actions)
    return Dataset(path=path, events=events, posts=posts, follows=follows, actions=actions, manifest=manifest)


def _check_columns(
    table: pa.Table, required: Mapping[str, pa.DataType], optional: Mapping[str, pa.DataType], file: str
) -> None:
    for col, typ in {**required, **{k: v for k, v in optional.items() if k in table.column_names}}.items():
        if col not in table.column_names:
            raise ValueError(f"{file}: missing required column {col!r} (has {table.column_names})")
        arr = table.column(col)
        if arr.type != typ:
            raise ValueError(f"{file}: column {col!r} has type {arr.type}, expected {typ}")
        if arr.null_count:
            row = int(np.flatnonzero(pc.is_null(arr).to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"{file}: column {col!r} has a null value at row {row}")
        if col in _NON_NEGATIVE and len(arr):
            vals = arr.to_numpy()
            bad = np.flatnonzero(vals < 0)
            if bad.size:
                raise ValueError(
                    f"{file}: column {col!r} has negative value {int(vals[bad[0]])} at row {int(bad[0])}"
                )


def _validate_tables(
    events: pa.Table, posts: pa.Table, follows: pa.Table | None, actions: ActionVocabulary
) -> None:
    """Check every rule of docs/data.md on in-memory tables; ValueError names file, column, row."""
    ef, pf, ff = TABLE_FILES["events"], TABLE_FILES["posts"], TABLE_FILES["follows"]
    _check_columns(events, EVENT_COLUMNS, OPTIONAL_EVENT_COLUMNS, ef)
    _check_columns(posts, POST_COLUMNS, OPTIONAL_POST_COLUMNS, pf)
    if follows is not None:
        _check_columns(follows, FOLLOW_COLUMNS, {}, ff)

    surf = events.column("product_surface").to_numpy()
    bad = np.flatnonzero((surf < 0) | (surf >= PRODUCT_SURFACE_VOCAB_SIZE))
    if bad.size:
        raise ValueError(
            f"{ef}: column 'product_surface' value {int(surf[bad[0]])} at row {int(bad[0])} is outside "
            f"[0, {PRODUCT_SURFACE_VOCAB_SIZE})"
        )
    for a in actions:
        if a.name not in events.column_names:
            raise ValueError(f"{ef}: missing action column {a.name!r} (vocabulary {list(actions.names)})")
        arr = events.column(a.name)
        want = action_column_type(a.kind)
        if arr.type != want:
            raise ValueError(
                f"{ef}: action column {a.name!r} ({a.kind.value}) has type {arr.type}, expected {want}"
            )
        if arr.null_count:
            row = int(np.flatnonzero(pc.is_null(arr).to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"{ef}: action column {a.name!r} has a null value at row {row}")
        if a.kind is ActionKind.CONTINUOUS:
            vals = arr.to_numpy()
            bad = np.flatnonzero(~np.isfinite(vals) | (vals < 0))
            if bad.size:
                raise ValueError(
                    f"{ef}: continuous action column {a.name!r} must be finite and >= 0, got {vals[bad[0]]!r} at row {int(bad[0])}"
                )
        p = prob_column(a.name)
        if p in events.column_names:
            parr = events.column(p)
            if parr.type != pa.float32():
                raise ValueError(f"{ef}: column {p!r} has type {parr.type}, expected float")
            vals = parr.to_numpy(zero_copy_only=False)
            hi = 1.0 if a.kind is ActionKind.BINARY else np.inf
            bad = np.flatnonzero(~(vals >= 0) | (vals > hi) | np.isnan(vals))
            if bad.size:
                raise ValueError(
                    f"{ef}: column {p!r} must lie in [0, {hi}], got {vals[bad[0]]!r} at row {int(bad[0])}"
                )
    stray = [c for c in events.column_names if c.startswith("p_") and c[2:] not in actions]
    if stray:
        raise ValueError(
            f"{ef}: probability columns {stray} name no action of the vocabulary {list(actions.names)}"
        )

    # Sorted by (user_id, timestamp): downstream code relies on each user's events forming one block
    # in time order, ties in source order.
    users = events.column("user_id").to_numpy()
    ts = events.column("timestamp").to_numpy()
    if len(users) > 1:
        du = np.diff(users)
        bad = np.flatnonzero((du < 0) | ((du == 0) & (np.diff(ts) < 0)))
        if bad.size:
            r = int(bad[0]) + 1
            raise ValueError(
                f"{ef}: rows must be sorted by (user_id, timestamp) (write_dataset sorts them); row {r} "
                f"(user_id {int(users[r])}, timestamp {int(ts[r])}) comes after (user_id {int(users[r - 1])}, "
                f"timestamp {int(ts[r - 1])})"
            )

    pids = posts.column("post_id").to_numpy()
    if len(pids) > 1:
        d = np.diff(pids)
        bad = np.flatnonzero(d <= 0)
        if bad.size:
            r = int(bad[0]) + 1
            what = "duplicate" if d[bad[0]] == 0 else "unsorted"
            raise ValueError(
                f"{pf}: column 'post_id' must be unique and ascending; {what} post_id {int(pids[r])} at row {r}"
            )
    ev_posts = events.column("post_id").to_numpy()
    idx = np.searchsorted(pids, ev_posts)
    idx_c = np.minimum(idx, max(len(pids) - 1, 0))
    missing = (
        np.flatnonzero((idx >= len(pids)) | (pids[idx_c] != ev_posts))
        if len(pids)
        else np.arange(len(ev_posts))
    )
    if missing.size:
        r = int(missing[0])
        raise ValueError(
            f"{ef}: column 'post_id' value {int(ev_posts[r])} at row {r} is not in {pf} "
            f"({missing.size} event rows reference unknown posts)"
        )
    if len(ev_posts):
        ev_auth = events.column("author_id").to_numpy()
        post_auth = posts.column("author_id").to_numpy()[idx_c]
        bad = np.flatnonzero(ev_auth != post_auth)
        if bad.size:
            r = int(bad[0])
            raise ValueError(
                f"{ef}: column 'author_id' value {int(ev_auth[r])} at row {r} differs from {pf}'s author_id "
                f"{int(post_auth[r])} for post_id {int(ev_posts[r])}"
            )
    if "video_duration" in posts.column_names:
        vd = posts.column("video_duration").to_numpy()
        bad = np.flatnonzero(~np.isfinite(vd) | (vd < 0))
        if bad.size:
            raise ValueError(
                f"{pf}: column 'video_duration' must be finite and >= 0, got {vd[bad[0]]!r} at row {int(bad[0])}"
            )
