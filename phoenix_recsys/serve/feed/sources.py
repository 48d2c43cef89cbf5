"""Candidate sources (SPEC 7): in-network, out-of-network (ANN), cold start."""

from __future__ import annotations

import numpy as np

from phoenix_recsys.serve.filters import (
    SOURCE_FRESH,
    SOURCE_IN_NETWORK,
    SOURCE_OUT_OF_NETWORK,
    SOURCE_POPULAR,
    Candidates,
)
from phoenix_recsys.serve.index import CorpusIndex
from phoenix_recsys.serve.store import Store
from phoenix_recsys.serve.store.mirror import PostReads


def cap_followed(followed: np.ndarray, history_authors: np.ndarray, limit: int) -> np.ndarray:
    """At most `limit` of `followed`: the authors of the most recent history events first, then the rest.

    A user who follows 50k accounts would otherwise make the in-network query read 50k authors'
    posts; the ones the user engaged with lately are the ones most worth showing.

    Args:
      followed: `[F]` int64 followed authors.
      history_authors: `[S]` authors of the user's history events, oldest first.
      limit: the cap (>= 0).

    Returns:
      `[min(F, limit)]` int64, ascending (order does not matter to the source).
    """
    followed = np.asarray(followed, dtype=np.int64)
    if followed.shape[0] <= limit:
        return followed
    recent = np.asarray(history_authors, dtype=np.int64)[::-1]
    _, first = np.unique(recent, return_index=True)
    by_recency = recent[np.sort(first)]  # distinct authors, most recently engaged first
    engaged = by_recency[np.isin(by_recency, followed)][:limit]
    rest = np.setdiff1d(followed, engaged)[: limit - engaged.shape[0]]
    return np.sort(np.concatenate([engaged, rest]))


def in_network_source(store: PostReads, followed: np.ndarray, *, limit: int, per_author_cap: int) -> Candidates:
    """Newest posts of the authors the viewer follows, newest first."""
    return store.recent_posts_by_authors(
        followed, limit_total=limit, per_author_cap=per_author_cap
    ).to_candidates(SOURCE_IN_NETWORK)


def out_of_network_source(
    index: CorpusIndex, user_embedding: np.ndarray, *, limit: int, exclude: np.ndarray
) -> Candidates:
    """Two-tower retrieval: the `limit` posts nearest the user embedding, skipping `exclude`.

    Only ids and retrieval scores are known here; `hydrate` fills in the rest.
    """
    if limit == 0 or len(index) == 0:
        return Candidates.empty()
    res = index.search(user_embedding[None, :], k=limit, exclude=[exclude])
    ok = res.ids[0] >= 0
    ids = res.ids[0][ok]
    unknown = np.full(ids.shape[0], -1, np.int64)
    return Candidates(
        post_ids=ids,
        author_ids=unknown,
        created_at=unknown,
        source=np.full(ids.shape[0], SOURCE_OUT_OF_NETWORK, dtype=object),
        retrieval_score=res.scores[0][ok],
    )


def cold_start_sources(store: Store, *, popular: int, fresh: int, popular_since: int | None) -> Candidates:
    """Popular posts (most engagement events, optionally in a window) then the newest posts."""
    return Candidates.concat(
        [
            store.popular_posts(popular, since=popular_since).to_candidates(SOURCE_POPULAR),
            store.fresh_posts(fresh).to_candidates(SOURCE_FRESH),
        ]
    )
