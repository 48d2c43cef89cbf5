"""Compatibility with the released Phoenix code: presets, parameter import/export, imported checkpoints.

The released configuration is a configuration of our one model, not a second model: causal
user+history attention, per-slot (or right-anchored) positions, no action bias, and for the May
release the dwell, post-age and continuous-head blocks (REFERENCE-LAYOUT 3-10). Parameters use the
released key layout `module/path/param` (e.g. `transformer/decoder_layer_0/multi_head_attention/query/w`),
exactly what the May release's `load_model_params` reads.

An imported checkpoint is a directory with `config.json` (`PhoenixModelConfig.to_json()` plus
`"kind"`) and `params.npz` (our NNX parameter paths joined with "/"); `load_imported` reads it back.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from phoenix_recsys.actions import PHOENIX_ACTIONS, ActionVocabulary
from phoenix_recsys.hashing import HashConfig
from phoenix_recsys.model.config import (
    DType,
    HistoryAttention,
    PhoenixModelConfig,
    PositionScheme,
    TransformerConfig,
)
from phoenix_recsys.model.ranker import PhoenixModel
from phoenix_recsys.model.retrieval import PhoenixRetrievalModel


class ReleasedVariant(enum.StrEnum):
    """Which public release a parameter file or case comes from."""

    V1 = "v1"  # Jan 2026, the release the seeds describe
    MAY = "may"  # May 2026: dwell block, post-age buckets, continuous head


class ModelKind(enum.StrEnum):
    RANKER = "ranker"
    RETRIEVAL = "retrieval"


ROOT = {ModelKind.RANKER: "phoenix_model", ModelKind.RETRIEVAL: "phoenix_retrieval_model"}
CANDIDATE_TOWER = "~build_candidate_representation/candidate_tower"
# Parameters the release may carry that have no effect on the forward pass.
IGNORED_RELEASED_KEYS = ("~/log_temperature",)
# Our additions that the release has no counterpart for (kept at their init on import).
_OURS_ONLY = re.compile(r"^(tables/.*|action_bias)$")
# Keys whose presence marks a May-release ranker (its v1 counterpart has neither).
_MAY_RANKER_MARKERS = ("phoenix_model/post_age_embedding_table", "phoenix_model/continuous_unembeddings")
# At most this many problems are listed in a mismatch message; the rest are counted.
_MAX_PROBLEMS = 30

MAY_CONTINUOUS_ACTIONS = 8

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.npz"
# Split tables of the May release's `embedding_tables.npz` -> our `HashEmbeddingTables` attributes.
RELEASED_TABLES = {"user_embeddings": "user", "item_embeddings": "item", "author_embeddings": "author"}

Model = PhoenixModel | PhoenixRetrievalModel


def _enum(enum_t: type[enum.Enum], value: Any, what: str) -> Any:
    try:
        return enum_t(getattr(value, "value", value))
    except ValueError:
        raise ValueError(f"{what} must be one of {[e.value for e in enum_t]}, got {value!r}") from None


def _as_kind(kind: ModelKind | str) -> ModelKind:
    return _enum(ModelKind, kind, "kind")


def _as_variant(variant: ReleasedVariant | str) -> ReleasedVariant:
    return _enum(ReleasedVariant, variant, "variant")


def _get(config: Mapping[str, Any], key: str, cast: type, default: Any = None) -> Any:
    """`config[key]` converted with `cast`, or `default` when absent; a bad value is a ValueError naming it."""
    if key not in config or config[key] is None:
        if default is None:
            raise ValueError(f"released config is missing key {key!r}")
        return default
    value = config[key]
    try:
        if cast is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        out = cast(value)
        if cast is int and out != value:  # 2.5 must not silently become 2
            raise TypeError
        return out
    except (TypeError, ValueError):
        raise ValueError(f"released config key {key!r} must be {cast.__name__}, got {value!r}") from None


def released_config(
    config: Mapping[str, Any],
    *,
    variant: ReleasedVariant | str = ReleasedVariant.V1,
    kind: ModelKind | str = ModelKind.RANKER,
    right_anchored_rope: bool = False,
    fprop_dtype: DType | str = DType.FLOAT32,
) -> PhoenixModelConfig:
    """Our configuration that reproduces the released code, from a `config` mapping like `meta_json`'s.

    Sizes come from the mapping (emb_size, key_size, num_layers, num_q_heads, num_kv_heads,
    widening_factor, history_seq_len, candidate_seq_len, num_actions; optional attn_output_multiplier
    (release default 1.0), num_{user,item,author}_hashes (2), product_surface_vocab_size (16)), so any
    size the layout allows works. Optional May-release keys: continuous_action_hidden_dim (64),
    num_continuous_actions (8), post_age_granularity_mins (60), num_ip_hashes (0),
    enable_linear_proj (True), dwell_use_log (False). Hash-table sizes come from
    `{user,item,author}_vocab_size` if present (the released model never indexes tables itself; its
    embeddings arrive looked up), else 2. Unknown keys are ignored, as the release's own config
    carries many that do not change the forward pass.

    `kind` matters for the May release, whose new blocks belong to the ranker only.

    Raises:
      ValueError: a required key is missing or a value has the wrong type.
    """
    variant = _as_variant(variant)
    kind = _as_kind(kind)
    if not isinstance(config, Mapping):
        raise ValueError(f"released config must be a mapping, got {type(config).__name__}")
    num_actions = _get(config, "num_actions", int)
    if num_actions < 1:
        raise ValueError(f"released config key 'num_actions' must be >= 1, got {num_actions}")
    actions = PHOENIX_ACTIONS if num_actions == len(PHOENIX_ACTIONS) else ActionVocabulary.binary(
        [f"action_{i}" for i in range(num_actions)]
    )
    model = TransformerConfig(
        emb_size=_get(config, "emb_size", int),
        key_size=_get(config, "key_size", int),
        num_layers=_get(config, "num_layers", int),
        num_q_heads=_get(config, "num_q_heads", int),
        num_kv_heads=_get(config, "num_kv_heads", int),
        widening_factor=_get(config, "widening_factor", float),
        attn_output_multiplier=_get(config, "attn_output_multiplier", float, 1.0),
    )
    hash_config = HashConfig(
        num_user_hashes=_get(config, "num_user_hashes", int, 2),
        num_item_hashes=_get(config, "num_item_hashes", int, 2),
        num_author_hashes=_get(config, "num_author_hashes", int, 2),
        user_vocab_size=_get(config, "user_vocab_size", int, 2),
        item_vocab_size=_get(config, "item_vocab_size", int, 2),
        author_vocab_size=_get(config, "author_vocab_size", int, 2),
    )
    # The May release adds its dwell, post-age and continuous blocks to the ranker only; its retrieval
    # user tower is unchanged (REFERENCE-LAYOUT 1.4).
    may_ranker = variant is ReleasedVariant.MAY and kind is ModelKind.RANKER
    return PhoenixModelConfig(
        model=model,
        emb_size=model.emb_size,
        actions=actions,
        history_seq_len=_get(config, "history_seq_len", int),
        candidate_seq_len=_get(config, "candidate_seq_len", int),
        hash_config=hash_config,
        product_surface_vocab_size=_get(config, "product_surface_vocab_size", int, 16),
        fprop_dtype=fprop_dtype,
        history_attention=HistoryAttention.CAUSAL,
        positions=PositionScheme.RELEASED_RIGHT_ANCHORED if right_anchored_rope else PositionScheme.PER_SLOT,
        action_bias=False,
        history_dwell_block=may_ranker,
        dwell_hidden_dim=_get(config, "continuous_action_hidden_dim", int, 64),
        dwell_use_log=_get(config, "dwell_use_log", bool, False),
        num_history_continuous=MAY_CONTINUOUS_ACTIONS,
        post_age_buckets=may_ranker,
        post_age_granularity_mins=_get(config, "post_age_granularity_mins", int, 60),
        continuous_head_size=_get(config, "num_continuous_actions", int, MAY_CONTINUOUS_ACTIONS) if may_ranker else 0,
        num_ip_hashes=_get(config, "num_ip_hashes", int, 0),
        candidate_tower_linear_proj=_get(config, "enable_linear_proj", bool, True),
    )


def released_v1(
    config: Mapping[str, Any], *, kind: ModelKind | str = ModelKind.RANKER, fprop_dtype: DType | str = DType.FLOAT32
) -> PhoenixModelConfig:
    """Preset: the first release (Jan 2026) with `config`'s sizes; see `released_config`."""
    return released_config(config, variant=ReleasedVariant.V1, kind=kind, fprop_dtype=fprop_dtype)


