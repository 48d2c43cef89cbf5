"""Serving: store (SQLite), corpus index (FAISS), filters, scorers, the feed pipeline and its HTTP API."""

import importlib
from typing import Any

# Every name loads on first use: the settings need pydantic-settings, the pipeline JAX, the API
# FastAPI, the index FAISS (the `serve` extra). So `import phoenix_recsys.serve.logs` (the CLI does,
# for its --log-format option) and tools that use only the store or the filters stay light, and a
# model-only install can build the CLI and fails naming the extra only when a serve feature is used.
_MODULES: dict[str, tuple[str, ...]] = {
    "phoenix_recsys.serve.filters": (
        "FILTER_ORDER", "SOURCE_FRESH", "SOURCE_IN_NETWORK", "SOURCE_OUT_OF_NETWORK", "SOURCE_POPULAR",
        "Candidates", "FilterConfig", "FilterContext", "FilterName", "apply_filters",
    ),
    "phoenix_recsys.serve.index.config": ("IndexConfig", "IndexKind", "make_fingerprint"),
    "phoenix_recsys.serve.index.corpus": ("CorpusIndex",),
    "phoenix_recsys.serve.scoring": ("PRODUCTION_WEIGHTS", "ScoreBreakdown", "ScoringConfig", "score_candidates"),
    "phoenix_recsys.serve.settings": ("Clock", "ServeSettings", "SettingsError", "load_settings"),
    "phoenix_recsys.serve.store": ("History", "PostRows", "Store"),
    "phoenix_recsys.serve.pipeline": (
        "FeedItem", "FeedResult", "FeedService", "HistoryEvent", "InvalidRequest", "ModelRuntime",
        "NewEvent", "NewPost", "RankCandidate", "RankResult", "Relation", "RetrieveResult",
        "Unsupported", "apply_process_settings", "feed_scoring_config", "seed_store",
    ),
    "phoenix_recsys.serve.api": ("create_app",),
}  # fmt: skip
_LAZY = {name: module for module, names in _MODULES.items() for name in names}


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
