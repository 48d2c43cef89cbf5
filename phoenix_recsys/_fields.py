"""Shared check for configs built from JSON: an unknown key is a typo, never silently ignored."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


def reject_unknown_fields(cls: type, data: Mapping[str, Any]) -> None:
    """Raise `ValueError("<Class>: unknown fields [...]")` if `data` has keys that are not fields of `cls`."""
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {unknown}")
