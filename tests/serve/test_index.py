"""Tests for serve.index: exactness, HNSW and IVF recall, exclusions, online adds, persistence, fingerprints."""

from __future__ import annotations

import dataclasses
import json

import faiss
import numpy as np
import pytest

from phoenix_recsys.serve.index import (
    CorpusIndex,
    IndexConfig,
    IndexKind,
    IndexMismatchError,
    make_fingerprint,
)

D = 13  # a prime width, so a swapped axis cannot pass


def unit(rng: np.random.Generator, n: int, d: int = D) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(ids: np.ndarray, emb: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = q @ emb.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return ids[order], np.take_along_axis(s, order, axis=1)


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    ids = rng.choice(10**9, size=997, replace=False).astype(np.int64)  # sparse ids, not positions
    return ids, unit(rng, 997), unit(rng, 31)


@pytest.fixture(scope="module")
def hnsw_corpus():
    rng = np.random.default_rng(1)
    emb = unit(rng, 5000, 32)
    ids = np.arange(5000, dtype=np.int64) * 7 + 3
    idx = CorpusIndex.build(ids, emb, config=IndexConfig(exact_max_size=1000, ann_kind="hnsw"))
    return ids, emb, unit(rng, 200, 32), idx


@pytest.fixture(scope="module")
def ivf_corpus():
    rng = np.random.default_rng(2)
    emb = unit(rng, 5000, 32)
    ids = np.arange(5000, dtype=np.int64) * 7 + 3
    # 5000 posts: 64 lists (auto, ~sqrt(P)); probing half of them on isotropic random data.
    idx = CorpusIndex.build(ids, emb, config=IndexConfig(exact_max_size=1000, ann_kind="ivf", ivf_nprobe=32))
    return ids, emb, unit(rng, 200, 32), idx


def _recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(g) & set(w)) / want.shape[1] for g, w in zip(got, want, strict=True)]))


def test_flat_top_k_equals_brute_force(corpus):
    ids, emb, q = corpus
    idx = CorpusIndex.build(ids, emb)
    assert idx.kind is IndexKind.FLAT and len(idx) == 997 and idx.dim == D
    got = idx.search(q, k=17)
    want_ids, want_scores = brute_force(ids, emb, q, 17)
    np.testing.assert_array_equal(got.ids, want_ids)
    np.testing.assert_allclose(got.scores, want_scores, atol=1e-5)
    assert got.ids.dtype == np.int64 and got.scores.dtype == np.float32


def test_inputs_are_normalised(corpus):
    ids, emb, q = corpus
    a = CorpusIndex.build(ids, emb).search(q, 5)
    b = CorpusIndex.build(ids, emb * 3.0).search(q * 0.5, 5)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_hnsw_recall_at_10_vs_exact(hnsw_corpus):
    ids, emb, q, idx = hnsw_corpus
    assert idx.kind is IndexKind.HNSW
    got = idx.search(q, 10).ids
    want, _ = brute_force(ids, emb, q, 10)
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want, strict=True)])
    assert recall >= 0.95, recall


@pytest.mark.parametrize("codec", ["pq4", "flat"])
def test_ivf_recall_vs_exact_and_exhaustive_probe_is_exact(ivf_corpus, codec):
    ids, emb, q, _ = ivf_corpus
    cfg = IndexConfig(exact_max_size=1000, ann_kind="ivf", ivf_nprobe=32, ivf_codec=codec)
    idx = CorpusIndex.build(ids, emb, config=cfg)
    assert idx.kind is IndexKind.IVF and faiss.extract_index_ivf(idx._index).nlist == 64 and idx.trained_on == 5000
    assert isinstance(idx._index, faiss.IndexRefine) is (codec == "pq4")
    want, want_scores = brute_force(ids, emb, q, 10)
    assert _recall(idx.search(q, 10).ids, want) >= 0.9
    # Fewer lists probed, lower recall: nprobe is the knob it claims to be.
    narrow = CorpusIndex.build(ids, emb, config=dataclasses.replace(cfg, ivf_nprobe=4))
    assert _recall(narrow.search(q, 10).ids, want) < _recall(idx.search(q, 10).ids, want) - 0.2
    # Probing every list scans every vector: the exact answer with flat lists; with pq4 the codes'
    # shortlist misses almost nothing, and every returned score is the exact inner product, never
    # the codes' estimate.
    full = CorpusIndex.build(ids, emb, config=dataclasses.replace(cfg, ivf_nprobe=64))
    got = full.search(q, 10)
    if codec == "flat":
        np.testing.assert_array_equal(got.ids, want)
        np.testing.assert_allclose(got.scores, want_scores, atol=1e-5)
    else:
        assert _recall(got.ids, want) >= 0.995
    rows = np.searchsorted(ids, got.ids)
    np.testing.assert_allclose(got.scores, np.einsum("bkd,bd->bk", emb[rows], q), atol=1e-5)


