"""`store migrate SRC DST`: every row of a SQLite store arrives in PostgreSQL, verified."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from phoenix_recsys.serve.store import Store
from phoenix_recsys.serve.store.transfer import _columns, _tables

REPO = Path(__file__).resolve().parents[2]


def _fill(s: Store) -> None:
    rng = np.random.default_rng(0)
    s.add_posts(np.arange(700), rng.integers(0, 20, 700), rng.integers(0, 10**6, 700),
                text=[None if i % 3 else f"post {i} ü" for i in range(700)],
                video_duration_s=np.where(np.arange(700) % 5 == 0, 12.5, np.nan))  # fmt: skip
    s.add_posts([3], [1], [5])  # an update: a second post_log entry
    s.add_engagements(rng.integers(0, 50, 900), rng.integers(0, 700, 900), np.arange(900),
                      [{"like": 1.0, "dwell_time": 2.25}] * 900)  # fmt: skip
    s.follow(1, 2)
    s.block(1, 3)
    s.mute(4, 5)
    s.mark_served(1, [1, 2, 3], "sess-a")
    s.mark_seen(2, [4, 5])


def _rows(s: Store, t: str, cols: list[str]) -> list[tuple]:
    return sorted(s._fetchall(f"SELECT {', '.join(cols)} FROM {t}"), key=repr)


def test_store_migrate_copies_every_row_and_refuses_a_full_target(tmp_path, pg_url):
    src = tmp_path / "s.db"
    with Store.open(src) as s:
        _fill(s)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [
        sys.executable,
        "-m",
        "phoenix_recsys.cli.main",
        "store",
        "migrate",
        str(src),
        pg_url,
        "--batch-size",
        "256",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "engagements: 900 rows" in r.stdout
    with Store.open(src, read_only=True) as s, Store.open(pg_url) as d:
        tables = _tables(s)
        assert {"posts", "engagements", "post_log", "served", "seen", "follows"} <= set(tables)
        for t in tables:
            cols = _columns(s, t)
            assert _rows(s, t, cols) == _rows(d, t, cols), t
        # The copied sequence continues past the copied numbers: no seq is reused.
        before = d.post_seq()
        d.add_posts([9999], [1], [0])
        assert d.post_seq() == before + 1 == s.post_seq() + 1
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 1 and "not empty" in again.stderr
    forced = subprocess.run([*cmd, "--force"], capture_output=True, text=True, env=env, timeout=120)
    assert forced.returncode == 0, forced.stderr
    with Store.open(pg_url) as d:
        assert d.num_posts() == 700
