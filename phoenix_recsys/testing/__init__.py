"""Tiny models and random batches shared by the tests, benchmarks and demos.

The names load on first use, so the light test helpers (`testing.crash`, which the store and the
index call) do not import JAX.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["random_batch", "tiny_config"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("phoenix_recsys.testing.fixtures"), name)
    raise AttributeError(f"module 'phoenix_recsys.testing' has no attribute {name!r}")
