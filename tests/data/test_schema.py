"""Dataset format: round trip, stable ordering, and validation errors that name the bad column."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phoenix_recsys.actions import ActionVocabulary
from phoenix_recsys.data.schema import load_dataset, write_dataset


def _rewrite(directory, key: str, table: pa.Table) -> None:
    """Replace one table and fix the manifest's hashes, so load sees only the intended defect."""
    file = {"events": "events.parquet", "posts": "posts.parquet", "follows": "follows.parquet"}[key]
    pq.write_table(table, directory / file)
    m = json.loads((directory / "manifest.json").read_text())
    m["tables"][key]["rows"] = table.num_rows
    m["tables"][key]["sha256"] = hashlib.sha256((directory / file).read_bytes()).hexdigest()
    h = hashlib.sha256()
    for k in ("events", "posts", "follows"):
        if k in m["tables"]:
            h.update((directory / m["tables"][k]["file"]).read_bytes())
    m["content_sha256"] = h.hexdigest()
    (directory / "manifest.json").write_text(json.dumps(m))


def test_round_trip_and_manifest(small_dataset, vocab):
    ds = load_dataset(small_dataset.path)
    m = ds.manifest
    assert m["format_version"] == 1 and m["name"] == "small" and m["source"] == "test"
    assert ActionVocabulary.from_json(m["actions"]) == vocab
    assert m["tables"]["events"]["rows"] == ds.num_events == 120
    assert m["tables"]["follows"]["rows"] == 3
    assert len(m["content_sha256"]) == 64
    assert ds.events.schema.field("favorite").type == pa.bool_()
    assert ds.events.schema.field("product_surface").type == pa.int32()


def test_events_sorted_stably_ties_in_given_order(tmp_path, make_tables, vocab):
    ev, po, fo = make_tables()
    ev["seq"] = np.arange(ev["user_id"].size)  # the given (source) position
    ds = write_dataset(tmp_path / "d", ev, po, fo, vocab, name="d", source="t")
    u, t, seq = ds.column("user_id"), ds.column("timestamp"), ds.column("seq")
    key = np.lexsort((seq, t, u))
    np.testing.assert_array_equal(key, np.arange(u.size))  # sorted by (user, ts, source position)
    assert (np.diff(t)[np.diff(u) == 0] == 0).any()  # the fixture really has ties


def test_content_hash_is_deterministic(tmp_path, make_tables, vocab):
    ev, po, fo = make_tables()
    a = write_dataset(tmp_path / "a", ev, po, fo, vocab, name="x", source="t")
    b = write_dataset(tmp_path / "b", ev, po, fo, vocab, name="x", source="t")
    assert a.manifest["content_sha256"] == b.manifest["content_sha256"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda e: e.pop("timestamp"), "events.parquet: missing required column 'timestamp'"),
        (lambda e: e.pop("favorite"), "events.parquet: missing action column 'favorite'"),
        (lambda e: e.__setitem__("click", np.full(e["click"].size, 2)), "column 'click' must be 0/1"),
        (
            lambda e: e.__setitem__("product_surface", np.full(e["user_id"].size, 16)),
            "'product_surface' value 16",
        ),
        (lambda e: e.__setitem__("post_id", np.full(e["user_id"].size, 999)), "'post_id' value 999"),
        (lambda e: e.__setitem__("author_id", e["author_id"] + 50), "column 'author_id' value"),
        (
            lambda e: e.__setitem__("timestamp", e["timestamp"] * 0 - 5),
            "column 'timestamp' has negative value -5",
        ),
        (
            lambda e: e.__setitem__("p_click", np.full(e["user_id"].size, 1.5)),
            "column 'p_click' must lie in [0, 1.0]",
        ),
        (lambda e: e.__setitem__("p_nope", np.zeros(e["user_id"].size)), "name no action"),
    ],
)
def test_write_rejects_bad_events(tmp_path, make_tables, vocab, mutate, message):
    ev, po, fo = make_tables()
    mutate(ev)
    with pytest.raises(ValueError) as err:
        write_dataset(tmp_path / "d", ev, po, fo, vocab, name="d", source="t")
    assert message in str(err.value)


