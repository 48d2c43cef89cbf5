"""Hyper-parameter search with Optuna (`phoenix-recsys tune`) over the job file's "tune" section.

Each trial samples the search space, trains one model (`train_job`) into `<out>/trial_<n>` and reports
the best validation value of the chosen metric. The study lives in an Optuna storage (by default
`sqlite:///<out>/study.db`), so running the command again with the same study adds trials to it.
Optuna is the `[track]` extra.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from pathlib import Path
from typing import Any

from phoenix_recsys._extras import require_extra
from phoenix_recsys.train.run import JobConfig, train_job


@dataclasses.dataclass(frozen=True)
class TuneResult:
    """The study after this run: its best trial, as values and as a job document to train with."""

    study: str
    storage: str
    metric: str
    direction: str
    trials: int
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    best_config: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = doc
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def _suggest(trial: Any, name: str, dim: dict[str, Any]) -> Any:
    if "choices" in dim:
        return trial.suggest_categorical(name, dim["choices"])
    if dim.get("int"):
        return trial.suggest_int(name, math.ceil(dim["low"]), math.floor(dim["high"]), log=dim.get("log", False))
    return trial.suggest_float(name, dim["low"], dim["high"], log=dim.get("log", False))


def tune(
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: JobConfig,
    *,
    trials: int,
    storage: str | None = None,
    study_name: str = "phoenix-tune",
    steps: int | None = None,
    epochs: float | None = None,
    protocol: str = "time",
    seed: int = 0,
    progress: bool = False,
) -> TuneResult:
    """Run `trials` more trials of the study and return its best trial so far.

    Raises:
      ValueError: no "tune" section / empty search space, or a bad trial count.
    """
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    spec = config.tune
    if not spec or not spec.get("params"):
        raise ValueError('the job config has no search space: add "tune": {"params": {"train.learning_rate": '
                         '{"low": 1e-4, "high": 1e-2, "log": true}}}')
    optuna = require_extra("optuna", "track", "tune")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kind = spec.get("kind", "ranker")
    direction = spec.get("direction", "maximize")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    base = {k: v for k, v in config.to_dict().items() if k != "tune"}
    metric = spec.get("metric")
    if metric:  # pick each trial's checkpoint by the metric being optimised
        _set(base, f"{kind}.selection_metric", metric)
    study = optuna.create_study(storage=storage, study_name=study_name, direction=direction, load_if_exists=True,
                                # a resumed study gets a different seed, so it does not replay its first draws
                                sampler=optuna.samplers.TPESampler(seed=seed + len(study_trials(optuna, storage,
                                                                                                study_name))))
    names: dict[str, str] = {}

    def objective(trial: Any) -> float:
        doc = copy.deepcopy(base)
        for path, dim in spec["params"].items():
            _set(doc, path, _suggest(trial, path, dim))
        res = train_job(data_dir, out / f"trial_{trial.number}", [kind], config=JobConfig.from_dict(doc),
                        steps=steps, epochs=epochs, protocol=protocol, progress=progress)[kind]
        name = metric or res.metric_name
        names["metric"] = name
        vals = [h["val"][name] for h in res.history if name in h.get("val", {}) and math.isfinite(h["val"][name])]
        if not vals:
            raise ValueError(f"trial {trial.number}: no finite validation value of {name!r}")
        return max(vals) if direction == "maximize" else min(vals)

    study.optimize(objective, n_trials=trials, catch=())
    best = study.best_trial
    best_doc = copy.deepcopy(base)
    for path, value in best.params.items():
        _set(best_doc, path, value)
    return TuneResult(study=study_name, storage=storage, metric=metric or names.get("metric", "selection metric"),
                      direction=direction, trials=len(study.trials), best_trial=best.number,
                      best_value=float(best.value), best_params=dict(best.params), best_config=best_doc)


def study_trials(optuna: Any, storage: str, study_name: str) -> list[Any]:
    """The trials already in `study_name` at `storage` (empty for a new study)."""
    try:
        return optuna.load_study(study_name=study_name, storage=storage).trials
    except KeyError:  # no such study yet
        return []
