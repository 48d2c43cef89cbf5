"""Hydration: the store's truth about each candidate (author, time, repost, text, video).

The store is the truth at hydration time, which is what makes visibility changes apply to the next
feed of every server at once, before any index or cache catches up: a post the store does not
serve (unknown, deleted or taken down) comes back with author -1, and so does a repost whose
original it does not serve, so the missing-author filter drops both.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from phoenix_recsys.serve.filters import (
    Candidates,
)
from phoenix_recsys.serve.store.mirror import PostReads


def original_authors(store: PostReads, repost_of: np.ndarray) -> np.ndarray:
    """`[N]` int64 author of each reposted original, -1 where not a repost or the original is not served.

    Args:
      store: the store.
      repost_of: `[N]` int64 original post ids, negative = not a repost.
    """
    repost_of = np.asarray(repost_of, dtype=np.int64)
    out = np.full(repost_of.shape[0], -1, np.int64)
    is_repost = repost_of >= 0
    if is_repost.any():
        out[is_repost] = store.get_posts(repost_of[is_repost]).author_ids
    return out


def hydrate(store: PostReads, candidates: Candidates, *, read_now: np.ndarray | None = None) -> Candidates:
    """Author, creation time, repost (with the original's author), text and video of every candidate.

    A post the store lacks (or no longer serves) gets author -1, which the missing-author filter
    then removes; so does a repost whose original the store does not serve: with the original
    gone, nobody can check who wrote it, and a deleted or taken-down post must not come back as a
    repost. Two look-ups: the candidates, then the originals of the reposts among them.

    Args:
      store: the store.
      candidates: from the sources.
      read_now: `[N]` bool, candidates whose rows were read from the store's servable posts during
        this request (the in-network source): their columns are kept, not read again, which is
        the same truth a few milliseconds earlier (at 1M posts a feed's ~1,450 point reads cost
        ~5 ms, a third of them in-network rows). Their reposts' originals are still looked up.
        None = read every candidate.
    """
    n = len(candidates)
    if n == 0:
        z = np.zeros(0, np.int64)
        return dataclasses.replace(candidates, repost_of=z, original_author_ids=z)
    need = np.ones(n, bool) if read_now is None else ~np.asarray(read_now, bool).reshape(n)
    if need.all() or candidates.repost_of is None or candidates.text is None or candidates.video_duration_s is None:
        rows = store.get_posts(candidates.post_ids)
        author_ids, created_at, repost_of = rows.author_ids, rows.created_at, rows.repost_of
        text, video = rows.text, rows.video_duration_s
    else:
        author_ids, created_at = candidates.author_ids.copy(), candidates.created_at.copy()
        repost_of, text = candidates.repost_of.copy(), candidates.text.copy()
        video = candidates.video_duration_s.copy()
        if need.any():
            rows = store.get_posts(candidates.post_ids[need])
            author_ids[need], created_at[need], repost_of[need] = rows.author_ids, rows.created_at, rows.repost_of
            text[need], video[need] = rows.text, rows.video_duration_s
    orig = original_authors(store, repost_of)
    authors = np.where((repost_of >= 0) & (orig < 0), -1, author_ids)
    return dataclasses.replace(
        candidates,
        author_ids=authors,
        created_at=created_at,
        repost_of=repost_of,
        text=text,
        video_duration_s=video,
        original_author_ids=orig,
    )
