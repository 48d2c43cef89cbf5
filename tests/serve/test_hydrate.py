"""Hydration reads the store once per candidate it does not already hold from this request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from phoenix_recsys.serve.feed import hydrate, in_network_source
from phoenix_recsys.serve.filters import SOURCE_IN_NETWORK, SOURCE_OUT_OF_NETWORK, Candidates
from phoenix_recsys.serve.store import Store


def _store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "store.sqlite")
    ids = np.arange(1, 9)
    s.add_posts(ids, [10, 10, 11, 12, 12, 13, 11, 10], ids * 100,
                text=[f"post {i}" for i in ids], repost_of=[-1, -1, -1, 1, 3, -1, 2, -1],
                video_duration_s=[np.nan, 5.0, np.nan, np.nan, np.nan, 9.0, np.nan, np.nan])  # fmt: skip
    s.delete_posts([3])  # post 5 reposts it: with the original gone post 5 must read as unknown
    return s


def _columns(c: Candidates) -> dict[str, list[Any]]:
    return {n: [None if isinstance(x, float) and np.isnan(x) else x for x in getattr(c, n).tolist()]
            for n in ("post_ids", "author_ids", "created_at", "repost_of", "text", "video_duration_s", "original_author_ids")}  # fmt: skip


def test_rows_read_in_this_request_are_not_read_again(tmp_path: Path) -> None:
    store = _store(tmp_path)
    in_net = in_network_source(store, np.array([10, 12]), limit=100, per_author_cap=10)
    ann_ids = np.array([8, 6, 5, 3, 7, 99])  # 3 deleted, 99 unknown, 8 also in-network
    ann = Candidates(post_ids=ann_ids, author_ids=np.full(6, -1), created_at=np.full(6, -1),
                     source=np.full(6, SOURCE_OUT_OF_NETWORK, dtype=object))  # fmt: skip
    cands = Candidates.concat([in_net, ann])
    full = hydrate(store, cands)

    asked: list[list[int]] = []
    inner = store.get_posts

    def spy(ids: Any) -> Any:
        asked.append(np.asarray(ids).tolist())
        return inner(ids)

    store.get_posts = spy  # type: ignore[method-assign]
    fast = hydrate(store, cands, read_now=cands.source == SOURCE_IN_NETWORK)
    assert _columns(fast) == _columns(full)
    # The first read is the non-in-network candidates only; the second the reposts' originals.
    assert asked[0] == ann_ids.tolist()
    assert sorted(asked[1]) == sorted(int(r) for r in full.repost_of if r >= 0)
    by_id = dict(zip(full.post_ids.tolist(), full.author_ids.tolist(), strict=False))
    assert by_id[3] == -1 and by_id[99] == -1 and by_id[5] == -1  # deleted, unknown, repost of deleted
    assert by_id[4] == 12 and full.original_author_ids[full.post_ids.tolist().index(4)] == 10
    store.close()
