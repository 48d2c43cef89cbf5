"""Seeding an empty store from a dataset directory (the training definition of an engagement)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from phoenix_recsys.actions import ActionKind, ActionVocabulary
from phoenix_recsys.data.schema import load_dataset
from phoenix_recsys.serve.store import SeedReport, Store

_log = logging.getLogger(__name__)


def seed_store(store: Store, data_dir: str | Path, vocab: ActionVocabulary) -> SeedReport | None:
    """Load a dataset directory into an empty store (a store that has posts is left alone).

    Mirrors the training definition of an engagement: events with any binary action become
    engagements (all their action values kept, dwell time included); events with only a continuous
    action (dwell on nearly every impression) or none become impressions, i.e. "seen". Video
    durations of 0 mean "not a video" in the dataset format and become NaN (no video) in the store.
    Follow rows with user_id == author_id are dropped: the store refuses self-follows, and in
    datasets where authors are not users (synthetic worlds) such a row links two different entities.

    Args:
      store: the target store.
      data_dir: a dataset directory (`data.schema`).
      vocab: the bundle's action vocabulary; the dataset's must be the same.

    Returns:
      The `SeedReport`, or None when the store already had posts.

    Raises:
      ValueError: the dataset's actions differ from the bundle's.
    """
    if store.num_posts() > 0:
        return None
    ds = load_dataset(data_dir)
    if ds.actions.names != vocab.names:
        raise ValueError(
            f"dataset {ds.name!r} declares actions {list(ds.actions.names)}, but the bundle predicts "
            f"{list(vocab.names)}; serve a bundle trained on this dataset"
        )
    values = {n: ds.column(n).astype(np.float64) for n in vocab.names}
    binary = np.zeros(ds.num_events, dtype=bool)
    for a in vocab:
        if a.kind is ActionKind.BINARY:
            binary |= values[a.name] > 0
    for a in vocab:
        if a.kind is not ActionKind.BINARY:
            values[a.name] = np.where(binary, values[a.name], 0.0)
    events: dict[str, Any] = {
        c: ds.column(c) for c in ("user_id", "post_id", "author_id", "timestamp", "product_surface")
    }
    events.update(values)
    posts: dict[str, Any] = {c: ds.column(c, "posts") for c in ("post_id", "author_id", "created_at")}
    if "video_duration" in ds.posts.column_names:
        v = ds.column("video_duration", "posts").astype(np.float64)
        posts["video_duration_s"] = np.where(np.isfinite(v) & (v > 0), v, np.nan)
    follows = None
    if ds.follows is not None:
        fu, fa = ds.column("user_id", "follows"), ds.column("author_id", "follows")
        keep = fu != fa
        if not keep.all():
            _log.info("seeding: dropped %d self-follow rows", int((~keep).sum()))
        follows = {"user_id": fu[keep], "author_id": fa[keep]}
    report = store.seed_from_tables(events, posts, follows, action_names=list(vocab.names))
    _log.info("seeded %s from %s: %s", store.path, ds.path, report)
    return report
