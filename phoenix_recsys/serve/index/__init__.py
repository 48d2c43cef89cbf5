"""The corpus index: FAISS search (`corpus`), its settings (`config`), snapshots while serving
(`snapshot`) and the follower that keeps a server's index current from the store's post sequence
(`follower`).

`from phoenix_recsys.serve.index import CorpusIndex, IndexConfig, ...` keeps working as it did
when this was one module. `CorpusIndex` loads FAISS on first use, so the settings and the CLI
import this package on an install without the `serve` extra.
"""

from __future__ import annotations

from typing import Any

from phoenix_recsys.serve.index.config import (
    IndexConfig,
    IndexKind,
    IndexMismatchError,
    SearchResult,
    make_fingerprint,
)

__all__ = [
    "CorpusIndex",
    "IndexConfig",
    "IndexKind",
    "IndexMismatchError",
    "SearchResult",
    "make_fingerprint",
]


def __getattr__(name: str) -> Any:
    if name == "CorpusIndex":
        from phoenix_recsys.serve.index.corpus import CorpusIndex

        return CorpusIndex
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
