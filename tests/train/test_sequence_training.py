"""Every-position (causal next-item) retrieval training: windows, shifted targets, subsampling, the
full-corpus softmax, the settings it needs, and that it learns a sequential pattern end to end."""

from __future__ import annotations

import numpy as np
import pytest

from phoenix_recsys.actions import ActionVocabulary
from phoenix_recsys.data.examples import build_retrieval_examples, leave_one_out, post_corpus, window_ends
from phoenix_recsys.data.schema import load_dataset, write_dataset
from phoenix_recsys.hashing import HashConfig
from phoenix_recsys.train import losses
from phoenix_recsys.train.bundle import load_bundle
from phoenix_recsys.train.evaluate import evaluate_bundle
from phoenix_recsys.train.loop import (
    TrainConfig,
    pick_targets,
    sequence_targets,
    train_retrieval,
)
from phoenix_recsys.train.run import JobConfig, default_model_config, train_job

HASH = HashConfig(user_vocab_size=1009, item_vocab_size=2003, author_vocab_size=307)


def test_window_ends_tile_each_user_from_the_newest():
    users = np.array([1, 1, 1, 1, 1, 2, 2, 3])
    assert window_ends(users, 2).tolist() == [0, 2, 4, 6, 7]
    assert window_ends(users, 1).tolist() == list(range(8))
    assert window_ends(users, 10).tolist() == [4, 6, 7]
    assert window_ends(np.zeros(0, np.int64), 3).size == 0


def test_window_stride_builds_only_window_ends(tmp_path):
    ds = _log(tmp_path, [True] * 7)
    kw = dict(history_len=3, split="all", positive_actions=("click",))
    every = build_retrieval_examples(ds, HASH, **kw)
    ends = build_retrieval_examples(ds, HASH, window_stride=3, **kw)
    assert ends.window_stride == 3 and every.window_stride is None
    assert ends.target_post_ids.tolist() == [1, 4, 7] == every.target_post_ids[window_ends(every.user_ids, 3)].tolist()
    np.testing.assert_array_equal(ends.history_post_ids, every.history_post_ids[[0, 3, 6]])
    np.testing.assert_array_equal(ends.batch.history_post_hashes, every.batch.history_post_hashes[[0, 3, 6]])


def _log(tmp_path, favorite):
    vocab = ActionVocabulary.binary(["click", "favorite"])
    n = len(favorite)
    ev = {"user_id": [7] * n, "post_id": list(range(1, n + 1)), "author_id": [0] * n,
          "timestamp": list(range(10, 10 * n + 1, 10)), "product_surface": [0] * n,
          "click": [True] * n, "favorite": favorite}
    posts = {"post_id": list(range(1, n + 1)), "author_id": [0] * n, "created_at": [0] * n}
    return write_dataset(tmp_path / "d", ev, posts, None, vocab, name="d", source="t")


def test_sequence_targets_shift_history_by_one(tmp_path):
    """Position 0 (user token) predicts history item 0, position j item j, the newest position the
    example's target; only positives count and positions past the newest are padding."""
    ds = _log(tmp_path, [True, False, True, True, True, True])
    ex = build_retrieval_examples(ds, HASH, history_len=4, split="all", positive_actions=("click",))
    hashes = post_corpus(ds, HASH).post_hashes
    tp, ta, ids, valid = sequence_targets(ex.take([5, 2]), np.array([0]))  # targets post 6 and post 3
    assert ids.tolist() == [[2, 3, 4, 5, 6], [1, 2, 3, -1, -1]]
    assert valid.tolist() == [[True] * 5, [True, True, True, False, False]]
    np.testing.assert_array_equal(tp[0], hashes[[1, 2, 3, 4, 5]])
    assert (tp[1, 3:] == 0).all() and ta.shape == (2, 5, HASH.num_author_hashes)
    # Favorite as the positive: post 2 (history slot 0 of the first window) is not one.
    _, _, ids, valid = sequence_targets(ex.take([5]), np.array([1]))
    assert valid.tolist() == [[False, True, True, True, True]]


def test_pick_targets_prefers_valid_positions():
    rng = np.random.default_rng(0)
    valid = np.array([True, False, True, False, False, True])
    assert pick_targets(valid, None, rng).tolist() == list(range(6))
    got = pick_targets(valid, 4, rng)
    assert got.size == 4 and set(got[:3]) == {0, 2, 5} and not valid[got[3]]
    got = pick_targets(valid, 2, rng)
    assert got.size == 2 and valid[got].all() and len(set(got)) == 2


