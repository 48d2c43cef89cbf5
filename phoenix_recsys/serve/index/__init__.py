"""The corpus index: FAISS search (`corpus`), snapshots while serving (`snapshot`) and the follower
that keeps a server's index current from the store's post sequence (`follower`).

`from phoenix_recsys.serve.index import CorpusIndex, IndexConfig, ...` keeps working as it did
when this was one module.
"""

from __future__ import annotations

from phoenix_recsys.serve.index.corpus import (
    CorpusIndex,
    IndexConfig,
    IndexKind,
    IndexMismatchError,
    SearchResult,
    make_fingerprint,
)

__all__ = ["CorpusIndex", "IndexConfig", "IndexKind", "IndexMismatchError", "SearchResult", "make_fingerprint"]
