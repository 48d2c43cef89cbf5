"""Shared CLI pieces: the console, option types reused across commands, and error handling."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for every random draw (same seed, same output).")]


# Fixed vocabularies as enums, so `--help` lists the choices, shell completion offers them and a typo
# is refused by the parser with the valid values (Rich would eat a hand-written "[a|b]" as markup).
class SplitProtocol(StrEnum):
    """How events are split into train / val / test."""

    TIME = "time"  # global 80/10/10 by timestamp
    LOO = "loo"  # leave-one-out per user


class Split(StrEnum):
    """Which split to evaluate."""

    TRAIN = "train"
    VAL = "val"
    TEST = "test"


class LogLevel(StrEnum):
    """uvicorn's log levels."""

    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    DEBUG = "debug"
    TRACE = "trace"


class ForwardDtype(StrEnum):
    """Forward-pass dtype of the demos."""

    BFLOAT16 = "bfloat16"
    FLOAT32 = "float32"


def domain_errors(fn: F) -> F:
    """Turn `ValueError`/`FileNotFoundError` into a one-line red message and exit code 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError) as e:
            # The message is printed without markup: ids like "[name]" must come out verbatim.
            err_console.print("[bold red]error:[/] ", end="")
            err_console.print(str(e), markup=False, highlight=False)
            raise typer.Exit(code=1) from None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    """Write `obj` as JSON to stdout (no Rich markup, so it pipes into jq)."""
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


def bar(p: float, width: int = 20, vmax: float = 1.0) -> str:
    """A text bar for a value in [0, vmax]."""
    frac = 0.0 if vmax <= 0 else max(0.0, min(1.0, p / vmax))
    full = int(round(frac * width))
    return "█" * full + "░" * (width - full)
