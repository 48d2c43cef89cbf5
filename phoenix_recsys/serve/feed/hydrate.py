"""Hydration: the store's truth about each candidate (author, time, repost, text, video)."""

from __future__ import annotations

import dataclasses

from phoenix_recsys.serve.filters import (
    Candidates,
)
from phoenix_recsys.serve.store import Store


def hydrate(store: Store, candidates: Candidates) -> Candidates:
    """Author, creation time, repost, text and video of every candidate, read from the store.

    A post the store lacks gets author -1, which the missing-author filter then removes.
    """
    if len(candidates) == 0:
        return candidates
    rows = store.get_posts(candidates.post_ids)
    return dataclasses.replace(
        candidates,
        author_ids=rows.author_ids,
        created_at=rows.created_at,
        repost_of=rows.repost_of,
        text=rows.text,
        video_duration_s=rows.video_duration_s,
    )
