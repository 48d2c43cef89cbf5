"""Stable seeded hashing: golden values, process independence, the documented definition, bucket ranges."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_recsys.hashing import Entity, HashConfig, hash_ids

PROP = settings(max_examples=60, deadline=None, derandomize=True)
MAX_ID = 2**63 - 1

# HashConfig(seed=0).hash_items(...) with the default item table (100_003 rows), k = 2. Frozen: a change
# remaps every id of every trained model.
GOLDEN_IDS = [0, 1, 12345, "post-abc"]
GOLDEN_BUCKETS = [[29189, 3610], [19795, 53145], [53976, 79979], [99834, 68666]]


# -- the documented definition, in plain Python ints ----------------------------------------------
_M64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _reference_buckets(raw_id: int | str, entity: Entity, k: int, vocab: int, seed: int) -> list[int]:
    key = raw_id if isinstance(raw_id, int) else xxhash.xxh64_intdigest(raw_id.encode("utf-8"), seed=0)
    salts = [_splitmix64(seed * 64 + int(entity) * 8 + j + 1) for j in range(k)]
    return [_splitmix64(key ^ s) % (vocab - 1) + 1 for s in salts]


# -- golden values and stability -------------------------------------------------------------------
def test_golden_values_homogeneous_lists():
    hc = HashConfig(seed=0)
    assert hc.hash_items([0, 1, 12345]).tolist() == GOLDEN_BUCKETS[:3]
    assert hc.hash_items(["post-abc"]).tolist() == GOLDEN_BUCKETS[3:]


def test_golden_values_mixed_int_and_str_list():
    """An int id hashes as an int whatever else is in the list (np.asarray would turn it into '0')."""
    assert HashConfig(seed=0).hash_items(GOLDEN_IDS).tolist() == GOLDEN_BUCKETS


def test_golden_values_follow_documented_definition():
    for raw, want in zip(GOLDEN_IDS, GOLDEN_BUCKETS, strict=True):
        assert _reference_buckets(raw, Entity.ITEM, 2, 100_003, 0) == want


_CHILD = """
import json
from phoenix_recsys.hashing import HashConfig
hc = HashConfig(seed=0)
print(json.dumps([hc.hash_items([0, 1, 12345]).tolist(), hc.hash_items(["post-abc", "x", ""]).tolist(),
                  hc.hash_users(["alice", 7]).tolist(), HashConfig(seed=5).hash_authors(["bob"]).tolist()]))
