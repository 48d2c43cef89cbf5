"""Tests for serve.index: exactness, HNSW recall, exclusions, online adds, persistence, fingerprints."""

from __future__ import annotations

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
    idx = CorpusIndex.build(ids, emb, config=IndexConfig(exact_max_size=1000))
    return ids, emb, unit(rng, 200, 32), idx


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


@pytest.mark.parametrize("which", ["flat", "hnsw"])
def test_exclusions_honoured_and_rows_still_full(corpus, hnsw_corpus, which):
    if which == "flat":
        ids, emb, q = corpus
        idx = CorpusIndex.build(ids, emb)
    else:
        ids, emb, q, idx = hnsw_corpus
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


@pytest.mark.parametrize("which", ["flat", "hnsw"])
def test_save_load_round_trip(tmp_path, corpus, hnsw_corpus, which):
    if which == "flat":
        ids, emb, q = corpus
        idx = CorpusIndex.build(ids, emb)
        idx.add([ids[0]], emb[1:2])  # a tombstone must survive the round trip too
    else:
        ids, emb, q, idx = hnsw_corpus
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
