"""Importers on small fixtures written here (plus the real shared copies where available)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phoenix_recsys.data.importers import import_dataset
from phoenix_recsys.data.importers.kuairand import REQUIRED_COLUMNS
from phoenix_recsys.data.schema import load_dataset


def _write(path, text: str, gz: bool = False):
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# -- MovieLens ---------------------------------------------------------------------------------

ML_DAT = "1::10::5::100\n1::20::3::100\n2::10::4::50\n1::30::4::90\n"


@pytest.mark.parametrize("gz", [False, True])
def test_movielens_dat_with_movies(tmp_path, gz):
    src = tmp_path / "ml"
    src.mkdir()
    _write(src / ("ratings.dat.gz" if gz else "ratings.dat"), ML_DAT, gz=gz)
    # movies.dat of ML-1M is Latin-1.
    (src / "movies.dat").write_bytes(
        "10::Am\xe9lie (2001)::Comedy|Romance\n20::Heat (1995)::Action|Crime\n".encode("latin-1")
    )
    ds = import_dataset("movielens", src / ("ratings.dat.gz" if gz else "ratings.dat"), tmp_path / "out")
    assert ds.actions.names == ("click", "favorite")
    # Per user by time; user 1's two ratings at t=100 keep the file order (10 before 20).
    assert ds.column("user_id").tolist() == [1, 1, 1, 2]
    assert ds.column("post_id").tolist() == [30, 10, 20, 10]
    assert ds.column("click").all()
    assert ds.column("favorite").tolist() == [True, True, False, True]
    assert ds.column("rating").tolist() == [4.0, 5.0, 3.0, 4.0]
    # Author = first genre (Comedy = 5, Action = 1); movie 30 is not in movies.dat -> 0.
    assert dict(zip(ds.column("post_id", "posts"), ds.column("author_id", "posts"), strict=True)) == {
        10: 5,
        20: 1,
        30: 0,
    }
    assert ds.column("created_at", "posts").tolist() == [50, 100, 90]
    assert "Amélie (2001)" in ds.posts.column("title").to_pylist()
    assert "first listed genre" in ds.manifest["notes"]["author"]


def test_movielens_csv_and_udata(tmp_path):
    csv = _write(
        tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,3.5,964981247\n"
    )
    ds = import_dataset("movielens", csv, tmp_path / "a")
    assert ds.column("favorite").tolist() == [False, True]  # sorted by time: 3 (3.5) then 1 (4.0)
    assert "constant author 0" in ds.manifest["notes"]["author"]
    sub = tmp_path / "u"
    sub.mkdir()
    _write(sub / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    flags = ["0"] * 19
    flags[1] = "1"  # Action
    _write(sub / "u.item", "242|Kolya (1996)|24-Jan-1997||http://x|" + "|".join(flags) + "\n")
    ds = import_dataset("movielens", sub / "u.data", tmp_path / "b")
    assert ds.num_events == 2 and not ds.column("favorite").any()
    assert dict(zip(ds.column("post_id", "posts"), ds.column("author_id", "posts"), strict=True)) == {
        242: 1,
        302: 0,
    }


def test_movielens_bad_line_error_and_skip(tmp_path):
    path = _write(tmp_path / "ratings.dat", "1::10::5::100\n1::20::x::100\n2::10::4\n\n3::1::4::7\n")
    with pytest.raises(ValueError, match=r"ratings.dat: line 2: column 'rating': 'x' is not a valid float"):
        import_dataset("movielens", path, tmp_path / "out")
    ds = import_dataset("movielens", path, tmp_path / "out", skip_bad=True)
    assert ds.num_events == 2
    rep = ds.manifest["import"]
    assert rep["skipped_lines"] == 2
    assert [e["line"] for e in rep["skipped_examples"]] == [2, 3]
    neg = _write(tmp_path / "neg.dat", "1::10::5::100\n1::20::4::-3\n")
    with pytest.raises(ValueError, match="line 2: negative timestamp -3"):
        import_dataset("movielens", neg, tmp_path / "o2")


def test_movielens_unknown_format(tmp_path):
    path = _write(tmp_path / "x.txt", "hello world\n")
    with pytest.raises(ValueError, match="line 1: not a MovieLens ratings file"):
        import_dataset("movielens", path, tmp_path / "o")


# -- KuaiRand ------------------------------------------------------------------------------------

KR_HEADER = "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,is_hate,long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,is_profile_enter,is_rand,tab"


def _kr_row(user, video, time_ms, click=0, hate=0, play=1500, dur=30000, tab=1, like=0):
    return f"{user},{video},20220430,1800,{time_ms},{click},{like},0,0,0,{hate},0,{play},{dur},0,0,0,1,{tab}"


def test_kuairand(tmp_path):
    rows = [
        _kr_row(0, 5, 1651314030900, click=1, play=2500),
        _kr_row(0, 6, 1651314030100, hate=1, tab=2),  # earlier ms in the same second -> first
        _kr_row(1, 5, 1651314000000, like=1, dur=0),
    ]
    path = _write(tmp_path / "log.csv.gz", KR_HEADER + "\n" + "\n".join(rows) + "\n", gz=True)
    ds = import_dataset("kuairand", path, tmp_path / "out")
    assert ds.actions.names == (
        "click",
        "like",
        "follow",
        "comment",
        "forward",
        "hate",
        "long_view",
        "profile_enter",
        "play_time",
    )
    assert ds.actions["hate"].negative and ds.actions["play_time"].kind.value == "continuous"
    assert ds.column("post_id").tolist() == [6, 5, 5]
    assert ds.column("timestamp").tolist() == [1651314030, 1651314030, 1651314000]
    assert ds.column("product_surface").tolist() == [2, 1, 1]
    assert ds.column("hate").tolist() == [True, False, False]
    np.testing.assert_allclose(ds.column("play_time"), [1.5, 2.5, 1.5])
    assert (ds.column("author_id") == ds.column("post_id")).all()  # own-author placeholder
    assert ds.column("video_duration", "posts").tolist() == [30.0, 30.0]
    # Negatives: impressions without any action.
    assert ds.engaged().tolist() == [True, True, True]
    # A video-features file supplies authors.
    feats = _write(tmp_path / "vf.csv", "video_id,author_id,upload_dt\n5,77,2022-04-01\n")
    ds2 = import_dataset("kuairand", path, tmp_path / "out2", video_features=feats)
    a = dict(zip(ds2.column("post_id", "posts"), ds2.column("author_id", "posts"), strict=True))
    assert a[5] == 77 and a[6] == 78 + 6


def test_kuairand_errors(tmp_path):
    bad_header = _write(tmp_path / "h.csv", "user_id,video_id\n1,2\n")
    with pytest.raises(ValueError, match="line 1: KuaiRand header lacks columns"):
        import_dataset("kuairand", bad_header, tmp_path / "o")
    rows = [_kr_row(0, 5, 1000), _kr_row(0, 6, 2000, tab=20), _kr_row(0, 7, 3000, click=2), "0,1,2"]
    path = _write(tmp_path / "log.csv", KR_HEADER + "\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"log.csv: line 3: column 'tab': 20 is outside"):
        import_dataset("kuairand", path, tmp_path / "o")
    ds = import_dataset("kuairand", path, tmp_path / "o", skip_bad=True)
    assert ds.num_events == 1
    assert [e["line"] for e in ds.manifest["import"]["skipped_examples"]] == [3, 4, 5]
    assert "is not 0/1" in ds.manifest["import"]["skipped_examples"][1]["reason"]
    with pytest.raises(ValueError, match="takes no option"):
        import_dataset("kuairand", path, tmp_path / "o", movies="x")


def test_kuairand_real_part(tmp_path, shared_data):
    files = sorted((shared_data / "kuairand-1k").glob("*.csv.gz"))
    ds = import_dataset("kuairand", files[0], tmp_path / "kr")
    assert ds.num_events == 1076 and ds.column("user_id").max() == 26
    assert int(ds.column("click").sum()) == 165 and int(ds.column("long_view").sum()) == 75
    assert np.unique(ds.column("post_id")).size == 1002
    assert (ds.column("product_surface") == 1).all()


# -- Taobao --------------------------------------------------------------------------------------


def test_taobao_aggregation(tmp_path):
    text = "\n".join(
        [
            "1,100,7,pv,1000",
            "1,100,7,cart,1005",
            "1,200,8,pv,1000",  # tie with the first pv: file order decides
            "1,100,7,pv,1010",  # a repeat view merges into the first
            "1,300,8,buy,990",  # no pv at all: kept, click False
            "2,100,7,fav,2000",
            "2,100,7,pv,2001",  # fav before the pv: still the pair's favorite
        ]
    )
    path = _write(tmp_path / "ub.csv.gz", text + "\n", gz=True)
    ds = import_dataset("taobao", path, tmp_path / "o")
    assert ds.actions.names == ("click", "cart", "favorite", "buy")
    assert ds.column("user_id").tolist() == [1, 1, 1, 2]
    assert ds.column("post_id").tolist() == [300, 100, 200, 100]
    assert ds.column("timestamp").tolist() == [990, 1000, 1000, 2001]
    assert ds.column("click").tolist() == [False, True, True, True]
    assert ds.column("cart").tolist() == [False, True, False, False]
    assert ds.column("buy").tolist() == [True, False, False, False]
    assert ds.column("favorite").tolist() == [False, False, False, True]
    assert dict(zip(ds.column("post_id", "posts"), ds.column("author_id", "posts"), strict=True)) == {
        100: 7,
        200: 8,
        300: 8,
    }
    n = ds.manifest["notes"]
    assert n["pairs"] == 4 and n["pairs_without_pv"] == 1 and n["behaviour_rows_before_event_time"] == 1


def test_taobao_bad_behaviour(tmp_path):
    path = _write(tmp_path / "ub.csv", "1,100,7,pv,1000\n1,100,7,like,1001\n")
    with pytest.raises(ValueError, match=r"line 2: behavior_type 'like' is not one of"):
        import_dataset("taobao", path, tmp_path / "o")
    ds = import_dataset("taobao", path, tmp_path / "o", skip_bad=True)
    assert ds.manifest["import"]["skipped_lines"] == 1 and ds.num_events == 1


# -- sequence ----------------------------------------------------------------------------------


def test_sequence(tmp_path):
    path = _write(tmp_path / "seq.txt", "u1 a\nu2 b\nu1 c\nu1 a\n")
    ds = import_dataset("sequence", path, tmp_path / "o")
    assert ds.actions.names == ("click",)
    # String ids get dense ids by first appearance; the order within each user is the line order.
    assert ds.column("user_id").tolist() == [0, 0, 0, 1]
    assert ds.column("post_id").tolist() == [0, 2, 0, 1]
    assert ds.column("timestamp").tolist() == [0, 2, 3, 1]
    m = pq.read_table(ds.path / "ids_user.parquet").to_pydict()
    assert m == {"raw": ["u1", "u2"], "id": [0, 1]}
    ints = _write(tmp_path / "s2.txt.gz", "1 5\n1 6\n2 5\n", gz=True)
    ds2 = import_dataset("sequence", ints, tmp_path / "o2")
    assert ds2.column("post_id").tolist() == [5, 6, 5] and not (ds2.path / "ids_user.parquet").exists()
    bad = _write(tmp_path / "s3.txt", "1 5\n1 6 7\n")
    with pytest.raises(ValueError, match="s3.txt: line 2: expected 2 fields"):
        import_dataset("sequence", bad, tmp_path / "o3")


# -- generic -----------------------------------------------------------------------------------


def test_generic_csv_json_mapping(tmp_path):
    log = _write(
        tmp_path / "log.csv",
        'who,what,by,when,liked,watch,"tab"\nann,p1,x,2024-01-01T00:00:10,yes,1500,0\nbob,p2,y,2024-01-01T00:00:05,0,0,3\nann,p2,y,2024-01-01T00:00:10,true,10,1\n',
    )
    mapping = {
        "user": "who", "post": "what", "author": "by", "timestamp": "when", "timestamp_unit": "iso", "surface": "tab",
        "actions": [{"name": "like", "column": "liked"}, {"name": "watch_time", "column": "watch", "kind": "continuous", "scale": 0.001}],
    }  # fmt: skip
    mp = _write(tmp_path / "map.json", json.dumps(mapping))
    ds = import_dataset("generic", log, tmp_path / "o", mapping=mp)
    assert ds.actions.names == ("like", "watch_time") and ds.actions["watch_time"].kind.value == "continuous"
    assert ds.column("user_id").tolist() == [0, 0, 1]
    assert ds.column("timestamp").tolist() == [1704067210, 1704067210, 1704067205]
    assert ds.column("like").tolist() == [True, True, False]
    np.testing.assert_allclose(ds.column("watch_time"), [1.5, 0.01, 0.0])
    assert ds.column("product_surface").tolist() == [0, 1, 3]
    with pytest.raises(ValueError, match="generic' needs a column-mapping"):
        import_dataset("generic", log, tmp_path / "o")


def test_generic_toml_parquet_and_errors(tmp_path):
    t = pa.table({"u": [3, 1, 1], "i": [9, 8, 9], "ts": [3000, 1000, 2000], "clk": [1, 0, 1]})
    pq.write_table(t, tmp_path / "log.parquet")
    mp = _write(
        tmp_path / "m.toml",
        'user = "u"\npost = "i"\ntimestamp = "ts"\ntimestamp_unit = "ms"\n[[actions]]\nname = "click"\ncolumn = "clk"\n',
    )
    ds = import_dataset("generic", tmp_path / "log.parquet", tmp_path / "o", mapping=mp)
    assert ds.column("user_id").tolist() == [1, 1, 3] and ds.column("timestamp").tolist() == [1, 2, 3]
    assert ds.column("click").tolist() == [False, True, True]
    log = _write(tmp_path / "log.csv", "u,i,ts,clk\n1,2,3,1\n1,2,4,maybe\n")
    with pytest.raises(ValueError, match=r"log.csv: line 3: column 'clk': 'maybe' is not a binary value"):
        import_dataset("generic", log, tmp_path / "o2", mapping=mp)
    ds = import_dataset("generic", log, tmp_path / "o2", mapping=mp, skip_bad=True)
    assert ds.num_events == 1 and ds.manifest["import"]["skipped_lines"] == 1
    bad_map = _write(
        tmp_path / "b.json",
        json.dumps({"user": "u", "post": "i", "timestamp": "ts", "actions": [], "colour": 1}),
    )
    with pytest.raises(ValueError, match="unknown mapping keys"):
        import_dataset("generic", log, tmp_path / "o3", mapping=bad_map)


def test_imported_dataset_reloads(tmp_path):
    path = _write(tmp_path / "ratings.dat", ML_DAT)
    ds = import_dataset("movielens", path, tmp_path / "out")
    again = load_dataset(ds.path)
    assert again.manifest["content_sha256"] == ds.manifest["content_sha256"]


def test_required_kuairand_columns_cover_the_real_header():
    assert set(REQUIRED_COLUMNS) <= set(KR_HEADER.split(","))


@pytest.mark.parametrize(
    "sep, text", [("::", ML_DAT), ("\t", ML_DAT.replace("::", "\t")), (",", ML_DAT.replace("::", ","))]
)
def test_fast_reader_matches_line_reader(tmp_path, sep, text):
    from phoenix_recsys.data.importers._common import BadLines, read_columns

    path = _write(tmp_path / "r.txt.gz", text + "\n", gz=True)  # trailing blank line: ignored by both
    fields = [("u", "int"), ("m", "int"), ("r", "float"), ("t", "int")]
    fast, lines_fast = read_columns(path, sep, fields, BadLines(False))
    slow, lines_slow = read_columns(path, sep, fields, BadLines(False), force_slow=True)
    assert lines_fast is None and lines_slow.tolist() == [1, 2, 3, 4]
    for k, _ in fields:
        np.testing.assert_array_equal(fast[k], slow[k])
        assert fast[k].dtype == slow[k].dtype
