"""Evaluation options: the `window` seen rule excludes exactly the input window's items (and `all`
every earlier engagement); the pure-id input mode blanks everything but item ids."""

from __future__ import annotations

import numpy as np
import pytest

from phoenix_recsys.data.examples import build_retrieval_examples, post_corpus
from phoenix_recsys.train.inference import retrieval_eval
from phoenix_recsys.train.inputs import SHARED_USER_HASH, apply_input_mode, apply_input_mode_corpus
from tests.train.test_sequence_training import HASH, _log


@pytest.fixture
def examples(tmp_path):
    # One user clicks posts 1..8 in order; S = 3, so the example of target 8 has window {5, 6, 7}
    # and has seen {1, ..., 7}.
    ds = _log(tmp_path, [True] * 8)
    ex = build_retrieval_examples(ds, HASH, history_len=3, split="all", positive_actions=("click",))
    return ds, ex


def test_window_pairs_are_exactly_the_input_window(examples):
    _, ex = examples
    rows, posts = ex.window_pairs()
    for i in range(len(ex)):
        want = ex.history_post_ids[i][ex.history_post_ids[i] >= 0]
        assert sorted(posts[rows == i].tolist()) == sorted(want.tolist())
    last = len(ex) - 1
    assert sorted(posts[rows == last].tolist()) == [5, 6, 7]
    srows, sposts = ex.seen_pairs()
    assert sorted(sposts[srows == last].tolist()) == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("rule, want_rank", [("all", 0), ("window", 4)])
def test_seen_rule_decides_which_earlier_items_compete(examples, rule, want_rank):
    """Scores put posts 1..7 above the target 8: under `all` all are excluded (target first); under
    `window` only 5, 6, 7 are, so posts 1..4 outrank the target (rank 4: HR@4 = 0, HR@5 = 1)."""
    ds, ex = examples
    ex = ex.take([len(ex) - 1])
    corpus = post_corpus(ds, HASH).post_ids
    scores = np.where(corpus < 8, 10.0 - corpus, 0.0)[None, :].astype(np.float32)
    m = retrieval_eval(lambda s, e: scores[s:e], corpus, ex, (1, 4, 5), seen_rule=rule)
    assert m["hr@1"] == (1.0 if want_rank == 0 else 0.0)
    assert m["hr@4"] == (1.0 if want_rank < 4 else 0.0) and m["hr@5"] == 1.0
    with pytest.raises(ValueError, match="seen_rule must be one of"):
        retrieval_eval(lambda s, e: scores[s:e], corpus, ex, (1,), seen_rule="some")


def test_pure_id_keeps_only_item_hashes(examples):
    ds, ex = examples
    p = apply_input_mode(ex, "pure_id")
    b, o = p.batch, ex.batch
    assert (np.asarray(b.user_hashes) == SHARED_USER_HASH).all()
    np.testing.assert_array_equal(b.history_post_hashes, o.history_post_hashes)
    np.testing.assert_array_equal(b.candidate_post_hashes, o.candidate_post_hashes)
    assert np.asarray(o.history_actions).any() and not np.asarray(b.history_actions).any()
    assert not np.asarray(b.history_author_hashes).any() and not np.asarray(b.candidate_author_hashes).any()
    corpus = apply_input_mode_corpus(post_corpus(ds, HASH), "pure_id")
    assert not corpus.author_hashes.any()
    assert apply_input_mode(ex, "full") is ex
    with pytest.raises(ValueError, match="input_mode must be one of"):
        apply_input_mode(ex, "ids")


def test_pure_id_training_and_window_rule_end_to_end(tmp_path):
    """A pure-id bundle trains, is evaluated with the mode it was trained with, and the report records
    the seen rule and input mode; a peer is scored beside popularity on the same queries."""
    from phoenix_recsys.data.examples import leave_one_out
    from phoenix_recsys.data.schema import load_dataset
    from phoenix_recsys.train.bundle import load_bundle
    from phoenix_recsys.train.evaluate import evaluate_bundle, metrics_markdown
    from phoenix_recsys.train.run import JobConfig, train_job
    from tests.train.test_sequence_training import _cyclic_world

    _cyclic_world(tmp_path / "data")
    cfg = JobConfig(
        {"model": {"emb_size": 16, "key_size": 8, "num_layers": 1, "num_q_heads": 2, "num_kv_heads": 1},
         "hash_config": HASH.to_json(), "history_seq_len": 12, "history_attention": "causal", "user_pooling": "last"},
        {"batch_size": 16, "learning_rate": 1e-2, "warmup_steps": 5, "eval_every": 50, "patience": 0, "seed": 0},
        {}, {"positive_actions": ["click"], "retrieval_objective": "every_position", "negatives": "corpus",
             "history_ties": "sequence", "targets_per_step": 160, "input_mode": "pure_id"},
    )
    train_job(tmp_path / "data", tmp_path / "bundle", ["retrieval"], config=cfg, steps=150, protocol="loo",
              progress=False)
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.train_config("retrieval")["input_mode"] == "pure_id"
    ds = load_dataset(tmp_path / "data")
    report, _ = evaluate_bundle(bundle, ds, split="test", protocol=leave_one_out(), seen_rule="window",
                                peers=("ease",))
    assert report["protocol"]["seen_rule"] == "window" and report["protocol"]["input_mode"] == "pure_id"
    assert "seen rule 'window'" in report["protocol"]["retrieval"]
    got, pop = report["model"]["retrieval"]["hr@10"], report["baselines"]["popularity"]["retrieval"]["hr@10"]
    assert got > 0.5 and got > 3 * pop, (got, pop)
    assert report["baselines"]["ease"]["retrieval"]["hr@10"] > 3 * pop
    assert any("ease" in line for line in metrics_markdown(report))
    with pytest.raises(ValueError, match="unknown peers"):
        evaluate_bundle(bundle, ds, split="test", protocol=leave_one_out(), peers=("knn",))


def test_pure_id_every_position_training_keeps_every_target(tmp_path):
    """Pure-id blanks the history's action flags, which mark positives; the training targets are read
    before that, so a pure-id window trains on as many (position, target) pairs as a full-input one,
    from inputs with no user id, author or action flags."""
    from phoenix_recsys.data.examples import leave_one_out
    from phoenix_recsys.train.loop import training_targets
    from tests.train.test_sequence_training import _cyclic_world

    ds = _cyclic_world(tmp_path / "data", users=10, posts=50, length=12)
    ex = build_retrieval_examples(ds, HASH, history_len=8, split="train", protocol=leave_one_out(),
                                  positive_actions=("click",), history_ties="sequence", window_stride=8)
    pos = np.asarray([0])
    full = training_targets(ex, pos, True, "full")
    pure = training_targets(ex, pos, True, "pure_id")
    assert full[4].sum() > len(ex)  # more than one target per window
    assert pure[4].sum() == full[4].sum()
    np.testing.assert_array_equal(pure[3], full[3])
    b = pure[0].batch
    assert (np.asarray(b.history_actions) == 0).all() and (np.asarray(b.user_hashes) == SHARED_USER_HASH).all()
    assert (pure[2] == 0).all()
