"""Orbax checkpoints with a checksum manifest, so a corrupt or half-written checkpoint is refused.

Layout of one checkpoint directory:
  state/            the Orbax PyTree checkpoint (model parameters, optionally optimizer state)
  meta.json         JSON metadata (step, config, metrics ...)
  CHECKSUMS.json    sha256 of every file above, written last; its presence marks a complete save
Saves go to a temporary sibling and are renamed into place, so a crash mid-save leaves the previous
checkpoint intact.

Arrays sharded over several devices (training on a mesh, `train.mesh`) are saved sharded: each
process writes its own shards, process 0 the manifest. A restore target of `jax.ShapeDtypeStruct`s
that carry shardings reads them back straight onto that mesh, whatever mesh wrote them; a target of
plain arrays reads them onto the host. Leaves a mesh padded (hash tables whose rows do not divide the
model axis; meta "padded_rows" holds their logical row counts) are truncated or zero-padded to the
target's rows.
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
from jax.experimental import multihost_utils

from phoenix_recsys.train.mesh import path_str

CHECKSUMS = "CHECKSUMS.json"
PADDED_ROWS = "padded_rows"


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


def _is_sharded(x: Any) -> bool:
    return isinstance(x, jax.Array) and len(x.sharding.device_set) > 1


def _barrier(name: str, distributed: bool) -> None:
    if distributed:
        multihost_utils.sync_global_devices(name)


def _checkpointer(distributed: bool) -> ocp.Checkpointer:
    """All processes write their shards of a distributed save; a local save (a bundle written by one
    process of a multi-process job) involves only the calling process."""
    if distributed or jax.process_count() == 1:
        return ocp.PyTreeCheckpointer()
    me = jax.process_index()
    mp = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    return ocp.Checkpointer(ocp.PyTreeCheckpointHandler(multiprocessing_options=mp), multiprocessing_options=mp)


def save_checkpoint(
    directory: str | os.PathLike[str], state: Any, meta: dict[str, Any], *, padded_rows: dict[str, int] | None = None
) -> Path:
    """Atomically write `state` (a pytree of arrays, e.g. `nnx.to_pure_dict(...)`) and `meta`.

    Arrays sharded over several devices are written sharded; when they span processes every process
    must call this (process 0 writes the manifest and renames). `padded_rows` ({leaf path: logical
    rows}) marks leaves stored with zero padding rows (see `train.mesh`).

    Returns:
      the checkpoint directory.
    """
    final = Path(directory).resolve()
    tmp = final.with_name(final.name + ".tmp")
    leaves = jax.tree.leaves(state)
    distributed = jax.process_count() > 1 and any(isinstance(x, jax.Array) and not x.is_fully_addressable
                                                  for x in leaves)
    primary = not distributed or jax.process_index() == 0
    if primary:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    _barrier(f"ckpt-mkdir-{final}", distributed)
    stored = jax.tree.map(lambda x: x if _is_sharded(x) else np.asarray(x), state)
    _checkpointer(distributed).save(tmp / "state", stored)
    _barrier(f"ckpt-saved-{final}", distributed)
    if primary:
        meta = {**meta, PADDED_ROWS: padded_rows} if padded_rows else meta
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
    _barrier(f"ckpt-done-{final}", distributed)
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
    """Verify and restore a checkpoint into the structure of `target`.

    `target` is a pure-dict pytree of arrays (restored as numpy arrays on the host), or of
    `jax.ShapeDtypeStruct`s with shardings (e.g. `MeshPlan.abstract`; restored as arrays on those
    devices, each process reading only its shards). Leaves recorded as padded may differ from the
    target in their row count only.

    Returns:
      (restored pytree, meta).

    Raises:
      CheckpointError: corrupt/incomplete, or its arrays do not fit `target` (another configuration).
    """
    meta = verify_checkpoint(directory)
    root = Path(directory).resolve()
    padded = meta.get(PADDED_ROWS) or {}
    try:
        checkpointer = _checkpointer(any(_target_sharding(x) is not None for x in jax.tree.leaves(target)))
        saved = checkpointer.metadata(root / "state").item_metadata.tree
    except Exception as e:  # Orbax raises many types; the user needs one clear message
        raise CheckpointError(f"checkpoint {root} could not be read: {e}") from None
    try:
        flat_t, tree_t = jax.tree.flatten(target)
        normalised = _normalise_keys(saved, target)
        paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(target)[0]]
        flat_s = tree_t.flatten_up_to(normalised)
    except Exception as e:
        raise CheckpointError(f"checkpoint {root} does not match the model's parameter structure: {e}") from None
    args = []
    for path, leaf_t, leaf_s in zip(paths, flat_t, flat_s, strict=True):
        want, have = tuple(np.shape(leaf_t)), tuple(leaf_s.shape)
        rows = padded.get(path)
        fits = want == have or (rows is not None and want[1:] == have[1:] and min(want[0], have[0]) >= rows)
        if not fits:
            raise CheckpointError(f"checkpoint {root} has an array of shape {have} where the model expects {want}")
        sharding = _target_sharding(leaf_t)
        if sharding is None:
            args.append(ocp.RestoreArgs(restore_type=np.ndarray))
        else:
            args.append(ocp.ArrayRestoreArgs(sharding=sharding, global_shape=want, strict=want == have,
                                             dtype=leaf_t.dtype))
    restore_args = _restore_args_like(saved, target, jax.tree.unflatten(tree_t, args))
    try:
        restored = checkpointer.restore(root / "state", args=ocp.args.PyTreeRestore(restore_args=restore_args))
    except Exception as e:
        raise CheckpointError(f"checkpoint {root} could not be restored: {e}") from None
    flat_r = tree_t.flatten_up_to(_normalise_keys(restored, target))
    out = []
    for leaf_t, leaf_r in zip(flat_t, flat_r, strict=True):
        if isinstance(leaf_r, np.ndarray) and leaf_r.shape != tuple(np.shape(leaf_t)):
            want = tuple(np.shape(leaf_t))
            leaf_r = leaf_r[: want[0]] if leaf_r.shape[0] > want[0] else np.pad(
                leaf_r, [(0, want[0] - leaf_r.shape[0])] + [(0, 0)] * (leaf_r.ndim - 1))
        out.append(leaf_r)
    return jax.tree.unflatten(tree_t, out), meta


def _target_sharding(x: Any) -> jax.sharding.Sharding | None:
    return getattr(x, "sharding", None) if isinstance(x, jax.ShapeDtypeStruct) else None


def _restore_args_like(saved: Any, target: Any, args: Any) -> Any:
    """`args` (shaped like `target`) keyed as the checkpoint stores them (string keys)."""
    if isinstance(target, dict) and isinstance(saved, dict):
        return {(k if k in saved else str(k)): _restore_args_like(saved[k if k in saved else str(k)], v, args[k])
                for k, v in target.items()}
    return args


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
