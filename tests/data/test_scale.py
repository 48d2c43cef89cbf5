"""The streaming scale-world generator (issue 13), at a tiny size: format, skew, chunked writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from phoenix_recsys.data.scale import ScaleConfig, generate_scale_world, user_event_counts
from phoenix_recsys.data.schema import load_dataset

TINY = ScaleConfig(
    users=300, posts=2_000, events=30_000, heavy_users=3, heavy_events=3_000, popular_authors=2,
    popular_follow_p=0.5, follows_per_user=3, chunk_users=50, seed=7,
)  # fmt: skip


def test_tiny_scale_world_is_a_valid_skewed_dataset(tmp_path: Path) -> None:
    stats = generate_scale_world(tmp_path / "w", TINY)
    ds = load_dataset(tmp_path / "w")  # validates sorting, types, hashes
    assert ds.num_events == TINY.events and ds.posts.num_rows == TINY.posts
    users = ds.column("user_id")
    per_user = np.bincount(users, minlength=TINY.users)
    assert per_user[:3].tolist() == [3_000] * 3  # heavy users
    assert np.median(per_user[3:]) < 200  # the rest are light
    # popular authors are followed by roughly popular_follow_p of users
    fa = ds.column("author_id", "follows")
    followers = np.bincount(fa, minlength=2)[:2]
    assert (followers > 0.4 * TINY.users).all()
    # power-law post traffic: the top 1% of posts take far more than 1% of impressions
    pc = np.sort(np.bincount(ds.column("post_id"), minlength=TINY.posts))[::-1]
    assert pc[: TINY.posts // 100].sum() > 0.1 * TINY.events
    # every event's author is its post's author
    post_author = ds.column("author_id", "posts")
    assert (post_author[ds.column("post_id")] == ds.column("author_id")).all()
    # bounded memory: written in many row groups, none larger than the chunk bound
    meta = pq.ParquetFile(tmp_path / "w" / "events.parquet").metadata
    assert meta.num_row_groups > 3
    assert stats["max_chunk_events"] <= max(3_000, 1 << 20) and stats["max_chunk_events"] < TINY.events


def test_same_seed_same_bytes_and_counts_sum(tmp_path: Path) -> None:
    a = generate_scale_world(tmp_path / "a", TINY, load=False)
    b = generate_scale_world(tmp_path / "b", TINY, load=False)
    assert a == b
    assert (tmp_path / "a" / "events.parquet").read_bytes() == (tmp_path / "b" / "events.parquet").read_bytes()
    assert int(user_event_counts(TINY).sum()) == TINY.events


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="heavy_users"):
        ScaleConfig(users=10, posts=100, events=100, heavy_users=2, heavy_events=100)
    with pytest.raises(ValueError, match="engaged_p"):
        ScaleConfig(users=10, posts=100, events=100, heavy_users=0, popular_authors=0, engaged_p=2.0)
