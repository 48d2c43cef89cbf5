"""Example building: shapes and padding, the stable tie order, no leakage, reference equivalence."""

from __future__ import annotations

import time

import numpy as np
import pytest

from phoenix_recsys.actions import ActionVocabulary
from phoenix_recsys.data.examples import (
    TEST,
    TRAIN,
    VAL,
    LeaveOneOut,
    TimeSplit,
    build_ranking_examples,
    build_retrieval_examples,
    leave_one_out,
    post_corpus,
    split_by_time,
)
from phoenix_recsys.data.schema import write_dataset
from phoenix_recsys.data.synth import SynthConfig, synthesize

S, C = 5, 3  # small prime sizes so a swapped axis shows


def _reference_ranking(ds, split_codes, want, s, c, session_gap=None):
    """Plain-Python grouping and history rule, the oracle for the vectorised builder."""
    u, ts = ds.column("user_id"), ds.column("timestamp")
    eng = ds.engaged()
    rows = [i for i in range(ds.num_events) if split_codes[i] == want]
    groups: dict[tuple, list[int]] = {}
    if session_gap is None:
        req = ds.column("request_id")
        for i in sorted(rows, key=lambda i: (u[i], req[i], i)):
            groups.setdefault((u[i], req[i]), []).append(i)
    else:
        key, last = None, 0
        for i in rows:
            if key is None or u[i] != key[0] or ts[i] - last > session_gap:
                key = (u[i], i)
            groups.setdefault(key, []).append(i)
            last = ts[i]
    out = []
    for g in groups.values():
        for k in range(0, len(g), c):
            chunk = g[k : k + c]
            t0 = ts[chunk[0]]
            hist = [j for j in range(ds.num_events) if u[j] == u[chunk[0]] and eng[j] and ts[j] < t0][-s:]
            out.append((chunk + [-1] * (c - len(chunk)), hist + [-1] * (s - len(hist))))
    return out


@pytest.mark.parametrize("with_request", [True, False])
def test_matches_reference_and_shapes(tmp_path, make_tables, vocab, hash_config, with_request):
    ev, po, fo = make_tables(n_users=4, with_request=with_request, seed=3)
    ds = write_dataset(tmp_path / "d", ev, po, fo, vocab, name="d", source="t")
    proto = split_by_time(ds, 0.2, 0.2)
    codes = proto.assign(ds)
    for split, code in (("train", TRAIN), ("val", VAL), ("test", TEST)):
        ex = build_ranking_examples(
            ds, hash_config, history_len=S, max_candidates=C, split=split, protocol=proto, session_gap_s=25
        )
        ref = _reference_ranking(ds, codes, code, S, C, session_gap=None if with_request else 25)
        assert len(ex) == len(ref) > 0
        np.testing.assert_array_equal(ex.candidate_event_rows, np.array([r[0] for r in ref]))
        np.testing.assert_array_equal(ex.history_event_rows, np.array([r[1] for r in ref]))
        n, a = len(ex), len(vocab)
        b = ex.batch
        assert b.user_hashes.shape == (n, 2) and b.user_hashes.dtype == np.int32
        assert b.history_post_hashes.shape == (n, S, 3) and b.history_author_hashes.shape == (n, S, 1)
        assert b.history_actions.shape == (n, S, a) and b.history_actions.dtype == np.float32
        assert b.history_product_surface.shape == (n, S)
        assert b.candidate_post_hashes.shape == (n, C, 3) and b.candidate_author_hashes.shape == (n, C, 1)
        assert b.candidate_product_surface.shape == (n, C)
        assert ex.labels.shape == (n, C, a) and ex.true_probs is None
        # Padding: hash 0 exactly where the slot is empty; valid slots never 0; packed at the front.
        hist_valid = ex.history_event_rows >= 0
        assert ((b.history_post_hashes[..., 0] != 0) == hist_valid).all()
        assert ((b.candidate_post_hashes[..., 0] != 0) == ex.candidate_mask).all()
        assert (np.diff(hist_valid.astype(int), axis=1) <= 0).all()
        assert (np.diff(ex.candidate_mask.astype(int), axis=1) <= 0).all()
        assert (ex.candidate_post_ids[~ex.candidate_mask] == -1).all()
        assert (ex.labels[~ex.candidate_mask] == 0).all()
        # Features are the events' own: hashes, labels and history actions.
        rows = ex.candidate_event_rows[ex.candidate_mask]
        np.testing.assert_array_equal(
            b.candidate_post_hashes[ex.candidate_mask], hash_config.hash_items(ds.column("post_id")[rows])
        )
        np.testing.assert_array_equal(ex.labels[ex.candidate_mask], ds.action_matrix()[rows])
        hrows = ex.history_event_rows[hist_valid]
        np.testing.assert_array_equal(
            b.history_author_hashes[hist_valid], hash_config.hash_authors(ds.column("author_id")[hrows])
        )
        np.testing.assert_array_equal(b.history_actions[hist_valid], ds.action_matrix()[hrows])
        np.testing.assert_array_equal(b.user_hashes, hash_config.hash_users(ex.user_ids))


