"""Id-set helpers for the request path: membership against sorted id arrays.

`np.isin` sorts (or tables) both sides on every call; a feed asks "is this candidate seen /
excluded?" several times against sets that are already sorted (the store returns seen posts
sorted, the index keeps its live ids sorted), so a binary search per element is enough.
"""

from __future__ import annotations

import numpy as np


def sorted_unique(ids: np.ndarray) -> np.ndarray:
    """`ids` as a sorted unique int64 array; returned as is (no copy) when already strictly increasing."""
    ids = np.asarray(ids, dtype=np.int64).ravel()
    if ids.size < 2 or bool(np.all(ids[1:] > ids[:-1])):
        return ids
    return np.unique(ids)


def sorted_member(x: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """`[len(x)]` bool: x[i] is in `sorted_ids` (ascending, unique). O(len(x) log n)."""
    x = np.asarray(x)
    if sorted_ids.size == 0 or x.size == 0:
        return np.zeros(x.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_ids, x), sorted_ids.size - 1)
    return sorted_ids[pos] == x


def member(x: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """`np.isin(x, ids)` for int ids, without re-sorting `ids` when they are already sorted unique."""
    return sorted_member(x, sorted_unique(ids))
