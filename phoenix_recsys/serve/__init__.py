"""Serving: store (SQLite), corpus index (FAISS), filters, scorers, the feed pipeline and its HTTP API."""

import importlib
from typing import Any

from phoenix_recsys.serve.filters import (
    FILTER_ORDER,
    SOURCE_FRESH,
    SOURCE_IN_NETWORK,
    SOURCE_OUT_OF_NETWORK,
    SOURCE_POPULAR,
    Candidates,
    FilterConfig,
    FilterContext,
    FilterName,
    apply_filters,
)
from phoenix_recsys.serve.index import CorpusIndex, IndexConfig, IndexKind, make_fingerprint
from phoenix_recsys.serve.scoring import PRODUCTION_WEIGHTS, ScoreBreakdown, ScoringConfig, score_candidates
from phoenix_recsys.serve.settings import Clock, ServeSettings, SettingsError, load_settings
from phoenix_recsys.serve.store import History, PostRows, Store

# The pipeline and the API pull in JAX and FastAPI; they load on first use, so importing the store
# or the filters alone (tools, subprocess tests) stays light.
_LAZY = {
    **{
        name: "phoenix_recsys.serve.pipeline"
        for name in (
            "FeedItem", "FeedResult", "FeedService", "HistoryEvent", "InvalidRequest", "ModelRuntime",
            "NewEvent", "NewPost", "RankCandidate", "RankResult", "Relation", "RetrieveResult",
            "Unsupported", "apply_process_settings", "feed_scoring_config", "seed_store",
        )
    },
    "create_app": "phoenix_recsys.serve.api",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'phoenix_recsys.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "FILTER_ORDER",
    "PRODUCTION_WEIGHTS",
    "SOURCE_FRESH",
    "SOURCE_IN_NETWORK",
    "SOURCE_OUT_OF_NETWORK",
    "SOURCE_POPULAR",
    "Candidates",
    "Clock",
    "CorpusIndex",
    "FeedItem",
    "FeedResult",
    "FeedService",
    "FilterConfig",
    "FilterContext",
    "FilterName",
    "History",
    "HistoryEvent",
    "IndexConfig",
    "IndexKind",
    "InvalidRequest",
    "ModelRuntime",
    "NewEvent",
    "NewPost",
    "PostRows",
    "RankCandidate",
    "RankResult",
    "Relation",
    "RetrieveResult",
    "ScoreBreakdown",
    "ScoringConfig",
    "ServeSettings",
    "SettingsError",
    "Store",
    "Unsupported",
    "apply_filters",
    "apply_process_settings",
    "create_app",
    "feed_scoring_config",
    "load_settings",
    "make_fingerprint",
    "score_candidates",
    "seed_store",
]