def released_may(
    config: Mapping[str, Any],
    *,
    kind: ModelKind | str = ModelKind.RANKER,
    right_anchored_rope: bool = False,
    fprop_dtype: DType | str = DType.FLOAT32,
) -> PhoenixModelConfig:
    """Preset: the May 2026 release with `config`'s sizes (optionally right-anchored rope)."""
    return released_config(
        config, variant=ReleasedVariant.MAY, kind=kind, right_anchored_rope=right_anchored_rope, fprop_dtype=fprop_dtype
    )


# -- key mapping --------------------------------------------------------------------------------
def _our_path_to_released(path: tuple[Any, ...], kind: ModelKind) -> str | None:
    """Map an NNX state path to the released key, or None for our own additions."""
    parts = [str(p) for p in path]
    joined = "/".join(parts)
    if _OURS_ONLY.match(joined):
        return None
    if parts[0] == "transformer":
        # transformer/layers/<i>/<rest...>; our FFN sits in an `ffn` submodule the release does not have.
        i, rest = parts[2], parts[3:]
        if rest[0] == "ffn":
            rest = rest[1:]
        return "/".join(["transformer", f"decoder_layer_{i}", *rest])
    if parts[0].startswith("candidate_tower_projection"):
        return f"{ROOT[kind]}/{CANDIDATE_TOWER}/{parts[0]}"
    return f"{ROOT[kind]}/{joined}"