def test_ivf_pq4_shortlist_size_is_the_refine_knob(ivf_corpus):
    ids, emb, q, _ = ivf_corpus
    want, _ = brute_force(ids, emb, q, 50)
    cfg = IndexConfig(exact_max_size=1000, ann_kind="ivf", ivf_nprobe=64, ivf_codec="pq4")
    recall = {r: _recall(CorpusIndex.build(ids, emb, config=dataclasses.replace(cfg, ivf_refine=r)).search(q, 50).ids,
                         want) for r in (1, 8)}  # fmt: skip
    # Re-scoring only the codes' own top-50 keeps their ranking errors; a shortlist 8x larger fixes them.
    assert recall[1] < recall[8] and recall[8] >= 0.99, recall


def test_ivf_flat_snapshot_loads_as_flat_under_a_pq4_default(tmp_path, ivf_corpus):
    ids, emb, q, _ = ivf_corpus
    old = CorpusIndex.build(ids, emb, config=IndexConfig(exact_max_size=1000, ann_kind="ivf", ivf_codec="flat"))
    old.save(tmp_path / "old", "fp")
    # A snapshot written before pq4 existed has no ivf_codec in its config.
    meta = json.loads((tmp_path / "old" / "meta.json").read_text())
    del meta["config"]["ivf_codec"], meta["config"]["ivf_refine"]
    (tmp_path / "old" / "meta.json").write_text(json.dumps(meta))
    loaded = CorpusIndex.load(tmp_path / "old", "fp", config=IndexConfig())
    assert loaded.config.ivf_codec == "flat" and not isinstance(loaded._index, faiss.IndexRefine)
    np.testing.assert_array_equal(loaded.search(q, 10).ids, old.search(q, 10).ids)
    assert loaded.compact().config.ivf_codec == "flat"  # the structure stays as saved


def test_ivf_add_remove_compact_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    emb, q = unit(rng, 3000, 16), unit(rng, 20, 16)
    ids = np.arange(3000, dtype=np.int64) + 10**6
    cfg = IndexConfig(exact_max_size=100, ann_kind="ivf", ivf_nprobe=8, ivf_retrain_growth=1.5)
    idx = CorpusIndex.build(ids[:2000], emb[:2000], config=cfg)
    assert idx.kind is IndexKind.IVF and not idx.needs_retrain()
    # Adds go into the trained lists: each new post is its own query's best match.
    idx.add(ids[2000:], emb[2000:])
    assert len(idx) == 3000 and idx.trained_on == 2000
    got = idx.search(emb[2000:2010], 1).ids[:, 0]
    np.testing.assert_array_equal(got, ids[2000:2010])
    assert not idx.needs_retrain()  # 3000 posts = 1.5 x 2000, not above it
    idx.add([10**7], q[:1])
    assert idx.needs_retrain()
    # Removed and replaced posts never come back.
    gone = idx.search(q[:3], 5).ids[:, 0]
    assert idx.remove(gone) == len(set(gone.tolist()))
    res = idx.search(q[:3], 50)
    assert not set(res.ids.ravel().tolist()) & set(gone.tolist()) and np.all(res.ids >= 0)
    # Compacting retrains on the live posts (lists re-sized for them) and keeps their answers.
    fresh = idx.compact()
    assert fresh.kind is IndexKind.IVF and fresh.num_tombstones == 0 and len(fresh) == len(idx)
    assert fresh.trained_on == len(idx) and not fresh.needs_retrain()
    live = np.isin(ids, fresh.post_ids())
    want, _ = brute_force(ids[live], emb[live], emb[2000:2010], 1)
    np.testing.assert_array_equal(fresh.search(emb[2000:2010], 1).ids, want)
    # Save / load keeps the lists, the position map (compact after load) and the training size.
    fresh.save(tmp_path / "ivf", "fp")
    loaded = CorpusIndex.load(tmp_path / "ivf", "fp", config=dataclasses.replace(cfg, ivf_nprobe=3))
    assert loaded.kind is IndexKind.IVF and faiss.extract_index_ivf(loaded._index).nprobe == 3 and loaded.trained_on == fresh.trained_on
    np.testing.assert_array_equal(loaded.compact().post_ids(), fresh.post_ids())


