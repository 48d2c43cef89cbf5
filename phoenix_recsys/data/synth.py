"""A synthetic world with known engagement probabilities, for testing models against an oracle.

Generative story (docs/data.md has the long form):
  * T latent topics. Each author has a main topic and an 8-d taste vector; each post belongs to an
    author, has a topic mixture (mostly its author's topic), a quality, a creation time and
    photo/video flags.
  * Each user has an interest state `z_u in R^T` = slowly drifting base interests + a transient part
    that engagement feeds: engaging with a post adds (a weighted count of) its topic mixture, which
    then decays per request. So a user's past engagements predict the next ones -- the latent state a
    history-aware model can recover.
  * Users follow authors they like (sampled with probability rising with user-author affinity).
  * Users issue requests (sessions) at random times; each request shows a few posts drawn from a mix
    of followed authors, the user's current interests, popular and random posts that already exist.
  * For every impression every action of the 19 Phoenix actions is drawn independently from a known
    probability: `p_a = sigmoid(b_a + w_a * s)` with `s` = affinity + surface offset and affinity =
    topic match + user-author match + follow bonus + post quality; `w_a < 0` for negative actions, so
    they are likelier at low affinity. Biases `b_a` are calibrated on a pilot sample to realistic base
    rates (favorite ~3 %, reply ~0.4 %, report ~1e-4). `dwell_time` is Gamma-distributed with a known
    mean. The probabilities are stored as `p_<action>` columns; the latent factors in `world.npz`.

Everything is vectorised NumPy; the only Python loop runs over request ranks (a user's 1st, 2nd, ...
request), all users at once, because the interest state evolves between a user's requests.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from phoenix_recsys.actions import PHOENIX_ACTIONS, ActionKind, ActionVocabulary
from phoenix_recsys.data._progress import concat_ranges, progress_bar
from phoenix_recsys.data.schema import PRODUCT_SURFACE_VOCAB_SIZE, Dataset, prob_column, write_dataset

WORLD_FILE = "world.npz"

# Target base rates per impression (for gated actions: per eligible impression) and sensitivity w_a of
# each action's logit to the affinity. Values follow public descriptions of feed engagement: likes a
# few percent, replies and reposts well under one percent, reports around one in ten thousand.
_ACTION_TARGETS: dict[str, tuple[float, float]] = {
    "favorite": (0.03, 1.0),
    "reply": (0.004, 0.9),
    "repost": (0.005, 1.0),
    "photo_expand": (0.08, 0.5),  # photo posts only
    "click": (0.05, 0.7),
    "profile_click": (0.01, 0.8),
    "vqv": (0.25, 0.5),  # video posts only
    "share": (0.002, 0.8),
    "share_via_dm": (0.001, 0.8),
    "share_via_copy_link": (0.0005, 0.6),
    "dwell": (0.12, 0.6),
    "quote": (0.001, 0.8),
    "quoted_click": (0.002, 0.5),
    "follow_author": (0.002, 1.0),  # authors not yet followed only
    "not_interested": (0.004, -1.0),
    "block_author": (0.0003, -1.2),
    "mute_author": (0.0004, -1.0),
    "report": (0.0001, -0.8),
}
# How much each action feeds the user's transient interest in the post's topics (negative feedback
# pushes the topic away).
_ENGAGEMENT_WEIGHTS: dict[str, float] = {
    "favorite": 1.0,
    "reply": 1.0,
    "repost": 1.0,
    "quote": 1.0,
    "share": 0.7,
    "share_via_dm": 0.7,
    "share_via_copy_link": 0.5,
    "click": 0.5,
    "profile_click": 0.3,
    "dwell": 0.3,
    "follow_author": 0.5,
    "not_interested": -1.5,
    "block_author": -1.5,
    "mute_author": -1.5,
    "report": -1.5,
}
SOURCES = ("followed", "topic", "popular", "random")
"""Impression sources, in the order of `SynthConfig.source_mix` and the `synth_source` column."""
# Surface 0 home feed, 1 following tab, 2 search, 3 profile, 4 notifications; the rest unused.
_SURFACE_PROBS = np.array([0.6, 0.2, 0.1, 0.05, 0.05])
_SURFACE_OFFSETS = np.array([0.0, 0.3, 0.2, -0.2, 0.1])
_TASTE_DIM = 8


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SynthConfig:
    """Sizes and knobs of a synthetic world.

    Attributes:
      num_users / num_posts: entity counts; ids are 0..N-1.
      num_authors: defaults to max(5, num_posts // 20).
      num_topics: T, the latent dimension.
      impressions_per_user: mean impressions per user (activity is log-normal, so some users see far
        more); the total is about num_users * impressions_per_user.
      mean_request_size: mean impressions per request (1 + Poisson).
      follows_per_user: mean out-degree of the follow graph.
      days / start_time: the simulated period; posts are created from half a period before it.
      seed: everything is a deterministic function of the config.
      num_snapshots: the user state is saved at this many evenly spaced times (plus the start), so
        `true_affinity(..., at_time=t)` can use the state of that time.
      engagement_lr / transient_decay / drift_std: interest dynamics per request: engagement adds
        `engagement_lr * weight * topics(post)`, the transient part decays by `transient_decay`, the
        base interests take a random-walk step of `drift_std`.
      source_mix: probabilities of the impression sources `SOURCES`.
      w_topic / w_author / w_follow / w_quality: weights of the affinity terms.
    """

    num_users: int = 1000
    num_posts: int = 5000
    num_authors: int | None = None
    num_topics: int = 16
    impressions_per_user: float = 20.0
    mean_request_size: float = 8.0
    follows_per_user: float = 8.0
    days: float = 28.0
    start_time: int = 1_704_067_200  # 2024-01-01T00:00:00Z
    seed: int = 0
    num_snapshots: int = 8
    engagement_lr: float = 0.3
    transient_decay: float = 0.85
    drift_std: float = 0.05
    source_mix: tuple[float, float, float, float] = (0.35, 0.25, 0.2, 0.2)
    w_topic: float = 1.0
    w_author: float = 0.7
    w_follow: float = 1.0
    w_quality: float = 0.5

    def __post_init__(self) -> None:
        for f in ("num_users", "num_posts", "num_topics", "num_snapshots"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"SynthConfig.{f} must be an int >= 1, got {v!r}")
        if self.num_authors is not None and (not isinstance(self.num_authors, int) or self.num_authors < 1):
            raise ValueError(f"SynthConfig.num_authors must be an int >= 1 or None, got {self.num_authors!r}")
        if not self.impressions_per_user > 0:
            raise ValueError(
                f"SynthConfig.impressions_per_user must be > 0, got {self.impressions_per_user!r}"
            )
        if not self.mean_request_size >= 1:
            raise ValueError(f"SynthConfig.mean_request_size must be >= 1, got {self.mean_request_size!r}")
        if not self.follows_per_user >= 0:
            raise ValueError(f"SynthConfig.follows_per_user must be >= 0, got {self.follows_per_user!r}")
        if not self.days > 0:
            raise ValueError(f"SynthConfig.days must be > 0, got {self.days!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"SynthConfig.seed must be a non-negative int, got {self.seed!r}")
        if self.start_time < 0:
            raise ValueError(f"SynthConfig.start_time must be >= 0, got {self.start_time!r}")
        mix = np.asarray(self.source_mix, dtype=float)
        if mix.shape != (4,) or (mix < 0).any() or not np.isclose(mix.sum(), 1.0):
            raise ValueError(
                f"SynthConfig.source_mix must be 4 non-negative weights summing to 1, got {self.source_mix!r}"
            )
        if not 0 <= self.transient_decay <= 1:
            raise ValueError(f"SynthConfig.transient_decay must be in [0, 1], got {self.transient_decay!r}")

    @property
    def authors(self) -> int:
        """The number of authors, default applied."""
        return self.num_authors if self.num_authors is not None else max(5, self.num_posts // 20)

    @property
    def end_time(self) -> int:
        """End of the simulated period (exclusive), seconds."""
        return self.start_time + int(round(self.days * 86400))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (stored in the manifest notes and world.npz)."""
        d = dataclasses.asdict(self)
        d["source_mix"] = list(self.source_mix)
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SynthConfig:
        """Inverse of `to_json`."""
        d = dict(data)
        if "source_mix" in d:
            d["source_mix"] = tuple(d["source_mix"])
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class World:
    """The latent truth of a synthetic dataset (saved as `world.npz` beside the Parquet files).

    Axes: U users, P posts, N_a authors, T topics, K snapshots, A actions (the Phoenix 19).

    Attributes:
      config: the generating config.
      snapshot_times: `[K]` int64; `user_state[k]` is the interest state after every request that
        started before `snapshot_times[k]` (index 0 = initial state, last = final state).
      user_state: `[K, U, T]` float32.
      user_taste: `[U, 8]`, author_taste `[N_a, 8]`: the user-author match is their dot product.
      author_topic: `[N_a]` int32 main topic.
      post_author: `[P]` int64; post_topics `[P, T]` float32 mixture; post_quality `[P]`;
      post_created: `[P]` int64 seconds; post_has_photo `[P]` bool; post_video_duration `[P]` s (0 = no video).
      follow_users / follow_authors: `[F]` sorted unique follow pairs.
      surface_offset: `[16]` added to the affinity per product surface.
      action_bias / action_weight: `[A]` per-action logit `b_a + w_a * s` (0 for dwell_time).
      dwell_scale: seconds; E[dwell_time] = dwell_scale * (0.5 + 1.5 sigmoid(s)) * (1 + has_video).
    """

    config: SynthConfig
    snapshot_times: np.ndarray
    user_state: np.ndarray
    user_taste: np.ndarray
    author_taste: np.ndarray
    author_topic: np.ndarray
    post_author: np.ndarray
    post_topics: np.ndarray
    post_quality: np.ndarray
    post_created: np.ndarray
    post_has_photo: np.ndarray
    post_video_duration: np.ndarray
    follow_users: np.ndarray
    follow_authors: np.ndarray
    surface_offset: np.ndarray
    action_bias: np.ndarray
    action_weight: np.ndarray
    dwell_scale: float = 6.0

    _ARRAYS = (
        "snapshot_times", "user_state", "user_taste", "author_taste", "author_topic", "post_author",
        "post_topics", "post_quality", "post_created", "post_has_photo", "post_video_duration",
        "follow_users", "follow_authors", "surface_offset", "action_bias", "action_weight",
    )  # fmt: skip

    @property
    def actions(self) -> ActionVocabulary:
        """The vocabulary of the world's actions: the 19 Phoenix actions."""
        return PHOENIX_ACTIONS

    @property
    def num_users(self) -> int:
        """U."""
        return int(self.user_state.shape[1])

    @property
    def num_posts(self) -> int:
        """P."""
        return int(self.post_author.shape[0])

    def state_at(self, at_time: int | None = None) -> np.ndarray:
        """`[U, T]` interest state at `at_time` (the latest snapshot not after it); None = final."""
        if at_time is None:
            return self.user_state[-1]
        k = int(np.searchsorted(self.snapshot_times, at_time, side="right")) - 1
        return self.user_state[max(k, 0)]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write `world.npz` (arrays plus the config as JSON)."""
        arrays = {name: getattr(self, name) for name in self._ARRAYS}
        meta = json.dumps({"config": self.config.to_json(), "dwell_scale": self.dwell_scale})
        np.savez_compressed(path, meta=np.array(meta), **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> World:
        """Read a world from `world.npz` or from a dataset directory holding one."""
        p = Path(path)
        if p.is_dir():
            p = p / WORLD_FILE
        if not p.is_file():
            raise ValueError(f"{p}: no synthetic world file (only `data synth` datasets have one)")
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {name: z[name] for name in cls._ARRAYS}
        return cls(config=SynthConfig.from_json(meta["config"]), dwell_scale=meta["dwell_scale"], **arrays)


# -- the truth: affinities and action probabilities ------------------------------------------


def _check_ids(ids: np.ndarray, n: int, what: str) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    bad = np.flatnonzero((ids < 0) | (ids >= n))
    if bad.size:
        raise ValueError(f"{what} {int(ids[bad[0]])} is not in this world (ids are 0..{n - 1})")
    return ids


def _follow_lookup(world: World, users: np.ndarray, authors: np.ndarray) -> np.ndarray:
    """`[N]` bool: does users[i] follow authors[i]? (binary search in the sorted pair keys)."""
    na = np.int64(world.author_taste.shape[0])
    keys = world.follow_users.astype(np.int64) * na + world.follow_authors
    q = users.astype(np.int64) * na + authors
    if keys.size == 0:
        return np.zeros(q.shape, dtype=bool)
    idx = np.minimum(np.searchsorted(keys, q), keys.size - 1)
    return keys[idx] == q


def _pair_affinity(
    world: World, state: np.ndarray, users: np.ndarray, posts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Affinity `[N]` and follow flag `[N]` of aligned (user, post) pairs; `state` is `[N, T]` rows."""
    c = world.config
    authors = world.post_author[posts]
    topic = np.einsum("nt,nt->n", state, world.post_topics[posts])
    taste = np.einsum("nd,nd->n", world.user_taste[users], world.author_taste[authors])
    follow = _follow_lookup(world, users, authors)
    aff = (
        c.w_topic * topic + c.w_author * taste + c.w_follow * follow + c.w_quality * world.post_quality[posts]
    )
    return aff.astype(np.float32), follow


def true_affinity(
    world: World, user_ids: np.ndarray, post_ids: np.ndarray, *, at_time: int | None = None
) -> np.ndarray:
    """The true affinity matrix `[U_q, P_q]` float32 of every (user, post) pair.

    `p_favorite = sigmoid(b + w * (affinity + surface_offset))` with w > 0, so for a fixed user and
    surface, sorting posts by affinity is sorting them by true favourite probability: this is the
    oracle retrieval ranking. Memory is U_q * P_q floats; chunk the users for big corpora.

    Args:
      world: the synthetic world.
      user_ids: `[U_q]` user ids; post_ids: `[P_q]` post ids.
      at_time: use the interest state of this time (snapshot resolution); None = the final state.
    """
    c = world.config
    users = _check_ids(user_ids, world.num_users, "user_id")
    posts = _check_ids(post_ids, world.num_posts, "post_id")
    state = world.state_at(at_time)[users]
    authors = world.post_author[posts]
    aff = c.w_topic * (state @ world.post_topics[posts].T)
    aff += c.w_author * (world.user_taste[users] @ world.author_taste[authors].T)
    aff += (c.w_quality * world.post_quality[posts])[None, :]
    if world.follow_users.size:
        # Dense [U_q, N_a] follow indicator of the queried users, then gathered per post.
        pos = np.searchsorted(world.follow_users, users)
        cnt = np.searchsorted(world.follow_users, users, side="right") - pos
        dense = np.zeros((users.size, world.author_taste.shape[0]), dtype=np.float32)
        dense[np.repeat(np.arange(users.size), cnt), world.follow_authors[concat_ranges(pos, cnt)]] = 1.0
        aff += c.w_follow * dense[:, authors]
    return aff.astype(np.float32)


def _probs_from_affinity(
    world: World, aff: np.ndarray, follow: np.ndarray, posts: np.ndarray, surface: np.ndarray
) -> np.ndarray:
    """`[N, A]` true probabilities (binary) / expected values (dwell_time) from affinities."""
    s = aff + world.surface_offset[surface]
    logits = world.action_bias[None, :] + world.action_weight[None, :] * s[:, None]
    p = 1.0 / (1.0 + np.exp(-logits))
    names = PHOENIX_ACTIONS.names
    p[:, names.index("photo_expand")] *= world.post_has_photo[posts]
    has_video = world.post_video_duration[posts] > 0
    p[:, names.index("vqv")] *= has_video
    p[:, names.index("follow_author")] *= ~follow
    sig = 1.0 / (1.0 + np.exp(-s))
    p[:, names.index("dwell_time")] = world.dwell_scale * (0.5 + 1.5 * sig) * (1.0 + has_video)
    return p.astype(np.float32)


def true_action_probs(
    world: World,
    user_ids: np.ndarray,
    post_ids: np.ndarray,
    product_surface: np.ndarray | int = 0,
    *,
    at_time: int | None = None,
) -> np.ndarray:
    """True action probabilities `[N, A]` of aligned (user, post, surface) triples.

    Binary actions get their probability, `dwell_time` its expected value in seconds. This is the
    function the generator draws from (with the state of the moment), so for events of a user's
    first request `true_action_probs(..., at_time=config.start_time)` equals the stored `p_*`.
    """
    users = _check_ids(user_ids, world.num_users, "user_id")
    posts = _check_ids(post_ids, world.num_posts, "post_id")
    if users.shape != posts.shape:
        raise ValueError(f"user_ids and post_ids must align, got {users.shape} and {posts.shape}")
    surf = np.broadcast_to(np.asarray(product_surface, dtype=np.int64), users.shape)
    state = world.state_at(at_time)[users]
    aff, follow = _pair_affinity(world, state, users, posts)
    return _probs_from_affinity(world, aff, follow, posts, surf)


# -- generation -------------------------------------------------------------------------------


class _PostSampler:
    """Vectorised draws of posts that exist at given times, from the four impression sources."""

    def __init__(self, world: World, follow_indptr: np.ndarray):
        self.w = world
        created = world.post_created
        self.by_time = np.argsort(created, kind="stable")
        self.created_sorted = created[self.by_time]
        # Popular: probability proportional to exp(quality) among existing posts.
        self.cum_weight = np.cumsum(np.exp(world.post_quality[self.by_time]).astype(np.float64))
        self.rel = created - created.min() + 1  # keys stay positive and < 2**34
        self.topic_main = world.post_topics.argmax(axis=1)
        self.topic_order, self.topic_keys, self.topic_start = self._groups(
            self.topic_main, world.config.num_topics
        )
        na = world.author_taste.shape[0]
        self.author_order, self.author_keys, self.author_start = self._groups(world.post_author, na)
        self.follow_indptr = follow_indptr

    def _groups(self, group: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order = np.lexsort((self.rel, group))
        keys = group[order].astype(np.int64) * (1 << 34) + self.rel[order]
        start = np.searchsorted(group[order], np.arange(n))
        return order, keys, start

    def _rel_time(self, t: np.ndarray) -> np.ndarray:
        return t - self.w.post_created.min() + 1

    def random(self, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A uniformly drawn existing post per time."""
        n_avail = np.searchsorted(self.created_sorted, t, side="left")
        idx = np.floor(rng.random(t.size) * n_avail).astype(np.int64)
        return self.by_time[np.minimum(idx, np.maximum(n_avail - 1, 0))]

    def popular(self, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """An existing post per time, drawn proportionally to exp(quality)."""
        n_avail = np.searchsorted(self.created_sorted, t, side="left")
        total = self.cum_weight[np.maximum(n_avail - 1, 0)]
        idx = np.searchsorted(self.cum_weight, rng.random(t.size) * total, side="right")
        return self.by_time[np.minimum(idx, np.maximum(n_avail - 1, 0))]

    def _recent_in_group(
        self, g: np.ndarray, t: np.ndarray, order, keys, start, rng
    ) -> tuple[np.ndarray, np.ndarray]:
        """A recency-biased existing post of group g[i] at t[i]; ok=False where the group has none."""
        hi = np.searchsorted(keys, g.astype(np.int64) * (1 << 34) + self._rel_time(t), side="left")
        n = hi - start[g]
        # u**2 concentrates on small offsets from the newest post: fresh posts are shown more.
        back = np.floor(n * rng.random(g.size) ** 2).astype(np.int64)
        pos = np.clip(hi - 1 - back, 0, order.size - 1)
        return order[pos], n > 0

    def topic(
        self, state: np.ndarray, t: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """A recent post of a topic drawn from softmax(state) per row; ok=False if none exists yet."""
        gumbel = -np.log(-np.log(rng.random(state.shape) + 1e-12) + 1e-12)
        k = np.argmax(state + gumbel, axis=1)  # a topic drawn from softmax(state)
        return self._recent_in_group(k, t, self.topic_order, self.topic_keys, self.topic_start, rng)

    def followed(
        self, users: np.ndarray, t: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """A recent post of a random followed author per user; ok=False without follows/posts."""
        lo, hi = self.follow_indptr[users], self.follow_indptr[users + 1]
        deg = hi - lo
        j = lo + np.floor(rng.random(users.size) * deg).astype(np.int64)
        has = deg > 0
        if self.w.follow_authors.size == 0:
            return np.zeros(users.size, dtype=np.int64), np.zeros(users.size, dtype=bool)
        authors = np.where(has, self.w.follow_authors[np.minimum(j, self.w.follow_authors.size - 1)], 0)
        posts, ok = self._recent_in_group(
            authors, t, self.author_order, self.author_keys, self.author_start, rng
        )
        return posts, ok & has


def _calibrate(
    world_partial: World, sampler: _PostSampler, rng: np.random.Generator, n: int = 20_000
) -> np.ndarray:
    """Per-action biases `[A]` that hit the target base rates on a pilot of initial-state impressions."""
    c = world_partial.config
    users = rng.integers(0, c.num_users, n)
    t = rng.integers(c.start_time, c.end_time, n)
    state = world_partial.user_state[0][users]
    posts = _draw_posts(sampler, users, state, t, rng, c.source_mix)[0]
    surface = rng.choice(_SURFACE_PROBS.size, size=n, p=_SURFACE_PROBS)
    aff, follow = _pair_affinity(world_partial, state, users, posts)
    s = aff + world_partial.surface_offset[surface]
    names = PHOENIX_ACTIONS.names
    eligible = {
        "photo_expand": world_partial.post_has_photo[posts],
        "vqv": world_partial.post_video_duration[posts] > 0,
        "follow_author": ~follow,
    }
    bias = np.zeros(len(names))
    for a, (target, weight) in _ACTION_TARGETS.items():
        m = eligible.get(a)
        sa = s if m is None or not m.any() else s[m]
        lo, hi = -25.0, 10.0
        for _ in range(50):  # bisection: mean sigmoid is monotone in the bias
            mid = 0.5 * (lo + hi)
            rate = np.mean(1.0 / (1.0 + np.exp(-(mid + weight * sa))))
            lo, hi = (mid, hi) if rate < target else (lo, mid)
        bias[names.index(a)] = 0.5 * (lo + hi)
    return bias.astype(np.float32)


def _draw_posts(sampler: _PostSampler, users, state, t, rng, mix) -> tuple[np.ndarray, np.ndarray]:
    """Posts `[n]` and their source codes `[n]` for impressions of `users` at times `t`."""
    n = users.size
    src = rng.choice(4, size=n, p=np.asarray(mix))
    posts = sampler.random(t, rng)
    pop = sampler.popular(t, rng)
    top, top_ok = sampler.topic(state, t, rng)
    fol, fol_ok = sampler.followed(users, t, rng)
    # A source with nothing to offer (no follows, no post of the topic yet) falls back to random.
    src = np.where((src == 0) & ~fol_ok, 3, src)
    src = np.where((src == 1) & ~top_ok, 3, src)
    posts = np.select([src == 0, src == 1, src == 2], [fol, top, pop], posts)
    return posts.astype(np.int64), src.astype(np.int8)


def generate_world(config: SynthConfig, *, progress: bool = False) -> tuple[World, dict, dict, dict]:
    """Draw a world and its logs.

    Returns:
      (world, events, posts, follows): the latent truth and the three tables as column dicts, ready
      for `write_dataset` (events in per-user time order; ties in impression order).
    """
    c = config
    ss = np.random.SeedSequence(c.seed)
    # One generator per stage: changing how much one stage draws leaves the others' draws alone.
    r_auth, r_post, r_user, r_fol, r_sess, r_cal, r_sim = (np.random.default_rng(s) for s in ss.spawn(7))
    U, P, A, T = c.num_users, c.num_posts, c.authors, c.num_topics
    duration = c.end_time - c.start_time

    author_topic = r_auth.integers(0, T, A).astype(np.int32)
    author_taste = (r_auth.standard_normal((A, _TASTE_DIM)) / np.sqrt(_TASTE_DIM)).astype(np.float32)
    author_activity = r_auth.lognormal(0.0, 1.0, A)

    post_author = r_post.choice(A, size=P, p=author_activity / author_activity.sum()).astype(np.int64)
    own = r_post.random(P) < 0.8
    main = np.where(own, author_topic[post_author], r_post.integers(0, T, P))
    post_topics = 0.25 * r_post.dirichlet(np.full(T, 0.5), size=P)
    post_topics[np.arange(P), main] += 0.75
    post_topics = post_topics.astype(np.float32)
    post_quality = r_post.standard_normal(P).astype(np.float32)
    created = r_post.integers(c.start_time - duration // 2, c.end_time, P)
    # A backlog of posts older than the first request, so every request has something to show.
    n_old = max(1, P // 5)
    created[:n_old] = r_post.integers(c.start_time - duration // 2, c.start_time, n_old)
    photo = r_post.random(P) < 0.35
    video = (~photo) & (r_post.random(P) < 0.35)
    video_duration = np.where(video, r_post.lognormal(np.log(30.0), 0.8, P), 0.0).astype(np.float32)

    base = (0.6 * r_user.standard_normal((U, T))).astype(np.float32)
    fav1, fav2 = r_user.integers(0, T, U), r_user.integers(0, T, U)
    base[np.arange(U), fav1] += 2.0
    base[np.arange(U), fav2] += 1.2
    user_taste = (r_user.standard_normal((U, _TASTE_DIM)) / np.sqrt(_TASTE_DIM)).astype(np.float32)
    activity = r_user.lognormal(0.0, 0.7, U)
    activity /= activity.mean()
    n_impr = np.clip(np.round(c.impressions_per_user * activity), 1, 20 * c.impressions_per_user).astype(
        np.int64
    )

    # Follows: Gumbel-top-k over popularity-drawn candidate authors, scored by user-author affinity.
    n_cand = min(A, 64)
    deg = np.minimum(r_fol.poisson(c.follows_per_user, U), n_cand)
    cand = r_fol.choice(A, size=(U, n_cand), p=author_activity / author_activity.sum())
    score = base[np.arange(U)[:, None], author_topic[cand]] * c.w_topic
    score += c.w_author * np.einsum("ud,ucd->uc", user_taste, author_taste[cand])
    score += -np.log(-np.log(r_fol.random((U, n_cand)) + 1e-12) + 1e-12)
    srt = np.sort(cand, axis=1)  # mark duplicate candidates so each author is followed once
    dup_sorted = np.zeros_like(srt, dtype=bool)
    dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
    order_c = np.argsort(cand, axis=1, kind="stable")
    dup = np.zeros_like(dup_sorted)
    np.put_along_axis(dup, order_c, dup_sorted, axis=1)
    score[dup] = -np.inf
    rank = np.argsort(-score, axis=1, kind="stable")
    take = np.arange(n_cand)[None, :] < deg[:, None]
    take &= np.isfinite(np.take_along_axis(score, rank, axis=1))
    fu = np.repeat(np.arange(U), take.sum(axis=1))
    fa = np.take_along_axis(cand, rank, axis=1)[take]
    order_f = np.lexsort((fa, fu))
    follow_users, follow_authors = fu[order_f].astype(np.int64), fa[order_f].astype(np.int64)
    follow_indptr = np.concatenate([[0], np.cumsum(np.bincount(follow_users, minlength=U))]).astype(np.int64)

    n_snap = c.num_snapshots
    snap_times = (c.start_time + np.round(np.arange(n_snap + 1) * duration / n_snap)).astype(np.int64)
    world = World(
        config=c,
        snapshot_times=snap_times,
        user_state=np.broadcast_to(base, (n_snap + 1, U, T)).copy(),
        user_taste=user_taste,
        author_taste=author_taste,
        author_topic=author_topic,
        post_author=post_author,
        post_topics=post_topics,
        post_quality=post_quality,
        post_created=created.astype(np.int64),
        post_has_photo=photo,
        post_video_duration=video_duration,
        follow_users=follow_users,
        follow_authors=follow_authors,
        surface_offset=np.concatenate(
            [_SURFACE_OFFSETS, np.zeros(PRODUCT_SURFACE_VOCAB_SIZE - _SURFACE_OFFSETS.size)]
        ).astype(np.float32),
        action_bias=np.zeros(len(PHOENIX_ACTIONS), dtype=np.float32),
        action_weight=np.zeros(len(PHOENIX_ACTIONS), dtype=np.float32),
    )
    names = PHOENIX_ACTIONS.names
    weight = np.zeros(len(names), dtype=np.float32)
    for a, (_, w) in _ACTION_TARGETS.items():
        weight[names.index(a)] = w
    world = dataclasses.replace(world, action_weight=weight)
    sampler = _PostSampler(world, follow_indptr)
    world = dataclasses.replace(world, action_bias=_calibrate(world, sampler, r_cal))

    # Requests: count per user, times uniform over the period, sorted per user.
    n_req = np.maximum(1, np.round(n_impr / c.mean_request_size)).astype(np.int64)
    req_user = np.repeat(np.arange(U), n_req)
    req_time = r_sess.integers(c.start_time, c.end_time, req_user.size)
    order = np.lexsort((req_time, req_user))
    req_user, req_time = req_user[order], req_time[order]
    req_size = 1 + r_sess.poisson(c.mean_request_size - 1, req_user.size)
    req_surface = r_sess.choice(_SURFACE_PROBS.size, size=req_user.size, p=_SURFACE_PROBS)
    first = np.concatenate([[0], np.cumsum(n_req)[:-1]])
    req_rank = np.arange(req_user.size) - np.repeat(first, n_req)
    req_id = np.arange(req_user.size, dtype=np.int64)  # in (user, time) order
    by_rank = np.argsort(req_rank, kind="stable")
    rank_bounds = np.searchsorted(req_rank[by_rank], np.arange(req_rank.max() + 2))

    transient = np.zeros((U, T), dtype=np.float32)
    base_now = base.copy()
    state = base.copy()
    snaps = world.user_state
    eng_w = np.zeros(len(names), dtype=np.float32)
    for a, w in _ENGAGEMENT_WEIGHTS.items():
        eng_w[names.index(a)] = w
    bin_idx = np.array(PHOENIX_ACTIONS.binary_indices)
    dwell_col = names.index("dwell_time")
    out: dict[str, list[np.ndarray]] = {
        k: [] for k in ("user", "post", "ts", "surface", "req", "src", "y", "p")
    }

    n_steps = len(rank_bounds) - 2
    with progress_bar("synth: simulating requests", total=n_steps, enabled=progress) as advance:
        for r in range(n_steps):
            reqs = by_rank[rank_bounds[r] : rank_bounds[r + 1]]
            if reqs.size == 0:
                advance()
                continue
            users_r = req_user[reqs]
            sizes = req_size[reqs]
            imp_req = np.repeat(np.arange(reqs.size), sizes)
            users = users_r[imp_req]
            # Impressions of a request are a few seconds apart, often in the same second (ties).
            inc = r_sim.integers(0, 3, imp_req.size)
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            inc[starts] = 0
            csum = np.cumsum(inc)
            t = req_time[reqs][imp_req] + csum - csum[starts][imp_req]
            st = state[users]
            posts, src = _draw_posts(sampler, users, st, t, r_sim, c.source_mix)
            surface = req_surface[reqs][imp_req]
            aff, follow = _pair_affinity(world, st, users, posts)
            p = _probs_from_affinity(world, aff, follow, posts, surface)
            y = np.zeros_like(p)
            y[:, bin_idx] = r_sim.random((users.size, bin_idx.size)) < p[:, bin_idx]
            # Gamma(shape 2) with the stated mean: positive, right-skewed like real dwell times.
            y[:, dwell_col] = r_sim.gamma(2.0, p[:, dwell_col] / 2.0)
            e = y @ eng_w
            contrib = np.add.reduceat(e[:, None] * world.post_topics[posts], starts, axis=0)
            transient[users_r] = c.transient_decay * transient[users_r] + c.engagement_lr * contrib
            base_now[users_r] += c.drift_std * r_sim.standard_normal((users_r.size, T)).astype(np.float32)
            state[users_r] = base_now[users_r] + transient[users_r]
            rt = req_time[reqs]
            for k in range(1, n_snap + 1):
                m = rt < snap_times[k]
                snaps[k, users_r[m]] = state[users_r[m]]
            for key, val in (
                ("user", users),
                ("post", posts),
                ("ts", t),
                ("surface", surface),
                ("req", req_id[reqs][imp_req]),
                ("src", src),
                ("y", y),
                ("p", p),
            ):
                out[key].append(val)
            advance()

    cat = {k: np.concatenate(v) for k, v in out.items()}
    # Concatenated by rank; restore per-user time order (ties keep impression order).
    order = np.lexsort((np.arange(cat["ts"].size), cat["ts"], cat["user"]))
    cat = {k: v[order] for k, v in cat.items()}
    events: dict[str, np.ndarray] = {
        "user_id": cat["user"].astype(np.int64),
        "post_id": cat["post"],
        "author_id": post_author[cat["post"]],
        "timestamp": cat["ts"].astype(np.int64),
        "product_surface": cat["surface"].astype(np.int32),
        "request_id": cat["req"],
    }
    for j, a in enumerate(PHOENIX_ACTIONS):
        col = cat["y"][:, j]
        events[a.name] = col > 0.5 if a.kind is ActionKind.BINARY else col.astype(np.float32)
    for j, a in enumerate(PHOENIX_ACTIONS):
        events[prob_column(a.name)] = cat["p"][:, j].astype(np.float32)
    events["synth_source"] = cat["src"]
    posts_t = {
        "post_id": np.arange(P, dtype=np.int64),
        "author_id": post_author,
        "created_at": created.astype(np.int64),
        "video_duration": video_duration,
        "has_photo": photo,
        "topic": main.astype(np.int32),
    }
    follows_t = {"user_id": follow_users, "author_id": follow_authors}
    return world, events, posts_t, follows_t


def synthesize(
    out_dir: str | os.PathLike[str], config: SynthConfig, *, progress: bool = False, name: str | None = None
) -> Dataset:
    """Generate a synthetic world, write it as a dataset directory (plus `world.npz`) and load it.

    Args:
      out_dir: the dataset directory to write.
      config: sizes and seed; the result is a deterministic function of it.
      progress: show a Rich progress bar for the simulation.
      name: dataset name for the manifest (default `synth-<users>u-<posts>p-s<seed>`).
    """
    world, events, posts, follows = generate_world(config, progress=progress)
    notes = {
        "generator": "phoenix_recsys.data.synth",
        "config": config.to_json(),
        "world_file": WORLD_FILE,
        "ids": "user ids 0..U-1, post ids 0..P-1, author ids 0..N_a-1 (authors are not users)",
        "synth_source": {str(i): s for i, s in enumerate(SOURCES)},
        "product_surface": "0 home, 1 following, 2 search, 3 profile, 4 notifications",
        "p_columns": "true probability per impression; for dwell_time the true expected value (s)",
        "follows": "static graph at the start; follow_author actions do not add to it",
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world.save(out / WORLD_FILE)
    ds = write_dataset(
        out,
        events,
        posts,
        follows,
        PHOENIX_ACTIONS,
        name=name or f"synth-{config.num_users}u-{config.num_posts}p-s{config.seed}",
        source="synthetic",
        notes=notes,
    )
    return ds


def load_world(dataset: Dataset | str | os.PathLike[str]) -> World:
    """The `World` of a synthetic dataset (a `Dataset` or its directory)."""
    return World.load(dataset.path if isinstance(dataset, Dataset) else dataset)
