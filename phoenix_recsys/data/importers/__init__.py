"""Importers from public and user log formats into the dataset format (one module per format)."""

from __future__ import annotations

import enum
import os
from typing import Any

from phoenix_recsys.data.importers._common import BadLines
from phoenix_recsys.data.importers.generic import import_generic, load_mapping
from phoenix_recsys.data.importers.kuairand import import_kuairand
from phoenix_recsys.data.importers.movielens import import_movielens
from phoenix_recsys.data.importers.sequence import import_sequence
from phoenix_recsys.data.importers.taobao import import_taobao
from phoenix_recsys.data.schema import Dataset


class ImportFormat(enum.StrEnum):
    """Formats `import_dataset` (and `phoenix-recsys data import`) understand."""

    MOVIELENS = "movielens"
    KUAIRAND = "kuairand"
    TAOBAO = "taobao"
    SEQUENCE = "sequence"
    GENERIC = "generic"


_OPTIONS: dict[ImportFormat, set[str]] = {
    ImportFormat.MOVIELENS: {"movies"},
    ImportFormat.KUAIRAND: {"video_features"},
    ImportFormat.TAOBAO: set(),
    ImportFormat.SEQUENCE: set(),
    ImportFormat.GENERIC: {"mapping"},
}


def import_dataset(
    fmt: ImportFormat | str,
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    skip_bad: bool = False,
    name: str | None = None,
    **options: Any,
) -> Dataset:
    """Import `path` in format `fmt` into the dataset directory `out`.

    Args:
      fmt: one of `ImportFormat`.
      path: the source file (.gz read directly).
      out: the dataset directory to write.
      skip_bad: count and skip malformed lines (recorded in `manifest["import"]`) instead of raising.
      name: dataset name.
      options: format-specific: `movies` (movielens), `video_features` (kuairand), `mapping` (generic,
        required). None values are ignored.

    Raises:
      ValueError: unknown format, an option the format does not take, or malformed input.
    """
    try:
        f = ImportFormat(fmt)
    except ValueError:
        raise ValueError(f"unknown import format {fmt!r}; known: {[x.value for x in ImportFormat]}") from None
    given = {k: v for k, v in options.items() if v is not None}
    extra = sorted(set(given) - _OPTIONS[f])
    if extra:
        raise ValueError(
            f"format {f.value!r} takes no option(s) {extra} (it takes {sorted(_OPTIONS[f]) or 'none'})"
        )
    if f is ImportFormat.MOVIELENS:
        return import_movielens(path, out, skip_bad=skip_bad, name=name, **given)
    if f is ImportFormat.KUAIRAND:
        return import_kuairand(path, out, skip_bad=skip_bad, name=name, **given)
    if f is ImportFormat.TAOBAO:
        return import_taobao(path, out, skip_bad=skip_bad, name=name)
    if f is ImportFormat.SEQUENCE:
        return import_sequence(path, out, skip_bad=skip_bad, name=name)
    if "mapping" not in given:
        raise ValueError("format 'generic' needs a column-mapping file (mapping=..., CLI --mapping)")
    return import_generic(path, out, skip_bad=skip_bad, name=name, **given)


__all__ = [
    "BadLines",
    "ImportFormat",
    "import_dataset",
    "import_generic",
    "import_kuairand",
    "import_movielens",
    "import_sequence",
    "import_taobao",
    "load_mapping",
]
