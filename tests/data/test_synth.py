"""Synthetic world: determinism, empirical rates vs the stated probabilities, dynamics, the oracle."""

from __future__ import annotations

import time

import numpy as np
import pytest

from phoenix_recsys.actions import PHOENIX_ACTIONS
from phoenix_recsys.data.schema import load_dataset
from phoenix_recsys.data.synth import (
    SynthConfig,
    World,
    load_world,
    synthesize,
    true_action_probs,
    true_affinity,
)


def test_deterministic_for_a_seed(tmp_path, tiny_synth):
    cfg = SynthConfig(num_users=60, num_posts=300, impressions_per_user=30, seed=7)
    again = synthesize(tmp_path / "again", cfg)
    assert again.manifest["content_sha256"] == tiny_synth.manifest["content_sha256"]
    w1, w2 = load_world(tiny_synth), load_world(again)
    for name in World._ARRAYS:
        np.testing.assert_array_equal(getattr(w1, name), getattr(w2, name), err_msg=name)
    other = synthesize(
        tmp_path / "other", SynthConfig(num_users=60, num_posts=300, impressions_per_user=30, seed=8)
    )
    assert other.manifest["content_sha256"] != tiny_synth.manifest["content_sha256"]


def test_layout_and_vocabulary(tiny_synth):
    ds = load_dataset(tiny_synth.path)
    assert ds.actions == PHOENIX_ACTIONS and ds.has_true_probs
    assert "request_id" in ds.events.column_names
    assert (ds.path / "world.npz").is_file()
    assert ds.column("user_id").max() < 60 and ds.posts.num_rows == 300
    # Every impression shows a post that already exists.
    created = ds.column("created_at", "posts")[ds.column("post_id")]
    assert (created < ds.column("timestamp")).all()
    assert (ds.column("dwell_time") >= 0).all()


def test_empirical_rates_match_stated_probabilities(medium_synth):
    y = medium_synth.action_matrix().astype(np.float64)
    p = medium_synth.true_prob_matrix().astype(np.float64)
    checked = 0
    for j, a in enumerate(PHOENIX_ACTIONS):
        if a.kind.value == "binary":
            mass = p[:, j].sum()
            if mass < 30:  # too rare for a meaningful test at this size
                continue
            sd = np.sqrt((p[:, j] * (1 - p[:, j])).sum())
            z = (y[:, j].sum() - mass) / sd
        else:
            # Gamma(shape 2) with mean mu has variance mu**2 / 2.
            sd = np.sqrt((p[:, j] ** 2 / 2).sum())
            z = (y[:, j].sum() - p[:, j].sum()) / sd
        checked += 1
        assert abs(z) < 4.5, f"{a.name}: empirical total deviates from the stated probabilities by {z:.1f} sd"
    assert checked >= 12


def test_base_rates_are_realistic(medium_synth):
    y = medium_synth.action_matrix()
    rate = dict(zip(PHOENIX_ACTIONS.names, y.mean(axis=0), strict=True))
    assert 0.01 < rate["favorite"] < 0.08
    assert rate["reply"] < rate["favorite"] and rate["repost"] < rate["favorite"]
    p_report = medium_synth.column("p_report").mean()
    assert 2e-5 < p_report < 5e-4
    # Negative feedback is likelier where positive engagement is unlikely.
    pf, pn = medium_synth.column("p_favorite"), medium_synth.column("p_not_interested")
    assert np.corrcoef(pf, pn)[0, 1] < -0.2


def test_first_request_probabilities_are_reproducible(tiny_synth):
    """The stored p_* come from `true_action_probs` with the state of the moment."""
    ds, w = tiny_synth, load_world(tiny_synth)
    u, req = ds.column("user_id"), ds.column("request_id")
    first_req = req[np.r_[True, u[1:] != u[:-1]]]
    m = np.isin(req, first_req)
    p = true_action_probs(
        w, u[m], ds.column("post_id")[m], ds.column("product_surface")[m], at_time=w.config.start_time
    )
    np.testing.assert_allclose(p, ds.true_prob_matrix()[m], rtol=1e-5, atol=1e-7)
    # The oracle ranking: affinity orders a user's posts exactly as p_favorite does (same surface).
    aff = true_affinity(w, u[m][:1], ds.column("post_id")[m], at_time=w.config.start_time)[0]
    same_user = u[m] == u[m][0]
    pf = ds.column("p_favorite")[m][same_user]
    assert np.array_equal(np.argsort(aff[same_user], kind="stable"), np.argsort(pf, kind="stable"))


def test_true_affinity_is_pairwise_consistent(tiny_synth):
    w = load_world(tiny_synth)
    users, posts = np.array([0, 5, 7]), np.arange(0, 300, 7)
    mat = true_affinity(w, users, posts)
    assert mat.shape == (3, posts.size) and mat.dtype == np.float32
    uu, pp = np.meshgrid(users, posts, indexing="ij")
    probs = true_action_probs(w, uu.ravel(), pp.ravel(), 0)
    fav = probs[:, PHOENIX_ACTIONS.index("favorite")]
    expected = 1 / (1 + np.exp(-(w.action_bias[0] + w.action_weight[0] * mat.ravel())))
    np.testing.assert_allclose(fav, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="post_id 300 is not in this world"):
        true_affinity(w, users, np.array([300]))


def test_histories_matter(medium_synth):
    """Engagement raises later affinity, and past engagements predict the next ones."""
    ds, w = medium_synth, load_world(medium_synth)
    u, post = ds.column("user_id"), ds.column("post_id")
    eng = ds.column("favorite") | ds.column("click") | ds.column("reply") | ds.column("repost")
    topic = ds.column("topic", "posts")[post]
    counts = np.zeros((w.num_users, w.config.num_topics))
    np.add.at(counts, (u[eng], topic[eng]), 1.0)
    delta = w.user_state[-1] - w.user_state[0]
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    assert np.corrcoef(share.ravel(), delta.ravel())[0, 1] > 0.2
    # Predictive: an impression of the topic the user engaged with most so far is likelier favourited.
    n = u.size
    fav_topic = np.full(n, -1)
    running = np.zeros((w.num_users, w.config.num_topics))
    for i in range(n):  # events are in per-user time order; a plain loop keeps the check obviously right
        uu = u[i]
        if running[uu].any():
            fav_topic[i] = running[uu].argmax()
        if eng[i]:
            running[uu, topic[i]] += 1
    has = fav_topic >= 0
    match = has & (fav_topic == topic)
    p = ds.column("p_favorite")
    assert p[match].mean() > 1.5 * p[has & ~match].mean()


def test_follows_prefer_liked_authors(medium_synth):
    w = load_world(medium_synth)
    aff = (w.user_taste @ w.author_taste.T) + w.user_state[0][:, w.author_topic]
    followed = np.zeros_like(aff, dtype=bool)
    followed[w.follow_users, w.follow_authors] = True
    assert followed.sum() > 100
    assert aff[followed].mean() > aff[~followed].mean() + 0.5


def test_config_validation():
    with pytest.raises(ValueError, match="num_users"):
        SynthConfig(num_users=0)
    with pytest.raises(ValueError, match="source_mix"):
        SynthConfig(source_mix=(0.5, 0.5, 0.5, 0.0))


@pytest.mark.slow
def test_million_impressions_under_a_minute(tmp_path):
    t0 = time.perf_counter()
    ds = synthesize(
        tmp_path / "big", SynthConfig(num_users=50_000, num_posts=100_000, impressions_per_user=20, seed=0)
    )
    assert ds.num_events > 950_000
    assert time.perf_counter() - t0 < 60
