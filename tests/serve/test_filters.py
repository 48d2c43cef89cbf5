"""Tests for serve.filters: each filter on a crafted case, the SPEC 7 order and the report."""

from __future__ import annotations

import numpy as np
import pytest

from phoenix_recsys.serve.filters import (
    FILTER_ORDER,
    Candidates,
    FilterConfig,
    FilterContext,
    FilterName,
    apply_filters,
)

NOW = 1_000_000
VIEWER = 99
NO_AGE = FilterConfig(max_age_s=None)


def make(post_ids, author_ids=None, created_at=None, **extra) -> Candidates:
    n = len(post_ids)
    return Candidates(
        post_ids=np.asarray(post_ids),
        author_ids=np.asarray(author_ids if author_ids is not None else [1] * n),
        created_at=np.asarray(created_at if created_at is not None else [NOW] * n),
        source=np.array(["in_network"] * n, dtype=object),
        **extra,
    )


def run(c: Candidates, config: FilterConfig = NO_AGE, **ctx):
    ctx.setdefault("viewer_id", VIEWER)
    ctx.setdefault("now_s", NOW)
    return apply_filters(c, FilterContext(**ctx), config)


def only_removed(report: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in report.items() if v}


# -- each filter ----------------------------------------------------------------------------------
def test_duplicates_keep_the_first_occurrence():
    c = make([5, 3, 5, 3, 7], retrieval_score=np.array([0.1, 0.2, 0.3, 0.4, 0.5]))
    kept, report = run(c)
    assert kept.post_ids.tolist() == [5, 3, 7]
    np.testing.assert_allclose(kept.retrieval_score, [0.1, 0.2, 0.5])  # the first copy's columns
    assert only_removed(report) == {"duplicate": 2}


def test_missing_author():
    kept, report = run(make([1, 2, 3], author_ids=[4, -1, 5]))
    assert kept.post_ids.tolist() == [1, 3] and only_removed(report) == {"missing_author": 1}


def test_too_old_is_strict_and_can_be_switched_off():
    c = make([1, 2, 3, 4], created_at=[NOW, NOW - 100, NOW - 101, NOW + 5])
    kept, report = run(c, FilterConfig(max_age_s=100))
    assert kept.post_ids.tolist() == [1, 2, 4] and only_removed(report) == {"too_old": 1}
    kept, report = run(c, NO_AGE)
    assert len(kept) == 4 and report["too_old"] == 0
    assert FilterConfig().max_age_s == 48 * 3600  # production default
    with pytest.raises(ValueError, match="now_s"):
        apply_filters(c, FilterContext(viewer_id=VIEWER), FilterConfig(max_age_s=100))


def test_own_posts():
    kept, report = run(make([1, 2], author_ids=[VIEWER, 3]))
    assert kept.post_ids.tolist() == [2] and only_removed(report) == {"own_post": 1}


def test_repeated_reposts_keep_the_first_of_an_original_and_its_reposts():
    # 10 and 11 repost original 5; 12 reposts 6; 5 itself appears after its reposts; 13 is original.
    c = make([10, 11, 12, 5, 13], author_ids=[1, 2, 3, 4, 5], repost_of=np.array([5, 5, 6, -1, -1]))
    kept, report = run(c)
    assert kept.post_ids.tolist() == [10, 12, 13] and only_removed(report) == {"repeated_repost": 2}
    # Without a repost_of column the filter does not apply.
    kept, report = run(make([10, 11]))
    assert len(kept) == 2 and report["repeated_repost"] == 0


def test_repost_dedup_only_counts_survivors_of_earlier_filters():
    # The first repost of 5 is the viewer's own post, so it is gone before dedup; the second stays.
    c = make([10, 11], author_ids=[VIEWER, 2], repost_of=np.array([5, 5]))
    kept, report = run(c)
    assert kept.post_ids.tolist() == [11] and only_removed(report) == {"own_post": 1}


def test_seen_and_served_in_session():
    c = make([1, 2, 3, 4])
    kept, report = run(c, seen_post_ids=[2, 100], served_post_ids=np.array([3]))
    assert kept.post_ids.tolist() == [1, 4]
    assert only_removed(report) == {"seen": 1, "served_in_session": 1}


def test_muted_keywords_case_insensitive_on_word_boundaries():
    text = np.array(
        ["I love Cats", "category theory", "the cat sat", None, "Big   Bang theory", "big bangle", "CAT!"],
        dtype=object,
    )
    c = make(list(range(7)), text=text)
    kept, report = run(c, muted_keywords=["cat", "big bang"])
    # "Cats" is a different word from "cat" on word boundaries: kept. None text: kept.
    assert kept.post_ids.tolist() == [0, 1, 3, 5]
    assert only_removed(report) == {"muted_keyword": 3}
    # No text column, or no keywords: not applicable.
    assert run(make([1]), muted_keywords=["cat"])[1]["muted_keyword"] == 0
    assert run(c)[1]["muted_keyword"] == 0
    with pytest.raises(ValueError, match="muted_keywords"):
        FilterContext(viewer_id=1, muted_keywords="cat")
    with pytest.raises(ValueError, match="muted_keywords"):
        FilterContext(viewer_id=1, muted_keywords=["  "])


def test_keyword_regex_metacharacters_are_literal():
    c = make([1, 2], text=np.array(["c++ rocks", "cxx rocks"], dtype=object))
    kept, _ = run(c, muted_keywords=["c++"])
    assert kept.post_ids.tolist() == [2]


