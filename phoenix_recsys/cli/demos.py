"""`rank-demo` and `retrieve-demo`: the seeds' run_ranker.py / run_retrieval.py, on our engine.

Both build a freshly initialised model (random weights, our non-zero init) and random users,
histories and candidates from a seed, so they show the data flow and output format, not learned
preferences: train a model (`phoenix-recsys train`) for that.
"""

from __future__ import annotations

from typing import Annotated

import jax
import numpy as np
import typer
from flax import nnx
from rich.table import Table

from phoenix_recsys.cli._common import (
    ForwardDtype,
    JsonFlag,
    SeedOpt,
    bar,
    console,
    domain_errors,
    print_json,
)
from phoenix_recsys.hashing import HashConfig
from phoenix_recsys.model import (
    CachedRanker,
    PhoenixModel,
    PhoenixModelConfig,
    PhoenixRetrievalModel,
    TransformerConfig,
    ranking_output,
    retrieve_top_k,
)
from phoenix_recsys.testing import random_batch

EmbSize = Annotated[int, typer.Option("--emb-size", help="Model width D (the seeds use 128).")]
Layers = Annotated[int, typer.Option("--num-layers", help="Transformer layers.")]
Heads = Annotated[int, typer.Option("--num-heads", help="Query heads.")]
KvHeads = Annotated[int, typer.Option("--num-kv-heads", help="Key/value heads (query heads must be a multiple).")]
KeySize = Annotated[int, typer.Option("--key-size", help="Per-head width K.")]
HistLen = Annotated[int, typer.Option("--history-len", help="History length S (the seeds' demo: 32).")]
NumCands = Annotated[int, typer.Option("--num-candidates", help="Candidates per user C (the seeds' demo: 8).")]
Users = Annotated[int, typer.Option("--users", help="Users in the batch.")]
Dtype = Annotated[ForwardDtype, typer.Option("--dtype", help="Forward dtype (bfloat16 is the inference default).")]


def demo_config(
    emb_size: int, num_layers: int, num_heads: int, num_kv_heads: int, key_size: int, history_len: int,
    num_candidates: int, dtype: str,
) -> PhoenixModelConfig:
    """The seeds' demo configuration with the CLI's overrides (and small hash tables, for speed)."""
    return PhoenixModelConfig(
        model=TransformerConfig(emb_size=emb_size, key_size=key_size, num_layers=num_layers,
                                num_q_heads=num_heads, num_kv_heads=num_kv_heads, widening_factor=2.0),
        emb_size=emb_size,
        history_seq_len=history_len,
        candidate_seq_len=num_candidates,
        hash_config=HashConfig(user_vocab_size=10_007, item_vocab_size=20_011, author_vocab_size=5_003),
        fprop_dtype=str(dtype),  # a ForwardDtype from the CLI, a plain str from callers
    )


