"""The `phoenix-recsys` command: one Typer app with a sub-app per command group."""

from __future__ import annotations

import importlib

import typer

from phoenix_recsys.cli import demos
from phoenix_recsys.cli import train as train_cli

app = typer.Typer(
    name="phoenix-recsys",
    help=(
        "Phoenix recommendation engine: hash embeddings, a two-tower retriever, a transformer ranker with "
        "candidate isolation, and a feed service.\n\n"
        "Start with `rank-demo` / `retrieve-demo` (random weights), then `data synth` -> `train all` -> "
        "`evaluate` -> `feed` / `serve`."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("rank-demo")(demos.rank_demo)
app.command("retrieve-demo")(demos.retrieve_demo)
app.command("evaluate")(train_cli.evaluate_cmd)
app.command("tune")(train_cli.tune_cmd)

# Command groups, each a module exposing a Typer sub-app; a group whose module is absent is skipped
# so the CLI keeps working while a group is being built.
_GROUPS = (
    ("data", "phoenix_recsys.cli.data", "data_app"),
    ("reference", "phoenix_recsys.cli.reference", "reference_app"),
    ("train", "phoenix_recsys.cli.train", "train_app"),
    ("bench", "phoenix_recsys.cli.bench", "bench_app"),
    ("store", "phoenix_recsys.cli.store", "store_app"),
    (None, "phoenix_recsys.cli.serve", "serve_app"),  # no name: `serve` and `feed` are top-level commands
)
for _name, _module, _attr in _GROUPS:
    try:
        _sub = getattr(importlib.import_module(_module), _attr)
    except ModuleNotFoundError as _e:
        if _e.name != _module:
            raise
        continue
    app.add_typer(_sub, name=_name)


if __name__ == "__main__":
    app()