def test_write_rejects_duplicate_posts(tmp_path, make_tables, vocab):
    ev, po, fo = make_tables()
    po["post_id"] = po["post_id"].copy()
    po["post_id"][1] = po["post_id"][0]
    with pytest.raises(ValueError, match="posts.parquet: column 'post_id' must be unique"):
        write_dataset(tmp_path / "d", ev, po, fo, vocab, name="d", source="t")


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda t: t.set_column(
                t.schema.get_field_index("timestamp"),
                "timestamp",
                pa.array(t.column("timestamp").to_numpy().astype(str)),
            ),
            "events.parquet: column 'timestamp' has type string, expected int64",
        ),
        (
            lambda t: t.set_column(
                t.schema.get_field_index("favorite"),
                "favorite",
                pa.array(t.column("favorite").to_numpy().astype(np.int64)),
            ),
            "events.parquet: action column 'favorite' (binary) has type int64, expected bool",
        ),
        (lambda t: t.drop_columns(["report"]), "events.parquet: missing action column 'report'"),
        (lambda t: t.drop_columns(["user_id"]), "events.parquet: missing required column 'user_id'"),
        (
            lambda t: t.set_column(
                t.schema.get_field_index("timestamp"),
                "timestamp",
                pa.array(np.r_[-7, t.column("timestamp").to_numpy()[1:]]),
            ),
            "column 'timestamp' has negative value -7 at row 0",
        ),
        (
            lambda t: t.take(pa.array(np.arange(t.num_rows)[::-1].copy())),
            "rows must be sorted by (user_id, timestamp)",
        ),
        (
            lambda t: t.set_column(
                t.schema.get_field_index("post_id"),
                "post_id",
                pa.array(np.r_[t.column("post_id").to_numpy()[:-1], 4242]),
            ),
            "column 'post_id' value 4242 at row",
        ),
    ],
)
def test_load_names_the_bad_column(small_dataset, edit, message):
    _rewrite(small_dataset.path, "events", edit(small_dataset.events))
    with pytest.raises(ValueError) as err:
        load_dataset(small_dataset.path)
    assert message in str(err.value)


def test_load_detects_content_change(small_dataset):
    t = small_dataset.events
    pq.write_table(t.slice(0, t.num_rows), small_dataset.path / "events.parquet", compression="snappy")
    with pytest.raises(ValueError, match="events.parquet: content hash mismatch"):
        load_dataset(small_dataset.path)
    load_dataset(small_dataset.path, verify_hash=False)  # the data itself is still valid


def test_load_detects_row_count_and_missing_files(small_dataset):
    m = json.loads((small_dataset.path / "manifest.json").read_text())
    m["tables"]["posts"]["rows"] += 1
    (small_dataset.path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="posts.parquet: has 30 rows, the manifest says 31"):
        load_dataset(small_dataset.path)
    (small_dataset.path / "manifest.json").unlink()
    with pytest.raises(ValueError, match="manifest.json: missing"):
        load_dataset(small_dataset.path)


def test_posts_type_error_names_posts_file(small_dataset):
    p = small_dataset.posts
    _rewrite(
        small_dataset.path,
        "posts",
        p.set_column(2, "created_at", pa.array(p.column("created_at").to_numpy().astype(np.float64))),
    )
    with pytest.raises(
        ValueError, match="posts.parquet: column 'created_at' has type double, expected int64"
    ):
        load_dataset(small_dataset.path)


def test_engaged_default_is_binary_actions_only(tmp_path):
    vocab = ActionVocabulary.from_json([{"name": "click"}, {"name": "watch", "kind": "continuous"}])
    ev = {
        "user_id": [1, 1, 1], "post_id": [5, 5, 5], "author_id": [0, 0, 0], "timestamp": [1, 2, 3],
        "product_surface": [0, 0, 0], "click": [True, False, False], "watch": np.array([0.0, 3.0, 0.0], np.float32),
    }  # fmt: skip
    ds = write_dataset(
        tmp_path / "d",
        ev,
        {"post_id": [5], "author_id": [0], "created_at": [0]},
        None,
        vocab,
        name="d",
        source="t",
    )
    assert ds.engaged().tolist() == [True, False, False]
    assert ds.engaged(["click", "watch"]).tolist() == [True, True, False]
    assert ds.follows is None and not (ds.path / "follows.parquet").exists()
    with pytest.raises(ValueError, match="unknown action 'like'"):
        ds.engaged(["like"])
