"""Input modes: what the model is allowed to read.

`"full"` (default) feeds every feature the dataset has. `"pure_id"` keeps only item ids and their
order, as SASRec and HSTU read them, for like-for-like comparisons: every user gets the same user
hash (one shared learned start token, so no per-user embedding), author hashes (on MovieLens the
first genre) and surfaces are blanked, and the per-item action flags (e.g. MovieLens' rating >= 4)
and continuous actions are zeroed. Training and evaluation apply the same mode (the bundle records it).
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import numpy as np

from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.data.examples import PostCorpus

INPUT_MODES = ("full", "pure_id")
# Hash 0 means padding, so the shared "no user id" token uses 1 (a real bucket every user shares).
SHARED_USER_HASH = 1

E = TypeVar("E")


def pure_id_batch(batch: RecsysBatch) -> RecsysBatch:
    """`batch` with everything but item hashes (and timestamps) blanked; see the module docstring."""

    def zeros(x: np.ndarray | None) -> np.ndarray | None:
        return None if x is None else np.zeros_like(np.asarray(x))

    return batch._replace(
        user_hashes=np.full_like(np.asarray(batch.user_hashes), SHARED_USER_HASH),
        history_author_hashes=zeros(batch.history_author_hashes),
        history_actions=zeros(batch.history_actions),
        history_product_surface=zeros(batch.history_product_surface),
        candidate_author_hashes=zeros(batch.candidate_author_hashes),
        candidate_product_surface=zeros(batch.candidate_product_surface),
        history_continuous_actions=zeros(batch.history_continuous_actions),
        user_ip_hashes=zeros(batch.user_ip_hashes),
        candidate_in_network=zeros(batch.candidate_in_network),
    )


def check_input_mode(mode: str) -> str:
    """`mode` if known, else a ValueError naming the field and the choices."""
    if mode not in INPUT_MODES:
        raise ValueError(f"input_mode must be one of {list(INPUT_MODES)}, got {mode!r}")
    return mode


def apply_input_mode(examples: E, mode: str) -> E:
    """Ranking or retrieval examples under `mode` (unchanged for "full")."""
    if check_input_mode(mode) == "full":
        return examples
    return dataclasses.replace(examples, batch=pure_id_batch(examples.batch))  # type: ignore[type-var]


def apply_input_mode_corpus(corpus: PostCorpus, mode: str) -> PostCorpus:
    """The retrieval corpus under `mode`: pure-id encodes posts from their item hashes alone."""
    if check_input_mode(mode) == "full":
        return corpus
    return corpus._replace(author_hashes=np.zeros_like(corpus.author_hashes))