def test_stable_tie_order(tmp_path, hash_config):
    """Events of one second keep the source order, in candidates and in later histories."""
    vocab = ActionVocabulary.binary(["click"])
    # Source order: user 2 first (to check the sort by user), then user 1's tied events c, a, b.
    ev = {
        "user_id": [2, 1, 1, 1, 1, 1],
        "post_id": [9, 30, 10, 20, 40, 50],
        "author_id": [0, 0, 0, 0, 0, 0],
        "timestamp": [5, 100, 100, 100, 50, 200],
        "product_surface": [0, 1, 2, 3, 0, 0],
        "click": [True, True, True, True, True, False],
    }
    posts = {"post_id": [9, 10, 20, 30, 40, 50], "author_id": [0] * 6, "created_at": [0] * 6}
    ds = write_dataset(tmp_path / "d", ev, posts, None, vocab, name="d", source="t")
    assert ds.column("post_id").tolist() == [40, 30, 10, 20, 50, 9]
    ex = build_ranking_examples(
        ds, hash_config, history_len=4, max_candidates=4, split="all", session_gap_s=0
    )
    by_user = {
        int(u): i for i, u in enumerate(ex.user_ids) if u == 1 and ex.candidate_timestamps[i, 0] == 100
    }
    tied = ex.candidate_post_ids[by_user[1]]
    assert tied.tolist() == [30, 10, 20, -1]  # one example (same second), source order
    last = [i for i in range(len(ex)) if ex.candidate_post_ids[i, 0] == 50][0]
    # History of the t=200 impression: 40 (t=50), then the tied 30, 10, 20 in source order.
    hist = ex.history_event_rows[last]
    assert ds.column("post_id")[hist].tolist() == [40, 30, 10, 20]
    # Events of the same second never see each other.
    assert (ex.history_event_rows[by_user[1]] == [0, -1, -1, -1]).all()


def _assert_no_leakage(ds, proto: TimeSplit, hash_config):
    seen: dict[str, set[int]] = {}
    for split in ("train", "val", "test"):
        ex = build_ranking_examples(
            ds, hash_config, history_len=8, max_candidates=4, split=split, protocol=proto
        )
        lo, hi = proto.time_range(split)
        cand_t = ex.candidate_timestamps
        valid = ex.candidate_mask
        assert valid.any()
        if lo is not None:
            assert (cand_t[valid] >= lo).all()
        if hi is not None:
            assert (cand_t[valid] < hi).all()
        # Every history event is strictly earlier than every candidate of its example.
        first_t = np.where(valid, cand_t, np.iinfo(np.int64).max).min(axis=1)
        hv = ex.history_event_rows >= 0
        assert (ex.history_timestamps[hv] < np.broadcast_to(first_t[:, None], hv.shape)[hv]).all()
        assert hv.any()
        # Labels are the candidates' own events.
        np.testing.assert_array_equal(ex.labels[valid], ds.action_matrix()[ex.candidate_event_rows[valid]])
        seen[split] = set(ex.candidate_event_rows[valid].tolist())
        r = build_retrieval_examples(ds, hash_config, history_len=8, split=split, protocol=proto)
        hv = r.history_event_rows >= 0
        assert (r.history_timestamps[hv] < np.broadcast_to(r.target_timestamps[:, None], hv.shape)[hv]).all()
        if lo is not None:
            assert (r.target_timestamps >= lo).all()
        if hi is not None:
            assert (r.target_timestamps < hi).all()
    assert (
        not seen["val"] & seen["test"]
        and not seen["train"] & seen["val"]
        and not seen["train"] & seen["test"]
    )
    assert len(seen["train"] | seen["val"] | seen["test"]) == ds.num_events


