"""The Python API for notebooks and scripts: datasets from DataFrames or Arrow tables, train, evaluate,
and a feed, without the CLI. `from phoenix_recsys import dataset_from_tables, fit, evaluate, Feed`
(`fit`, not `train`: `phoenix_recsys.train` is the training package).

Everything here is a thin layer over the same functions the CLI runs, so a notebook and
`phoenix-recsys train/evaluate/feed` give the same results for the same inputs and seeds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from phoenix_recsys.actions import ActionVocabulary
from phoenix_recsys.data.schema import Dataset, load_dataset, write_dataset
from phoenix_recsys.data.synth import SynthConfig, synthesize
from phoenix_recsys.train.bundle import Bundle, load_bundle
from phoenix_recsys.train.run import JobConfig

__all__ = ["Bundle", "Dataset", "Feed", "JobConfig", "SynthConfig", "dataset_from_tables", "evaluate", "load_bundle",
           "load_dataset", "synthesize", "fit"]

Table = Any  # a pandas DataFrame, a pyarrow Table, or a mapping of column name -> array


def _arrow(t: Table | None, what: str) -> pa.Table | Mapping[str, Any] | None:
    """Arrow tables and column mappings pass through; a pandas DataFrame converts without its index."""
    if t is None or isinstance(t, pa.Table | Mapping):
        return t
    if type(t).__module__.startswith("pandas"):
        return pa.Table.from_pandas(t, preserve_index=False)
    raise ValueError(f"{what} must be a pandas DataFrame, a pyarrow Table or a mapping of columns, "
                     f"got {type(t).__name__}")


def dataset_from_tables(
    directory: str | os.PathLike[str],
    events: Table,
    posts: Table,
    follows: Table | None = None,
    *,
    actions: Sequence[str] | ActionVocabulary,
    name: str = "dataset",
) -> Dataset:
    """Write a dataset directory from tables and load it (see docs/data.md for the columns).

    Args:
      directory: where the dataset goes (Parquet + manifest; created if missing).
      events: user_id, post_id, author_id, timestamp, product_surface, and one column per action.
      posts: post_id, author_id, created_at.
      follows: optional user_id, author_id.
      actions: the action names (binary actions), or an `ActionVocabulary`.
      name: recorded in the manifest.

    Raises:
      ValueError: a table breaks the format (the message names the table, column and value).
    """
    vocab = actions if isinstance(actions, ActionVocabulary) else ActionVocabulary.binary(list(actions))
    return write_dataset(directory, _arrow(events, "events"), _arrow(posts, "posts"), _arrow(follows, "follows"),
                         vocab, name=name, source="python")


def _path(ds: Dataset | str | os.PathLike[str]) -> Path:
    return ds.path if isinstance(ds, Dataset) else Path(ds)


def fit(
    dataset: Dataset | str | os.PathLike[str],
    out: str | os.PathLike[str],
    models: Sequence[str] = ("ranker", "retrieval"),
    *,
    config: JobConfig | Mapping[str, Any] | None = None,
    steps: int | None = None,
    epochs: float | None = None,
    protocol: str = "time",
    progress: bool = False,
) -> Bundle:
    """Train `models` on `dataset` into the bundle directory `out` (as `phoenix-recsys train`) and load it.

    `config` is a job document (the `--config` JSON as a dict) or a `JobConfig`; it is validated the
    same way, so a misspelt field raises ValueError naming it.
    """
    from phoenix_recsys.train.run import train_job

    job = config if isinstance(config, JobConfig) else JobConfig.from_dict(dict(config or {}))
    train_job(_path(dataset), out, list(models), config=job, steps=steps, epochs=epochs, protocol=protocol,
              progress=progress)
    return load_bundle(out)


def evaluate(
    bundle: Bundle | str | os.PathLike[str],
    dataset: Dataset | str | os.PathLike[str],
    *,
    split: str = "test",
    protocol: str | None = None,
    max_examples: int | None = None,
    out: str | os.PathLike[str] | None = None,
    ignore_dataset_mismatch: bool = False,
) -> dict[str, Any]:
    """Evaluate a bundle on a split (as `phoenix-recsys evaluate`); returns the report dict (eval.json).

    `protocol` defaults to the one the bundle was trained with ("time" when unknown), and a dataset
    whose content differs from the training data is refused unless `ignore_dataset_mismatch` (its
    splits would not be the training splits). With `out`, report.md / eval.json (and the ROC PNG
    with the [plots] extra) are written there.
    """
    from phoenix_recsys.train.evaluate import (
        check_bundle_dataset,
        evaluate_bundle,
        trained_protocol,
        write_report,
    )
    from phoenix_recsys.train.run import make_protocol

    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    if not ignore_dataset_mismatch:
        check_bundle_dataset(b.meta, ds.name, ds.manifest.get("content_sha256"))
    protocol = protocol or trained_protocol(b.meta) or "time"
    report, raw = evaluate_bundle(b, ds, split=split, protocol=make_protocol(ds, protocol), max_examples=max_examples)
    if out is not None:
        write_report(report, raw, out)
    return report


class Feed:
    """Feeds from a bundle through the serving pipeline, in-process and read-only (the [serve] extra).

    `Feed(bundle_dir, dataset)` seeds a store (default `<bundle>/store.sqlite`) from the dataset when it
    is empty; `feed.for_user(user_id, k)` returns a `FeedResult` (`.items`, each with source,
    probabilities, score contributions and multipliers; `.to_json()`). Close it, or use `with`.
    """

    def __init__(self, bundle: str | os.PathLike[str], dataset: Dataset | str | os.PathLike[str] | None = None,
                 *, store: str | os.PathLike[str] | None = None) -> None:
        from phoenix_recsys._extras import require_extra

        require_extra("faiss", "serve", "Feed")
        from phoenix_recsys.serve.pipeline import FeedService, apply_process_settings
        from phoenix_recsys.serve.settings import load_settings

        settings = load_settings(store_path=store, writes_enabled=False, warmup=False)
        apply_process_settings(settings)
        self._service = FeedService.open(Path(bundle), settings=settings,
                                         data_dir=None if dataset is None else _path(dataset))

    def for_user(self, user_id: int, k: int = 20) -> Any:
        """The top-`k` feed of `user_id` (unknown users get a cold-start feed)."""
        return self._service.feed(int(user_id), int(k))

    def close(self) -> None:
        self._service.close()

    def __enter__(self) -> Feed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
