"""The Python API's table inputs (issue 17): pandas DataFrames give the same dataset as Arrow tables.

pandas is a dev dependency only: the library takes any DataFrame through `pa.Table.from_pandas`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phoenix_recsys import SynthConfig, dataset_from_tables, synthesize


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    world = synthesize(root / "world", SynthConfig(num_users=20, num_posts=20, seed=1))
    cols = ["user_id", "post_id", "author_id", "timestamp", "product_surface", *world.actions.names]
    events = pq.read_table(root / "world" / "events.parquet").select(cols)
    posts = pq.read_table(root / "world" / "posts.parquet")
    follows = pq.read_table(root / "world" / "follows.parquet")
    return world.actions, events, posts, follows


def _frame(t: pa.Table) -> pd.DataFrame:
    """As a user's DataFrame would come: rows reversed under a non-default index."""
    df = t.to_pandas().iloc[::-1]
    df.index = np.arange(len(df)) * 7 + 3
    return df


def test_dataframes_give_the_same_dataset_as_arrow(tables, tmp_path):
    actions, events, posts, follows = tables
    a = dataset_from_tables(tmp_path / "a", events.take(pa.array(np.arange(len(events))[::-1])), posts, follows,
                            actions=actions)  # fmt: skip
    b = dataset_from_tables(tmp_path / "b", _frame(events), _frame(posts), _frame(follows), actions=actions)
    assert a.num_events == b.num_events == len(events)
    for f in ("events.parquet", "posts.parquet", "follows.parquet"):
        assert pq.read_table(tmp_path / "a" / f).equals(pq.read_table(tmp_path / "b" / f)), f
    assert a.manifest["content_sha256"] == b.manifest["content_sha256"]


def test_datetime_columns_become_unix_seconds(tables, tmp_path):
    actions, events, posts, _ = tables
    ev, po = _frame(events), _frame(posts)
    ev["timestamp"] = pd.to_datetime(ev["timestamp"], unit="s") + pd.Timedelta(milliseconds=700)  # [ns], floored
    po["created_at"] = pd.to_datetime(po["created_at"], unit="s", utc=True)  # tz-aware
    got = dataset_from_tables(tmp_path / "t", ev, po, actions=actions)
    ref = dataset_from_tables(tmp_path / "r", _frame(events), _frame(posts), actions=actions)
    assert got.events.column("timestamp").equals(ref.events.column("timestamp"))
    assert got.posts.column("created_at").equals(ref.posts.column("created_at"))
    bad = _frame(events)
    bad["user_id"] = pd.to_datetime(bad["user_id"], unit="s")
    with pytest.raises(ValueError, match="column 'user_id' holds timestamp"):
        dataset_from_tables(tmp_path / "u", bad, _frame(posts), actions=actions)


def test_bad_frames_name_the_column_and_the_callers_row(tables, tmp_path):
    actions, events, posts, _ = tables
    ev = _frame(events)
    ev["user_id"] = ev["user_id"].astype("Int64")
    ev.iloc[5, ev.columns.get_loc("user_id")] = pd.NA
    with pytest.raises(ValueError, match="column 'user_id' has a null value at row 5"):
        dataset_from_tables(tmp_path / "n", ev, _frame(posts), actions=actions)
    ev = _frame(events)
    ev["timestamp"] = ev["timestamp"].astype(float) + 0.5
    with pytest.raises(ValueError, match="column 'timestamp' must hold integers"):
        dataset_from_tables(tmp_path / "f", ev, _frame(posts), actions=actions)
    with pytest.raises(ValueError, match="missing required column 'author_id'"):
        dataset_from_tables(tmp_path / "m", _frame(events).drop(columns=["author_id"]), _frame(posts), actions=actions)
    with pytest.raises(ValueError, match="events must be a pandas DataFrame"):
        dataset_from_tables(tmp_path / "x", [1, 2, 3], _frame(posts), actions=actions)
