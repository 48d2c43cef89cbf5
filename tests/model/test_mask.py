"""`make_recsys_attn_mask`: candidate isolation, both history modes, padding keys, bad arguments."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_recsys.model import HistoryAttention, make_recsys_attn_mask

MODES = ["bidirectional", "causal"]
PROP = settings(max_examples=25, deadline=None, derandomize=True)

# The model always builds the mask under jit; one compile per (T, offset, mode) is ~10x cheaper than
# the op-by-op compiles of an eager call, which keeps the property tests fast.
_jit_mask = jax.jit(make_recsys_attn_mask, static_argnums=(0, 1, 2), static_argnames=("history_attention",))


def _mask(t: int, offset: int, mode: str = "bidirectional", dtype=jnp.float32, padding=None) -> np.ndarray:
    m = _jit_mask(t, offset, dtype, history_attention=mode, padding_mask=padding)
    return np.asarray(m.astype(jnp.float32)).astype(int)


# T = 6 (user + 2 history + 3 candidates), candidate_start_offset = 3; rows are queries, columns keys.
CAUSAL_6_3 = [
    [1, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0],
    [1, 1, 1, 0, 0, 0],
    [1, 1, 1, 1, 0, 0],
    [1, 1, 1, 0, 1, 0],
    [1, 1, 1, 0, 0, 1],
]
BIDIRECTIONAL_6_3 = [
    [1, 1, 1, 0, 0, 0],
    [1, 1, 1, 0, 0, 0],
    [1, 1, 1, 0, 0, 0],
    [1, 1, 1, 1, 0, 0],
    [1, 1, 1, 0, 1, 0],
    [1, 1, 1, 0, 0, 1],
]


def test_exact_matrix_causal():
    assert _mask(6, 3, "causal")[0, 0].tolist() == CAUSAL_6_3


def test_exact_matrix_bidirectional():
    assert _mask(6, 3, "bidirectional")[0, 0].tolist() == BIDIRECTIONAL_6_3


def test_default_mode_is_bidirectional():
    m = make_recsys_attn_mask(6, 3)
    assert np.asarray(m).astype(int)[0, 0].tolist() == BIDIRECTIONAL_6_3


def test_enum_and_string_modes_agree():
    for mode in HistoryAttention:
        assert (_mask(7, 4, mode) == _mask(7, 4, mode.value)).all()


def test_exact_matrix_with_padding_mask():
    # Example 0: history slot 2 and candidate 5 are padding; example 1: nothing padded.
    padding = jnp.array([[1, 1, 0, 1, 1, 0], [1, 1, 1, 1, 1, 1]], bool)
    m = _mask(6, 3, "causal", padding=padding)
    assert m.shape == (2, 1, 6, 6)
    expected0 = [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],  # the padded query row 2 still sees valid keys: queries are never masked
        [1, 1, 0, 1, 0, 0],
        [1, 1, 0, 0, 1, 0],
        [1, 1, 0, 0, 0, 0],  # padded candidate: its own (padded) key is masked too
    ]
    assert m[0, 0].tolist() == expected0
    assert m[1, 0].tolist() == CAUSAL_6_3


@given(
    t=st.integers(1, 10),
    data=st.data(),
    mode=st.sampled_from(MODES),
)
@PROP
def test_mask_rules(t, data, mode):
    """Every cell follows the rule, written independently of the implementation."""
    offset = data.draw(st.integers(0, t), label="offset")
    m = _mask(t, offset, mode)
    assert m.shape == (1, 1, t, t)
    m = m[0, 0]
    for q in range(t):
        for k in range(t):
            if q < offset:  # user + history query
                want = k < offset and (mode == "bidirectional" or k <= q)
            else:  # candidate query
                want = k < offset or k == q
            assert m[q, k] == int(want), (q, k)


@pytest.mark.parametrize("mode", MODES)
def test_candidates_see_all_context_and_only_themselves(mode):
    t, offset = 11, 4
    m = _mask(t, offset, mode)[0, 0]
    cand = m[offset:]
    assert (cand[:, :offset] == 1).all()
    assert (cand[:, offset:] == np.eye(t - offset, dtype=int)).all()


def test_causal_history_is_lower_triangular():
    t, offset = 9, 5
    m = _mask(t, offset, "causal")[0, 0]
    assert (m[:offset, :offset] == np.tril(np.ones((offset, offset), int))).all()
    assert (m[:offset, offset:] == 0).all()


def test_bidirectional_history_sees_all_context_never_candidates():
    t, offset = 9, 5
    m = _mask(t, offset, "bidirectional")[0, 0]
    assert (m[:offset, :offset] == 1).all()
    assert (m[:offset, offset:] == 0).all()


@pytest.mark.parametrize("mode", MODES)
def test_single_candidate(mode):
    m = _mask(5, 4, mode)[0, 0]
    assert m[4].tolist() == [1, 1, 1, 1, 1]
    assert (m[:4, 4] == 0).all()


@pytest.mark.parametrize("mode", MODES)
def test_all_candidates_offset_zero_is_identity(mode):
    assert (_mask(5, 0, mode)[0, 0] == np.eye(5, dtype=int)).all()


def test_no_candidates_offset_equals_seq_len():
    assert (_mask(4, 4, "causal")[0, 0] == np.tril(np.ones((4, 4), int))).all()
    assert (_mask(4, 4, "bidirectional")[0, 0] == 1).all()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.int32])
def test_dtype_kept(dtype):
    m = make_recsys_attn_mask(6, 3, dtype)
    assert m.dtype == dtype
    pad = jnp.ones((2, 6), bool)
    assert make_recsys_attn_mask(6, 3, dtype, padding_mask=pad).dtype == dtype


@given(
    t=st.integers(2, 10),
    data=st.data(),
    mode=st.sampled_from(MODES),
)
@settings(max_examples=12, deadline=None, derandomize=True)
def test_padding_mask_zeroes_key_columns_only(t, data, mode):
    offset = data.draw(st.integers(0, t), label="offset")
    valid = np.array(data.draw(st.lists(st.booleans(), min_size=t, max_size=t), label="valid"))
    base = _mask(t, offset, mode)[0, 0]
    m = _mask(t, offset, mode, padding=jnp.asarray(valid[None]))
    assert m.shape == (1, 1, t, t)
    m = m[0, 0]
    assert (m[:, ~valid] == 0).all()  # padded keys never attended
    assert (m[:, valid] == base[:, valid]).all()  # everything else unchanged, padded query rows included


@pytest.mark.parametrize(
    ("seq_len", "offset"),
    [(0, 0), (-3, 0), (5, 6), (5, -1), (5.0, 2), (5, 2.0)],
)
def test_bad_arguments_raise_value_error(seq_len, offset):
    with pytest.raises(ValueError):
        make_recsys_attn_mask(seq_len, offset)


def test_bad_history_attention_raises_value_error():
    with pytest.raises(ValueError):
        make_recsys_attn_mask(5, 2, history_attention="sideways")


@pytest.mark.parametrize("shape", [(6,), (2, 5), (2, 7), (1, 2, 6)])
def test_bad_padding_mask_shape_raises_value_error(shape):
    with pytest.raises(ValueError, match="padding_mask"):
        make_recsys_attn_mask(6, 3, padding_mask=jnp.ones(shape, bool))
