"""`data stats` numbers and the `data` CLI commands (through typer's CliRunner)."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from phoenix_recsys.cli.data import data_app
from phoenix_recsys.data.stats import compute_stats, plot_stats

runner = CliRunner()


def test_stats_counts(small_dataset):
    st = compute_stats(small_dataset)
    ds = small_dataset
    assert st.num_events == 120 and st.num_posts == 30 and st.num_follows == 3
    assert st.num_users == np.unique(ds.column("user_id")).size
    engaged = ds.column("click") | ds.column("favorite") | ds.column("report")
    assert st.num_engaged == engaged.sum() and st.num_negatives == (~engaged).sum()
    fav = next(a for a in st.actions if a.name == "favorite")
    assert fav.positives == ds.column("favorite").sum() and np.isclose(fav.rate, ds.column("favorite").mean())
    assert sum(c for _, _, c in st.history_hist) == st.num_users
    per_user = np.bincount(ds.column("user_id")[engaged])
    lo_bin = {lo: c for lo, _, c in st.history_hist}
    assert lo_bin[20] == ((per_user >= 20) & (per_user < 50)).sum()
    assert json.loads(json.dumps(st.to_json()))["num_events"] == 120


def test_plot_writes_png(small_dataset, tmp_path):
    out = tmp_path / "s.png"
    plot_stats(compute_stats(small_dataset), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_synth_then_stats(tmp_path):
    out = tmp_path / "syn"
    r = runner.invoke(
        data_app,
        [
            "synth",
            "--users",
            "30",
            "--posts",
            "120",
            "--out",
            str(out),
            "--seed",
            "3",
            "--impressions-per-user",
            "10",
            "--topics",
            "5",
        ],
    )
    assert r.exit_code == 0, r.output
    assert (out / "manifest.json").is_file() and (out / "world.npz").is_file()
    r = runner.invoke(data_app, ["stats", str(out), "--json"])
    assert r.exit_code == 0, r.output
    st = json.loads(r.stdout)
    assert st["num_users"] == 30 and st["has_true_probs"] is True
    r = runner.invoke(data_app, ["stats", str(out), "--plot", str(tmp_path / "p.png")])
    assert r.exit_code == 0 and "favorite" in r.output and (tmp_path / "p.png").is_file()


def test_cli_errors_are_red_messages_not_tracebacks(tmp_path):
    bad = tmp_path / "ratings.dat"
    bad.write_text("1::2::5::10\n1::3::5\n")
    r = runner.invoke(data_app, ["import", "movielens", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1
    assert "line 2: expected 4 fields" in r.output and "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    r = runner.invoke(data_app, ["import", "movielens", str(bad), "--out", str(tmp_path / "o"), "--skip-bad"])
    assert r.exit_code == 0 and "skipped 1 malformed line" in r.output
    r = runner.invoke(data_app, ["stats", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "not a dataset directory" in r.output
    r = runner.invoke(data_app, ["synth", "--users", "0", "--out", str(tmp_path / "z")])
    assert r.exit_code == 1 and "num_users" in r.output
