"""Pre-processed interaction sequences (SASRec style): one `user item` pair per line, no timestamps.

Mapping (recorded in the manifest notes):
  * each line is one interaction: click = True (vocabulary: click only; no negatives).
  * lines of a user must be in that user's time order (the convention of these files); users may be
    contiguous or interleaved.
  * timestamp = the line's index among the file's data lines (0, 1, 2, ...): strictly increasing
    within a user and without ties, so the order is exact. The values mean nothing as times: use the
    leave-one-out protocol, not time splits.
  * ids: non-negative integers are kept; other tokens get dense ids in order of first appearance,
    written to `ids_user.parquet` / `ids_post.parquet`.
  * author = the constant 0 (such files carry none); created_at = first appearance; surface 0.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from phoenix_recsys.actions import ActionVocabulary
from phoenix_recsys.data.importers._common import BadLines, IdMap, finish, posts_from_events, read_checked
from phoenix_recsys.data.schema import Dataset

ACTIONS = ActionVocabulary.binary(["click"])


def import_sequence(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    skip_bad: bool = False,
    name: str | None = None,
) -> Dataset:
    """Import a whitespace-separated `user item` file (optionally .gz) into a dataset directory.

    Args:
      path: the sequence file.
      out: the dataset directory to write.
      skip_bad: count and skip malformed lines (not exactly two fields) instead of raising.
      name: dataset name (default: the file name without extensions).
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such file")
    bad = BadLines(skip_bad)
    cols, _pos = read_checked(p, None, [("user", "str"), ("item", "str")], bad, lambda c: [])
    users_map, posts_map = IdMap("user"), IdMap("post")
    user = users_map.convert(cols["user"])
    item = posts_map.convert(cols["item"])
    ts = np.arange(user.size, dtype=np.int64)
    events = {
        "user_id": user,
        "post_id": item,
        "author_id": np.zeros(user.size, dtype=np.int64),
        "timestamp": ts,
        "product_surface": np.zeros(user.size, dtype=np.int32),
        "click": np.ones(user.size, dtype=bool),
    }
    posts = posts_from_events(item, events["author_id"], ts)
    notes = {
        "importer": "sequence",
        "timestamp": "synthetic: index of the line among the data lines; only the per-user order is meaningful (use leave_one_out)",
        "actions": "click = every line",
        "author": "constant 0 (no author information)",
        "ids": "integers kept; other tokens mapped by first appearance (ids_*.parquet)",
    }
    return finish(
        out,
        events,
        posts,
        ACTIONS,
        name=name or p.name.split(".")[0],
        source=str(p),
        notes=notes,
        bad=bad,
        id_maps=(users_map, posts_map),
    )