def _flat_params(model: nnx.Module) -> dict[tuple[Any, ...], nnx.Variable]:
    state = nnx.state(model, nnx.Param)
    return {tuple(p): v for p, v in state.flat_state()}


def _our_key(path: tuple[Any, ...]) -> str:
    return "/".join(str(p) for p in path)


def released_keys(model: nnx.Module, kind: ModelKind | str) -> dict[str, tuple[int, ...]]:
    """The released key -> shape that `model`'s configuration expects."""
    kind = _as_kind(kind)
    out = {}
    for path, var in _flat_params(model).items():
        key = _our_path_to_released(path, kind)
        if key is not None:
            out[key] = tuple(var.get_value().shape)
    return out


def export_params(model: nnx.Module, kind: ModelKind | str) -> dict[str, np.ndarray]:
    """`model`'s parameters in the released layout (float32 numpy arrays), our additions left out."""
    kind = _as_kind(kind)
    out = {}
    for path, var in _flat_params(model).items():
        key = _our_path_to_released(path, kind)
        if key is not None:
            out[key] = np.asarray(var.get_value(), np.float32)
    return out


def _to_float32(x: Any) -> np.ndarray:
    arr = np.asarray(x)
    # numpy has no bfloat16: a bf16 array saved to npz comes back as 2-byte void; reinterpret it.
    if arr.dtype.kind == "V" and arr.dtype.itemsize == 2:
        arr = arr.view(jnp.bfloat16)
    return arr.astype(np.float32)


def _problem_message(header: str, problems: list[str]) -> str:
    shown = problems[:_MAX_PROBLEMS]
    more = len(problems) - len(shown)
    tail = [f"... and {more} more"] if more else []
    return header + ":\n  " + "\n  ".join(shown + tail)


