"""Store history -> `RecsysBatch` rows, built exactly as `data.examples` builds them for training.

Axes: S history length, N candidates, A actions, h_u / h_i / h_a hashes per user / item / author.

What training does, and so serving does too (`data/examples.py`):
  * The history is the user's last S *engaged* events, where an event is engaged when it has any
    of the engagement actions (default: every binary action; continuous ones such as dwell time
    are recorded on nearly every impression and would make every impression an engagement).
  * Oldest first, packed at the front, padded with hash 0 / no action / surface 0.
  * The action row of an event is the multi-hot `value > 0` over the whole vocabulary (a
    continuous action counts as done when positive), the surface is the event's surface, and the
    post and author hashes come from the post's id and its author.
  * Candidates carry their post and author hashes, a surface, the request time as impression time,
    the post's creation time (0 = unknown, which the post-age embedding treats as such) and
    whether the viewer follows the author (the `in_network_feature` input).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from phoenix_recsys.actions import ActionKind, ActionVocabulary
from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.hashing import HashConfig
from phoenix_recsys.serve.store import History, Store

#: The user id hashed for the user token of an anonymous request (an explicit history, no user id).
ANONYMOUS_USER = "__anonymous__"


def engagement_names(vocab: ActionVocabulary, engagement_actions: Sequence[str] | None = None) -> tuple[str, ...]:
    """The actions that make an event enter the history (default: every binary action).

    Raises:
      ValueError: a name is not in the vocabulary.
    """
    if engagement_actions is None:
        return tuple(a.name for a in vocab if a.kind is ActionKind.BINARY)
    for name in engagement_actions:
        vocab.index(name)  # ValueError listing the vocabulary
    return tuple(engagement_actions)


def engaged_rows(history: History, names: Sequence[str]) -> np.ndarray:
    """`[len(history)]` bool: the event has a positive value for one of `names`."""
    wanted = set(names)
    return np.array([any(v > 0 and n in wanted for n, v in acts.items()) for acts in history.actions], dtype=bool)


def take_history(history: History, rows: np.ndarray) -> History:
    """The events of `history` at `rows` (a bool mask or indices), order kept."""
    idx = np.flatnonzero(rows) if np.asarray(rows).dtype == np.bool_ else np.asarray(rows, dtype=np.int64)
    return History(
        post_ids=history.post_ids[idx],
        author_ids=history.author_ids[idx],
        timestamps=history.timestamps[idx],
        actions=tuple(history.actions[i] for i in idx.tolist()),
        product_surface=history.product_surface[idx],
    )


def fetch_history(
    store: Store,
    user_id: int,
    history_len: int,
    vocab: ActionVocabulary,
    *,
    engagement_actions: Sequence[str] | None = None,
    before: int | None = None,
) -> History:
    """The user's last `history_len` engaged events from the store, oldest first.

    The store keeps every event with a positive action, including ones with only a continuous
    action; those do not count as engagements for the model, so this reads further back until it
    has `history_len` engaged events or the user's events run out.

    Args:
      store: the store.
      user_id: the viewer.
      history_len: S.
      vocab: the bundle's action vocabulary.
      engagement_actions: see `engagement_names`.
      before: only events strictly before this time.

    Returns:
      `History` with at most S events, oldest first.
    """
    names = engagement_names(vocab, engagement_actions)
    fetch = max(history_len, 1)
    while True:
        h = store.get_history(user_id, fetch, before=before)
        keep = engaged_rows(h, names)
        if int(keep.sum()) >= history_len or len(h) < fetch:
            break
        fetch *= 4  # geometric, so a user with many dwell-only events costs a few queries, not many
    idx = np.flatnonzero(keep)[-history_len:] if history_len else np.zeros(0, np.int64)
    return take_history(h, idx)


def make_history(
    post_ids: Sequence[int],
    author_ids: Sequence[int],
    actions: Sequence[Mapping[str, float]],
    product_surface: Sequence[int] | None = None,
    timestamps: Sequence[int] | None = None,
) -> History:
    """A `History` from explicit events (e.g. a /v1/rank request), oldest first."""
    n = len(post_ids)
    return History(
        post_ids=np.asarray(post_ids, dtype=np.int64).reshape(n),
        author_ids=np.asarray(author_ids, dtype=np.int64).reshape(n),
        timestamps=np.zeros(n, np.int64) if timestamps is None else np.asarray(timestamps, np.int64).reshape(n),
        actions=tuple(dict(a) for a in actions),
        product_surface=np.zeros(n, np.int64) if product_surface is None else np.asarray(product_surface, np.int64).reshape(n),
    )


def user_hashes(hash_config: HashConfig, user_id: int | None) -> np.ndarray:
    """`[1, h_u]` int32 hashes of the viewer (`ANONYMOUS_USER` when None)."""
    ids: Any = [ANONYMOUS_USER] if user_id is None else np.array([user_id], dtype=np.int64)
    return hash_config.hash_users(ids)


def hash_by_unique(ids: np.ndarray, fn: Any) -> np.ndarray:
    """`fn` (a `HashConfig.hash_*`) applied to each distinct id once: authors repeat a lot."""
    if ids.size == 0:
        return fn(np.zeros(0, np.int64))
    uniq, inv = np.unique(ids, return_inverse=True)
    return fn(uniq)[inv.reshape(-1)]


def context_batch(
    user_id: int | None,
    history: History,
    *,
    hash_config: HashConfig,
    vocab: ActionVocabulary,
    history_len: int,
) -> RecsysBatch:
    """A `[1, ...]` batch of `[user | history]` with an empty candidate block (C = 0).

    Args:
      user_id: the viewer, None for an anonymous request.
      history: oldest first; only its last `history_len` events are used.
      hash_config: the bundle's hashing.
      vocab: the bundle's action vocabulary (the A axis).
      history_len: S, the model's `history_seq_len`; the history is padded to it, so every
        request has the same shapes and the jitted programs compile once.

    Returns:
      `RecsysBatch` with B = 1, S = history_len, C = 0.
    """
    s = history_len
    h = take_history(history, np.arange(max(0, len(history) - s), len(history)))
    n = len(h)
    hp = np.zeros((1, s, hash_config.num_item_hashes), np.int32)
    ha = np.zeros((1, s, hash_config.num_author_hashes), np.int32)
    acts = np.zeros((1, s, len(vocab)), np.float32)
    surf = np.zeros((1, s), np.int32)
    if n:
        hp[0, :n] = hash_config.hash_items(h.post_ids)
        ha[0, :n] = hash_by_unique(h.author_ids, hash_config.hash_authors)
        acts[0, :n] = (h.action_matrix(vocab) > 0).astype(np.float32)
        surf[0, :n] = h.product_surface.astype(np.int32)
    return RecsysBatch(
        user_hashes=user_hashes(hash_config, user_id),
        history_post_hashes=hp,
        history_author_hashes=ha,
        history_actions=acts,
        history_product_surface=surf,
        candidate_post_hashes=np.zeros((1, 0, hash_config.num_item_hashes), np.int32),
        candidate_author_hashes=np.zeros((1, 0, hash_config.num_author_hashes), np.int32),
        candidate_product_surface=np.zeros((1, 0), np.int32),
    )


def with_candidates(
    batch: RecsysBatch,
    post_ids: np.ndarray,
    author_ids: np.ndarray,
    *,
    hash_config: HashConfig,
    product_surface: int | np.ndarray,
    now: int,
    created_at: np.ndarray | None = None,
    in_network: np.ndarray | None = None,
) -> RecsysBatch:
    """`batch` with a candidate block of N posts.

    Every optional candidate field is always filled (never None), so the jitted scorer sees one
    input structure and compiles once per shape.

    Args:
      batch: from `context_batch`.
      post_ids / author_ids: `[N]` int64 (authors must be known, >= 0).
      hash_config: the bundle's hashing.
      product_surface: one surface for all candidates or `[N]`.
      now: the request time, the candidates' impression time.
      created_at: `[N]` post creation times; negative = unknown (sent as 0).
      in_network: `[N]` bool, the viewer follows the author (read by rankers trained with
        `in_network_feature`); None = not followed.

    Returns:
      `RecsysBatch` with C = N.
    """
    post_ids = np.asarray(post_ids, dtype=np.int64)
    n = post_ids.shape[0]
    surf = np.broadcast_to(np.asarray(product_surface, dtype=np.int32), (n,))
    created = np.zeros(n, np.int64) if created_at is None else np.maximum(np.asarray(created_at, np.int64), 0)
    follows = np.zeros(n, np.int32) if in_network is None else np.asarray(in_network).astype(np.int32).reshape(n)
    return batch.with_candidates(
        hash_config.hash_items(post_ids)[None],
        hash_by_unique(np.asarray(author_ids, dtype=np.int64), hash_config.hash_authors)[None],
        surf[None].copy(),
        np.full((1, n), now, dtype=np.int64),
        created[None],
        follows[None],
    )
