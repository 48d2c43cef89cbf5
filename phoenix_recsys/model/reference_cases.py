"""Parity case files (REFERENCE-LAYOUT 8): reading, running our model on them, and verifying the outputs.

A case file is an npz with `meta_json` (variant, `config` sizes, `cases` -> kind / right_anchored_rope /
outputs, tolerances) and, per case, `<case>/params/<released key>`, `<case>/inputs/batch/<field>`,
`<case>/inputs/embeddings/<field>` and `<case>/outputs/{f32,bf16}/<name>`.

Numerics: the stored outputs come from eager (un-jitted) runs on CPU, and eager bf16 is reproducible bit
for bit only eagerly, so `verify_cases` calls the model as plain Python by default. It does not use
`jax.disable_jit()`: the release ran with the library's own jitted helpers (`jax.nn.softmax`,
`jax.nn.gelu`) jitted, and so must we. `jit=True` compiles the whole forward instead; in bf16 it then
differs from the eager-made outputs by up to a few 1e-2, inside the bf16 tolerance.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.model.config import DType
from phoenix_recsys.model.embeddings import RecsysEmbeddings
from phoenix_recsys.model.reference import (
    ModelKind,
    ReleasedVariant,
    _load_npz,
    released_config,
    released_model,
)

DTYPES = {"f32": DType.FLOAT32, "bf16": DType.BFLOAT16}
# REFERENCE-LAYOUT 8; used when a file's meta_json states no tolerance.
DEFAULT_TOLERANCE = {"f32": 1e-5, "bf16": 3e-2}
TOLERANCE_RULE = "elementwise |got - want| <= tol * max(1, |want|)"
RANKER_OUTPUTS = ("logits", "input_embeddings", "padding_mask", "continuous_preds")
RETRIEVAL_OUTPUTS = ("user_representation", "user_norm", "candidate_representation", "candidate_padding_mask")


def parse_dtypes(dtypes: str | Iterable[str]) -> tuple[str, ...]:
    """`"f32"`, `"bf16"`, `"both"` or a sequence of the first two -> an ordered tuple of names.

    Raises:
      ValueError: an unknown name.
    """
    names = [dtypes] if isinstance(dtypes, str) else list(dtypes)
    out: list[str] = []
    for n in names:
        expanded = list(DTYPES) if n == "both" else [n]
        for e in expanded:
            if e not in DTYPES:
                raise ValueError(f"dtype must be one of {[*DTYPES, 'both']}, got {n!r}")
            if e not in out:
                out.append(e)
    if not out:
        raise ValueError("no dtype selected")
    return tuple(out)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CaseSpec:
    """One entry of `meta_json["cases"]`.

    Attributes:
      name: the case name (prefix of its keys).
      kind: ranker or retrieval.
      right_anchored_rope: the May release's flag.
      outputs: the stored output names to compare.
    """

    name: str
    kind: ModelKind
    right_anchored_rope: bool
    outputs: tuple[str, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class CaseFile:
    """A parsed case file; arrays stay in `arrays` under their file keys.

    Attributes:
      path: where it was read from.
      variant: v1 or may.
      config: the released size mapping (`meta_json["config"]`).
      cases: name -> spec, in file order.
      tolerance: dtype name -> tol.
      arrays: every array of the file.
    """

    path: Path
    variant: ReleasedVariant
    config: Mapping[str, Any]
    cases: Mapping[str, CaseSpec]
    tolerance: Mapping[str, float]
    arrays: Mapping[str, np.ndarray]

    def _group(self, prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix):]: v for k, v in self.arrays.items() if k.startswith(prefix)}

    def params(self, case: str) -> dict[str, np.ndarray]:
        """Released-layout parameters of `case`."""
        return self._group(f"{case}/params/")

    def batch(self, case: str) -> RecsysBatch:
        """The case's `RecsysBatch` (absent optional fields are None)."""
        fields = self._group(f"{case}/inputs/batch/")
        _check_fields(fields, RecsysBatch, f"{case}/inputs/batch/")
        return RecsysBatch(**fields)

    def embeddings(self, case: str) -> RecsysEmbeddings:
        """The case's looked-up `RecsysEmbeddings`."""
        fields = self._group(f"{case}/inputs/embeddings/")
        _check_fields(fields, RecsysEmbeddings, f"{case}/inputs/embeddings/")
        return RecsysEmbeddings(**fields)

    def expected(self, case: str, dtype: str, name: str) -> np.ndarray | None:
        """The stored output, or None when the file lacks it."""
        return self.arrays.get(f"{case}/outputs/{dtype}/{name}")


