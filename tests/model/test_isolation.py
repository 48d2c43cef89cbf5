"""Candidate isolation as behaviour of the full ranker forward (SPEC 5).

With our defaults (right-anchored positions, one shared candidate position) a candidate's logits depend
only on the user, the valid history and the candidate itself: not on its slot, nor on which or how many
other candidates (real or padded) are scored with it, nor on how much history padding there is. Checked
in both history-attention modes, fp32, atol 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.model import PositionScheme
from phoenix_recsys.testing.fixtures import random_batch

B, C = 2, 7
ATOL = 1e-5
PROP = settings(max_examples=10, deadline=None, derandomize=True)
SEEDS = st.integers(0, 2**16)


@pytest.fixture(scope="module", params=["bidirectional", "causal"])
def mode_cfg(request, cfg):
    return cfg.replace(history_attention=request.param)


@pytest.fixture(scope="module")
def forward(mode_cfg, make_forward):
    return make_forward(mode_cfg)


def _base(cfg, seed: int) -> RecsysBatch:
    return random_batch(cfg, B, C, seed=seed, min_history=1)


def _with_cands(batch: RecsysBatch, post: np.ndarray, author: np.ndarray, surface: np.ndarray) -> RecsysBatch:
    return batch.with_candidates(post.astype(np.int32), author.astype(np.int32), surface.astype(np.int32))


def _cand_arrays(batch: RecsysBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return batch.candidate_post_hashes, batch.candidate_author_hashes, batch.candidate_product_surface


def _pad_history(batch: RecsysBatch, extra: int) -> RecsysBatch:
    def pad(x: np.ndarray) -> np.ndarray:
        return np.pad(x, [(0, 0), (0, extra)] + [(0, 0)] * (x.ndim - 2))

    return batch._replace(
        history_post_hashes=pad(batch.history_post_hashes),
        history_author_hashes=pad(batch.history_author_hashes),
        history_actions=pad(batch.history_actions),
        history_product_surface=pad(batch.history_product_surface),
    )


@given(seed=SEEDS, perm=st.permutations(range(C)))
@PROP
def test_permuting_candidates_permutes_logits(forward, mode_cfg, seed, perm):
    batch = _base(mode_cfg, seed)
    base = forward(batch)
    perm = np.asarray(perm)
    permuted = _with_cands(batch, *(x[:, perm] for x in _cand_arrays(batch)))
    np.testing.assert_allclose(forward(permuted), base[:, perm], atol=ATOL, rtol=0)


@given(
    seed=SEEDS,
    target=st.integers(0, C - 1),
    total=st.sampled_from([1, C, 11]),  # removing all others, changing them, adding more
    data=st.data(),
)
@PROP
def test_other_candidates_do_not_change_a_candidates_logits(forward, mode_cfg, seed, target, total, data):
    batch = _base(mode_cfg, seed)
    base = forward(batch)
    slot = data.draw(st.integers(0, total - 1), label="slot")
    others = random_batch(mode_cfg, B, total - 1, seed=seed + 1) if total > 1 else None
    parts = []
    for mine, theirs in zip(_cand_arrays(batch), _cand_arrays(others) if others else [None] * 3, strict=True):
        t = mine[:, target : target + 1]
        parts.append(t if theirs is None else np.concatenate([theirs[:, :slot], t, theirs[:, slot:]], axis=1))
    out = forward(_with_cands(batch, *parts))
    assert out.shape == (B, total, mode_cfg.num_actions)
    np.testing.assert_allclose(out[:, slot], base[:, target], atol=ATOL, rtol=0)


@given(
    seed=SEEDS,
    padded=st.lists(st.booleans(), min_size=C, max_size=C).filter(lambda p: not all(p)),
    extra=st.sampled_from([0, 4]),
)
@PROP
def test_padded_candidates_do_not_change_real_ones(forward, mode_cfg, seed, padded, extra):
    """Padding some slots (with arbitrary product surfaces) and appending padded slots."""
    batch = _base(mode_cfg, seed)
    base = forward(batch)
    pad = np.asarray(padded)
    post, author, surface = (x.copy() for x in _cand_arrays(batch))
    post[:, pad] = 0
    author[:, pad] = 0
    rng = np.random.default_rng(seed)
    surf_extra = rng.integers(0, mode_cfg.product_surface_vocab_size, (B, extra))
    post = np.concatenate([post, np.zeros((B, extra, post.shape[2]), np.int32)], axis=1)
    author = np.concatenate([author, np.zeros((B, extra, author.shape[2]), np.int32)], axis=1)
    surface = np.concatenate([surface, surf_extra], axis=1)
    out = forward(_with_cands(batch, post, author, surface))
    np.testing.assert_allclose(out[:, :C][:, ~pad], base[:, ~pad], atol=ATOL, rtol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_history_padding_does_not_change_logits(forward, mode_cfg, seed):
    """The same valid history in a longer, more padded history block (S + 6) scores the same."""
    batch = _base(mode_cfg, seed)
    np.testing.assert_allclose(forward(_pad_history(batch, 6)), forward(batch), atol=ATOL, rtol=0)


def test_other_examples_in_the_batch_do_not_matter(forward, mode_cfg):
    batch = _base(mode_cfg, 3)
    other = _base(mode_cfg, 4)
    mixed = RecsysBatch(*(None if x is None else np.concatenate([x[:1], y[1:]]) for x, y in zip(batch, other, strict=True)))
    np.testing.assert_allclose(forward(mixed)[0], forward(batch)[0], atol=ATOL, rtol=0)


def test_per_slot_positions_break_slot_independence(cfg, make_forward):
    """The reference's per-slot positions make a score depend on its slot, so the tests above have teeth."""
    ps = cfg.replace(positions=PositionScheme.PER_SLOT)
    forward = make_forward(ps)
    batch = _base(ps, 0)
    perm = np.roll(np.arange(C), 1)
    permuted = _with_cands(batch, *(x[:, perm] for x in _cand_arrays(batch)))
    assert np.abs(forward(permuted) - forward(batch)[:, perm]).max() > 1e-3
