"""Taobao UserBehavior (`user_id,item_id,category_id,behavior_type,timestamp`, no header).

Mapping (recorded in the manifest notes):
  * one event per (user, item) pair. Its time is the pair's first `pv` (page view = the impression)
    or, for a pair that has no pv row, the pair's first row of any behaviour; its tie-break position
    is that row's position in the file. Such pv-less pairs are kept, with click=False.
  * actions: click = the pair has a pv; cart / favorite / buy = the pair has a row of that behaviour
    (`fav` -> favorite) at any time. All binary, none negative.
  * caveat: the aggregation dates every behaviour of a pair at its first view. Labels are right for
    the impression, but when that event sits in a later candidate's history its cart/fav/buy bits
    may stem from rows after the candidate's time. The manifest counts such rows.
  * author = category_id (an item's first seen category; items seen with several are counted).
  * created_at = the item's first row; product_surface 0; ids are the dataset's integers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from phoenix_recsys.actions import ActionVocabulary
from phoenix_recsys.data.importers._common import BadLines, finish, read_checked
from phoenix_recsys.data.schema import Dataset

ACTIONS = ActionVocabulary.binary(["click", "cart", "favorite", "buy"])
BEHAVIOURS = {"pv": "click", "cart": "cart", "fav": "favorite", "buy": "buy"}


def import_taobao(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    skip_bad: bool = False,
    name: str | None = None,
) -> Dataset:
    """Import a Taobao UserBehavior CSV (optionally .gz) into a dataset directory.

    Args:
      path: the CSV file.
      out: the dataset directory to write.
      skip_bad: count and skip malformed lines instead of raising.
      name: dataset name (default: the file name without extensions).
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such file")
    bad = BadLines(skip_bad)
    fields = [("user", "int"), ("item", "int"), ("category", "int"), ("behavior", "str"), ("ts", "int")]

    def check(c):
        known = np.isin(c["behavior"].astype(str), list(BEHAVIOURS))
        return [
            (c["user"] < 0, lambda i: f"negative user_id {c['user'][i]}"),
            (c["item"] < 0, lambda i: f"negative item_id {c['item'][i]}"),
            (c["category"] < 0, lambda i: f"negative category_id {c['category'][i]}"),
            (~known, lambda i: f"behavior_type {c['behavior'][i]!r} is not one of {list(BEHAVIOURS)}"),
            (c["ts"] < 0, lambda i: f"negative timestamp {c['ts'][i]}"),
        ]

    cols, pos = read_checked(p, ",", fields, bad, check)
    beh = cols["behavior"].astype(str)
    user, item, ts = cols["user"], cols["item"], cols["ts"]
    is_pv = beh == "pv"
    # Rows of a pair together, in (time, file position) order; the pair's pv rows first among ties
    # is not needed: the event time is taken from the first pv explicitly.
    order = np.lexsort((pos, ts, item, user))
    u, it, t, pv, ps = user[order], item[order], ts[order], is_pv[order], pos[order]
    new_pair = np.r_[True, (u[1:] != u[:-1]) | (it[1:] != it[:-1])]
    pair = np.cumsum(new_pair) - 1
    n_pairs = int(pair[-1]) + 1 if pair.size else 0
    starts = np.flatnonzero(new_pair)
    big = np.iinfo(np.int64).max
    # First pv per pair: the minimum (time, position) among pv rows = the first pv row in this order.
    pv_rank = np.where(pv, np.arange(pair.size), big)
    first_pv = np.full(n_pairs, big, dtype=np.int64)
    np.minimum.at(first_pv, pair, pv_rank)
    has_pv = first_pv < big
    anchor = np.where(has_pv, first_pv, starts)  # index (in sorted order) of the event's row
    ev_ts, ev_pos = t[anchor], ps[anchor]
    flags = {}
    for b, action in BEHAVIOURS.items():
        hit = np.zeros(n_pairs, dtype=bool)
        hit[pair[beh[order] == b]] = True
        flags[action] = hit
    # Rows attributed to an event time they did not happen at (for the notes' caveat).
    row_after = int(((t > ev_ts[pair]) & ~pv).sum())
    row_before = int((t < ev_ts[pair]).sum())

    # Item -> category: the item's first row in the file.
    item_order = np.lexsort((pos, item))
    it_sorted = item[item_order]
    first_item = np.r_[True, it_sorted[1:] != it_sorted[:-1]]
    items = it_sorted[first_item]
    item_cat = cols["category"][item_order][first_item]
    seg = np.cumsum(first_item) - 1
    multi = np.zeros(items.size, dtype=bool)
    multi[seg[cols["category"][item_order] != item_cat[seg]]] = True
    item_created = np.full(items.size, big, dtype=np.int64)
    np.minimum.at(item_created, seg, ts[item_order])

    ev_item = it[starts]
    ev_cat = item_cat[np.searchsorted(items, ev_item)]
    by_pos = np.argsort(ev_pos, kind="stable")  # hand events over in file order (tie order)
    events = {
        "user_id": u[starts][by_pos],
        "post_id": ev_item[by_pos],
        "author_id": ev_cat[by_pos],
        "timestamp": ev_ts[by_pos],
        "product_surface": np.zeros(n_pairs, dtype=np.int32),
    }
    for action in ACTIONS.names:
        events[action] = flags[action][by_pos]
    posts = {"post_id": items, "author_id": item_cat, "created_at": item_created}
    notes = {
        "importer": "taobao",
        "events": "one per (user, item) pair at its first pv (else its first row); click = has pv; cart/favorite/buy = has such a row",
        "author": "category_id (the item's first seen category)",
        "created_at": "first row of the item",
        "product_surface": "0 for all events",
        "rows": int(user.size),
        "pairs": n_pairs,
        "pairs_without_pv": int((~has_pv).sum()),
        "behaviour_rows_after_event_time": row_after,
        "behaviour_rows_before_event_time": row_before,
        "items_with_several_categories": int(multi.sum()),
        "caveat": "behaviours are dated at the pair's first view; history events may carry cart/fav/buy bits from later rows",
    }
    return finish(
        out, events, posts, ACTIONS, name=name or p.name.split(".")[0], source=str(p), notes=notes, bad=bad
    )