def _check_and_assign(
    expected: Mapping[str, nnx.Variable], given: Mapping[str, Any], header: str
) -> None:
    """Refuse any missing, unexpected, mis-shaped or non-finite key, then assign every value."""
    problems = []
    for k in sorted(set(expected) - set(given)):
        problems.append(f"missing key {k!r} (expected shape {tuple(expected[k].get_value().shape)})")
    for k in sorted(set(given) - set(expected)):
        problems.append(f"unexpected key {k!r} (shape {tuple(np.shape(given[k]))})")
    values = {}
    for k in sorted(set(expected) & set(given)):
        want = tuple(expected[k].get_value().shape)
        got = tuple(np.shape(given[k]))
        if want != got:
            problems.append(f"key {k!r} has shape {got}, expected {want}")
            continue
        try:
            values[k] = _to_float32(given[k])
        except (TypeError, ValueError):
            problems.append(f"key {k!r} has dtype {np.asarray(given[k]).dtype}, expected a float array")
            continue
        if not np.isfinite(values[k]).all():
            problems.append(f"key {k!r} holds NaN or inf")
    if problems:
        raise ValueError(_problem_message(header, problems))
    for k, var in expected.items():
        var.set_value(jnp.asarray(values[k], jnp.float32))


def import_params(model: nnx.Module, params: Mapping[str, Any], kind: ModelKind | str) -> None:
    """Load parameters in the released layout into `model`, in place.

    Every expected key must be present with exactly the expected shape, and no unknown key may
    appear (except `~/log_temperature`, which the release carries without using it). Our own
    additions (hash tables, action bias) keep their current values.

    Raises:
      ValueError: listing each missing, unexpected or mis-shaped key (with the shape expected).
    """
    kind = _as_kind(kind)
    expected = {}
    for path, var in _flat_params(model).items():
        key = _our_path_to_released(path, kind)
        if key is not None:
            expected[key] = var
    given = {k: v for k, v in params.items() if k not in IGNORED_RELEASED_KEYS}
    _check_and_assign(expected, given, "parameter file does not match the model")


def _load_npz(path: str | Path, what: str) -> dict[str, np.ndarray]:
    """Every array of an npz file; unreadable files (not a zip, pickled objects) are a ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"cannot read {what} {str(path)!r} as an .npz archive: {e}") from None


def load_released_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read a released-layout parameter file (`module/path/param` keys) without pickles."""
    return _load_npz(path, "parameter file")


def infer_kind(params: Mapping[str, Any]) -> ModelKind:
    """Ranker or retrieval, from the root module of a released-layout parameter set.

    Raises:
      ValueError: neither root (or both) appears.
    """
    roots = {k for k in ROOT if any(key.startswith(ROOT[k] + "/") for key in params)}
    if len(roots) != 1:
        raise ValueError(
            "cannot tell ranker from retrieval: expected keys under exactly one of "
            f"{sorted(ROOT.values())}, found {sorted(ROOT[k] for k in roots) or 'neither'}; pass the kind explicitly"
        )
    return roots.pop()


def infer_variant(params: Mapping[str, Any], kind: ModelKind | str) -> ReleasedVariant:
    """v1 or May, from the parameter keys (only the May ranker has post-age and continuous-head keys).

    The two releases' retrieval models have the same parameters and forward pass, so retrieval is v1.
    """
    kind = _as_kind(kind)
    if kind is ModelKind.RANKER and any(k in params for k in _MAY_RANKER_MARKERS):
        return ReleasedVariant.MAY
    return ReleasedVariant.V1


# -- models -------------------------------------------------------------------------------------
def model_class(kind: ModelKind | str) -> type[PhoenixModel] | type[PhoenixRetrievalModel]:
    """The module class for `kind`."""
    return PhoenixModel if _as_kind(kind) is ModelKind.RANKER else PhoenixRetrievalModel


def abstract_model(cfg: PhoenixModelConfig, kind: ModelKind | str) -> Model:
    """A model whose parameters are shapes only (no random init), to be filled by an import."""
    cls = model_class(kind)
    return nnx.eval_shape(lambda: cls(cfg, rngs=nnx.Rngs(0)))


