"""Stable, seeded multi-hashing of entity ids into embedding-table buckets (SPEC 2).

Every id (int or str) goes through `k` independent hash functions to buckets `1..V-1` of its entity's
table; bucket 0 is reserved for padding. The functions are pure NumPy/xxhash and depend only on the id,
the seed and the table size, so training, serving and any other process agree (unlike Python `hash()`,
which is salted per process for strings).

Definition (documented so other languages can reproduce it):
  key(id)  = id as uint64                      for non-negative ints (< 2**63)
           = xxh64(utf-8 bytes of id, seed=0)  for strings
  h_j(id)  = splitmix64(key(id) XOR salt_j)    salt_j = splitmix64(seed * 64 + entity_code * 8 + j + 1)
  bucket_j = h_j(id) mod (V - 1) + 1           in [1, V-1]
with entity codes user=1, item=2, author=3, ip=4, so the three tables hash independently.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence

import numpy as np
import xxhash

from phoenix_recsys._fields import reject_unknown_fields

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


class Entity(enum.IntEnum):
    """Entity types with their own hash salts and embedding tables."""

    USER = 1
    ITEM = 2
    AUTHOR = 3
    IP = 4


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HashConfig:
    """How many hash functions each entity uses and how large each entity's table is.

    Attributes:
      num_user_hashes / num_item_hashes / num_author_hashes: k per entity (the seeds' names).
      user_vocab_size / item_vocab_size / author_vocab_size: rows V of each table, bucket 0 included.
      seed: salts every hash function; part of a model bundle, since changing it remaps every id.
    """

    num_user_hashes: int = 2
    num_item_hashes: int = 2
    num_author_hashes: int = 2
    user_vocab_size: int = 100_003
    item_vocab_size: int = 100_003
    author_vocab_size: int = 20_011
    seed: int = 0

    def __post_init__(self) -> None:
        for f in ("num_user_hashes", "num_item_hashes", "num_author_hashes"):
            v = getattr(self, f)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"HashConfig.{f} must be an int >= 1, got {v!r}")
        for f in ("user_vocab_size", "item_vocab_size", "author_vocab_size"):
            v = getattr(self, f)
            if not isinstance(v, int) or v < 2:
                raise ValueError(f"HashConfig.{f} must be an int >= 2 (bucket 0 is padding), got {v!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"HashConfig.seed must be a non-negative int, got {self.seed!r}")

    def num_hashes(self, entity: Entity) -> int:
        """k for `entity`."""
        return {
            Entity.USER: self.num_user_hashes,
            Entity.ITEM: self.num_item_hashes,
            Entity.AUTHOR: self.num_author_hashes,
        }[entity]

    def vocab_size(self, entity: Entity) -> int:
        """V for `entity`."""
        return {
            Entity.USER: self.user_vocab_size,
            Entity.ITEM: self.item_vocab_size,
            Entity.AUTHOR: self.author_vocab_size,
        }[entity]

    def hash_users(self, ids: IdArray) -> np.ndarray:
        """User ids `[N]` -> buckets `[N, num_user_hashes]` (int32, each in [1, V-1])."""
        return hash_ids(ids, Entity.USER, self.num_user_hashes, self.user_vocab_size, self.seed)

    def hash_items(self, ids: IdArray) -> np.ndarray:
        """Post ids `[N]` -> buckets `[N, num_item_hashes]`."""
        return hash_ids(ids, Entity.ITEM, self.num_item_hashes, self.item_vocab_size, self.seed)

    def hash_authors(self, ids: IdArray) -> np.ndarray:
        """Author ids `[N]` -> buckets `[N, num_author_hashes]`."""
        return hash_ids(ids, Entity.AUTHOR, self.num_author_hashes, self.author_vocab_size, self.seed)

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> HashConfig:
        reject_unknown_fields(cls, data)
        return cls(**data)


IdArray = np.ndarray | Sequence[int] | Sequence[str]


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser on a uint64 array (wrapping arithmetic); a bijection on 64 bits."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
    return x ^ (x >> np.uint64(31))


def id_keys(ids: IdArray) -> np.ndarray:
    """Map raw ids to uint64 keys: ints as themselves, strings through xxh64.

    Raises:
      ValueError: an int id is negative or >= 2**63, or an id is neither int nor str.
    """
    if isinstance(ids, np.ndarray):
        arr = ids.reshape(-1)
    else:
        seq = list(ids)
        if any(isinstance(v, str | bytes) for v in seq):
            # An object array keeps ints as ints in a mixed list (np.asarray would stringify them)
            # and keeps trailing NULs of strings (a fixed-width str array drops them).
            arr = np.empty(len(seq), dtype=object)
            arr[:] = seq
        else:
            arr = np.asarray(seq).reshape(-1)
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if arr.dtype.kind in "iu":
        if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
            bad = int(arr[np.argmax(arr < 0)])
            raise ValueError(f"ids must be non-negative, got {bad}")
        if arr.dtype == np.uint64 and arr.size and arr.max() >= np.uint64(2**63):
            raise ValueError(f"ids must be < 2**63, got {int(arr.max())}")
        return arr.astype(np.uint64)
    if arr.dtype.kind in "UST" or arr.dtype == object:
        out = np.empty(arr.shape[0], dtype=np.uint64)
        for i, v in enumerate(arr.tolist()):
            if isinstance(v, bytes):
                v = v.decode("utf-8")
            if isinstance(v, bool) or not isinstance(v, int | str):
                raise ValueError(f"ids[{i}] must be an int or str, got {type(v).__name__} {v!r}")
            if isinstance(v, int):
                if not 0 <= v < 2**63:
                    raise ValueError(f"ids[{i}] must be in [0, 2**63), got {v}")
                out[i] = v
            else:
                out[i] = xxhash.xxh64_intdigest(v.encode("utf-8"), seed=0)
        return out
    raise ValueError(f"ids must be ints or strings, got array of dtype {arr.dtype}")


def hash_ids(ids: IdArray, entity: Entity, num_hashes: int, vocab_size: int, seed: int) -> np.ndarray:
    """Hash ids `[N]` to buckets `[N, num_hashes]` (int32) in `[1, vocab_size - 1]`; never 0."""
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
    if vocab_size > 2**31:
        raise ValueError(f"vocab_size must fit int32 bucket ids, got {vocab_size}")
    keys = id_keys(ids)
    j = np.arange(num_hashes, dtype=np.uint64)
    salts = splitmix64(np.uint64(seed) * np.uint64(64) + np.uint64(int(entity) * 8) + j + np.uint64(1))
    h = splitmix64(keys[:, None] ^ salts[None, :])
    return (h % np.uint64(vocab_size - 1) + np.uint64(1)).astype(np.int32)