"""


def test_same_buckets_in_other_processes():
    hc = HashConfig(seed=0)
    here = [
        hc.hash_items([0, 1, 12345]).tolist(),
        hc.hash_items(["post-abc", "x", ""]).tolist(),
        hc.hash_users(["alice", 7]).tolist(),
        HashConfig(seed=5).hash_authors(["bob"]).tolist(),
    ]
    for hash_seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True, timeout=120
        )
        assert json.loads(out.stdout) == here


# -- properties --------------------------------------------------------------------------------------
ids_st = st.one_of(
    st.lists(st.integers(0, MAX_ID), min_size=1, max_size=20),
    st.lists(st.text(max_size=12), min_size=1, max_size=20),
)
entity_st = st.sampled_from([Entity.USER, Entity.ITEM, Entity.AUTHOR])


@given(
    ids=ids_st,
    vocab=st.one_of(st.just(2), st.just(3), st.integers(2, 2**31)),
    k=st.integers(1, 4),
    seed=st.integers(0, 2**20),
    entity=entity_st,
)
@PROP
def test_buckets_in_range_never_padding(ids, vocab, k, seed, entity):
    out = hash_ids(ids, entity, k, vocab, seed)
    assert out.shape == (len(ids), k)
    assert out.dtype == np.int32
    assert (out >= 1).all() and (out <= vocab - 1).all()
    if vocab == 2:
        assert (out == 1).all()


@given(ids=ids_st, vocab=st.integers(2, 10**6), k=st.integers(1, 3), seed=st.integers(0, 2**20), entity=entity_st)
@settings(max_examples=25, deadline=None, derandomize=True)
def test_matches_documented_definition(ids, vocab, k, seed, entity):
    got = hash_ids(ids, entity, k, vocab, seed).tolist()
    assert got == [_reference_buckets(i, entity, k, vocab, seed) for i in ids]


@given(ids=st.lists(st.integers(0, MAX_ID), min_size=1, max_size=30))
@PROP
def test_list_and_array_inputs_agree(ids):
    hc = HashConfig(seed=1)
    as_list = hc.hash_items(ids)
    np.testing.assert_array_equal(hc.hash_items(np.asarray(ids, np.int64)), as_list)
    np.testing.assert_array_equal(hc.hash_items(np.asarray(ids, np.uint64)), as_list)
    # Each id's buckets do not depend on the rest of the list.
    np.testing.assert_array_equal(np.concatenate([hc.hash_items([i]) for i in ids]), as_list)


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


IDS = list(range(500)) + [f"post-{i}" for i in range(500)]


def test_different_seeds_give_different_buckets():
    a = HashConfig(seed=0, item_vocab_size=10_007)
    b = HashConfig(seed=1, item_vocab_size=10_007)
    assert _agreement(a.hash_items(IDS), b.hash_items(IDS)) < 0.01  # chance level is 1e-4


def test_different_entities_give_different_buckets():
    hc = HashConfig(user_vocab_size=10_007, item_vocab_size=10_007, author_vocab_size=10_007)
    users, items, authors = hc.hash_users(IDS), hc.hash_items(IDS), hc.hash_authors(IDS)
    assert _agreement(users, items) < 0.01
    assert _agreement(items, authors) < 0.01
    assert _agreement(users, authors) < 0.01


def test_hash_functions_within_an_entity_are_independent():
    out = HashConfig(item_vocab_size=10_007, num_item_hashes=3).hash_items(IDS)
    assert _agreement(out[:, 0], out[:, 1]) < 0.01
    assert _agreement(out[:, 1], out[:, 2]) < 0.01
    # Two ids colliding on every hash is far rarer than colliding on one.
    assert len({tuple(r) for r in out.tolist()}) == len(IDS)


def test_buckets_spread_over_the_table():
    out = HashConfig(item_vocab_size=11).hash_items(list(range(5000)))
    counts = np.bincount(out[:, 0], minlength=11)
    assert counts[0] == 0
    assert counts[1:].min() > 5000 / 10 * 0.8  # roughly uniform over buckets 1..10


def test_int_and_string_ids_are_different_keys():
    hc = HashConfig()
    assert hc.hash_items([7]).tolist() != hc.hash_items(["7"]).tolist()


def test_string_ids_keep_trailing_nul():
    """Fixed-width NumPy strings drop trailing NULs, so "a\\x00" would silently collide with "a"."""
    hc = HashConfig()
    assert hc.hash_items(["a\x00"]).tolist() == [_reference_buckets("a\x00", Entity.ITEM, 2, 100_003, 0)]
    assert hc.hash_items(["a\x00"]).tolist() != hc.hash_items(["a"]).tolist()


def test_empty_id_list():
    assert HashConfig().hash_items([]).shape == (0, 2)
    assert HashConfig().hash_items(np.zeros(0, np.int64)).shape == (0, 2)


# -- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ids",
    [[-1], [3, -5], np.array([0, -2], np.int64), [2**63], [1.5], [None], [True], np.array([0.0, 1.0])],
    ids=["neg", "neg-later", "neg-array", "too-large", "float", "none", "bool", "float-array"],
)
def test_bad_ids_raise_value_error(ids):
    with pytest.raises(ValueError, match="ids"):
        HashConfig().hash_items(ids)


def test_negative_id_named_in_message():
    with pytest.raises(ValueError, match="-5"):
        HashConfig().hash_users([3, -5])


@pytest.mark.parametrize(
    "kwargs",
    [{"num_item_hashes": 0}, {"user_vocab_size": 1}, {"seed": -1}, {"author_vocab_size": 2.5}],
)
def test_bad_hash_config(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        HashConfig(**kwargs)


def test_hash_config_json_round_trip():
    hc = HashConfig(num_user_hashes=3, item_vocab_size=77, seed=9)
    assert HashConfig.from_json(json.loads(json.dumps(hc.to_json()))) == hc
    with pytest.raises(ValueError, match="unknown"):
        HashConfig.from_json({**hc.to_json(), "num_post_hashes": 2})
