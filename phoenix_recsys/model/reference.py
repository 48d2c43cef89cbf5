"""Compatibility with the released Phoenix code: presets and parameter import/export (REFERENCE-LAYOUT).

The released configuration is a configuration of our one model, not a second model: causal
user+history attention, per-slot (or right-anchored) positions, no action bias, and for the May
release the dwell, post-age and continuous-head blocks. Parameters use the released key layout
`module/path/param` (e.g. `transformer/decoder_layer_0/multi_head_attention/query/w`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
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


class ReleasedVariant(str, enum.Enum):
    """Which public release a parameter file or case comes from."""

    V1 = "v1"  # Jan 2026, the release the seeds describe
    MAY = "may"  # May 2026: dwell block, post-age buckets, continuous head


class ModelKind(str, enum.Enum):
    RANKER = "ranker"
    RETRIEVAL = "retrieval"


ROOT = {ModelKind.RANKER: "phoenix_model", ModelKind.RETRIEVAL: "phoenix_retrieval_model"}
CANDIDATE_TOWER = "~build_candidate_representation/candidate_tower"
# Parameters the release may carry that have no effect on the forward pass.
IGNORED_RELEASED_KEYS = ("~/log_temperature",)
# Our additions that the release has no counterpart for (kept at their init on import).
_OURS_ONLY = re.compile(r"^(tables/.*|action_bias)$")
_NORM_NAMES = ("rms_norm", "rms_norm_1", "rms_norm_2", "rms_norm_3")

MAY_CONTINUOUS_ACTIONS = 8


def released_config(
    config: Mapping[str, Any],
    *,
    variant: ReleasedVariant | str = ReleasedVariant.V1,
    kind: ModelKind | str = ModelKind.RANKER,
    right_anchored_rope: bool = False,
    fprop_dtype: DType | str = DType.FLOAT32,
) -> PhoenixModelConfig:
    """Our configuration that reproduces the released code, from a `config` mapping like `meta_json`'s.

    Sizes come from the mapping (emb_size, key_size, heads, layers, widening_factor,
    attn_output_multiplier, history/candidate lengths, num_actions, hash counts, product-surface vocab),
    so any size the layout allows works. `kind` matters for the May release, whose new blocks belong to
    the ranker only. Hash-table sizes are taken from `*_vocab_size` keys if present
    (the released model never indexes tables itself; its embeddings arrive looked up).

    Raises:
      ValueError: a required key is missing or has the wrong type.
    """
    variant = ReleasedVariant(getattr(variant, "value", variant))
    required = ("emb_size", "key_size", "num_layers", "num_q_heads", "num_kv_heads", "widening_factor",
                "history_seq_len", "candidate_seq_len", "num_actions")
    missing = [k for k in required if k not in config]
    if missing:
        raise ValueError(f"released config is missing keys {missing}")
    num_actions = int(config["num_actions"])
    actions = PHOENIX_ACTIONS if num_actions == len(PHOENIX_ACTIONS) else ActionVocabulary.binary(
        [f"action_{i}" for i in range(num_actions)]
    )
    model = TransformerConfig(
        emb_size=int(config["emb_size"]),
        key_size=int(config["key_size"]),
        num_layers=int(config["num_layers"]),
        num_q_heads=int(config["num_q_heads"]),
        num_kv_heads=int(config["num_kv_heads"]),
        widening_factor=float(config["widening_factor"]),
        attn_output_multiplier=float(config.get("attn_output_multiplier", 1.0)),
    )
    hash_config = HashConfig(
        num_user_hashes=int(config.get("num_user_hashes", 2)),
        num_item_hashes=int(config.get("num_item_hashes", 2)),
        num_author_hashes=int(config.get("num_author_hashes", 2)),
        user_vocab_size=int(config.get("user_vocab_size", 2)),
        item_vocab_size=int(config.get("item_vocab_size", 2)),
        author_vocab_size=int(config.get("author_vocab_size", 2)),
    )
    kind = ModelKind(getattr(kind, "value", kind))
    may = variant is ReleasedVariant.MAY
    # The May release adds its dwell block to the ranker only; its retrieval user tower is unchanged.
    may_ranker = may and kind is ModelKind.RANKER
    return PhoenixModelConfig(
        model=model,
        emb_size=model.emb_size,
        actions=actions,
        history_seq_len=int(config["history_seq_len"]),
        candidate_seq_len=int(config["candidate_seq_len"]),
        hash_config=hash_config,
        product_surface_vocab_size=int(config.get("product_surface_vocab_size", 16)),
        fprop_dtype=fprop_dtype,
        history_attention=HistoryAttention.CAUSAL,
        positions=PositionScheme.RIGHT_ANCHORED if right_anchored_rope else PositionScheme.PER_SLOT,
        action_bias=False,
        history_dwell_block=may_ranker,
        dwell_hidden_dim=int(config.get("continuous_action_hidden_dim", 64)),
        num_history_continuous=MAY_CONTINUOUS_ACTIONS,
        post_age_buckets=may_ranker,
        post_age_granularity_mins=int(config.get("post_age_granularity_mins", 60)),
        continuous_head_size=int(config.get("num_continuous_actions", MAY_CONTINUOUS_ACTIONS)) if may_ranker else 0,
        num_ip_hashes=int(config.get("num_ip_hashes", 0)),
    )


def _our_path_to_released(path: tuple[Any, ...], kind: ModelKind) -> str | None:
    """Map an NNX state path to the released key, or None for our own additions."""
    parts = [str(p) for p in path]
    joined = "/".join(parts)
    if _OURS_ONLY.match(joined):
        return None
    if parts[0] == "transformer":
        # transformer/layers/<i>/<rest...>
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


def released_keys(model: nnx.Module, kind: ModelKind | str) -> dict[str, tuple[int, ...]]:
    """The released key -> shape that `model`'s configuration expects."""
    kind = ModelKind(getattr(kind, "value", kind))
    out = {}
    for path, var in _flat_params(model).items():
        key = _our_path_to_released(path, kind)
        if key is not None:
            out[key] = tuple(var.value.shape)
    return out