def test_masked_softmax_loss_matches_hand_computation():
    import jax.numpy as jnp

    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0], [5.0, 1.0, 1.0]], np.float32)
    labels = np.array([0, 2, 1])
    valid = np.array([True, True, False])
    want = np.mean([-np.log(np.exp(2) / (np.exp(2) + 1 + np.exp(-1))), np.log(3)])
    got = float(losses.masked_softmax_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(valid)))
    assert got == pytest.approx(want, rel=1e-5)
    assert float(losses.masked_softmax_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.zeros(3, bool))) == 0.0


def test_every_position_needs_causal_attention_and_last_pooling(tmp_path):
    ds = _log(tmp_path, [True] * 6)
    ex = build_retrieval_examples(ds, HASH, history_len=4, split="all", positive_actions=("click",))
    cfg = TrainConfig(steps=1, retrieval_objective="every_position", positive_actions=("click",))
    model_cfg = default_model_config(ds.actions, history_seq_len=4, hash_config=HASH)
    with pytest.raises(ValueError, match='needs model.history_attention "causal".*user_pooling "last"'):
        train_retrieval(model_cfg, cfg, ex, None, post_corpus(ds, HASH), tmp_path / "run", progress=False)
    for kw, field in ((dict(retrieval_objective="all"), "retrieval_objective"), (dict(negatives="some"), "negatives"),
                      (dict(history_ties="x"), "history_ties"), (dict(targets_per_step=0), "targets_per_step"),
                      (dict(sequence_stride=-2), "sequence_stride")):
        with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
            TrainConfig(**kw)


def _cyclic_world(directory, users=80, posts=200, length=24, seed=0):
    """Each user clicks `length` consecutive posts (mod `posts`) from a random start: the next item is
    always the current one plus one, which only a model reading the sequence can predict."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, posts, users)
    seq = (start[:, None] + np.arange(length)[None, :]) % posts + 1
    n = users * length
    ev = {"user_id": np.repeat(np.arange(users), length), "post_id": seq.reshape(-1),
          "author_id": (seq.reshape(-1) % 5), "timestamp": np.tile(np.arange(length) * 60, users) + 1000,
          "product_surface": np.zeros(n, np.int32), "click": np.ones(n, bool)}
    pid = np.arange(1, posts + 1)
    return write_dataset(directory, ev, {"post_id": pid, "author_id": pid % 5, "created_at": np.zeros(posts)}, None,
                         ActionVocabulary.binary(["click"]), name="cyclic", source="test")


@pytest.mark.parametrize("negatives", ["corpus", "in_batch"])
def test_every_position_training_learns_the_next_item(tmp_path, negatives):
    """End to end through train_job and evaluate_bundle (leave-one-out, full corpus, seen excluded):
    next-item training finds the +1 rule; popularity is near chance on this world."""
    _cyclic_world(tmp_path / "data")
    cfg = JobConfig(
        {"model": {"emb_size": 16, "key_size": 8, "num_layers": 1, "num_q_heads": 2, "num_kv_heads": 1},
         "hash_config": HASH.to_json(), "history_seq_len": 12, "history_attention": "causal", "user_pooling": "last"},
        {"batch_size": 16, "learning_rate": 1e-2, "warmup_steps": 5, "eval_every": 50, "patience": 0, "seed": 0},
        {}, {"positive_actions": ["click"], "retrieval_objective": "every_position", "negatives": negatives,
             "history_ties": "sequence", "targets_per_step": 160},
    )
    train_job(tmp_path / "data", tmp_path / "bundle", ["retrieval"], config=cfg, steps=150, protocol="loo",
              progress=False)
    ds = load_dataset(tmp_path / "data")
    report, _ = evaluate_bundle(load_bundle(tmp_path / "bundle"), ds, split="test", protocol=leave_one_out())
    got, pop = report["model"]["retrieval"]["hr@10"], report["baselines"]["popularity"]["retrieval"]["hr@10"]
    assert got > 0.6 and got > 3 * pop, (got, pop)
    assert "(time, file) order" in report["protocol"]["retrieval"]