def _init_ours_only(model: Model, kind: ModelKind, seed: int | None) -> None:
    """Give our additions with no released counterpart a value, in numpy (no JAX init to compile).

    Hash tables get N(0, embedding_init_std) from `seed` (zeros when `seed` is None: the released model
    takes embeddings already looked up, so they are then unused); anything else (the action bias)
    gets zeros, which is also its normal init.
    """
    rng = None if seed is None else np.random.default_rng(seed)
    for path, var in _flat_params(model).items():
        if _our_path_to_released(path, kind) is not None:
            continue
        shape = tuple(var.get_value().shape)
        if rng is not None and str(path[0]) == "tables":
            value = rng.standard_normal(shape, np.float32) * np.float32(model.config.embedding_init_std)
        else:
            value = np.zeros(shape, np.float32)
        var.set_value(jnp.asarray(value))


def released_model(
    cfg: PhoenixModelConfig, params: Mapping[str, Any], kind: ModelKind | str, *, table_seed: int | None = None
) -> Model:
    """A model of configuration `cfg` holding the released-layout `params`.

    Skips the random init (it is overwritten anyway, and eager init compiles every random op). Our
    additions with no released counterpart are filled by `_init_ours_only`: hash tables are zeros, or
    random from `table_seed`; the action bias is zero.

    Raises:
      ValueError: `params` does not match `cfg` (see `import_params`).
    """
    kind = _as_kind(kind)
    model = abstract_model(cfg, kind)
    _init_ours_only(model, kind, table_seed)
    import_params(model, params, kind)
    return model


def recipe_params(
    cfg: PhoenixModelConfig, kind: ModelKind | str, *, seed: int, strong: bool = False
) -> dict[str, np.ndarray]:
    """Random released-layout parameters by the parity files' recipe (REFERENCE-LAYOUT 8).

    Every parameter is N(0, 1) * 0.05 from numpy `default_rng(seed)`, drawn visiting modules in sorted
    order and each module's parameters in sorted order; `strong` makes every RMSNorm scale 1 + 2 * draw
    and the attention query/key weights 3 * draw, so attention is sharp. With the files' seeds (1234
    ranker, 4321 retrieval) this reproduces their parameters exactly.
    """
    kind = _as_kind(kind)
    shapes = released_keys(abstract_model(cfg, kind), kind)
    modules: dict[str, list[str]] = {}
    for key in shapes:
        module, param = key.rsplit("/", 1)
        modules.setdefault(module, []).append(param)
    rng = np.random.default_rng(seed)
    out = {}
    for module in sorted(modules):
        for param in sorted(modules[module]):
            key = f"{module}/{param}"
            draw = rng.standard_normal(shapes[key]).astype(np.float32) * np.float32(0.05)
            if strong and param == "scale":
                draw = 1 + 2 * draw
            elif strong and module.rsplit("/", 1)[-1] in ("query", "key"):
                draw = 3 * draw
            out[key] = draw.astype(np.float32)
    return out


# -- the user's CONFIG.json -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReleasedSpec:
    """What `released_config` needs besides the dtype, as read from a user's CONFIG.json.

    Attributes:
      config: the released size mapping (`meta_json["config"]`-like).
      variant: v1 or may.
      kind: ranker or retrieval.
      right_anchored_rope: the May release's `right_anchored_rope` flag.
    """

    config: Mapping[str, Any]
    variant: ReleasedVariant
    kind: ModelKind
    right_anchored_rope: bool

    def model_config(self, fprop_dtype: DType | str = DType.FLOAT32) -> PhoenixModelConfig:
        return released_config(
            self.config, variant=self.variant, kind=self.kind, right_anchored_rope=self.right_anchored_rope,
            fprop_dtype=fprop_dtype,
        )


