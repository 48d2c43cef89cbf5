"""The request path's id-set membership equals np.isin, sorted input or not."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_recsys.serve._ids import member, sorted_member, sorted_unique

ids = st.lists(st.integers(-(2**40), 2**40), max_size=60)


@settings(max_examples=200, deadline=None)
@given(x=ids, s=ids, presort=st.booleans())
def test_member_is_isin(x: list[int], s: list[int], presort: bool) -> None:
    xs, ss = np.asarray(x, np.int64), np.asarray(s, np.int64)
    if presort:
        ss = np.unique(ss)
    assert np.array_equal(member(xs, ss), np.isin(xs, ss))
    assert np.array_equal(sorted_member(xs, np.unique(ss)), np.isin(xs, ss))
    assert np.array_equal(sorted_unique(ss), np.unique(ss))


def test_sorted_unique_does_not_copy_sorted_input() -> None:
    a = np.array([1, 4, 9], np.int64)
    assert np.shares_memory(sorted_unique(a), a)
    assert sorted_unique(np.array([3, 1, 3])).tolist() == [1, 3]
