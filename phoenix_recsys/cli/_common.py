"""Shared CLI pieces: the console, option types reused across commands, and error handling."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for every random draw (same seed, same output).")]


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
