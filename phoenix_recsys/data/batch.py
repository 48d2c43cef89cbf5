"""`RecsysBatch`: the hashed model input, as the seeds name it.

Axes: B batch, S history length, C candidates, A actions, h_u / h_i / h_a hashes per user / item /
author. Hash value 0 means padding (`hashing` never produces 0 for a real id).

History is stored oldest first and packed at the front (valid slots, then padding); positions are
right-anchored by the model so the newest item always sits at position S.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class RecsysBatch(NamedTuple):
    """Hashes, actions and surfaces for a batch of (user, history, candidates) requests.

    Attributes:
      user_hashes: `[B, h_u]` int32.
      history_post_hashes: `[B, S, h_i]` int32, 0 = padded slot.
      history_author_hashes: `[B, S, h_a]` int32.
      history_actions: `[B, S, A]` float32 multi-hot of what the user did with each history post
        (a continuous action counts as done when its value is > 0).
      history_product_surface: `[B, S]` int32 in `[0, product_surface_vocab_size)`.
      candidate_post_hashes: `[B, C, h_i]` int32, 0 = padded candidate.
      candidate_author_hashes: `[B, C, h_a]` int32.
      candidate_product_surface: `[B, C]` int32.
      history_continuous_actions: optional `[B, S, 8]` float32 (the May release's block; index 1 is
        dwell time in seconds).
      candidate_impr_ts: optional `[B, C]` impression time, seconds.
      candidate_post_creation_ts: optional `[B, C]` post creation time, seconds.
      user_ip_hashes: optional `[B, n_ip]` int32.
      candidate_in_network: optional `[B, C]` int32, 1 when the user follows the candidate's author
        (read only by models configured with `in_network_feature`).
    """

    user_hashes: np.ndarray
    history_post_hashes: np.ndarray
    history_author_hashes: np.ndarray
    history_actions: np.ndarray
    history_product_surface: np.ndarray
    candidate_post_hashes: np.ndarray
    candidate_author_hashes: np.ndarray
    candidate_product_surface: np.ndarray
    history_continuous_actions: np.ndarray | None = None
    candidate_impr_ts: np.ndarray | None = None
    candidate_post_creation_ts: np.ndarray | None = None
    user_ip_hashes: np.ndarray | None = None
    candidate_in_network: np.ndarray | None = None

    @property
    def batch_size(self) -> int:
        return int(np.shape(self.user_hashes)[0])

    @property
    def history_len(self) -> int:
        return int(np.shape(self.history_post_hashes)[1])

    @property
    def num_candidates(self) -> int:
        return int(np.shape(self.candidate_post_hashes)[1])

    def with_candidates(
        self,
        post_hashes: np.ndarray,
        author_hashes: np.ndarray,
        product_surface: np.ndarray,
        impr_ts: np.ndarray | None = None,
        post_creation_ts: np.ndarray | None = None,
        in_network: np.ndarray | None = None,
    ) -> RecsysBatch:
        """The same users and histories with another candidate block (`[B, C', ...]`)."""
        return self._replace(
            candidate_post_hashes=post_hashes,
            candidate_author_hashes=author_hashes,
            candidate_product_surface=product_surface,
            candidate_impr_ts=impr_ts,
            candidate_post_creation_ts=post_creation_ts,
            candidate_in_network=in_network,
        )
