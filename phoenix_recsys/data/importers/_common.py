"""Shared machinery of the importers: reading (gzip-aware), bad-line accounting, ids, table assembly."""

from __future__ import annotations

import gzip
import io
import itertools
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from phoenix_recsys.actions import ActionVocabulary
from phoenix_recsys.data.schema import Dataset, write_dataset

_CHUNK_LINES = 1 << 19
MAX_REPORTED = 20
"""How many skipped lines the manifest lists individually (all are counted)."""


class BadLines:
    """Malformed input: fail with file and line, or (with `skip`) count and remember it.

    Readers report every problem with `bad` and call `flush` when a file is done: without `skip`,
    `flush` raises a `ValueError` for the earliest bad line (so the message names the first problem
    in the file, whichever check found it); with `skip`, lines are only counted. Nothing is dropped
    silently: skipped lines end up in the manifest's `import` section and the CLI prints their count.
    """

    def __init__(self, skip: bool):
        self.skip = skip
        self.count = 0
        self._examples: list[tuple[str, int, str]] = []
        self._first: tuple[str, int, str] | None = None

    def bad(self, file: str | os.PathLike[str], line: int, reason: str) -> None:
        """Report one bad line (1-based line number, or 1-based row of a Parquet file)."""
        self.count += 1
        entry = (str(file), int(line), reason)
        if not self.skip:
            if self._first is None or (entry[0] == self._first[0] and entry[1] < self._first[1]):
                self._first = entry
            return
        self._examples.append(entry)
        if len(self._examples) > 4 * MAX_REPORTED:  # keep memory bounded: the earliest lines win
            self._examples = sorted(self._examples, key=lambda e: (e[0], e[1]))[:MAX_REPORTED]

    def flush(self) -> None:
        """Raise for the earliest reported line unless skipping."""
        if self._first is not None:
            file, line, reason = self._first
            raise ValueError(f"{file}: line {line}: {reason}")

    def report(self) -> dict[str, Any]:
        """The manifest's record of what was skipped."""
        ex = sorted(self._examples, key=lambda e: (e[0], e[1]))[:MAX_REPORTED]
        return {
            "skipped_lines": self.count,
            "skipped_examples": [{"file": f, "line": n, "reason": r} for f, n, r in ex],
        }


def open_text(path: str | os.PathLike[str], encoding: str = "utf-8") -> io.TextIOBase:
    """Open a text file, transparently gunzipping `.gz` files (detected by magic bytes, not name)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such file")
    with open(p, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding=encoding, errors="strict", newline="")
    return open(p, encoding=encoding, errors="strict", newline="")


def read_text_lines(path: str | os.PathLike[str], encodings: tuple[str, ...] = ("utf-8",)) -> list[str]:
    """All lines of a (small) text file, trying each encoding in turn (MovieLens 1M is Latin-1)."""
    last: Exception | None = None
    for enc in encodings:
        try:
            with open_text(path, enc) as f:
                return f.read().splitlines()
        except UnicodeDecodeError as e:
            last = e
    raise ValueError(f"{path}: cannot decode as {' or '.join(encodings)}: {last}")


_KINDS = ("int", "float", "str")


def read_columns(
    path: str | os.PathLike[str],
    sep: str | None,
    fields: list[tuple[str, str]],
    bad: BadLines,
    *,
    header: bool = False,
    force_slow: bool = False,
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Read a delimited text file (.gz read directly) into typed columns.

    Args:
      path: the file.
      sep: field separator (`"::"` works; None = any run of whitespace).
      fields: `(name, kind)` per field in file order, kind "int" (int64), "float" (float64) or "str".
      bad: bad-line policy; a line with the wrong field count or an unparsable value is bad.
      header: skip the first line (the caller reads it with `read_header`).
      force_slow: use the line-by-line reader (it knows line numbers).

    Returns:
      (columns, line numbers `[rows]` 1-based, or None when the fast path read the file, which it only
      does when every line is well formed -- then rows are exactly the file's non-blank data lines).
    """
    for name, kind in fields:
        if kind not in _KINDS:
            raise ValueError(f"field {name!r}: kind must be one of {_KINDS}, got {kind!r}")
    if not force_slow:
        cols = _read_fast(path, sep, fields, header)
        if cols is not None:
            return cols, None
    return _read_slow(path, sep, fields, bad, header)


