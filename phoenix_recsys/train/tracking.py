"""Experiment tracking for every training run: TensorBoard event files, and MLflow when available.

Each validation record of the loop (training loss, grad norm, per-action loss, validation metrics)
goes to `<run_dir>/tensorboard/` through the `tensorboard` package's own summary writer (the
`[track]` extra; no TensorFlow needed); `tensorboard --logdir BUNDLE` then shows every model of a
bundle. MLflow is optional and never a dependency: when `mlflow` is importable and a tracking
target is configured (`MLFLOW_TRACKING_URI`, or `PHOENIX_MLFLOW=1` for MLflow's default ./mlruns),
the same numbers are logged to an MLflow run named after the run directory.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)

TB_DIR = "tensorboard"


def _scalars(rec: dict[str, Any]) -> dict[str, float]:
    """TensorBoard tags of one metrics.jsonl record: loss, grad_norm, loss/<action>, val/<metric>."""
    out = {k: float(rec[k]) for k in ("loss", "grad_norm") if k in rec}
    out.update({f"loss/{a}": float(v) for a, v in rec.get("loss_per_action", {}).items()})
    out.update({f"val/{m}": float(v) for m, v in rec.get("val", {}).items() if isinstance(v, int | float)})
    return {k: v for k, v in out.items() if math.isfinite(v)}


class RunTracker:
    """Fan-out of a run's metric records to TensorBoard (if installed) and MLflow (if configured).

    Use as a context manager; `log(rec)` takes the loop's metrics.jsonl record (it has "step").
    A disabled tracker (a non-primary process) does nothing.
    """

    def __init__(self, run_dir: str | os.PathLike[str], params: dict[str, Any] | None = None, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self._tb: Any = None
        self._mlflow: Any = None
        if not enabled:
            return
        try:
            from tensorboard.summary import Writer
        except ImportError:
            _log.info("tensorboard is not installed (pip install 'phoenix-recsys[track]'); no event files")
        else:
            self._tb = Writer(str(self.run_dir / TB_DIR))
        if os.environ.get("MLFLOW_TRACKING_URI") or os.environ.get("PHOENIX_MLFLOW") == "1":
            try:
                self._mlflow = importlib.import_module("mlflow")
            except ImportError:
                _log.warning("MLflow tracking was asked for but mlflow is not installed; skipping it")
            else:
                self._mlflow.start_run(run_name=f"{self.run_dir.parent.name}/{self.run_dir.name}")
                if params:
                    self._mlflow.log_params({k: v for k, v in params.items() if v is not None})

    def log(self, rec: dict[str, Any]) -> None:
        """Write one record's scalars at its step."""
        scalars = _scalars(rec)
        step = int(rec["step"])
        if self._tb is not None:
            for tag, v in scalars.items():
                self._tb.add_scalar(tag, v, step)
            self._tb.flush()  # readable while training runs
        if self._mlflow is not None:
            # MLflow metric names may not hold "@" on every backend; keep them filesystem-safe.
            self._mlflow.log_metrics({k.replace("@", "_at_"): v for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._mlflow is not None:
            self._mlflow.end_run()
            self._mlflow = None

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