def export_params(model: nnx.Module, kind: ModelKind | str) -> dict[str, np.ndarray]:
    """`model`'s parameters in the released layout (float32 numpy arrays), our additions left out."""
    kind = ModelKind(getattr(kind, "value", kind))
    out = {}
    for path, var in _flat_params(model).items():
        key = _our_path_to_released(path, kind)
        if key is not None:
            out[key] = np.asarray(var.value, np.float32)
    return out


def import_params(model: nnx.Module, params: Mapping[str, Any], kind: ModelKind | str) -> None:
    """Load parameters in the released layout into `model`, in place.

    Every expected key must be present with exactly the expected shape, and no unknown key may
    appear (except `~/log_temperature`, which the release carries without using it).

    Raises:
      ValueError: listing each missing, unexpected or mis-shaped key (with the shape expected).
    """
    kind = ModelKind(getattr(kind, "value", kind))
    flat = _flat_params(model)
    expected = {}
    for path, var in flat.items():
        key = _our_path_to_released(path, kind)
        if key is not None:
            expected[key] = (path, var)
    given = {k: v for k, v in params.items() if k not in IGNORED_RELEASED_KEYS}
    problems = []
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    for k in missing:
        problems.append(f"missing key {k!r} (expected shape {tuple(expected[k][1].value.shape)})")
    for k in unexpected:
        problems.append(f"unexpected key {k!r} (shape {tuple(np.shape(given[k]))})")
    for k in sorted(set(expected) & set(given)):
        want = tuple(expected[k][1].value.shape)
        got = tuple(np.shape(given[k]))
        if want != got:
            problems.append(f"key {k!r} has shape {got}, expected {want}")
        elif not np.isfinite(np.asarray(given[k], np.float32)).all():
            problems.append(f"key {k!r} holds NaN or inf")
    if problems:
        raise ValueError("parameter file does not match the model:\n  " + "\n  ".join(problems))
    for k, (_, var) in expected.items():
        var.value = jnp.asarray(np.asarray(given[k]), jnp.float32)


def load_released_npz(path: str) -> dict[str, np.ndarray]:
    """Read a released-layout parameter file (`module/path/param` keys) without pickles."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