def test_no_leakage_time_split(tiny_synth, hash_config):
    proto = split_by_time(tiny_synth, 0.15, 0.15)
    _assert_no_leakage(tiny_synth, proto, hash_config)
    ex = build_ranking_examples(tiny_synth, hash_config, split="test", protocol=proto)
    assert ex.true_probs is not None
    np.testing.assert_array_equal(
        ex.true_probs[ex.candidate_mask],
        tiny_synth.true_prob_matrix()[ex.candidate_event_rows[ex.candidate_mask]],
    )
    # A test example's history may hold train events: that is the past, not leakage.
    ht = ex.history_timestamps[ex.history_event_rows >= 0]
    assert (ht < proto.t1).any()


def test_split_by_time_cut_points(tiny_synth):
    p = split_by_time(tiny_synth, 0.1, 0.2)
    codes = p.assign(tiny_synth)
    frac = np.bincount(codes, minlength=3) / codes.size
    np.testing.assert_allclose(frac, [0.7, 0.1, 0.2], atol=0.02)
    assert split_by_time(tiny_synth, cut_times=(10, 20)) == TimeSplit(t1=10, t2=20)
    with pytest.raises(ValueError, match="val_frac and test_frac"):
        split_by_time(tiny_synth, 0.6, 0.5)


def test_leave_one_out(tmp_path, hash_config):
    vocab = ActionVocabulary.binary(["click"])
    # user 1: five clicks, the last two tied at t=40 (source order decides); user 2: two clicks.
    ev = {
        "user_id": [1, 1, 1, 1, 1, 2, 2],
        "post_id": [1, 2, 3, 5, 4, 1, 2],
        "author_id": [0] * 7,
        "timestamp": [10, 20, 30, 40, 40, 5, 6],
        "product_surface": [0] * 7,
        "click": [True] * 7,
    }
    posts = {"post_id": [1, 2, 3, 4, 5], "author_id": [0] * 5, "created_at": [0] * 5}
    ds = write_dataset(tmp_path / "d", ev, posts, None, vocab, name="d", source="t")
    proto = leave_one_out()
    assert isinstance(proto, LeaveOneOut)
    assert proto.assign(ds).tolist() == [TRAIN, TRAIN, TRAIN, VAL, TEST, TRAIN, TRAIN]
    r = build_retrieval_examples(
        ds, hash_config, history_len=4, split="test", protocol=proto, positive_actions=("click",)
    )
    assert r.target_post_ids.tolist() == [4] and r.user_ids.tolist() == [1]
    # Post 5 shares the target's second: it is neither history nor "seen".
    assert ds.column("post_id")[r.history_event_rows[0][r.history_event_rows[0] >= 0]].tolist() == [1, 2, 3]
    assert r.seen_posts(0).tolist() == [1, 2, 3]
    v = build_retrieval_examples(
        ds, hash_config, history_len=4, split="val", protocol=proto, positive_actions=("click",)
    )
    assert v.target_post_ids.tolist() == [5]


def test_history_ties_sequence_follows_source_order(tmp_path, hash_config):
    """"sequence" (the published sequential protocol) puts earlier-in-file events of the target's own
    second into its history and its seen set; "strict" keeps them out; history_post_ids mirror rows."""
    vocab = ActionVocabulary.binary(["click"])
    ev = {"user_id": [1] * 5, "post_id": [1, 2, 3, 5, 4], "author_id": [0] * 5, "timestamp": [10, 20, 30, 40, 40],
          "product_surface": [0] * 5, "click": [True] * 5}
    posts = {"post_id": [1, 2, 3, 4, 5], "author_id": [0] * 5, "created_at": [0] * 5}
    ds = write_dataset(tmp_path / "d", ev, posts, None, vocab, name="d", source="t")
    kw = dict(history_len=4, split="test", protocol=leave_one_out(), positive_actions=("click",))
    strict = build_retrieval_examples(ds, hash_config, **kw)
    seq = build_retrieval_examples(ds, hash_config, history_ties="sequence", **kw)
    assert strict.history_post_ids[0].tolist() == [1, 2, 3, -1] and strict.seen_posts(0).tolist() == [1, 2, 3]
    assert seq.history_post_ids[0].tolist() == [1, 2, 3, 5] and seq.seen_posts(0).tolist() == [1, 2, 3, 5]
    assert "(time, file) order" in seq.protocol and "strictly before" in strict.protocol
    # The history tokens follow: the newest slot now holds post 5's hashes.
    np.testing.assert_array_equal(seq.batch.history_post_hashes[0, 3], post_corpus(ds, hash_config).post_hashes[4])
    with pytest.raises(ValueError, match="history_ties must be one of"):
        build_retrieval_examples(ds, hash_config, history_ties="loose", **kw)


