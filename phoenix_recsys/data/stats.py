"""Dataset statistics: counts, per-action positive rates, history lengths (Rich table / JSON / PNG)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from phoenix_recsys.actions import ActionKind
from phoenix_recsys.data.schema import Dataset

HISTORY_BINS: tuple[int, ...] = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
"""Lower edges of the history-length histogram bins (the last bin is open)."""


@dataclasses.dataclass(frozen=True)
class ActionStats:
    """One action's numbers: positives = events with the action set (value > 0 if continuous)."""

    name: str
    kind: str
    negative: bool
    positives: int
    rate: float
    mean: float
    mean_when_positive: float


@dataclasses.dataclass(frozen=True)
class DatasetStats:
    """What `phoenix-recsys data stats` reports.

    Attributes:
      num_events: rows of events.parquet (impressions, engaged or not).
      num_engaged: events with any engagement action (default: any binary action) -- these form
        histories; num_negatives: the rest (impressions without engagement).
      history_hist: `(lo, hi, users)` per bin of the number of engaged events per user (hi None =
        open); the history a model sees for a user's latest event is at most this long.
    """

    name: str
    source: str
    num_users: int
    num_posts: int
    num_posts_with_events: int
    num_authors: int
    num_events: int
    num_engaged: int
    num_negatives: int
    num_follows: int | None
    time_min: int | None
    time_max: int | None
    events_per_user: dict[str, float]
    actions: list[ActionStats]
    history_hist: list[tuple[int, int | None, int]]
    surfaces: dict[int, int]
    has_true_probs: bool
    skipped_lines: int

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (what `data stats --json` prints)."""
        d = dataclasses.asdict(self)
        d["history_hist"] = [{"lo": lo, "hi": hi, "users": n} for lo, hi, n in self.history_hist]
        d["surfaces"] = {str(k): v for k, v in self.surfaces.items()}
        return d


def compute_stats(dataset: Dataset, *, engagement_actions: Sequence[str] | None = None) -> DatasetStats:
    """Count everything `DatasetStats` holds (vectorised; fine for tens of millions of events)."""
    users = dataset.column("user_id")
    ts = dataset.column("timestamp")
    engaged = dataset.engaged(engagement_actions)
    uniq_users, per_user = np.unique(users, return_counts=True)
    eng_per_user = np.bincount(np.searchsorted(uniq_users, users[engaged]), minlength=uniq_users.size)
    edges = np.array(HISTORY_BINS)
    which = np.searchsorted(edges, eng_per_user, side="right") - 1
    counts = np.bincount(which, minlength=edges.size)
    hist = [
        (int(lo), int(edges[i + 1] - 1) if i + 1 < edges.size else None, int(counts[i]))
        for i, lo in enumerate(edges)
    ]
    acts = []
    n = max(dataset.num_events, 1)
    for a in dataset.actions:
        v = dataset.column(a.name).astype(np.float64)
        pos = v > 0
        acts.append(
            ActionStats(
                name=a.name,
                kind=a.kind.value,
                negative=a.negative,
                positives=int(pos.sum()),
                rate=float(pos.sum() / n),
                mean=float(v.mean()) if v.size else 0.0,
                mean_when_positive=float(v[pos].mean())
                if pos.any() and a.kind is ActionKind.CONTINUOUS
                else (1.0 if pos.any() else 0.0),
            )
        )
    surf, surf_n = np.unique(dataset.column("product_surface"), return_counts=True)
    return DatasetStats(
        name=dataset.name,
        source=str(dataset.manifest.get("source", "")),
        num_users=int(uniq_users.size),
        num_posts=dataset.posts.num_rows,
        num_posts_with_events=int(np.unique(dataset.column("post_id")).size),
        num_authors=int(np.unique(dataset.column("author_id", "posts")).size),
        num_events=dataset.num_events,
        num_engaged=int(engaged.sum()),
        num_negatives=int((~engaged).sum()),
        num_follows=None if dataset.follows is None else dataset.follows.num_rows,
        time_min=int(ts.min()) if ts.size else None,
        time_max=int(ts.max()) if ts.size else None,
        events_per_user={
            "min": int(per_user.min()) if per_user.size else 0,
            "median": float(np.median(per_user)) if per_user.size else 0.0,
            "mean": float(per_user.mean()) if per_user.size else 0.0,
            "max": int(per_user.max()) if per_user.size else 0,
        },
        actions=acts,
        history_hist=hist,
        surfaces={int(s): int(c) for s, c in zip(surf, surf_n, strict=True)},
        has_true_probs=dataset.has_true_probs,
        skipped_lines=int(dataset.manifest.get("import", {}).get("skipped_lines", 0)),
    )


def _bar(frac: float, width: int = 30) -> str:
    full = int(round(max(0.0, min(1.0, frac)) * width))
    return "█" * full + "·" * (width - full)


def render_stats(stats: DatasetStats, console: Any | None = None) -> None:
    """Print the stats as Rich tables (counts, actions with rate bars, history-length histogram)."""
    import datetime as dt

    from rich.console import Console
    from rich.table import Table

    con = console or Console()
    t = Table(title=f"dataset {stats.name}", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")

    def when(x: int | None) -> str:
        return "-" if x is None else dt.datetime.fromtimestamp(x, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")

    rows = [
        ("users", f"{stats.num_users:,}"),
        ("posts (with events)", f"{stats.num_posts:,} ({stats.num_posts_with_events:,})"),
        ("authors", f"{stats.num_authors:,}"),
        ("events (impressions)", f"{stats.num_events:,}"),
        ("engaged events", f"{stats.num_engaged:,}"),
        ("impressions without engagement", f"{stats.num_negatives:,}"),
        ("follows", "-" if stats.num_follows is None else f"{stats.num_follows:,}"),
        (
            "events per user min/median/max",
            f"{stats.events_per_user['min']}/{stats.events_per_user['median']:g}/{stats.events_per_user['max']}",
        ),
        ("time span (UTC)", f"{when(stats.time_min)} .. {when(stats.time_max)}"),
        ("surfaces", ", ".join(f"{k}: {v:,}" for k, v in stats.surfaces.items())),
        ("true probabilities", "yes (synthetic)" if stats.has_true_probs else "no"),
        ("skipped lines at import", f"{stats.skipped_lines:,}"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    con.print(t)
    at = Table(title="actions (rate = share of events with the action)")
    for col, just in (
        ("action", "left"),
        ("kind", "left"),
        ("positives", "right"),
        ("rate", "right"),
        ("", "left"),
        ("mean", "right"),
    ):
        at.add_column(col, justify=just)  # type: ignore[arg-type]
    top = max((a.rate for a in stats.actions), default=1.0) or 1.0
    for a in stats.actions:
        kind = a.kind + (" (neg)" if a.negative else "")
        mean = f"{a.mean:.4g}" if a.kind == "continuous" else ""
        at.add_row(a.name, kind, f"{a.positives:,}", f"{a.rate:.4%}", _bar(a.rate / top, 16), mean)
    con.print(at)
    ht = Table(title="history length per user (engaged events)")
    ht.add_column("length", justify="right")
    ht.add_column("users", justify="right")
    ht.add_column("")
    most = max((c for _, _, c in stats.history_hist), default=1) or 1
    for lo, hi, c in stats.history_hist:
        label = f"{lo}+" if hi is None else (str(lo) if hi == lo else f"{lo}-{hi}")
        ht.add_row(label, f"{c:,}", _bar(c / most, 30))
    con.print(ht)


def plot_stats(stats: DatasetStats, path: str | os.PathLike[str] | None = None):
    """The action rates (log scale) and the history-length histogram as a matplotlib Figure,
    written as a PNG at `path` if given (no pyplot, so no backend is chosen or changed)."""
    from phoenix_recsys.train.plots import new_figure

    fig = new_figure((12, 4.5))
    ax1, ax2 = fig.subplots(1, 2)
    names = [a.name for a in stats.actions]
    rates = [max(a.rate, 1e-7) for a in stats.actions]
    colors = ["tab:red" if a.negative else "tab:blue" for a in stats.actions]
    ax1.barh(names[::-1], rates[::-1], color=colors[::-1])
    ax1.set_xscale("log")
    ax1.set_xlabel("share of events with the action (log)")
    ax1.set_title(f"{stats.name}: action rates")
    labels = [
        f"{lo}+" if hi is None else (str(lo) if hi == lo else f"{lo}-{hi}")
        for lo, hi, _ in stats.history_hist
    ]
    ax2.bar(labels, [c for _, _, c in stats.history_hist], color="tab:green")
    ax2.set_xlabel("engaged events per user")
    ax2.set_ylabel("users")
    ax2.set_title("history lengths")
    ax2.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
