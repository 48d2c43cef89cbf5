"""Model configuration: `TransformerConfig` and `PhoenixModelConfig` (the seeds' names), with presets."""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

import jax.numpy as jnp

from phoenix_recsys._fields import reject_unknown_fields
from phoenix_recsys.actions import PHOENIX_ACTIONS, ActionVocabulary
from phoenix_recsys.hashing import HashConfig


class HistoryAttention(enum.StrEnum):
    """How user+history positions attend to each other (candidates are isolated either way)."""

    BIDIRECTIONAL = "bidirectional"  # the seeds' README and the production system (our default)
    CAUSAL = "causal"  # what the first released code actually does


class UserPooling(enum.StrEnum):
    """How the retrieval user tower turns its `[user | history]` outputs into one vector."""

    MEAN = "mean"  # the release: mean over valid positions
    LAST = "last"  # the newest valid position (the user token when there is no history); with causal
    # history attention this is exactly what every-position next-item training optimises


class PositionScheme(enum.StrEnum):
    """Rotary positions of the sequence `[user | history | candidates]`.

    RIGHT_ANCHORED (default): valid history items numbered so the newest is at S, the user token right
      before the oldest valid one (S - L), every candidate at S + 1, padded tokens 0. A candidate's
      score is then independent of its slot, of how many candidates are scored with it, and of how
      much history padding the batch carries.
    RELEASED_RIGHT_ANCHORED: the May release's `right_anchored_rope`: the same, except the user token
      always sits at 0 (so its distance to the history grows with S).
    PER_SLOT: position = index in the sequence (0..T-1) for every token, as the first release does.
    """

    RIGHT_ANCHORED = "right_anchored"
    RELEASED_RIGHT_ANCHORED = "released_right_anchored"
    PER_SLOT = "per_slot"


class DType(enum.StrEnum):
    """Forward-pass (activation) dtype; parameters are always stored in float32."""

    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"

    @property
    def jnp(self) -> Any:
        return jnp.float32 if self is DType.FLOAT32 else jnp.bfloat16