def test_blocked_or_muted_authors():
    kept, report = run(make([1, 2, 3], author_ids=[4, 5, 6]), blocked_or_muted_author_ids={5, 6})
    assert kept.post_ids.tolist() == [1] and only_removed(report) == {"blocked_or_muted_author": 2}


# -- order and report -----------------------------------------------------------------------------
def test_order_each_candidate_is_charged_to_the_first_filter_that_removes_it():
    # Row by row, each candidate matches several filters; the earliest in SPEC order claims it.
    c = make(
        [1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        author_ids=[1, 1, -1, 2, VIEWER, 3, 3, 4, 5, 6, 7],
        created_at=[NOW, NOW, NOW, 0, NOW, NOW, NOW, NOW, NOW, NOW, NOW],
        repost_of=np.array([-1, -1, -1, -1, -1, 50, 50, -1, -1, -1, -1]),
        text=np.array(
            ["ok", "ok", "spam", "spam", "spam", "ok", "ok", "ok", "ok", "spam", "ok"], dtype=object
        ),
    )
    ctx = dict(
        seen_post_ids=[1, 2, 3, 6, 7],  # 1 survives dedup but is seen; 6 is a repeated repost first
        served_post_ids=[3, 8],
        muted_keywords=["spam"],
        blocked_or_muted_author_ids=[-1, 2, 6, 7],
    )
    kept, report = run(c, FilterConfig(max_age_s=3600), **ctx)
    assert list(report) == [f.value for f in FILTER_ORDER]
    assert report == {
        "duplicate": 1,  # second 1
        "missing_author": 1,  # 2 (also seen, also muted text, also "blocked" -1)
        "too_old": 1,  # 3 (also seen, served, muted text, blocked author 2)
        "own_post": 1,  # 4
        "repeated_repost": 1,  # 6 (also seen)
        "seen": 2,  # 1, 7
        "served_in_session": 1,  # 8
        "muted_keyword": 1,  # 9 (also blocked author 6)
        "blocked_or_muted_author": 1,  # 10
    }
    assert kept.post_ids.tolist() == [5]
    assert sum(report.values()) == len(c) - len(kept)


def test_disabled_filters_and_bad_names():
    c = make([1, 1])
    kept, report = run(c, FilterConfig(max_age_s=None, disabled=frozenset({"duplicate"})))
    assert len(kept) == 2 and report["duplicate"] == 0
    with pytest.raises(ValueError, match="disabled"):
        FilterConfig(disabled=frozenset({"dupes"}))
    assert FilterConfig(disabled=frozenset({"seen"})).disabled == {FilterName.SEEN}


def test_context_validation_names_the_field():
    with pytest.raises(ValueError, match="viewer_id"):
        FilterContext(viewer_id="me")
    with pytest.raises(ValueError, match="now_s"):
        FilterContext(viewer_id=1, now_s=1.5)
    with pytest.raises(ValueError, match="seen_post_ids"):
        FilterContext(viewer_id=1, seen_post_ids=["a"])


def test_filters_do_not_mutate_inputs_and_handle_empty():
    c = make([3, 3, 4])
    before = c.post_ids.copy()
    run(c, seen_post_ids=[4])
    np.testing.assert_array_equal(c.post_ids, before)
    kept, report = run(Candidates.empty(), muted_keywords=["x"])
    assert len(kept) == 0 and sum(report.values()) == 0


# -- Candidates -----------------------------------------------------------------------------------
def test_take_with_mask_and_indices():
    c = make([10, 11, 12], author_ids=[1, 2, 3], text=np.array(["a", None, "c"], dtype=object))
    assert c.take(np.array([True, False, True])).post_ids.tolist() == [10, 12]
    t = c.take(np.array([2, 0, 2]))
    assert t.post_ids.tolist() == [12, 10, 12] and t.text.tolist() == ["c", "a", "c"]
    assert t.repost_of is None
    with pytest.raises(ValueError, match="mask"):
        c.take(np.array([True, False]))


def test_candidates_validation_names_the_column():
    with pytest.raises(ValueError, match="author_ids"):
        Candidates(post_ids=[1, 2], author_ids=[1], created_at=[0, 0], source="fresh")
    with pytest.raises(ValueError, match="created_at"):
        Candidates(post_ids=[1], author_ids=[1], created_at=[0.5], source="fresh")
    with pytest.raises(ValueError, match="text"):
        Candidates(post_ids=[1], author_ids=[1], created_at=[0], source="fresh", text=np.array(["a", "b"]))


def test_concat_fills_missing_optional_columns_and_in_network():
    a = make([1, 2], author_ids=[5, 6], repost_of=np.array([-1, 9]))
    b = Candidates(post_ids=[3], author_ids=[7], created_at=[0], source="popular", retrieval_score=[0.5])
    c = Candidates.concat([a, b])
    assert c.post_ids.tolist() == [1, 2, 3]
    assert c.repost_of.tolist() == [-1, 9, -1]
    assert np.isnan(c.retrieval_score[:2]).all() and c.retrieval_score[2] == 0.5
    assert c.source.tolist() == ["in_network", "in_network", "popular"]
    assert c.text is None
    assert c.in_network([6, 7]).tolist() == [False, True, True]
    assert len(Candidates.concat([])) == 0
