"""Training on a JAX device mesh, in one process or across several: mesh parsing, sharding rules and
the placement of training state and batches.

The mesh has two axes:
  data   the batch is split over it (data parallelism: each device computes the gradient of its rows,
         XLA sums them);
  model  the hash embedding tables are row-sharded over it (a device holds 1/M of every table's rows,
         XLA gathers the rows a batch looks up); transformer weights are replicated, or split over it
         by the "tensor" rules (`MeshSpec.transformer`).
Every computation is an ordinary `jax.jit` whose arguments and results carry explicit
`NamedSharding`s; XLA inserts the collectives, this module writes none.

Tables whose row count is not a multiple of the model axis are padded with zero rows while they live
on the mesh (hash buckets never reach the padding, so it receives no gradient and stays zero); the
model, bundles and the evaluation always see the logical shapes (`MeshPlan.to_local`). Checkpoints
keep the padded, sharded arrays and record each padded leaf's logical row count, so they restore onto
any mesh shape or onto one device (see `checkpoint.load_checkpoint`).

Across processes (`init_distributed`), every process runs the same program on its own devices; each
feeds only its own rows of every global batch (`MeshPlan.put_batch`), and the mesh places a
process's devices on whole rows of the data axis, so no two processes need the same rows.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "model")
TRANSFORMER_LAYOUTS = ("replicated", "tensor")


@dataclasses.dataclass(frozen=True, slots=True)
class ShardRule:
    """Shard the leaves whose path matches `pattern` (`re.search` on "a/b/c" paths) as `spec`.

    Attributes:
      pattern: regular expression over the leaf's path (parameter and optimizer-moment paths both end
        with the parameter's own path, e.g. ".../tables/item").
      spec: the `PartitionSpec` for a leaf of that rank.
      pad: pad sharded dimensions up to a multiple of their mesh axis (zero rows; only sound for hash
        tables, whose extra rows are never looked up). Without it a dimension that does not divide
        stays unsharded.
    """

    pattern: str
    spec: P
    pad: bool = False


TABLE_RULES: tuple[ShardRule, ...] = (ShardRule(r"(^|/)tables/(user|item|author|ip)$", P("model", None), pad=True),)
# Megatron-style: the first projection of each block split by output columns, the second by input
# rows, so each device holds 1/M of the FFN and attention weights (XLA adds the reductions).
TENSOR_RULES: tuple[ShardRule, ...] = (
    ShardRule(r"/ffn/linear(_v)?/w$", P(None, "model")),
    ShardRule(r"/ffn/linear_1/w$", P("model", None)),
    ShardRule(r"/multi_head_attention/(query|key|value)/w$", P(None, "model")),
    ShardRule(r"/multi_head_attention/linear/w$", P("model", None)),
)


@dataclasses.dataclass(frozen=True, slots=True)
class MeshSpec:
    """The shape of a training mesh, as given by `--mesh data=N[,model=M][,transformer=tensor]`.

    Attributes:
      data: devices the batch is split over.
      model: devices each hash table's rows are split over.
      transformer: "replicated" (every device holds all transformer weights) or "tensor" (FFN and
        attention weights split over the model axis by `TENSOR_RULES`).
    """

    data: int = 1
    model: int = 1
    transformer: str = "replicated"

    def __post_init__(self) -> None:
        for f in ("data", "model"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"mesh axis {f} must be a positive int, got {v!r}")
        if self.transformer not in TRANSFORMER_LAYOUTS:
            raise ValueError(f"mesh transformer must be one of {list(TRANSFORMER_LAYOUTS)}, got {self.transformer!r}")

    @property
    def size(self) -> int:
        """Devices the mesh needs."""
        return self.data * self.model

    def rules(self) -> tuple[ShardRule, ...]:
        """The sharding rules this spec implies (first match wins)."""
        return TABLE_RULES + (TENSOR_RULES if self.transformer == "tensor" else ())

    def __str__(self) -> str:
        s = f"data={self.data},model={self.model}"
        return s if self.transformer == "replicated" else f"{s},transformer={self.transformer}"

    @classmethod
    def parse(cls, text: str) -> MeshSpec:
        """Parse "data=N[,model=M][,transformer=replicated|tensor]" (axes in any order, each at most once)."""
        fields: dict[str, Any] = {}
        for part in (p.strip() for p in text.split(",")):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in ("data", "model", "transformer") or key in fields:
                raise ValueError(f"bad --mesh {text!r}: expected data=N[,model=M][,transformer=tensor], "
                                 f"each axis once (got {part!r})")
            if key == "transformer":
                fields[key] = value.strip()
                continue
            try:
                fields[key] = int(value)
            except ValueError:
                raise ValueError(f"bad --mesh {text!r}: {key} must be an integer, got {value!r}") from None
        if "data" not in fields:
            raise ValueError(f"bad --mesh {text!r}: the data axis is required (data=N)")
        return cls(**fields)


def init_distributed(coordinator: str, num_processes: int, process_id: int) -> None:
    """Join a multi-process JAX job (call before anything touches a device).

    On CPU the collectives go over gloo (`jax_cpu_collectives_implementation`); GPUs and TPUs use
    their own (NCCL / ICI) and ignore the setting.
    """
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id must be in [0, {num_processes}), got {process_id}")
    host, sep, port = coordinator.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--coordinator must be HOST:PORT, got {coordinator!r}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)


def path_str(path: Sequence[Any]) -> str:
    """A pytree key path as "a/b/c", without nnx's trailing "value" field."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    if parts and parts[-1] == "value":
        parts = parts[:-1]
    return "/".join(parts)


