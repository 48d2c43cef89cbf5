"""Ranking throughput: reference-style full forward per 32-candidate slice vs cached-context scoring.

(a) what the released code must do for C candidates: split them into slices of 32 (its candidate
    limit) and run the whole `[user | history | 32 candidates]` forward for each slice, recomputing
    user+history every time;
(b) ours: encode `[user | history]` once, then score all candidates in chunks against the cached
    keys/values.
Sizes: S=128 history, C=1024 candidates, D=128, 2 layers (the issue's setting), one request.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from benchmarks.common import markdown_table, time_call, write_result
from phoenix_recsys.hashing import HashConfig
from phoenix_recsys.model import CachedRanker, PhoenixModel, PhoenixModelConfig, TransformerConfig
from phoenix_recsys.testing import random_batch

S, C, D, LAYERS, SLICE = 128, 1024, 128, 2, 32


def _config(dtype: str) -> PhoenixModelConfig:
    return PhoenixModelConfig(
        model=TransformerConfig(emb_size=D, key_size=64, num_layers=LAYERS, num_q_heads=2, num_kv_heads=2),
        emb_size=D,
        history_seq_len=S,
        candidate_seq_len=SLICE,
        hash_config=HashConfig(user_vocab_size=10_007, item_vocab_size=50_021, author_vocab_size=5_003),
        fprop_dtype=dtype,
    )


def _measure(dtype: str, chunk_size: int) -> dict:
    cfg = _config(dtype)
    model = PhoenixModel(cfg, rngs=nnx.Rngs(0))
    batch = random_batch(cfg, 1, C, seed=0, min_history=S)
    graphdef, state = nnx.split(model)
    full = jax.jit(lambda st, b: nnx.merge(graphdef, st)(b).logits)
    slices = [
        batch.with_candidates(
            batch.candidate_post_hashes[:, i : i + SLICE],
            batch.candidate_author_hashes[:, i : i + SLICE],
            batch.candidate_product_surface[:, i : i + SLICE],
        )
        for i in range(0, C, SLICE)
    ]

    def reference_style() -> None:
        jax.block_until_ready([full(state, sl) for sl in slices])

    cached = CachedRanker(model, chunk_size=chunk_size)

    def cached_scoring() -> None:
        cached.score_cached(cached.encode(batch), batch)

    # Same numbers on both paths (right-anchored positions make the slot irrelevant).
    ref = np.concatenate([np.asarray(full(state, sl), np.float32) for sl in slices], axis=1)
    got = cached.score_cached(cached.encode(batch), batch).logits
    ta = time_call(reference_style)
    tb = time_call(cached_scoring)
    return {
        "dtype": dtype,
        "reference_full_forward_cands_per_s": C / ta["median_s"],
        "cached_context_cands_per_s": C / tb["median_s"],
        "speedup": ta["median_s"] / tb["median_s"],
        "reference_ms_per_request": ta["median_s"] * 1e3,
        "cached_ms_per_request": tb["median_s"] * 1e3,
        "max_abs_logit_diff": float(np.abs(ref - got).max()),
    }


def run(chunk_size: int = 1024) -> dict:
    """Measure both paths in fp32 and bf16; returns the result rows."""
    rows = [_measure(dtype, chunk_size) for dtype in ("float32", "bfloat16")]
    return {"settings": {"S": S, "C": C, "D": D, "layers": LAYERS, "slice": SLICE, "chunk_size": chunk_size,
                         "requests": 1}, "rows": rows}


def table(result: dict) -> str:
    """Markdown table of a `run()` result."""
    return markdown_table(
        ["dtype", "(a) full forward / 32-slice, cand/s", "(b) cached context, cand/s", "(b)/(a)",
         "(a) ms/request", "(b) ms/request", "max |logit diff|"],
        [[r["dtype"], f"{r['reference_full_forward_cands_per_s']:,.0f}", f"{r['cached_context_cands_per_s']:,.0f}",
          f"{r['speedup']:.1f}x", f"{r['reference_ms_per_request']:.1f}", f"{r['cached_ms_per_request']:.1f}",
          f"{r['max_abs_logit_diff']:.1e}"] for r in result["rows"]],
    )


def main() -> dict:
    result = run()
    write_result("ranking", result)
    return result