def released_spec(
    data: Mapping[str, Any],
    params: Mapping[str, Any] | None = None,
    *,
    variant: ReleasedVariant | str | None = None,
    kind: ModelKind | str | None = None,
    right_anchored_rope: bool | None = None,
) -> ReleasedSpec:
    """Read a CONFIG.json mapping in either accepted form.

    Forms:
      - meta_json-like: `{"config": {...sizes...}, "variant": "v1"|"may", "kind": "ranker"|"retrieval",
        "right_anchored_rope": bool}`; the last three are optional.
      - bare: the size mapping itself (it has `emb_size` at the top level).

    Precedence for variant, kind and right_anchored_rope: the explicit arguments, then the file's
    values, then what the parameter keys say (`infer_kind`, `infer_variant`), then v1 / no right-anchored
    rope. The rope flag cannot be inferred from parameters (it adds none).

    Raises:
      ValueError: the mapping has neither form, or kind cannot be determined.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"config must be a JSON object, got {type(data).__name__}")
    if "config" in data:
        config, meta = data["config"], data
        if not isinstance(config, Mapping):
            raise ValueError(f"config['config'] must be a JSON object, got {type(config).__name__}")
    elif "emb_size" in data:
        config, meta = data, {}
    else:
        raise ValueError(
            "config must be either {'config': {...}, 'variant': ..., 'kind': ...} as in a case file's meta_json, "
            f"or the bare size mapping with 'emb_size'; got keys {sorted(data)}"
        )
    if kind is None:
        kind = meta.get("kind")
    if kind is None:
        if params is None:
            raise ValueError("kind is not given (ranker or retrieval) and there are no parameters to infer it from")
        kind = infer_kind(params)
    kind = _as_kind(kind)
    if variant is None:
        variant = meta.get("variant")
    if variant is None:
        variant = ReleasedVariant.V1 if params is None else infer_variant(params, kind)
    if right_anchored_rope is None:
        right_anchored_rope = meta.get("right_anchored_rope", False)
    if not isinstance(right_anchored_rope, bool):
        raise ValueError(f"right_anchored_rope must be true or false, got {right_anchored_rope!r}")
    return ReleasedSpec(
        config=config, variant=_as_variant(variant), kind=kind, right_anchored_rope=right_anchored_rope
    )


def _read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: {e}") from None


# -- imported checkpoints -----------------------------------------------------------------------
def save_imported(out_dir: str | Path, kind: ModelKind | str, model: Model) -> Path:
    """Write `model` as an imported checkpoint: `config.json` (+ "kind") and `params.npz` (our layout).

    Returns:
      the directory written.
    """
    kind = _as_kind(kind)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {**model.config.to_json(), "kind": kind.value}
    params = {_our_key(p): np.asarray(v.get_value(), np.float32) for p, v in _flat_params(model).items()}
    np.savez(out / PARAMS_FILE, **params)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return out


def load_imported(path: str | Path) -> tuple[ModelKind, Model]:
    """Read a checkpoint written by `save_imported` (or `reference import`).

    Returns:
      (kind, model) with every parameter restored.

    Raises:
      FileNotFoundError: the directory or one of its two files is missing.
      ValueError: the config is invalid, or a parameter is missing, unexpected or mis-shaped.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {str(path)!r} does not exist")
    data = _read_json(path / CONFIG_FILE, "checkpoint config")
    if not isinstance(data, dict) or "kind" not in data:
        raise ValueError(f"{str(path / CONFIG_FILE)!r} must be a JSON object with a 'kind' field")
    kind = _as_kind(data.pop("kind"))
    cfg = PhoenixModelConfig.from_json(data)
    model = abstract_model(cfg, kind)
    expected = {_our_key(p): v for p, v in _flat_params(model).items()}
    given = _load_npz(path / PARAMS_FILE, "checkpoint parameters")
    _check_and_assign(expected, given, f"checkpoint {str(path)!r} does not match its config")
    return kind, model


def _import_tables(cfg: PhoenixModelConfig, tables: Mapping[str, np.ndarray]) -> PhoenixModelConfig:
    """`cfg` with hash-table sizes taken from a released `embedding_tables.npz`."""
    problems = [f"missing table {k!r}" for k in RELEASED_TABLES if k not in tables]
    problems += [f"unexpected table {k!r}" for k in sorted(set(tables) - set(RELEASED_TABLES))]
    for k in RELEASED_TABLES:
        if k in tables:
            shape = np.shape(tables[k])
            if len(shape) != 2 or shape[1] != cfg.emb_size or shape[0] < 2:
                problems.append(f"table {k!r} has shape {shape}, expected (V >= 2, {cfg.emb_size})")
    if problems:
        raise ValueError(_problem_message("embedding tables do not match the model", problems))
    hc = dataclasses.replace(
        cfg.hash_config,
        user_vocab_size=int(np.shape(tables["user_embeddings"])[0]),
        item_vocab_size=int(np.shape(tables["item_embeddings"])[0]),
        author_vocab_size=int(np.shape(tables["author_embeddings"])[0]),
    )
    return cfg.replace(hash_config=hc)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ImportSummary:
    """What `import_checkpoint` wrote.

    Attributes:
      out_dir: the checkpoint directory.
      kind / variant / right_anchored_rope: the configuration used.
      fprop_dtype: the forward dtype stored in the checkpoint's config.
      num_params: released-layout parameters imported.
      tables_imported: whether hash tables came from an embedding-tables file (else freshly initialised).
    """

    out_dir: Path
    kind: ModelKind
    variant: ReleasedVariant
    right_anchored_rope: bool
    fprop_dtype: DType
    num_params: int
    tables_imported: bool


