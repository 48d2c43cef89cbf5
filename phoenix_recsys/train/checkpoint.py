"""Orbax checkpoints with a checksum manifest, so a corrupt or half-written checkpoint is refused.

Layout of one checkpoint directory:
  state/            the Orbax PyTree checkpoint (model parameters, optionally optimizer state)
  meta.json         JSON metadata (step, config, metrics ...)
  CHECKSUMS.json    sha256 of every file above, written last; its presence marks a complete save
Saves go to a temporary sibling and are renamed into place, so a crash mid-save leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

CHECKSUMS = "CHECKSUMS.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, incomplete or does not match the model."""


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def save_checkpoint(directory: str | os.PathLike[str], state: Any, meta: dict[str, Any]) -> Path:
    """Atomically write `state` (a pytree of arrays, e.g. `nnx.to_pure_dict(...)`) and `meta`.

    Returns:
      the checkpoint directory.
    """
    final = Path(directory).resolve()
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    host_state = jax.tree.map(lambda x: np.asarray(x), state)
    ocp.PyTreeCheckpointer().save(tmp / "state", host_state)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
    sums = {str(p.relative_to(tmp)): _digest(p) for p in _files(tmp)}
    (tmp / CHECKSUMS).write_text(json.dumps(sums, indent=1) + "\n")
    old = final.with_name(final.name + ".old")
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)
    return final


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def verify_checkpoint(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Check the checksum manifest; returns the checkpoint's meta.

    Raises:
      CheckpointError: the directory, its manifest or a file is missing, or a checksum differs.
    """
    root = Path(directory)
    if not root.is_dir():
        raise CheckpointError(f"no checkpoint at {root}")
    manifest = root / CHECKSUMS
    if not manifest.is_file():
        raise CheckpointError(f"checkpoint {root} is incomplete: {CHECKSUMS} is missing (interrupted save?)")
    try:
        sums = json.loads(manifest.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint {root}: {CHECKSUMS} is corrupt ({e})") from None
    present = {str(p.relative_to(root)) for p in _files(root)}
    missing = sorted(set(sums) - present)
    if missing:
        raise CheckpointError(f"checkpoint {root} is missing files: {missing[:5]}")
    for rel, want in sums.items():
        if _digest(root / rel) != want:
            raise CheckpointError(f"checkpoint {root} is corrupt: {rel} does not match its checksum")
    try:
        return json.loads((root / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {root}: meta.json unreadable ({e})") from None


def load_checkpoint(directory: str | os.PathLike[str], target: Any) -> tuple[Any, dict[str, Any]]:
    """Verify and restore a checkpoint into the structure of `target` (a pure-dict pytree of arrays).

    Returns:
      (restored pytree, meta).

    Raises:
      CheckpointError: corrupt/incomplete, or its arrays do not fit `target` (another configuration).
    """
    meta = verify_checkpoint(directory)
    root = Path(directory).resolve()
    try:
        restored = ocp.PyTreeCheckpointer().restore(root / "state")
    except Exception as e:  # Orbax raises many types; the user needs one clear message
        raise CheckpointError(f"checkpoint {root} could not be restored: {e}") from None
    try:
        flat_t, tree_t = jax.tree.flatten(target)
        flat_r = tree_t.flatten_up_to(_normalise_keys(restored, target))
    except Exception as e:
        raise CheckpointError(f"checkpoint {root} does not match the model's parameter structure: {e}") from None
    for leaf_t, leaf_r in zip(flat_t, flat_r, strict=True):
        if np.shape(leaf_t) != np.shape(leaf_r):
            raise CheckpointError(
                f"checkpoint {root} has an array of shape {np.shape(leaf_r)} where the model expects {np.shape(leaf_t)}"
            )
    return jax.tree.unflatten(tree_t, [np.asarray(x) for x in flat_r]), meta


def _normalise_keys(restored: Any, target: Any) -> Any:
    # Orbax stores dict keys as strings; integer keys (nnx.List indices) come back as "0", "1", ...
    if isinstance(target, dict) and isinstance(restored, dict):
        out = {}
        for k, v in target.items():
            rk = k if k in restored else str(k)
            if rk not in restored:
                raise KeyError(f"missing entry {k!r}")
            out[k] = _normalise_keys(restored[rk], v)
        extra = set(map(str, restored)) - set(map(str, target))
        if extra:
            raise KeyError(f"unexpected entries {sorted(extra)[:5]}")
        return out
    return restored


def model_state(model: nnx.Module) -> dict[str, Any]:
    """The model's parameters as a pure nested dict of arrays."""
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def restore_model(model: nnx.Module, pure: Any) -> None:
    """Write a pure-dict parameter pytree (from `load_checkpoint`) into `model` in place."""
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, jax.tree.map(lambda x: jax.numpy.asarray(x), pure))
    nnx.update(model, state)