def read_header(path: str | os.PathLike[str], sep: str) -> list[str]:
    """The first line of a file, split on `sep` and stripped."""
    with open_text(path) as f:
        first = f.readline()
    if not first.strip():
        raise ValueError(
            f"{path}: line 1: expected a header line, the file is empty or starts with a blank line"
        )
    return [h.strip() for h in first.rstrip("\r\n").split(sep)]


def _read_fast(path, sep, fields, header) -> dict[str, np.ndarray] | None:
    """pyarrow.csv over the whole file; None when anything is off (the slow path then says what)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    if sep is None:
        sep = " "
    multi = len(sep) > 1
    if multi and (len(set(sep)) != 1):
        return None
    delim = sep[0]
    names: list[str] = []
    types: dict[str, pa.DataType] = {}
    arrow = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}
    for j, (name, kind) in enumerate(fields):
        if multi and j:
            for k in range(len(sep) - 1):  # "a::b" splits on ':' into a, "", b
                names.append(f"__gap{j}_{k}")
                types[names[-1]] = pa.string()
        names.append(name)
        types[name] = arrow[kind]
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        stream = gzip.open(path, "rb") if gz else open(path, "rb")
        with stream:
            table = pcsv.read_csv(
                stream,
                read_options=pcsv.ReadOptions(
                    column_names=names, skip_rows=1 if header else 0, block_size=1 << 24
                ),
                parse_options=pcsv.ParseOptions(delimiter=delim, quote_char=False, ignore_empty_lines=True),
                convert_options=pcsv.ConvertOptions(
                    column_types=types, null_values=[], strings_can_be_null=False, check_utf8=True
                ),
            )
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, EOFError, UnicodeDecodeError):
        return None
    for name in names:
        if (
            name.startswith("__gap")
            and table.num_rows
            and not (table.column(name).to_numpy(zero_copy_only=False) == "").all()
        ):
            return None
    out: dict[str, np.ndarray] = {}
    for name, kind in fields:
        col = table.column(name)
        if kind == "str":
            # Same normalisation as the slow path: surrounding whitespace is not part of a value.
            out[name] = np.asarray([v.strip() for v in col.to_pylist()], dtype=object)
        else:
            out[name] = col.to_numpy()
    return out


def _read_slow(path, sep, fields, bad, header) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Line-by-line reference reader: exact line numbers for every complaint."""
    n_fields = len(fields)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name, _ in fields}
    line_nos: list[np.ndarray] = []
    lineno = 0
    try:
        with open_text(path) as f:
            if header:
                f.readline()
                lineno = 1
            while True:
                lines = list(itertools.islice(f, _CHUNK_LINES))
                if not lines:
                    break
                nums = lineno + 1 + np.arange(len(lines))
                lineno += len(lines)
                parts = [ln.rstrip("\r\n").split(sep) for ln in lines]
                lens = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
                ok = lens == n_fields
                if not ok.all():
                    blank = np.fromiter((not ln.strip() for ln in lines), dtype=bool, count=len(lines))
                    for i in np.flatnonzero(~ok & ~blank):
                        bad.bad(
                            path,
                            int(nums[i]),
                            f"expected {n_fields} fields separated by {sep!r}, got {lens[i]}: {lines[i].rstrip()!r}",
                        )
                    keep = np.flatnonzero(ok)
                    parts = [parts[i] for i in keep]
                    nums = nums[keep]
                if not parts:
                    continue
                raw = list(zip(*parts, strict=True))
                conv: dict[str, np.ndarray] = {}
                good = np.ones(len(parts), dtype=bool)
                for j, (name, kind) in enumerate(fields):
                    if kind == "str":
                        conv[name] = np.asarray([v.strip() for v in raw[j]], dtype=object)
                        continue
                    vals, ok_j = parse_numbers(
                        np.asarray(raw[j], dtype=str),
                        np.int64 if kind == "int" else np.float64,
                        path,
                        nums,
                        name,
                        bad,
                    )
                    conv[name] = vals
                    good &= ok_j
                for name, _ in fields:
                    chunks[name].append(conv[name][good])
                line_nos.append(nums[good])
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid UTF-8 text after line {lineno}: {e}") from None
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read: {e}") from None
    empty = {"int": np.zeros(0, np.int64), "float": np.zeros(0, np.float64), "str": np.zeros(0, object)}
    out = {name: (np.concatenate(chunks[name]) if chunks[name] else empty[kind]) for name, kind in fields}
    return out, (np.concatenate(line_nos) if line_nos else np.zeros(0, dtype=np.int64))