def _ceil8(x: int) -> int:
    return -(-x // 8) * 8


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TransformerConfig:
    """The Grok-1-style transformer (SPEC 4).

    Attributes:
      emb_size: model width D.
      key_size: per-head width K (queries, keys and values).
      num_layers: decoder layers.
      num_q_heads / num_kv_heads: grouped-query attention; query head j uses kv head
        j // (num_q_heads // num_kv_heads).
      widening_factor: the FFN width is `ceil8(int(widening_factor * D) * 2 // 3)`.
      attn_output_multiplier: scales attention logits; None means 1/sqrt(key_size).
    """

    emb_size: int = 128
    key_size: int = 64
    num_layers: int = 2
    num_q_heads: int = 2
    num_kv_heads: int = 2
    widening_factor: float = 2.0
    attn_output_multiplier: float | None = None

    def __post_init__(self) -> None:
        for f in ("emb_size", "key_size", "num_layers", "num_q_heads", "num_kv_heads"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"TransformerConfig.{f} must be a positive int, got {v!r}")
        if self.key_size % 2:
            raise ValueError(f"TransformerConfig.key_size must be even for rotary embeddings, got {self.key_size}")
        if self.num_q_heads % self.num_kv_heads:
            raise ValueError(
                "TransformerConfig.num_q_heads must be a multiple of num_kv_heads, got "
                f"num_q_heads={self.num_q_heads}, num_kv_heads={self.num_kv_heads}"
            )
        if not self.widening_factor > 0:
            raise ValueError(f"TransformerConfig.widening_factor must be > 0, got {self.widening_factor!r}")
        if self.attn_output_multiplier is not None and not self.attn_output_multiplier > 0:
            raise ValueError(
                f"TransformerConfig.attn_output_multiplier must be > 0 or None, got {self.attn_output_multiplier!r}"
            )

    def ffn_size(self) -> int:
        """Hidden width F of the gated feed-forward."""
        return _ceil8(int(self.widening_factor * self.emb_size) * 2 // 3)

    def attention_multiplier(self) -> float:
        """The factor applied to q.k logits."""
        if self.attn_output_multiplier is None:
            return 1.0 / math.sqrt(self.key_size)
        return float(self.attn_output_multiplier)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PhoenixModelConfig:
    """Everything that fixes a ranker's or retriever's parameters and forward semantics.

    Our defaults follow the production system (SPEC 5): bidirectional history attention, right-anchored
    positions with one shared candidate position, non-zero init. `model.reference.released_v1()` / `released_may()` give
    the released code's configuration for exact reproduction.

    Attributes:
      model: transformer sizes.
      emb_size: D of the looked-up embeddings (must equal `model.emb_size`).
      actions: the action vocabulary; the head has one output per action.
      history_seq_len: S.
      candidate_seq_len: C used for training batches and demos; scoring accepts any C.
      hash_config: hashes per entity and table sizes.
      product_surface_vocab_size: rows of the product-surface table.
      fprop_dtype: activation dtype (bf16 for inference, fp32 for training).
      history_attention: see `HistoryAttention`.
      positions: see `PositionScheme`.
      action_bias: a learned per-action logit bias (absent in the release; it lets rare actions start
        at their base rate instead of at probability 0.5).
      embedding_init_std: std of the hash embedding tables at init.
      history_dwell_block: the May release's dwell-time block in the history token.
      dwell_hidden_dim: its hidden width.
      dwell_use_log: log1p(clip)/log1p(30) instead of clip/30 normalisation.
      num_history_continuous: width of `history_continuous_actions` (dwell is index 1).
      post_age_buckets: the May release's candidate post-age embedding.
      post_age_granularity_mins: bucket width in minutes (4800 min range).
      continuous_head_size: the May release's extra sigmoid head `[D, n]` (0 = off).
      num_ip_hashes: IP-hash user embeddings added to the user token (0 = off).
      candidate_tower_linear_proj: the retrieval candidate tower's MLP (False = mean of hash embeddings).
      in_network_feature: the candidate token also carries whether the viewer follows its author (a
        learned 2-row table); not in the release, whose ranker cannot tell in- from out-of-network.
      user_pooling: see `UserPooling` (retrieval only).
    """

    model: TransformerConfig = dataclasses.field(default_factory=TransformerConfig)
    emb_size: int = 128
    actions: ActionVocabulary = PHOENIX_ACTIONS
    history_seq_len: int = 128
    candidate_seq_len: int = 32
    hash_config: HashConfig = dataclasses.field(default_factory=HashConfig)
    product_surface_vocab_size: int = 16
    fprop_dtype: DType = DType.BFLOAT16
    history_attention: HistoryAttention = HistoryAttention.BIDIRECTIONAL
    positions: PositionScheme = PositionScheme.RIGHT_ANCHORED
    action_bias: bool = True
    embedding_init_std: float = 0.1
    history_dwell_block: bool = False
    dwell_hidden_dim: int = 64
    dwell_use_log: bool = False
    num_history_continuous: int = 8
    post_age_buckets: bool = False
    post_age_granularity_mins: int = 60
    continuous_head_size: int = 0
    num_ip_hashes: int = 0
    candidate_tower_linear_proj: bool = True
    in_network_feature: bool = False
    user_pooling: UserPooling = UserPooling.MEAN

    def __post_init__(self) -> None:
        # Accept plain strings for the enums (configs come from JSON and CLI flags).
        for f, enum_t in (
            ("fprop_dtype", DType),
            ("history_attention", HistoryAttention),
            ("positions", PositionScheme),
            ("user_pooling", UserPooling),
        ):
            v = getattr(self, f)
            if not isinstance(v, enum_t):
                try:
                    object.__setattr__(self, f, enum_t(getattr(v, "value", v)))
                except ValueError:
                    choices = [e.value for e in enum_t]
                    raise ValueError(f"PhoenixModelConfig.{f} must be one of {choices}, got {v!r}") from None
        if not isinstance(self.model, TransformerConfig):
            raise ValueError(f"PhoenixModelConfig.model must be a TransformerConfig, got {type(self.model).__name__}")
        if self.emb_size != self.model.emb_size:
            raise ValueError(
                f"PhoenixModelConfig.emb_size ({self.emb_size}) must equal model.emb_size ({self.model.emb_size})"
            )
        for f in ("history_seq_len", "candidate_seq_len", "product_surface_vocab_size", "dwell_hidden_dim",
                  "num_history_continuous", "post_age_granularity_mins"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"PhoenixModelConfig.{f} must be a positive int, got {v!r}")
        for f in ("continuous_head_size", "num_ip_hashes"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"PhoenixModelConfig.{f} must be a non-negative int, got {v!r}")
        if self.history_dwell_block and self.num_history_continuous < 2:
            raise ValueError("PhoenixModelConfig.num_history_continuous must be >= 2 with history_dwell_block")
        if not self.embedding_init_std > 0:
            raise ValueError(f"PhoenixModelConfig.embedding_init_std must be > 0, got {self.embedding_init_std!r}")
        if not isinstance(self.actions, ActionVocabulary):
            raise ValueError(f"PhoenixModelConfig.actions must be an ActionVocabulary, got {type(self.actions).__name__}")
        if not isinstance(self.hash_config, HashConfig):
            raise ValueError(f"PhoenixModelConfig.hash_config must be a HashConfig, got {type(self.hash_config).__name__}")

    # -- derived values -----------------------------------------------------------------------
    @property
    def num_actions(self) -> int:
        return len(self.actions)

    def num_post_age_buckets(self) -> int:
        """Rows of the post-age table: 4800 // granularity + 2 (bucket 0 = unknown age)."""
        return 4800 // self.post_age_granularity_mins + 2

    def replace(self, **changes: Any) -> PhoenixModelConfig:
        """A copy with `changes` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    # -- presets ------------------------------------------------------------------------------
    @classmethod
    def tiny(cls, **overrides: Any) -> PhoenixModelConfig:
        """A small, fast configuration for tests and the demo (distinct sizes so swapped axes fail)."""
        base = dict(
            model=TransformerConfig(emb_size=32, key_size=8, num_layers=2, num_q_heads=4, num_kv_heads=2,
                                    widening_factor=2.0),
            emb_size=32,
            history_seq_len=13,
            candidate_seq_len=7,
            hash_config=HashConfig(num_user_hashes=2, num_item_hashes=2, num_author_hashes=2,
                                   user_vocab_size=1009, item_vocab_size=2003, author_vocab_size=307),
            fprop_dtype=DType.FLOAT32,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def demo(cls, **overrides: Any) -> PhoenixModelConfig:
        """The seeds' run_ranker.py sizes: D=128, 2 layers, 2 heads, K=64, S=32, C=8."""
        base = dict(
            model=TransformerConfig(emb_size=128, key_size=64, num_layers=2, num_q_heads=2, num_kv_heads=2,
                                    widening_factor=2.0, attn_output_multiplier=0.125),
            emb_size=128,
            history_seq_len=32,
            candidate_seq_len=8,
        )
        base.update(overrides)
        return cls(**base)

    # -- serialisation ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; `from_json` inverts it exactly."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, TransformerConfig):
                v = dataclasses.asdict(v)
            elif isinstance(v, HashConfig):
                v = v.to_json()
            elif isinstance(v, ActionVocabulary):
                v = v.to_json()
            elif isinstance(v, enum.Enum):
                v = v.value
            out[f.name] = v
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PhoenixModelConfig:
        """Build from `to_json` output; unknown keys are an error (a typo must not pass silently)."""
        reject_unknown_fields(cls, data)
        kw = dict(data)
        if "model" in kw:
            reject_unknown_fields(TransformerConfig, kw["model"])
            kw["model"] = TransformerConfig(**kw["model"])
        if "hash_config" in kw:
            kw["hash_config"] = HashConfig.from_json(kw["hash_config"])
        if "actions" in kw:
            kw["actions"] = ActionVocabulary.from_json(kw["actions"])
        return cls(**kw)
