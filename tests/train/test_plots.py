"""Plots return matplotlib Figures and leave the caller's (a notebook's) backend alone."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from matplotlib.figure import Figure

from phoenix_recsys.train.plots import plot_roc_and_calibration, plot_training_curves

HISTORY = [{"step": s, "loss": 1.0 / s, "val": {"auroc": 0.5 + s / 100}} for s in range(1, 6)]


def _curves() -> dict:
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.3
    return {"like": {"model": (y, np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)), "popularity": (y, rng.random(200))}}


def test_plots_return_figures_and_write_pngs(tmp_path) -> None:
    fig = plot_training_curves(HISTORY, tmp_path / "curves.png", "auroc")
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["training loss", "validation auroc"]
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [h["loss"] for h in HISTORY])
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    roc = plot_roc_and_calibration(_curves())  # no path: nothing written, figure returned
    assert isinstance(roc, Figure)
    assert {ln.get_label() for ln in roc.axes[0].lines} >= {"model", "popularity"}
    assert plot_training_curves([]) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


def test_importing_and_plotting_keeps_the_backend() -> None:
    """A notebook's chosen backend survives import and plotting (the module used to force Agg)."""
    code = (
        "import matplotlib; matplotlib.use('svg'); import sys, tempfile, os\n"
        "from phoenix_recsys.train.plots import plot_training_curves\n"
        "plot_training_curves([{'step': 1, 'loss': 1.0}], os.path.join(tempfile.mkdtemp(), 'c.png'))\n"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["svg", "False"]
