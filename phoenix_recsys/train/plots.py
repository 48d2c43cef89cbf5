"""Plots people would rather look at: training curves, ROC curves per action, calibration (matplotlib, Agg)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], metric_name: str) -> None:
    """Loss and the validation metric against step, one PNG."""
    if not history:
        return
    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
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
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    path: str | os.PathLike[str],
    bins: int = 10,
) -> None:
    """ROC curves (one panel per action, one line per scorer) and a calibration panel.

    Args:
      curves: action -> scorer name ("model", "popularity", "oracle") -> (labels, scores).
      path: output PNG.
      bins: quantile bins of the calibration (reliability) plot.
    """
    actions = list(curves)
    if not actions:
        return
    cols = min(3, len(actions) + 1)
    rows = int(np.ceil((len(actions) + 1) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