def test_ivf_exclusions_beyond_the_probed_lists_still_fill_rows():
    rng = np.random.default_rng(4)
    emb, q = unit(rng, 2000, 8), unit(rng, 2, 8)
    ids = np.arange(2000, dtype=np.int64)
    idx = CorpusIndex.build(ids, emb, config=IndexConfig(exact_max_size=10, ann_kind="ivf", ivf_nprobe=1))
    # One probed list holds ~2000/32 posts: excluding 1500 leaves it short, so the search must widen.
    excl = rng.choice(2000, size=1500, replace=False)
    got = idx.search(q, 100, exclude=[excl, None])
    assert np.all(got.ids >= 0) and not set(got.ids[0].tolist()) & set(excl.tolist())


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="ann_kind"):
        IndexConfig(ann_kind="flat")
    with pytest.raises(ValueError, match="ivf_nprobe"):
        IndexConfig(ivf_nprobe=0)
    with pytest.raises(ValueError, match="ivf_codec"):
        IndexConfig(ivf_codec="sq8")
    with pytest.raises(ValueError, match="ivf_refine"):
        IndexConfig(ivf_refine=0)
    with pytest.raises(ValueError, match="ivf_retrain_growth"):
        IndexConfig(ivf_retrain_growth=1.0)
    with pytest.raises(ValueError, match="build_threads"):
        IndexConfig(build_threads=0)
    assert IndexConfig().nlist_for(1_000_000) == 1024 and IndexConfig(ivf_nlist=4096).nlist_for(10_000) == 256


@pytest.mark.parametrize("which", ["flat", "hnsw", "ivf"])
def test_exclusions_honoured_and_rows_still_full(corpus, hnsw_corpus, ivf_corpus, which):
    if which == "flat":
        ids, emb, q = corpus
        idx = CorpusIndex.build(ids, emb)
    else:
        ids, emb, q, idx = hnsw_corpus if which == "hnsw" else ivf_corpus
    q = q[:4]
    top = idx.search(q, 30).ids
    # Query 0: exclude its own top 20 (plus ids that are not indexed); query 1: nothing; query 2:
    # an empty set; query 3: a numpy array of its top 5.
    exclude = [set(top[0, :20].tolist()) | {-5, 10**12}, None, set(), top[3, :5]]
    got = idx.search(q, 10, exclude=exclude)
    assert not set(got.ids[0]) & exclude[0]
    assert not set(got.ids[3]) & set(top[3, :5].tolist())
    assert np.all(got.ids >= 0)  # over-fetching filled every row
    if which == "flat":
        np.testing.assert_array_equal(got.ids[0], top[0, 20:30])  # the next best, in order
        np.testing.assert_array_equal(got.ids[3], top[3, 5:15])
    np.testing.assert_array_equal(got.ids[1], top[1, :10])
    with pytest.raises(ValueError, match="exclude"):
        idx.search(q, 10, exclude=[None])


def test_k_larger_than_corpus_pads(corpus):
    ids, emb, q = corpus
    idx = CorpusIndex.build(ids[:5], emb[:5])
    got = idx.search(q[:2], k=8, exclude=[{int(ids[0])}, None])
    assert (got.ids[0] >= 0).sum() == 4 and (got.ids[1] >= 0).sum() == 5
    assert np.all(got.ids[0, 4:] == -1) and np.all(np.isneginf(got.scores[0, 4:]))
    assert idx.search(q[:2], k=0).ids.shape == (2, 0)


def test_add_then_search_finds_the_new_id_and_duplicates_replace(corpus):
    ids, emb, q = corpus
    idx = CorpusIndex.build(ids[:100], emb[:100])
    new_id = 123456789012
    assert idx.add([new_id], q[:1]) == 0  # the query itself: its best match
    assert new_id in idx and len(idx) == 101
    assert idx.search(q[:1], 1).ids[0, 0] == new_id
    # Re-adding an id replaces its vector: the old position is never returned again.
    old_best = int(idx.search(q[1:2], 1).ids[0, 0])
    assert idx.add([old_best], -q[1:2]) == 1  # now pointing away from query 1
    assert len(idx) == 101 and idx.num_tombstones == 1
    res = idx.search(q[1:2], 101)
    assert list(res.ids[0]).count(old_best) == 1 and res.ids[0, -1] == old_best
    with pytest.raises(ValueError, match="duplicates"):
        idx.add([1, 1], emb[:2])
    with pytest.raises(ValueError, match="width"):
        idx.add([2], np.ones((1, D + 1)))
    compacted = idx.compact()
    assert len(compacted) == 101 and compacted.num_tombstones == 0
    np.testing.assert_array_equal(compacted.search(q, 5).ids, idx.search(q, 5).ids)