def import_checkpoint(
    params_path: str | Path,
    config_path: str | Path,
    out_dir: str | Path,
    *,
    variant: ReleasedVariant | str | None = None,
    kind: ModelKind | str | None = None,
    right_anchored_rope: bool | None = None,
    fprop_dtype: DType | str = DType.BFLOAT16,
    embeddings_path: str | Path | None = None,
    seed: int = 0,
    save: Callable[[Path, ModelKind, Model], Path] | None = None,
) -> ImportSummary:
    """Released weights -> a checkpoint our ranker or retriever loads (`load_imported`).

    Args:
      params_path: released-layout npz (`module/path/param` keys).
      config_path: CONFIG.json in either form `released_spec` accepts.
      out_dir: directory to write (`config.json`, `params.npz`).
      variant / kind / right_anchored_rope: override the file (see `released_spec` for precedence).
      fprop_dtype: forward dtype recorded in the checkpoint (the release runs bf16).
      embeddings_path: optional released `embedding_tables.npz` (`user_embeddings`, `item_embeddings`,
        `author_embeddings`, each `[V, D]`), copied row for row into our hash tables. Without it the
        tables are random (N(0, embedding_init_std) from `seed`) and only the embeddings entry point
        is meaningful.
      seed: seed for the tables when none are given.
      save: writes the model to `out_dir` (default `save_imported`; the CLI passes the bundle
        writer of `phoenix_recsys.train.bundle`, which this layer may not import).

    Raises:
      ValueError / FileNotFoundError: unreadable inputs, or parameters that do not match the config.
    """
    params = load_released_npz(params_path)
    spec = released_spec(
        _read_json(config_path, "config file"), params, variant=variant, kind=kind,
        right_anchored_rope=right_anchored_rope,
    )
    if not any(k.startswith(ROOT[spec.kind] + "/") for k in params):
        raise ValueError(
            f"parameter file has no key under {ROOT[spec.kind]!r}, so it is not a {spec.kind.value} "
            f"(found roots {sorted({k.split('/')[0] for k in params})})"
        )
    cfg = spec.model_config(fprop_dtype)
    tables = None
    if embeddings_path is not None:
        tables = _load_npz(embeddings_path, "embedding tables")
        cfg = _import_tables(cfg, tables)
    # Every released parameter is overwritten, so skip our (eager, compile-heavy) random init.
    try:
        model = released_model(cfg, params, spec.kind, table_seed=seed)
    except ValueError as e:
        looks_like = infer_variant(params, spec.kind)
        if looks_like is not spec.variant:
            raise ValueError(f"{e}\n(the keys look like the {looks_like.value} release, not {spec.variant.value})") from None
        raise
    if tables is not None:
        for name, attr in RELEASED_TABLES.items():
            table = getattr(model.tables, attr)
            # Row 0 is padding in our tables (it is never reached by the release's hashes, h >= 1).
            table.set_value(jnp.asarray(_to_float32(tables[name])).at[0].set(0.0))
    out = (save or save_imported)(Path(out_dir), spec.kind, model)
    return ImportSummary(
        out_dir=out, kind=spec.kind, variant=spec.variant, right_anchored_rope=spec.right_anchored_rope,
        fprop_dtype=cfg.fprop_dtype, num_params=len(released_keys(model, spec.kind)),
        tables_imported=tables is not None,
    )