def _check_fields(fields: Mapping[str, Any], cls: Any, prefix: str) -> None:
    unknown = sorted(set(fields) - set(cls._fields))
    if unknown:
        raise ValueError(f"unknown keys {[prefix + u for u in unknown]}; {cls.__name__} has fields {list(cls._fields)}")
    required = [f for f in cls._fields if f not in cls._field_defaults]
    missing = [prefix + f for f in required if f not in fields]
    if missing:
        raise ValueError(f"case file is missing keys {missing}")


def read_case_file(path: str | Path) -> CaseFile:
    """Parse a case file's `meta_json` and keep its arrays.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not an npz, no or malformed `meta_json`, or a listed case without parameters.
    """
    arrays = _load_npz(path, "case file")
    if "meta_json" not in arrays:
        raise ValueError(f"case file {str(path)!r} has no 'meta_json' entry")
    try:
        meta = json.loads(str(arrays.pop("meta_json")))
    except json.JSONDecodeError as e:
        raise ValueError(f"case file {str(path)!r}: meta_json is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise ValueError("meta_json must be a JSON object")
    for key in ("variant", "config", "cases"):
        if key not in meta:
            raise ValueError(f"meta_json has no {key!r} entry")
    variant = ReleasedVariant(meta["variant"]) if meta["variant"] in {v.value for v in ReleasedVariant} else None
    if variant is None:
        raise ValueError(f"meta_json variant must be one of {[v.value for v in ReleasedVariant]}, got {meta['variant']!r}")
    if not isinstance(meta["config"], dict):
        raise ValueError("meta_json config must be a JSON object")
    if not isinstance(meta["cases"], dict) or not meta["cases"]:
        raise ValueError("meta_json cases must be a non-empty JSON object")
    cases = {}
    for name, info in meta["cases"].items():
        if not isinstance(info, dict):
            raise ValueError(f"meta_json cases[{name!r}] must be a JSON object")
        kind = info.get("kind")
        if kind not in {k.value for k in ModelKind}:
            raise ValueError(f"meta_json cases[{name!r}].kind must be 'ranker' or 'retrieval', got {kind!r}")
        kind = ModelKind(kind)
        known = RANKER_OUTPUTS if kind is ModelKind.RANKER else RETRIEVAL_OUTPUTS
        outputs = info.get("outputs", [])
        if not isinstance(outputs, list) or not outputs:
            raise ValueError(f"meta_json cases[{name!r}].outputs must be a non-empty list")
        unknown = [o for o in outputs if o not in known]
        if unknown:
            raise ValueError(f"meta_json cases[{name!r}] lists outputs {unknown} a {kind.value} has not; known: {list(known)}")
        rope = info.get("right_anchored_rope", False)
        if not isinstance(rope, bool):
            raise ValueError(f"meta_json cases[{name!r}].right_anchored_rope must be true or false, got {rope!r}")
        if not any(k.startswith(f"{name}/params/") for k in arrays):
            raise ValueError(f"case {name!r} has no '{name}/params/...' keys")
        cases[name] = CaseSpec(name=name, kind=kind, right_anchored_rope=rope, outputs=tuple(outputs))
    tolerance = dict(DEFAULT_TOLERANCE)
    given = meta.get("tolerance", {})
    if not isinstance(given, dict):
        raise ValueError("meta_json tolerance must be a JSON object")
    rule = given.get("rule", TOLERANCE_RULE)
    if rule != TOLERANCE_RULE:
        # Comparing with another rule than the file states would make "ok" meaningless.
        raise ValueError(f"meta_json tolerance rule {rule!r} is not supported; expected {TOLERANCE_RULE!r}")
    for name in DTYPES:
        if name in given:
            tol = given[name]
            if isinstance(tol, bool) or not isinstance(tol, int | float) or not tol >= 0:
                raise ValueError(f"meta_json tolerance[{name!r}] must be a non-negative number, got {tol!r}")
            tolerance[name] = float(tol)
    return CaseFile(
        path=Path(path), variant=variant, config=meta["config"], cases=cases, tolerance=tolerance, arrays=arrays
    )


# -- running ------------------------------------------------------------------------------------
def _forward(kind: ModelKind) -> Callable[[Any, RecsysBatch, RecsysEmbeddings], dict[str, jax.Array]]:
    def ranker(model: Any, batch: RecsysBatch, emb: RecsysEmbeddings) -> dict[str, jax.Array]:
        out = model(batch, emb)
        x, pad, _ = model.build_inputs(batch, emb)
        res = {"logits": out.logits, "input_embeddings": x, "padding_mask": pad}
        if out.continuous_preds is not None:
            res["continuous_preds"] = out.continuous_preds
        return res

    def retrieval(model: Any, batch: RecsysBatch, emb: RecsysEmbeddings) -> dict[str, jax.Array]:
        return dict(model(batch, emb)._asdict())

    return ranker if kind is ModelKind.RANKER else retrieval


def run_case(case_file: CaseFile, case: str, dtype: str, *, jit: bool = False) -> dict[str, np.ndarray]:
    """Build our model in the case's configuration with its parameters and run it on its inputs.

    Args:
      case_file: a parsed case file.
      case: the case name.
      dtype: "f32" or "bf16" (the forward dtype).
      jit: compile the forward (default: eager, as the stored outputs were made).

    Returns:
      output name -> array (float32 or bool), every output this kind produces.

    Raises:
      ValueError: parameters or inputs that do not fit the configuration.
    """
    spec = case_file.cases[case]
    cfg = released_config(
        case_file.config, variant=case_file.variant, kind=spec.kind, right_anchored_rope=spec.right_anchored_rope,
        fprop_dtype=DTYPES[dtype],
    )
    model = released_model(cfg, case_file.params(case), spec.kind)
    batch, emb = case_file.batch(case), case_file.embeddings(case)
    emb = RecsysEmbeddings(*(None if e is None else jnp.asarray(e) for e in emb))
    fn = _forward(spec.kind)
    if jit:
        fn = nnx.jit(fn)
    if jax.default_backend() == "cpu":
        outs = fn(model, batch, emb)
    else:
        # The stored float32 outputs are CPU full-precision matmuls; GPUs and TPUs default to
        # reduced-precision float32 matmuls (TF32 / bf16 passes), which alone would exceed the 1e-5
        # tolerance. Not set on CPU, where matmuls are already full precision and the setting would only
        # recompile every eager op.
        with jax.default_matmul_precision("highest"):
            outs = fn(model, batch, emb)
    return {k: np.asarray(v.astype(jnp.float32) if v.dtype != jnp.bool_ else v) for k, v in outs.items()}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class OutputCheck:
    """One output of one case in one dtype.

    Attributes:
      case / dtype / output: what was compared.
      max_abs_diff: plain max |got - want| (NaN when it cannot be computed).
      tolerance: tol of the rule `|got - want| <= tol * max(1, |want|)`.
      ok: every element within the rule.
      error: why the comparison could not be made (missing output, shape mismatch), else None.
    """

    case: str
    dtype: str
    output: str
    max_abs_diff: float
    tolerance: float
    ok: bool
    error: str | None = None


def compare(got: np.ndarray | None, want: np.ndarray, tol: float) -> tuple[float, bool, str | None]:
    """(max abs diff, within the rule, error) for one output; bool arrays compare as 0/1."""
    if got is None:
        return math.nan, False, "our model produced no such output"
    g = np.asarray(got).astype(np.float64)
    w = np.asarray(want).astype(np.float64)
    if g.shape != w.shape:
        return math.nan, False, f"shape {list(g.shape)}, expected {list(w.shape)}"
    d = np.abs(g - w)
    # NaN anywhere fails (comparisons with NaN are False) and makes the max NaN.
    ok = bool(np.all(d <= tol * np.maximum(1.0, np.abs(w))))
    return (float(d.max()) if d.size else 0.0), ok, None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    """Every comparison `verify_cases` made.

    Attributes:
      path: the case file.
      dtypes: the dtypes run ("f32", "bf16").
      jit: whether the forward was compiled.
      checks: one per (case, dtype, output), in file order.
    """

    path: Path
    dtypes: tuple[str, ...]
    jit: bool
    checks: tuple[OutputCheck, ...]

    @property
    def ok(self) -> bool:
        """True when every output of every case is within tolerance."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    def max_abs_diff(self, dtype: str) -> float:
        """The largest max-abs-diff over every output in `dtype` (NaN if any is NaN)."""
        vals = [c.max_abs_diff for c in self.checks if c.dtype == dtype]
        if not vals:
            return math.nan
        return math.nan if any(math.isnan(v) for v in vals) else max(vals)

    def to_json(self) -> dict[str, Any]:
        """`{"ok", "cases": {case: {output: {"max_abs_diff", "tolerance", "ok", "by_dtype"}}}, ...}`.

        Each output's entry reports its worst dtype (largest diff relative to its tolerance): its plain
        max abs diff and tolerance, `ok` only if every dtype passed, and the per-dtype detail under
        `by_dtype`. NaN becomes null (strict JSON has no NaN).
        """

        def num(x: float) -> float | None:
            return None if math.isnan(x) else x

        grouped: dict[str, dict[str, list[Any]]] = {}
        for c in self.checks:
            grouped.setdefault(c.case, {}).setdefault(c.output, []).append(c)
        cases: dict[str, dict[str, Any]] = {}
        for case, outputs in grouped.items():
            for output, checks in outputs.items():
                by_dtype = {}
                for c in checks:
                    e: dict[str, Any] = {"max_abs_diff": num(c.max_abs_diff), "tolerance": c.tolerance, "ok": c.ok}
                    if c.error is not None:
                        e["error"] = c.error
                    by_dtype[c.dtype] = e
                worst = max(checks, key=lambda c: (not c.ok, (c.max_abs_diff / c.tolerance) if c.tolerance else 0.0))
                entry = {"max_abs_diff": num(worst.max_abs_diff), "tolerance": worst.tolerance,
                         "ok": all(c.ok for c in checks), "by_dtype": by_dtype}
                cases.setdefault(case, {})[output] = entry
        return {
            "ok": self.ok,
            "file": str(self.path),
            "dtypes": list(self.dtypes),
            "jit": self.jit,
            "max_abs_diff": {d: num(self.max_abs_diff(d)) for d in self.dtypes},
            "cases": cases,
        }


def verify_cases(path: str | Path, dtypes: str | Iterable[str] = ("f32", "bf16"), *, jit: bool = False) -> VerifyReport:
    """Run every case of a case file in each dtype and compare every stored output.

    Sizes come from the file's `meta_json` config, each case's kind and rope flag from its `cases`
    entry, and the tolerances from `meta_json["tolerance"]`.

    Args:
      path: the case file.
      dtypes: "f32", "bf16", "both", or a sequence of names.
      jit: compile the forward instead of running it eagerly.

    Returns:
      a `VerifyReport`; `report.ok` is the verdict.

    Raises:
      FileNotFoundError / ValueError: the file is unreadable or malformed, or a case's parameters or
        inputs do not fit its configuration (these are file errors, not parity failures).
    """
    names = parse_dtypes(dtypes)
    case_file = read_case_file(path)
    checks = []
    for case, spec in case_file.cases.items():
        for dtype in names:
            tol = case_file.tolerance[dtype]
            wanted = {o: case_file.expected(case, dtype, o) for o in spec.outputs}
            missing = [f"{case}/outputs/{dtype}/{o}" for o, w in wanted.items() if w is None]
            if missing:
                raise ValueError(f"case file is missing keys {missing}")
            try:
                got = run_case(case_file, case, dtype, jit=jit)
            except ValueError as e:
                raise ValueError(f"case {case!r} ({dtype}): {e}") from None
            for o, want in wanted.items():
                diff, ok, err = compare(got.get(o), want, tol)
                checks.append(
                    OutputCheck(case=case, dtype=dtype, output=o, max_abs_diff=diff, tolerance=tol, ok=ok, error=err)
                )
    return VerifyReport(path=Path(path), dtypes=names, jit=jit, checks=tuple(checks))


# -- writing ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class CaseData:
    """Everything one case of a case file holds.

    Attributes:
      kind: ranker or retrieval.
      params: released-layout parameters.
      batch / embeddings: the inputs.
      outputs: dtype name ("f32", "bf16") -> output name -> array.
      right_anchored_rope: the May release's flag.
    """

    kind: ModelKind | str
    params: Mapping[str, np.ndarray]
    batch: RecsysBatch
    embeddings: RecsysEmbeddings
    outputs: Mapping[str, Mapping[str, np.ndarray]]
    right_anchored_rope: bool = False


def write_case_file(
    path: str | Path,
    *,
    config: Mapping[str, Any],
    variant: ReleasedVariant | str,
    cases: Mapping[str, CaseData],
    tolerance: Mapping[str, float] | None = None,
    **meta: Any,
) -> Path:
    """Write cases in the documented layout (REFERENCE-LAYOUT 8) with a `meta_json`.

    Extra keyword arguments go into `meta_json` as they are (e.g. `param_recipe`, `edits`).
    """
    arrays: dict[str, np.ndarray] = {}
    meta_cases = {}
    for name, c in cases.items():
        kind = ModelKind(getattr(c.kind, "value", c.kind))
        for k, v in c.params.items():
            arrays[f"{name}/params/{k}"] = np.asarray(v)
        for group, tup in (("batch", c.batch), ("embeddings", c.embeddings)):
            for field, v in tup._asdict().items():
                if v is not None:
                    arrays[f"{name}/inputs/{group}/{field}"] = np.asarray(v)
        out_names: set[str] = set()
        for dtype, outs in c.outputs.items():
            for o, v in outs.items():
                arrays[f"{name}/outputs/{dtype}/{o}"] = np.asarray(v)
                out_names.add(o)
        meta_cases[name] = {"kind": kind.value, "right_anchored_rope": c.right_anchored_rope, "outputs": sorted(out_names)}
    tol = dict(DEFAULT_TOLERANCE if tolerance is None else tolerance)
    full_meta = {
        "variant": ReleasedVariant(getattr(variant, "value", variant)).value,
        **meta,
        "config": dict(config),
        "cases": meta_cases,
        "tolerance": {**tol, "rule": TOLERANCE_RULE},
    }
    arrays["meta_json"] = np.asarray(json.dumps(full_meta))
    path = Path(path)
    np.savez(path, **arrays)
    return path
