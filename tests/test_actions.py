"""Action vocabularies: the 19 Phoenix actions, JSON round trip, validation, default weights (SPEC 1, 7)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_recsys.actions import (
    DEFAULT_ACTION_WEIGHTS,
    PHOENIX_ACTIONS,
    Action,
    ActionKind,
    ActionVocabulary,
    weight_vector,
)

# SPEC 1, in order.
SPEC_ACTIONS = [
    "favorite", "reply", "repost", "photo_expand", "click", "profile_click", "vqv", "share", "share_via_dm",
    "share_via_copy_link", "dwell", "quote", "quoted_click", "follow_author", "not_interested", "block_author",
    "mute_author", "report", "dwell_time",
]  # fmt: skip
# SPEC 7, in the same order.
SPEC_WEIGHTS = [
    0.5, 5.0, 1.0, 0.05, 0.4, 0.0, 0.05, 2.0, 5.0, 20.0, 0.0, 5.0, 0.05, 4.0, -43.2, -31.2, -58.8, -234.0, 0.004,
]  # fmt: skip


def test_phoenix_actions_in_spec_order():
    vocab = ActionVocabulary.phoenix()
    assert len(vocab) == 19
    assert list(vocab.names) == SPEC_ACTIONS
    assert vocab == PHOENIX_ACTIONS


def test_only_dwell_time_is_continuous():
    vocab = ActionVocabulary.phoenix()
    assert vocab["dwell_time"].kind is ActionKind.CONTINUOUS
    assert vocab.continuous_indices == (18,)
    assert vocab.binary_indices == tuple(range(18))
    assert vocab.binary_mask() == (True,) * 18 + (False,)


def test_negative_actions_flagged():
    vocab = ActionVocabulary.phoenix()
    assert {a.name for a in vocab if a.negative} == {"not_interested", "block_author", "mute_author", "report"}


def test_index_and_lookup():
    vocab = ActionVocabulary.phoenix()
    for i, name in enumerate(SPEC_ACTIONS):
        assert vocab.index(name) == i
        assert vocab[name].name == name
        assert name in vocab
    assert "like" not in vocab
    with pytest.raises(ValueError, match="like"):
        vocab.index("like")


def test_default_weights_equal_spec():
    assert weight_vector(ActionVocabulary.phoenix()) == pytest.approx(SPEC_WEIGHTS, abs=0)
    assert [DEFAULT_ACTION_WEIGHTS[n] for n in SPEC_ACTIONS] == SPEC_WEIGHTS


def test_default_weights_for_a_custom_vocabulary():
    vocab = ActionVocabulary(
        (
            Action(name="like"),
            Action(name="reply"),
            Action(name="hide", negative=True),
            Action(name="watch_seconds", kind=ActionKind.CONTINUOUS),
        )
    )
    # Phoenix names keep their production weight; others get +1 / -1 / 0 (continuous).
    assert weight_vector(vocab) == (1.0, 5.0, -1.0, 0.0)


def test_explicit_weights():
    vocab = ActionVocabulary.binary(["like", "reply", "hide"])
    assert weight_vector(vocab, {"reply": 2.5}) == (0.0, 2.5, 0.0)
    with pytest.raises(ValueError, match="favorite"):
        weight_vector(vocab, {"favorite": 1.0})


def test_json_round_trip_phoenix():
    vocab = ActionVocabulary.phoenix()
    data = json.loads(json.dumps(vocab.to_json()))
    assert data[18] == {"name": "dwell_time", "kind": "continuous", "negative": False}
    assert ActionVocabulary.from_json(data) == vocab


names_st = st.lists(
    st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True), min_size=1, max_size=8, unique=True
)


@given(
    names=names_st,
    data=st.data(),
)
@settings(max_examples=40, deadline=None, derandomize=True)
def test_json_round_trip_any_vocabulary(names, data):
    acts = tuple(
        Action(
            name=n,
            kind=data.draw(st.sampled_from(list(ActionKind))),
            negative=data.draw(st.booleans()),
        )
        for n in names
    )
    vocab = ActionVocabulary(acts)
    again = ActionVocabulary.from_json(json.loads(json.dumps(vocab.to_json())))
    assert again == vocab
    assert again.names == tuple(names)


def test_from_json_defaults_kind_to_binary():
    vocab = ActionVocabulary.from_json([{"name": "like"}, {"name": "stay", "kind": "continuous"}])
    assert [a.kind for a in vocab] == [ActionKind.BINARY, ActionKind.CONTINUOUS]


def test_duplicate_names_rejected():
    with pytest.raises(ValueError, match="duplicate.*like"):
        ActionVocabulary.binary(["like", "reply", "like"])
    with pytest.raises(ValueError, match="duplicate"):
        ActionVocabulary.from_json([{"name": "a"}, {"name": "a", "kind": "continuous"}])


@pytest.mark.parametrize("name", ["", "Like", "two words", "like-it", "like!", "ÄRGER"])
def test_invalid_names_rejected(name):
    with pytest.raises(ValueError, match="name"):
        Action(name=name)


def test_invalid_kind_rejected():
    with pytest.raises(ValueError, match="kind"):
        Action(name="like", kind="sometimes")
    with pytest.raises(ValueError, match="kind"):
        ActionVocabulary.from_json([{"name": "like", "kind": "ternary"}])


@pytest.mark.parametrize(
    "data",
    [[], "favorite", [{"kind": "binary"}], ["favorite"], {"name": "favorite"}],
    ids=["empty", "string", "no-name", "bare-string-entry", "mapping"],
)
def test_bad_json_rejected(data):
    with pytest.raises(ValueError):
        ActionVocabulary.from_json(data)


def test_empty_vocabulary_rejected():
    with pytest.raises(ValueError, match="at least one"):
        ActionVocabulary(())
