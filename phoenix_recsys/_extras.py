"""Optional dependencies: import one, or fail with the pip extra that provides it.

The core install (model, data, train, evaluate) needs none of these; serving needs `[serve]`
(FAISS, FastAPI, uvicorn), plots need `[plots]` (matplotlib), tracking/tuning need `[track]`.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require_extra(module: str, extra: str, feature: str) -> ModuleType:
    """Import `module`, or raise MissingExtraError saying `pip install 'phoenix-recsys[extra]'`.

    Only the absence of `module` itself is translated; an ImportError raised inside an installed
    module (a broken install) propagates unchanged, so it is not mistaken for a missing extra.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] != module.split(".")[0]:
            raise
        raise MissingExtraError(
            f"{feature} needs the {module.split('.')[0]!r} package, which is not installed: "
            f"pip install 'phoenix-recsys[{extra}]'"
        ) from None
