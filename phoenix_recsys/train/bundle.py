"""Model bundles: one directory holding everything `serve` loads.

Layout:
  bundle.json            format version, per-model configs (hashing seeds and action vocabulary inside),
                         the dataset's name and manifest content hash, training configs and results
  ranker/model/          checkpoint of the ranker's parameters (checksummed, see `checkpoint`)
  ranker/metrics.jsonl, ranker/training_curves.png, ranker/checkpoints/{latest,best}   (training run)
  retrieval/...          the same for the two-tower retriever
A bundle may hold one model or both; loading checks that they agree on hashing and actions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from flax import nnx

from phoenix_recsys.model.config import PhoenixModelConfig
from phoenix_recsys.model.ranker import PhoenixModel
from phoenix_recsys.model.retrieval import PhoenixRetrievalModel
from phoenix_recsys.train import checkpoint as ckpt

BUNDLE_FILE = "bundle.json"
FORMAT = "phoenix-recsys-bundle"
VERSION = 1
KINDS = ("ranker", "retrieval")


class BundleError(ValueError):
    """A bundle is missing, corrupt or inconsistent."""


@dataclasses.dataclass
class Bundle:
    """A loaded bundle.

    Attributes:
      path: the bundle directory.
      meta: the parsed bundle.json.
      ranker / retrieval: the models present (None if the bundle lacks one).
    """

    path: Path
    meta: dict[str, Any]
    ranker: PhoenixModel | None
    retrieval: PhoenixRetrievalModel | None

    @property
    def config(self) -> PhoenixModelConfig:
        """The configuration of any model present (they share hashing and actions)."""
        m = self.ranker if self.ranker is not None else self.retrieval
        assert m is not None  # load_bundle refuses an empty bundle
        return m.config

    @property
    def dataset_hash(self) -> str | None:
        return self.meta.get("dataset", {}).get("content_hash")

    def train_config(self, kind: str) -> dict[str, Any]:
        """The `TrainConfig` JSON the `kind` ("ranker" / "retrieval") model was trained with, {} when
        unknown (imported weights): evaluation and serving build histories by the same rules."""
        return (self.meta.get("models", {}).get(kind, {}) or {}).get("train_config") or {}

    def fingerprint(self) -> str:
        """Identifies the exact parameters (for caches such as the corpus index)."""
        return "|".join(f"{k}:{self.meta['models'][k]['checksum']}" for k in sorted(self.meta.get("models", {})))


def _read_meta(path: Path) -> dict[str, Any]:
    f = path / BUNDLE_FILE
    if not f.is_file():
        raise BundleError(f"{path} is not a model bundle: {BUNDLE_FILE} is missing")
    try:
        meta = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{f} is corrupt: {e}") from None
    if meta.get("format") != FORMAT:
        raise BundleError(f"{f} is not a phoenix-recsys bundle (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise BundleError(f"{f} has bundle version {meta.get('version')!r}; this release reads version {VERSION}")
    return meta


def save_model(
    bundle_dir: str | os.PathLike[str],
    kind: str,
    model: nnx.Module,
    *,
    dataset: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    result: dict[str, Any] | None = None,
) -> Path:
    """Write (or replace) one model of a bundle and update bundle.json.

    Raises:
      BundleError: the bundle's other model disagrees on hashing or actions, or on the dataset.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    path = Path(bundle_dir)
    path.mkdir(parents=True, exist_ok=True)
    cfg: PhoenixModelConfig = model.config  # type: ignore[attr-defined]
    meta = _read_meta(path) if (path / BUNDLE_FILE).exists() else {"format": FORMAT, "version": VERSION, "models": {}}
    for other, info in meta["models"].items():
        if other == kind:
            continue
        ocfg = PhoenixModelConfig.from_json(info["config"])
        if ocfg.hash_config != cfg.hash_config:
            raise BundleError(f"the bundle's {other} uses another HashConfig; both models must hash ids alike")
        if ocfg.actions.names != cfg.actions.names:
            raise BundleError(f"the bundle's {other} predicts other actions {list(ocfg.actions.names)}")
    if dataset is not None:
        old = meta.get("dataset")
        if old and old.get("content_hash") != dataset.get("content_hash") and set(meta["models"]) - {kind}:
            raise BundleError(
                f"the bundle's other model was trained on dataset {old.get('name')!r} ({old.get('content_hash')}), "
                f"not {dataset.get('name')!r} ({dataset.get('content_hash')})"
            )
        meta["dataset"] = dataset
    ckpt.save_checkpoint(path / kind / "model", ckpt.model_state(model), {"kind": kind, "config": cfg.to_json()})
    # The manifest hashes every parameter file, so its own hash identifies the parameters.
    checksum = hashlib.sha256((path / kind / "model" / ckpt.CHECKSUMS).read_bytes()).hexdigest()
    meta["models"][kind] = {
        "config": cfg.to_json(),
        "train_config": train_config,
        "result": result,
        "checksum": checksum,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = path / (BUNDLE_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(path / BUNDLE_FILE)
    return path


def load_bundle(bundle_dir: str | os.PathLike[str], kinds: tuple[str, ...] = KINDS) -> Bundle:
    """Load the models of a bundle (those of `kinds` that it holds).

    Raises:
      BundleError: missing/corrupt files, a checkpoint that does not match its config, or models that
        disagree on hashing or actions.
    """
    path = Path(bundle_dir)
    if not path.is_dir():
        raise BundleError(f"no bundle directory at {path}")
    meta = _read_meta(path)
    models: dict[str, Any] = {}
    configs = {}
    for kind in kinds:
        info = meta.get("models", {}).get(kind)
        if info is None:
            continue
        try:
            cfg = PhoenixModelConfig.from_json(info["config"])
        except (ValueError, TypeError, KeyError) as e:
            raise BundleError(f"{path / BUNDLE_FILE}: the {kind} config is invalid: {e}") from None
        configs[kind] = cfg
        cls = PhoenixModel if kind == "ranker" else PhoenixRetrievalModel
        abstract = nnx.eval_shape(lambda c=cfg, k=cls: k(c, rngs=nnx.Rngs(0)))
        try:
            pure, cmeta = ckpt.load_checkpoint(path / kind / "model", ckpt.model_state(abstract))
        except ckpt.CheckpointError as e:
            raise BundleError(f"bundle {path}: {kind} checkpoint: {e}") from None
        if cmeta.get("config") != info["config"]:
            raise BundleError(f"bundle {path}: the {kind} checkpoint was saved with another config than bundle.json's")
        # Restore straight into the abstract model: a real init would draw every table only to
        # overwrite it (seconds per process start for large tables).
        ckpt.restore_model(abstract, pure)
        models[kind] = abstract
    if not models:
        raise BundleError(f"bundle {path} holds none of the models {list(kinds)}")
    if len(configs) == 2:
        if configs["ranker"].hash_config != configs["retrieval"].hash_config:
            raise BundleError(f"bundle {path}: ranker and retrieval use different hash configs")
        if configs["ranker"].actions.names != configs["retrieval"].actions.names:
            raise BundleError(f"bundle {path}: ranker and retrieval have different action vocabularies")
    return Bundle(path=path, meta=meta, ranker=models.get("ranker"), retrieval=models.get("retrieval"))