def test_bad_inputs():
    with pytest.raises(ValueError, match="zero norm"):
        CorpusIndex.build([1, 2], np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="post_ids"):
        CorpusIndex.build([1], np.ones((2, 3)))
    with pytest.raises(ValueError, match="finite"):
        CorpusIndex.build([1], np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="hnsw_m"):
        IndexConfig(hnsw_m=0)


@pytest.mark.parametrize("which", ["flat", "hnsw", "ivf"])
def test_save_load_round_trip(tmp_path, corpus, hnsw_corpus, ivf_corpus, which):
    if which == "flat":
        ids, emb, q = corpus
        idx = CorpusIndex.build(ids, emb)
        idx.add([ids[0]], emb[1:2])  # a tombstone must survive the round trip too
    else:
        ids, emb, q, idx = hnsw_corpus if which == "hnsw" else ivf_corpus
    fp = make_fingerprint("bundle-abc", ids)
    idx.save(tmp_path / "idx", fp)
    loaded = CorpusIndex.load(tmp_path / "idx", fp)
    assert loaded is not None and loaded.kind is idx.kind and len(loaded) == len(idx)
    a, b = idx.search(q, 10), loaded.search(q, 10)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.scores, b.scores)
    if which == "hnsw":
        tuned = CorpusIndex.load(tmp_path / "idx", fp, config=IndexConfig(hnsw_ef_search=17))
        assert tuned.config.hnsw_ef_search == 17 and tuned._index.hnsw.efSearch == 17
    if which == "ivf":
        tuned = CorpusIndex.load(tmp_path / "idx", fp, config=IndexConfig(ivf_nprobe=5, ivf_refine=2))
        assert tuned.config.ivf_nprobe == 5 and faiss.extract_index_ivf(tuned._index).nprobe == 5
        # The refine factor is a search-time knob too: a snapshot written under another one follows the caller.
        assert tuned.config.ivf_refine == 2 and tuned._index.k_factor == 2.0


def test_fingerprint_mismatch_and_torn_saves_are_detected(tmp_path, corpus):
    ids, emb, q = corpus
    d = tmp_path / "idx"
    assert CorpusIndex.load(d, "anything") is None  # nothing saved yet
    CorpusIndex.build(ids, emb).save(d, "fp-1")
    assert CorpusIndex.load(d, "fp-2") is None
    with pytest.raises(IndexMismatchError, match="fp-1"):
        CorpusIndex.load(d, "fp-2", strict=True)
    # Corrupt one data file: the checksum catches it.
    raw = bytearray((d / "ids.npy").read_bytes())
    raw[-1] ^= 0xFF
    (d / "ids.npy").write_bytes(bytes(raw))
    assert CorpusIndex.load(d, "fp-1") is None
    with pytest.raises(IndexMismatchError, match="checksum"):
        CorpusIndex.load(d, "fp-1", strict=True)


def test_load_or_build_pattern_keeps_an_empty_index(tmp_path):
    empty = CorpusIndex.build(np.zeros(0, np.int64), np.zeros((0, D), np.float32))
    assert len(empty) == 0 and bool(empty)
    empty.save(tmp_path / "e", "fp")
    built = []
    idx = CorpusIndex.load(tmp_path / "e", "fp") or built.append(1)
    assert isinstance(idx, CorpusIndex) and not built
    assert idx.search(np.ones((1, D)), 3).ids.tolist() == [[-1, -1, -1]]


def test_make_fingerprint_is_stable_and_split_sensitive():
    a = make_fingerprint("ab", "c")
    assert a == make_fingerprint("ab", "c") and len(a) == 64
    assert a != make_fingerprint("a", "bc")
    assert make_fingerprint(np.arange(3, dtype=np.int64)) != make_fingerprint(np.arange(3, dtype=np.int32))
    with pytest.raises(ValueError, match="parts"):
        make_fingerprint(3)  # type: ignore[arg-type]


def test_remove_hides_posts_and_compact_drops_them() -> None:
    rng = np.random.default_rng(7)
    emb = unit(rng, 50)
    idx = CorpusIndex.build(np.arange(50), emb)
    assert idx.remove([3, 4, 999]) == 2  # an id not indexed is ignored
    assert 3 not in idx and 5 in idx and len(idx) == 48 and idx.num_tombstones == 2
    res = idx.search(emb[3:5], k=50)
    assert not np.isin(res.ids, [3, 4]).any()
    assert (res.ids >= 0).sum(axis=1).tolist() == [48, 48]
    fresh = idx.compact()
    assert fresh.num_tombstones == 0 and fresh.post_ids().tolist() == [i for i in range(50) if i not in (3, 4)]