@domain_errors
def rank_demo(
    emb_size: EmbSize = 128,
    num_layers: Layers = 2,
    num_heads: Heads = 2,
    num_kv_heads: KvHeads = 2,
    key_size: KeySize = 64,
    history_len: HistLen = 32,
    num_candidates: NumCands = 8,
    users: Users = 2,
    dtype: Dtype = ForwardDtype.BFLOAT16,
    seed: SeedOpt = 42,
    as_json: JsonFlag = False,
) -> None:
    """Rank random candidates for random users with a freshly initialised Phoenix ranker.

    Prints, per user, the history summary and every candidate ranked by weighted score with a bar
    per action (probabilities to 3 decimals). Example:

        phoenix-recsys rank-demo --num-candidates 16 --dtype float32
    """
    cfg = demo_config(emb_size, num_layers, num_heads, num_kv_heads, key_size, history_len, num_candidates, dtype)
    model = PhoenixModel(cfg, rngs=nnx.Rngs(seed))
    batch = random_batch(cfg, users, num_candidates, seed=seed, min_history=history_len // 2)
    out = ranking_output(CachedRanker(model, chunk_size=max(8, num_candidates)).score(batch).logits,
                         np.asarray(batch.candidate_post_hashes)[:, :, 0] != 0, cfg.actions)
    names = cfg.actions.names
    result = {"actions": list(names), "users": []}
    for u in range(users):
        cands = []
        for rank, idx in enumerate(out.ranked_indices[u]):
            probs = {n: round(float(out.probabilities[u, idx, a]), 6) for a, n in enumerate(names)}
            cands.append({"rank": rank + 1, "index": int(idx), "weighted_score": round(float(out.weighted_score[u, idx]), 6),
                          "probabilities": probs})
        result["users"].append({"user": u, "history_length": int((np.asarray(batch.history_post_hashes)[u, :, 0] != 0).sum()),
                                "candidates": cands})
    if as_json:
        print_json(result)
        return
    console.rule("[bold]PHOENIX RANKING DEMO")
    console.print(
        f"model: D={emb_size}, {num_layers} layers, {num_heads} q-heads / {num_kv_heads} kv-heads, K={key_size}, "
        f"S={history_len}, C={num_candidates}, dtype={dtype}, backend={jax.default_backend()} "
        "(random weights: this shows the data flow, not learned taste)"
    )
    for user in result["users"]:
        console.rule(f"user {user['user']}: {user['history_length']} history items, {num_candidates} candidates")
        for cand in user["candidates"]:
            console.print(f"[bold]Rank {cand['rank']}[/]: candidate {cand['index']}  "
                          f"weighted score {cand['weighted_score']:.3f}")
            for n, p in cand["probabilities"].items():
                vmax = max(1.0, max(c["probabilities"][n] for c in user["candidates"]))
                console.print(f"    {n:<22s}: {bar(p, 20, vmax)} {p:.3f}", highlight=False)


@domain_errors
def retrieve_demo(
    emb_size: EmbSize = 128,
    num_layers: Layers = 2,
    num_heads: Heads = 2,
    num_kv_heads: KvHeads = 2,
    key_size: KeySize = 64,
    history_len: HistLen = 32,
    users: Users = 2,
    corpus_size: Annotated[int, typer.Option("--corpus-size", help="Posts in the random corpus.")] = 1000,
    top_k: Annotated[int, typer.Option("-k", "--top-k", help="Results per user.", min=1)] = 10,
    dtype: Dtype = ForwardDtype.BFLOAT16,
    seed: SeedOpt = 42,
    as_json: JsonFlag = False,
) -> None:
    """Retrieve the top-k of a random corpus for random users with a fresh two-tower model.

    The candidate tower embeds every post, the user tower (the Phoenix transformer over user +
    history) embeds each user, and exact dot-product top-k picks the results. Example:

        phoenix-recsys retrieve-demo --corpus-size 5000 --top-k 10
    """
    cfg = demo_config(emb_size, num_layers, num_heads, num_kv_heads, key_size, history_len, 1, dtype)
    model = PhoenixRetrievalModel(cfg, rngs=nnx.Rngs(seed))
    batch = random_batch(cfg, users, 1, seed=seed, min_history=history_len // 2)
    rng = np.random.default_rng(seed + 1)
    post_ids = np.arange(1, corpus_size + 1, dtype=np.int64)
    author_ids = rng.integers(1, max(2, corpus_size // 10), corpus_size)
    hc = cfg.hash_config
    corpus = nnx.jit(lambda m, p, a: m.encode_posts(p, a))(model, hc.hash_items(post_ids), hc.hash_authors(author_ids))
    user_rep, _ = nnx.jit(lambda m, b: m.build_user_representation(b))(model, batch)
    idx, scores = retrieve_top_k(user_rep, corpus, min(top_k, corpus_size))
    idx, scores = np.asarray(idx), np.asarray(scores)
    result = {"users": [
        {"user": u, "results": [{"rank": r + 1, "post_id": int(post_ids[idx[u, r]]), "score": round(float(scores[u, r]), 6)}
                                for r in range(idx.shape[1])]}
        for u in range(users)
    ]}
    if as_json:
        print_json(result)
        return
    console.rule("[bold]PHOENIX RETRIEVAL DEMO")
    console.print(f"corpus of {corpus_size} posts embedded by the candidate tower; user tower over S={history_len}; "
                  f"exact top-{top_k} by dot product (random weights)")
    for user in result["users"]:
        table = Table(title=f"user {user['user']}")
        table.add_column("rank", justify="right")
        table.add_column("post_id", justify="right")
        table.add_column("score", justify="right")
        for r in user["results"]:
            table.add_row(str(r["rank"]), str(r["post_id"]), f"{r['score']:.4f}")
        console.print(table)