def test_retrieval_seen_pairs_match_brute_force(tiny_synth, hash_config):
    proto = split_by_time(tiny_synth)
    r = build_retrieval_examples(tiny_synth, hash_config, history_len=S, split="test", protocol=proto)
    assert len(r) > 0 and r.batch.candidate_post_hashes.shape == (len(r), 1, 3)
    assert tiny_synth.column("favorite")[r.target_event_rows].all()
    u, ts, post = tiny_synth.column("user_id"), tiny_synth.column("timestamp"), tiny_synth.column("post_id")
    eng = tiny_synth.engaged()
    ex, posts = r.seen_pairs(keep_target=False)
    for i in range(len(r)):
        expected = post[(u == r.user_ids[i]) & eng & (ts < r.target_timestamps[i])]
        np.testing.assert_array_equal(r.seen_posts(i), expected)
        np.testing.assert_array_equal(posts[ex == i], expected)
    ex2, posts2 = r.seen_pairs()
    assert (posts2 != r.target_post_ids[ex2]).all()
    sub = r.take([2, 0])
    np.testing.assert_array_equal(sub.seen_posts(1), r.seen_posts(0))
    with pytest.raises(ValueError, match="unknown action 'like'"):
        build_retrieval_examples(tiny_synth, hash_config, positive_actions=("like",))


def test_take_and_iter_batches(tiny_synth, hash_config):
    ex = build_ranking_examples(tiny_synth, hash_config, history_len=S, max_candidates=C)
    batches = list(ex.iter_batches(7))
    assert sum(len(b) for b in batches) == len(ex) and all(len(b) == 7 for b in batches[:-1])
    np.testing.assert_array_equal(batches[1].labels, ex.labels[7:14])
    shuffled = list(ex.iter_batches(7, shuffle=True, seed=3))
    again = list(ex.iter_batches(7, shuffle=True, seed=3))
    np.testing.assert_array_equal(shuffled[0].user_ids, again[0].user_ids)
    assert sorted(np.concatenate([b.user_ids for b in shuffled]).tolist()) == sorted(ex.user_ids.tolist())
    assert len(list(ex.iter_batches(7, drop_remainder=True))) == len(ex) // 7
    t = ex.take(np.array([3, 1]))
    np.testing.assert_array_equal(t.batch.history_post_hashes[1], ex.batch.history_post_hashes[1])
    assert t.batch.candidate_impr_ts.shape == (2, C)


def test_post_corpus(tiny_synth, hash_config):
    ids, ph, ah = post_corpus(tiny_synth, hash_config)
    assert ids.tolist() == list(range(300)) and ph.shape == (300, 3) and ah.shape == (300, 1)
    np.testing.assert_array_equal(
        ah[:, 0], hash_config.hash_authors(tiny_synth.column("author_id", "posts"))[:, 0]
    )


def test_bad_arguments(tiny_synth, hash_config):
    with pytest.raises(ValueError, match="split must be one of"):
        build_ranking_examples(tiny_synth, hash_config, split="dev")
    with pytest.raises(ValueError, match="history_len"):
        build_ranking_examples(tiny_synth, hash_config, history_len=0)


@pytest.mark.slow
def test_million_events_to_examples_under_a_minute(tmp_path, hash_config):
    ds = synthesize(
        tmp_path / "big", SynthConfig(num_users=50_000, num_posts=100_000, impressions_per_user=20, seed=0)
    )
    t0 = time.perf_counter()
    build_ranking_examples(ds, hash_config, split="all")
    assert time.perf_counter() - t0 < 60