class MeshPlan:
    """A mesh and the rules that place training state and batches on it.

    Args:
      spec: the mesh shape.
      devices: the devices to use (default `jax.devices()`, every process's); their number must be
        `spec.size`.
    """

    def __init__(self, spec: MeshSpec, devices: Sequence[jax.Device] | None = None):
        devices = list(jax.devices() if devices is None else devices)
        if len(devices) != spec.size:
            raise ValueError(
                f"mesh {spec} needs {spec.size} devices, found {len(devices)} "
                f"({jax.process_count()} process(es) x {jax.local_device_count()} {jax.default_backend()} device(s)); "
                "on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N emulates N devices per process"
            )
        self.spec = spec
        # Devices ordered by process, so each process's devices fill whole rows of the data axis.
        order = sorted(devices, key=lambda d: (d.process_index, d.id))
        self.mesh = Mesh(np.array(order, dtype=object).reshape(spec.data, spec.model), AXES,
                         axis_types=(AxisType.Auto, AxisType.Auto))
        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        if self.process_count > 1:
            local = sum(d.process_index == self.process_index for d in devices)
            if local % spec.model or spec.data % self.process_count:
                raise ValueError(
                    f"mesh {spec} over {self.process_count} processes of {local} device(s): the model axis must "
                    "fit inside one process and the data axis must split evenly over processes"
                )
        self.replicated = NamedSharding(self.mesh, P())

    # -- rules ---------------------------------------------------------------------------------

    def layout(self, path: str, shape: tuple[int, ...]) -> tuple[P, tuple[int, ...]]:
        """The partition spec of a leaf and its shape on the mesh (padded where its rule pads)."""
        for rule in self.spec.rules():
            if len(rule.spec) != len(shape) or not re.search(rule.pattern, path):
                continue
            spec, padded = list(rule.spec), list(shape)
            for i, axis in enumerate(rule.spec):
                if axis is None:
                    continue
                n = self.mesh.shape[axis]
                if shape[i] % n:
                    if rule.pad:
                        padded[i] = -(-shape[i] // n) * n
                    else:
                        spec[i] = None
            return P(*spec), tuple(padded)
        return P(), tuple(shape)

    def _map(self, fn, tree: Any) -> Any:
        return jax.tree_util.tree_map_with_path(lambda p, x: fn(path_str(p), x), tree)

    def shardings(self, tree: Any) -> Any:
        """`NamedSharding` of every leaf (shapes of `tree` may be logical or already padded)."""
        return self._map(lambda p, x: NamedSharding(self.mesh, self.layout(p, np.shape(x))[0]), tree)

    def logical_rows(self, tree: Any) -> dict[str, int]:
        """{path: logical row count} of the leaves that the mesh pads (`tree` in logical shapes)."""
        out: dict[str, int] = {}
        self._map(lambda p, x: out.__setitem__(p, int(np.shape(x)[0]))
                  if self.layout(p, np.shape(x))[1] != tuple(np.shape(x)) else None, tree)
        return out

    def abstract(self, tree: Any) -> Any:
        """`ShapeDtypeStruct`s (mesh shapes and shardings) of a logical tree: a restore target."""
        def leaf(p: str, x: Any) -> jax.ShapeDtypeStruct:
            spec, shape = self.layout(p, tuple(np.shape(x)))
            return jax.ShapeDtypeStruct(shape, x.dtype, sharding=NamedSharding(self.mesh, spec))

        return self._map(leaf, tree)

    # -- state ---------------------------------------------------------------------------------

    def place(self, tree: Any) -> Any:
        """Put a tree of (logical, host or single-device) arrays on the mesh: padded, sharded.

        Leaves that already live on this mesh are kept. Across processes the values of process 0
        are used everywhere (so every process starts from identical parameters).
        """
        flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
        on_mesh = [isinstance(x, jax.Array) and getattr(x.sharding, "mesh", None) == self.mesh for _, x in flat]
        host = [np.asarray(x) for (_, x), done in zip(flat, on_mesh, strict=True) if not done]
        if self.process_count > 1 and host:
            host = list(multihost_utils.broadcast_one_to_all(host))
        it = iter(host)
        out = []
        for (path, x), done in zip(flat, on_mesh, strict=True):
            if done:
                out.append(x)
                continue
            h = next(it)
            spec, shape = self.layout(path_str(path), h.shape)
            if shape != h.shape:
                h = np.pad(h, [(0, s - d) for s, d in zip(shape, h.shape, strict=True)])
            out.append(jax.make_array_from_callback(shape, NamedSharding(self.mesh, spec), lambda idx, h=h: h[idx]))
        return jax.tree.unflatten(treedef, out)

    def jit_step(self, fn: Callable[..., Any], state: Any) -> Callable[..., Any]:
        """`jax.jit(fn)` for `fn(state, step, batch) -> (state, *replicated scalars/vectors)`, with
        the state's shardings on the way in and out (compiled at the first call, when the batch's
        shardings are known)."""
        state_sh = self.shardings(state)
        compiled: dict[str, Callable[..., Any]] = {}

        def call(st: Any, step: jax.Array, batch: Any) -> Any:
            if "fn" not in compiled:
                batch_sh = jax.tree.map(lambda a: a.sharding, batch)
                rep = self.replicated
                compiled["fn"] = jax.jit(fn, in_shardings=(state_sh, rep, batch_sh),
                                         out_shardings=(state_sh, rep, rep, rep))
            return compiled["fn"](st, step, batch)

        return call

    def to_local(self, tree: Any, like: Any) -> Any:
        """The arrays of a mesh tree as single-device arrays in the logical shapes of `like` (every
        process gets the whole value: for evaluation, bundles and host-side checks)."""
        gathered = jax.jit(lambda t: t, out_shardings=self.replicated)(tree)

        def leaf(x: jax.Array, ref: Any) -> jax.Array:
            local = x.addressable_data(0)
            shape = tuple(np.shape(ref))
            if tuple(local.shape) != shape:
                local = local[tuple(slice(0, d) for d in shape)]
            return jax.device_put(local, jax.local_devices()[0])

        return jax.tree.map(leaf, gathered, like)

    # -- batches -------------------------------------------------------------------------------

    def local_batch_size(self, global_batch: int) -> int:
        """Rows of each global batch this process feeds."""
        if global_batch % self.spec.data:
            raise ValueError(f"batch_size {global_batch} must be a multiple of the mesh's data axis ({self.spec.data})")
        return global_batch // self.process_count

    def batch_offset(self, local_batch: int) -> int:
        """Index of this process's first row in the global batch."""
        return self.process_index * local_batch

    def put_batch(self, local: Any) -> Any:
        """Global batch arrays from this process's rows: leading axis split over `data` (where it
        divides; otherwise replicated, which needs one process)."""
        def leaf(x: Any) -> jax.Array:
            x = np.asarray(x)
            if x.ndim and (x.shape[0] * self.process_count) % self.spec.data == 0:
                return jax.make_array_from_process_local_data(NamedSharding(self.mesh, P("data")), x)
            if self.process_count > 1:
                raise ValueError(f"a batch array of {x.shape[0]} rows per process does not split over the data "
                                 f"axis ({self.spec.data}); pick sizes that divide across processes")
            return jax.device_put(x, self.replicated)

        return jax.tree.map(leaf, local)

    def scalar(self, value: Any) -> jax.Array:
        """A replicated scalar (the same on every process)."""
        x = np.asarray(value)
        return jax.make_array_from_callback(x.shape, self.replicated, lambda idx: x[idx])

    # -- agreement across processes ----------------------------------------------------------

    @property
    def is_primary(self) -> bool:
        """Whether this process writes files (process 0)."""
        return self.process_index == 0

    def total(self, count: int) -> int:
        """Sum of a per-process count over processes."""
        if self.process_count == 1:
            return count
        return int(np.asarray(multihost_utils.process_allgather(np.asarray(count, np.int64))).sum())

    def agree(self, tree: Any) -> Any:
        """Process 0's value of a host pytree, on every process (keeps decisions identical)."""
        if self.process_count == 1:
            return tree
        return jax.tree.map(lambda x: np.asarray(x).item(), multihost_utils.broadcast_one_to_all(tree))

    def barrier(self, name: str) -> None:
        """Wait until every process reaches the same point."""
        if self.process_count > 1:
            multihost_utils.sync_global_devices(name)


def shard_examples(examples: Any, process_index: int, process_count: int) -> Any:
    """The examples of this process's users (`user_id % process_count == process_index`): each
    process trains on a disjoint shard, a user's windows together."""
    if process_count == 1:
        return examples
    return examples.take(np.flatnonzero(examples.user_ids % process_count == process_index))
