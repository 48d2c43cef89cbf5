"""A scale world for load tests: 100k users x 1M posts x 10M impressions, streamed to Parquet.

`data.synth` builds its world in memory with known truth (good for quality, not for size). This
generator only needs realistic *shape*: who has how much history, whom people follow, which posts
get the traffic. It writes the standard dataset format (`data.schema`) in bounded memory: users are
generated `chunk_users` at a time and each chunk is appended as Parquet row groups, so the peak is
one chunk of events plus the per-post author array (8 bytes a post), whatever the total.

Skew (what makes a feed service's cost vary):
  * heavy users: `heavy_users` users get `heavy_events` lifetime events each (default 100k); the rest
    share the remaining events log-normally (many light users, a long tail).
  * popular authors: the first `popular_authors` authors are followed by each user with probability
    `popular_follow_p` (default 0.12 of 100k users = ~12k followers each); other follows are random.
  * popular posts: impressions pick post ids from a power law (low ids get most traffic).
Engagements: each binary action fires on an impression with probability `engaged_p` / 19-ish; a
continuous action (dwell time) is positive on engaged impressions only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from phoenix_recsys.actions import PHOENIX_ACTIONS, ActionKind, ActionVocabulary
from phoenix_recsys.data.schema import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_FILE,
    TABLE_FILES,
    Dataset,
    load_dataset,
)

_DAY = 86_400


@dataclasses.dataclass(frozen=True)
class ScaleConfig:
    """Sizes and skew of a scale world (defaults: the issue-13 size).

    Attributes:
      users / posts / events: totals (events = impressions rows).
      authors: distinct authors (default posts // 20).
      heavy_users / heavy_events: users with `heavy_events` lifetime events each.
      popular_authors / popular_follow_p: authors every user follows with this probability.
      follows_per_user: mean random follows per user (Poisson) besides the popular authors.
      engaged_p: probability that an impression has at least one binary action.
      post_power: post-popularity exponent (post id = posts * u**post_power; > 1 = more skew).
      span_days / start: the world's time span (seconds since the epoch for `start`).
      chunk_users: users generated per chunk (the memory bound).
      seed: everything is a function of it.
    """

    users: int = 100_000
    posts: int = 1_000_000
    events: int = 10_000_000
    authors: int | None = None
    heavy_users: int = 20
    heavy_events: int = 100_000
    popular_authors: int = 20
    popular_follow_p: float = 0.12
    follows_per_user: float = 20.0
    engaged_p: float = 0.15
    post_power: float = 3.0
    span_days: int = 30
    start: int = 1_700_000_000
    chunk_users: int = 2_000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("users", "posts", "events", "chunk_users", "span_days"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("heavy_users", "heavy_events", "popular_authors"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.heavy_users > self.users:
            raise ValueError(f"heavy_users ({self.heavy_users}) must be <= users ({self.users})")
        if self.heavy_users * self.heavy_events > self.events:
            raise ValueError(
                f"heavy_users * heavy_events ({self.heavy_users * self.heavy_events}) must be <= events ({self.events})"
            )
        if self.num_authors < 1 or self.num_authors > self.posts:
            raise ValueError(f"authors must be in [1, posts], got {self.num_authors}")
        if self.popular_authors > self.num_authors:
            raise ValueError(f"popular_authors ({self.popular_authors}) must be <= authors ({self.num_authors})")
        for name in ("popular_follow_p", "engaged_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.follows_per_user < 0 or self.post_power <= 0:
            raise ValueError("follows_per_user must be >= 0 and post_power > 0")

    @property
    def num_authors(self) -> int:
        """Authors (default posts // 20, at least 1)."""
        return self.authors if self.authors is not None else max(1, self.posts // 20)


def user_event_counts(cfg: ScaleConfig) -> np.ndarray:
    """`[users]` int64 lifetime events per user, summing to `cfg.events`; the first `heavy_users` are heavy."""
    rng = np.random.default_rng([cfg.seed, 1])
    counts = np.zeros(cfg.users, np.int64)
    counts[: cfg.heavy_users] = cfg.heavy_events
    rest = cfg.events - cfg.heavy_users * cfg.heavy_events
    light = cfg.users - cfg.heavy_users
    if light and rest:
        w = rng.lognormal(0.0, 1.2, light)
        share = np.floor(w / w.sum() * rest).astype(np.int64)
        # Hand the rounding remainder out one event each to random light users (no repeats).
        short = rest - int(share.sum())
        share[rng.choice(light, size=short, replace=False)] += 1
        counts[cfg.heavy_users :] = share
    elif rest:
        counts[0] += rest
    return counts


def _user_chunks(counts: np.ndarray, chunk_users: int, *, max_events: int) -> list[tuple[int, int]]:
    """`[lo, hi)` user ranges of at most `chunk_users` users and `max_events` events (a bigger user alone)."""
    out, lo, total = [], 0, 0
    for i, c in enumerate(counts.tolist()):
        if i > lo and (i - lo >= chunk_users or total + c > max_events):
            out.append((lo, i))
            lo, total = i, 0
        total += c
    out.append((lo, len(counts)))
    return out


def _writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    return pq.ParquetWriter(path, schema, compression="zstd")


def generate_scale_world(directory: str | os.PathLike[str], cfg: ScaleConfig, *, load: bool = True) -> dict[str, Any]:
    """Write the scale world to `directory` (a standard dataset) and return its stats.

    Args:
      directory: created if missing; dataset files in it are replaced.
      cfg: `ScaleConfig`.
      load: validate by loading it back with `load_dataset` (skip at full size: loading holds
        every event in memory, which is what this generator avoids).

    Returns:
      JSON-able stats: rows per table, the largest chunk held in memory, heavy users, follower
      counts of the popular authors.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    vocab: ActionVocabulary = PHOENIX_ACTIONS
    rng = np.random.default_rng([cfg.seed, 0])
    end = cfg.start + cfg.span_days * _DAY

    # Posts (8 bytes a post of author kept for the events; the rest streamed out in chunks).
    post_author = np.empty(cfg.posts, np.int64)
    post_created = np.empty(cfg.posts, np.int64)
    post_schema = pa.schema([("post_id", pa.int64()), ("author_id", pa.int64()), ("created_at", pa.int64())])
    chunk_posts = 262_144
    with _writer(out / TABLE_FILES["posts"], post_schema) as w:
        for lo in range(0, cfg.posts, chunk_posts):
            hi = min(cfg.posts, lo + chunk_posts)
            # Popular authors write more: a power law over author ids.
            a = np.minimum((cfg.num_authors * rng.random(hi - lo) ** 2).astype(np.int64), cfg.num_authors - 1)
            c = rng.integers(cfg.start, end, hi - lo, dtype=np.int64)
            post_author[lo:hi], post_created[lo:hi] = a, c
            w.write_table(
                pa.table({"post_id": np.arange(lo, hi, dtype=np.int64), "author_id": a, "created_at": c}, schema=post_schema)
            )

    counts = user_event_counts(cfg)
    ev_fields = [
        ("user_id", pa.int64()), ("post_id", pa.int64()), ("author_id", pa.int64()), ("timestamp", pa.int64()),
        ("product_surface", pa.int32()),
    ] + [(a.name, pa.bool_() if a.kind is ActionKind.BINARY else pa.float32()) for a in vocab]  # fmt: skip
    ev_schema = pa.schema(ev_fields)
    fo_schema = pa.schema([("user_id", pa.int64()), ("author_id", pa.int64())])
    binary = [a.name for a in vocab if a.kind is ActionKind.BINARY]
    # On an engaged impression each binary action fires with this probability (~3 of them on average).
    per_action = min(1.0, 3.0 / max(1, len(binary)))
    max_chunk = 0
    popular_followers = np.zeros(cfg.popular_authors, np.int64)
    n_follows = 0
    with _writer(out / TABLE_FILES["events"], ev_schema) as ew, _writer(out / TABLE_FILES["follows"], fo_schema) as fw:
        for ulo, uhi in _user_chunks(counts, cfg.chunk_users, max_events=1 << 20):
            n_u = counts[ulo:uhi]
            u = np.repeat(np.arange(ulo, uhi, dtype=np.int64), n_u)
            m = int(n_u.sum())
            max_chunk = max(max_chunk, m)
            if m:
                pid = np.minimum((cfg.posts * rng.random(m) ** cfg.post_power).astype(np.int64), cfg.posts - 1)
                ts = post_created[pid] + (rng.random(m) * (end - post_created[pid])).astype(np.int64)
                order = np.lexsort((ts, u))  # (user, time); chunks are user-disjoint and in user order
                cols: dict[str, Any] = {
                    "user_id": u[order], "post_id": pid[order], "author_id": post_author[pid][order],
                    "timestamp": ts[order], "product_surface": rng.integers(0, 4, m).astype(np.int32)[order],
                }  # fmt: skip
                engaged = rng.random(m) < cfg.engaged_p
                any_act = np.zeros(m, bool)
                for name in binary:
                    fire = engaged & (rng.random(m) < per_action)
                    cols[name] = fire[order]
                    any_act |= fire
                for a in vocab:
                    if a.kind is ActionKind.CONTINUOUS:
                        cols[a.name] = np.where(any_act, rng.exponential(20.0, m), 0.0).astype(np.float32)[order]
                ew.write_table(pa.table(cols, schema=ev_schema))
            # Follows: popular authors with popular_follow_p, plus Poisson random authors.
            k = uhi - ulo
            pop = rng.random((k, cfg.popular_authors)) < cfg.popular_follow_p
            popular_followers += pop.sum(axis=0)
            pu, pa_ = np.nonzero(pop)
            nr = rng.poisson(cfg.follows_per_user, k)
            ru = np.repeat(np.arange(k), nr)
            ra = rng.integers(0, cfg.num_authors, int(nr.sum()))
            fu = np.concatenate([pu, ru]).astype(np.int64) + ulo
            fa = np.concatenate([pa_, ra]).astype(np.int64)
            pairs = np.unique(np.stack([fu, fa], axis=1), axis=0) if fu.size else np.zeros((0, 2), np.int64)
            n_follows += pairs.shape[0]
            fw.write_table(pa.table({"user_id": pairs[:, 0], "author_id": pairs[:, 1]}, schema=fo_schema))

    _write_manifest(out, vocab, cfg, {"events": cfg.events, "posts": cfg.posts, "follows": n_follows})
    stats = {
        "users": cfg.users, "posts": cfg.posts, "events": cfg.events, "follows": n_follows,
        "max_chunk_events": max_chunk, "heavy_users": cfg.heavy_users, "heavy_events": cfg.heavy_events,
        "popular_author_followers_min": int(popular_followers.min()) if cfg.popular_authors else 0,
        "max_user_events": int(counts.max()), "median_user_events": float(np.median(counts)),
    }  # fmt: skip
    if load:
        ds: Dataset = load_dataset(out)
        stats["loaded_events"] = ds.num_events
    return stats


def _write_manifest(out: Path, vocab: ActionVocabulary, cfg: ScaleConfig, rows: dict[str, int]) -> None:
    """The manifest `load_dataset` checks, hashing each file in 8 MiB reads (never whole in memory)."""
    content = hashlib.sha256()
    tables: dict[str, Any] = {}
    for key in ("events", "posts", "follows"):
        path = out / TABLE_FILES[key]
        h = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(8 << 20):
                h.update(block)
                content.update(block)
        tables[key] = {"file": TABLE_FILES[key], "rows": rows[key], "sha256": h.hexdigest()}
    manifest = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "name": out.name, "source": "scale",
        "actions": vocab.to_json(), "tables": tables, "content_sha256": content.hexdigest(),
        "notes": {"scale_config": dataclasses.asdict(cfg)},
    }  # fmt: skip
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
