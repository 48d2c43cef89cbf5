"""Fixtures of the data-layer tests: a tiny synthetic world and small hand-written datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from phoenix_recsys.actions import ActionVocabulary
from phoenix_recsys.data.schema import Dataset, write_dataset
from phoenix_recsys.data.synth import SynthConfig, synthesize
from phoenix_recsys.hashing import HashConfig

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
if not SHARED_DATA.is_dir():
    SHARED_DATA = Path("/work/shared/data")

VOCAB = ActionVocabulary.binary(["click", "favorite", "report"], negative=["report"])


@pytest.fixture(scope="session")
def hash_config() -> HashConfig:
    # Distinct prime table sizes and hash counts, so a swapped entity or axis shows.
    return HashConfig(
        num_user_hashes=2, num_item_hashes=3, num_author_hashes=1,
        user_vocab_size=1009, item_vocab_size=2003, author_vocab_size=503, seed=5,
    )  # fmt: skip


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Dataset:
    """60 users, 300 posts, ~30 impressions each; seed 7."""
    out = tmp_path_factory.mktemp("tiny_synth")
    return synthesize(out, SynthConfig(num_users=60, num_posts=300, impressions_per_user=30, seed=7))


@pytest.fixture(scope="session")
def medium_synth(tmp_path_factory) -> Dataset:
    """800 users x ~60 impressions (~50k): enough mass for the statistical tests; seed 11."""
    out = tmp_path_factory.mktemp("medium_synth")
    return synthesize(out, SynthConfig(num_users=800, num_posts=3000, impressions_per_user=60, seed=11))


def small_tables(n_users: int = 3, with_request: bool = False, seed: int = 0) -> tuple[dict, dict, dict]:
    """A random little log over VOCAB with many timestamp ties; events in 'source' order."""
    rng = np.random.default_rng(seed)
    n = 40 * n_users
    posts = np.arange(100, 130)
    authors = posts % 7
    user = rng.integers(0, n_users, n)
    ts = 1000 + rng.integers(0, 25, n) * 10  # few distinct seconds -> ties
    post = rng.choice(posts, n)
    events = {
        "user_id": user,
        "post_id": post,
        "author_id": authors[post - 100],
        "timestamp": ts,
        "product_surface": rng.integers(0, 4, n).astype(np.int32),
        "click": rng.random(n) < 0.4,
        "favorite": rng.random(n) < 0.2,
        "report": rng.random(n) < 0.02,
    }
    if with_request:
        events["request_id"] = ts // 50 * 10 + user
    post_t = {"post_id": posts, "author_id": authors, "created_at": np.full(posts.size, 500)}
    follows = {"user_id": np.array([0, 0, 1]), "author_id": np.array([1, 2, 3])}
    return events, post_t, follows


@pytest.fixture
def small_dataset(tmp_path) -> Dataset:
    ev, po, fo = small_tables()
    return write_dataset(tmp_path / "small", ev, po, fo, VOCAB, name="small", source="test")


@pytest.fixture(scope="session")
def make_tables():
    """`small_tables` as a fixture (test modules cannot import conftest)."""
    return small_tables


@pytest.fixture(scope="session")
def vocab() -> ActionVocabulary:
    return VOCAB


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real datasets; tests using them skip where they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("shared/data is not available")
    return SHARED_DATA
