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
from phoenix_recsys.serve.store import Store


def original_authors(store: Store, repost_of: np.ndarray) -> np.ndarray:
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


def hydrate(store: Store, candidates: Candidates) -> Candidates:
    """Author, creation time, repost (with the original's author), text and video of every candidate.

    A post the store lacks (or no longer serves) gets author -1, which the missing-author filter
    then removes; so does a repost whose original the store does not serve: with the original
    gone, nobody can check who wrote it, and a deleted or taken-down post must not come back as a
    repost. Two look-ups: the candidates, then the originals of the reposts among them.
    """
    if len(candidates) == 0:
        z = np.zeros(0, np.int64)
        return dataclasses.replace(candidates, repost_of=z, original_author_ids=z)
    rows = store.get_posts(candidates.post_ids)
    orig = original_authors(store, rows.repost_of)
    authors = np.where((rows.repost_of >= 0) & (orig < 0), -1, rows.author_ids)
    return dataclasses.replace(
        candidates,
        author_ids=authors,
        created_at=rows.created_at,
        repost_of=rows.repost_of,
        text=rows.text,
        video_duration_s=rows.video_duration_s,
        original_author_ids=orig,
    )