def parse_numbers(
    values: np.ndarray,
    dtype: type,
    path: str | os.PathLike[str],
    lines: np.ndarray,
    column: str,
    bad: BadLines,
) -> tuple[np.ndarray, np.ndarray]:
    """Convert a string column to `dtype`; returns (values, ok mask). Fast path: one NumPy cast."""
    try:
        return values.astype(dtype), np.ones(values.shape, dtype=bool)
    except (ValueError, OverflowError):
        pass
    conv = int if np.dtype(dtype).kind in "iu" else float
    out = np.zeros(values.shape, dtype=dtype)
    ok = np.ones(values.shape, dtype=bool)
    for i, v in enumerate(values.tolist()):
        try:
            out[i] = conv(v)
        except (ValueError, OverflowError):
            ok[i] = False
            bad.bad(path, int(lines[i]), f"column {column!r}: {v!r} is not a valid {conv.__name__}")
    return out, ok


def read_checked(
    path: str | os.PathLike[str],
    sep: str | None,
    fields: list[tuple[str, str]],
    bad: BadLines,
    check: Callable[[dict[str, np.ndarray]], list[tuple[np.ndarray, Callable[[int], str]]]],
    *,
    header: bool = False,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """`read_columns` plus per-row semantic checks, with line numbers for any row that fails one.

    `check(cols)` returns `(bad_mask, reason(i))` pairs. If the fast path's rows fail a check, the file
    is re-read line by line so that the complaint names the physical line.

    Returns:
      (columns of the good rows, their 0-based positions in file order as a tie-break key).
    """
    cols, lines = read_columns(path, sep, fields, bad, header=header)
    problems = check(cols)
    if lines is None and any(m.any() for m, _ in problems):
        cols, lines = read_columns(path, sep, fields, bad, header=header, force_slow=True)
        problems = check(cols)
    n = len(next(iter(cols.values())))
    position = np.arange(n, dtype=np.int64) if lines is None else lines.astype(np.int64)
    keep = np.ones(n, dtype=bool)
    if problems and lines is not None:
        # Report in line order across all checks, so the first error raised is the file's first.
        flagged = [(i, reason) for mask, reason in problems for i in np.flatnonzero(mask)]
        flagged.sort(key=lambda x: x[0])
        for i, reason in flagged:
            if keep[i]:
                keep[i] = False
                bad.bad(path, int(lines[i]), reason(int(i)))
    bad.flush()
    if keep.all():
        return cols, position
    return {k: v[keep] for k, v in cols.items()}, position[keep]


class IdMap:
    """Raw ids -> int64 ids: non-negative integers are kept; anything else gets a dense id.

    Dense ids are assigned in order of first appearance in the source file, so an import is
    reproducible; the mapping is written as `ids_<entity>.parquet` (raw, id) beside the dataset.
    """

    def __init__(self, entity: str):
        self.entity = entity
        self.mapping: dict[str, int] | None = None

    def convert(self, raw: np.ndarray) -> np.ndarray:
        """`[N]` raw ids (strings) -> `[N]` int64."""
        raw = np.asarray(raw)
        if raw.dtype.kind in "iu":
            if raw.size and raw.min() < 0:
                raise ValueError(f"{self.entity} ids must be non-negative, got {int(raw.min())}")
            return raw.astype(np.int64)
        s = np.char.strip(raw.astype(str))
        if self.mapping is None:
            try:
                ints = s.astype(np.int64)
                if not ints.size or ints.min() >= 0:
                    return ints
            except (ValueError, OverflowError):
                pass
            self.mapping = {}
        uniq, first, inv = np.unique(s, return_index=True, return_inverse=True)
        by_first = np.argsort(first, kind="stable")
        ids = np.empty(uniq.size, dtype=np.int64)
        for k in by_first.tolist():
            key = str(uniq[k])
            if key not in self.mapping:
                self.mapping[key] = len(self.mapping)
            ids[k] = self.mapping[key]
        return ids[inv.reshape(-1)]

    def table(self) -> dict[str, np.ndarray] | None:
        """The (raw, id) mapping as columns, or None when all ids were integers."""
        if self.mapping is None:
            return None
        return {
            "raw": np.array(list(self.mapping), dtype=object),
            "id": np.fromiter(self.mapping.values(), np.int64, len(self.mapping)),
        }


def posts_from_events(
    post_ids: np.ndarray,
    author_ids: np.ndarray,
    timestamps: np.ndarray,
    *,
    extra: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """One post row per distinct post_id: its author and `created_at` = its first event time.

    Public logs rarely carry post creation times; the first time anyone saw the post is the latest
    time it can have been created, which keeps `created_at <= impression time` true.
    """
    uniq, inv = np.unique(post_ids, return_inverse=True)
    inv = inv.reshape(-1)
    created = np.full(uniq.size, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(created, inv, timestamps)
    first = np.full(uniq.size, -1, dtype=np.int64)
    order = np.arange(post_ids.size)[::-1]
    first[inv[order]] = order  # last write wins -> the first occurrence
    posts = {"post_id": uniq, "author_id": author_ids[first], "created_at": created}
    for k, v in (extra or {}).items():
        posts[k] = v
    return posts


def finish(
    out: str | os.PathLike[str],
    events: dict[str, np.ndarray],
    posts: dict[str, np.ndarray],
    actions: ActionVocabulary,
    *,
    name: str,
    source: str,
    notes: dict[str, Any],
    bad: BadLines,
    id_maps: tuple[IdMap, ...] = (),
    follows: dict[str, np.ndarray] | None = None,
) -> Dataset:
    """Write the dataset (events in source order: `write_dataset`'s stable sort keeps ties so)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if events["user_id"].size == 0:
        raise ValueError(f"{source}: no valid events to import")
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    for m in id_maps:
        t = m.table()
        if t is not None:
            pq.write_table(pa.table(t), outp / f"ids_{m.entity}.parquet")
            notes.setdefault("id_maps", {})[m.entity] = (
                f"ids_{m.entity}.parquet (raw -> id, first appearance order)"
            )
    report = bad.report()
    report["rows_imported"] = int(events["user_id"].size)
    return write_dataset(
        out, events, posts, follows, actions, name=name, source=source, notes=notes, import_report=report
    )


def iter_csv_records(path: str | os.PathLike[str], delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of a quoted CSV file (Python's csv module; line number of the record end)."""
    import csv

    with open_text(path) as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            for rec in reader:
                yield reader.line_num, rec
        except csv.Error as e:
            raise ValueError(f"{path}: line {reader.line_num}: malformed CSV: {e}") from None
