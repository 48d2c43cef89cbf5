"""Plots people would rather look at: training curves, ROC curves per action, calibration.

Every function returns a `matplotlib.figure.Figure` (a notebook displays it) and writes a PNG when
given a path. Figures are built with the object-oriented API, never through pyplot: no backend is
selected or changed (a notebook keeps its inline/widget backend), and saving to a file renders
with Agg, which needs no display. matplotlib is the `[plots]` extra.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from phoenix_recsys._extras import require_extra

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A pyplot-free Figure (not registered with any backend or figure manager)."""
    return require_extra("matplotlib.figure", "plots", "plotting").Figure(figsize=figsize)


def _save(fig: Figure, path: str | os.PathLike[str] | None, dpi: int) -> None:
    if path is not None:
        fig.savefig(path, dpi=dpi)


def plot_training_curves(
    history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str] | None = None, metric_name: str = "loss"
) -> Figure | None:
    """Loss and the validation metric against step; writes a PNG at `path` if given. None when no history."""
    if not history:
        return None
    steps = [h["step"] for h in history]
    fig = new_figure((10, 3.8))
    axes = fig.subplots(1, 2)
    axes[0].plot(steps, [h["loss"] for h in history], marker="o", ms=3)
    axes[0].set(title="training loss", xlabel="step", ylabel="loss")
    vals = [(h["step"], h["val"].get(metric_name)) for h in history if "val" in h]
    vals = [(s, v) for s, v in vals if v is not None and np.isfinite(v)]
    if vals:
        axes[1].plot(*zip(*vals, strict=True), marker="o", ms=3, color="tab:green")
    axes[1].set(title=f"validation {metric_name}", xlabel="step", ylabel=metric_name)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path, 110)
    return fig


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve (FPR, TPR) at every distinct threshold."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, np.float64)
    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order], s[order]
    last = np.r_[np.nonzero(np.diff(ss))[0], ys.size - 1]
    tp = np.cumsum(ys)[last]
    fp = (last + 1) - tp
    p, n = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / n], np.r_[0.0, tp / p]


def plot_roc_and_calibration(
    curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
    path: str | os.PathLike[str] | None = None,
    bins: int = 10,
) -> Figure | None:
    """ROC curves (one panel per action, one line per scorer) and a calibration panel.

    Args:
      curves: action -> scorer name ("model", "popularity", "oracle") -> (labels, scores).
      path: output PNG (None: only return the figure).
      bins: quantile bins of the calibration (reliability) plot.

    Returns:
      The Figure, or None when there are no actions.
    """
    actions = list(curves)
    if not actions:
        return None
    cols = min(3, len(actions) + 1)
    rows = int(np.ceil((len(actions) + 1) / cols))
    fig = new_figure((4.2 * cols, 3.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    flat = axes.ravel()
    for ax, action in zip(flat, actions, strict=False):
        for name, (y, s) in curves[action].items():
            fpr, tpr = roc_points(y, s)
            ax.plot(fpr, tpr, label=name)
        ax.plot([0, 1], [0, 1], ls=":", color="grey")
        ax.set(title=f"ROC: {action}", xlabel="false positive rate", ylabel="true positive rate")
        ax.legend(fontsize=7, loc="lower right")
    cal = flat[len(actions)]
    for action in actions:
        if "model" not in curves[action]:
            continue
        y, p = curves[action]["model"]
        y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
        edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
        idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
        mp = np.bincount(idx, p, len(edges) - 1) / np.maximum(np.bincount(idx, minlength=len(edges) - 1), 1)
        my = np.bincount(idx, y, len(edges) - 1) / np.maximum(np.bincount(idx, minlength=len(edges) - 1), 1)
        cal.plot(mp, my, marker="o", ms=3, label=action)
    hi = cal.get_xlim()[1]
    cal.plot([0, hi], [0, hi], ls=":", color="grey")
    cal.set(title="calibration (model)", xlabel="mean predicted", ylabel="observed rate")
    cal.legend(fontsize=7)
    for ax in flat[len(actions) + 1 :]:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path, 110)
    return fig
