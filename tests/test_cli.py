"""The command line's surface: help text survives Rich, fixed vocabularies are choices, `-k`,
and `evaluate`'s defaults (the bundle's protocol, the dataset check)."""

from __future__ import annotations

import json
import os
import re

import click
import pytest
import typer
from flax import nnx
from typer.testing import CliRunner

from phoenix_recsys.cli.main import app
from phoenix_recsys.cli.train import bundle_protocol
from phoenix_recsys.data.synth import SynthConfig, synthesize
from phoenix_recsys.model import PhoenixModel, PhoenixModelConfig, PhoenixRetrievalModel
from phoenix_recsys.train.bundle import save_model

runner = CliRunner()
TINY_DEMO = ["--emb-size", "16", "--num-layers", "1", "--num-heads", "1", "--num-kv-heads", "1", "--key-size", "8",
             "--history-len", "4", "--users", "2", "--dtype", "float32"]  # fmt: skip


def _help(*args: str) -> str:
    """`--help` of a command, box-drawing removed and whitespace collapsed (wrapping varies)."""
    r = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", r.output).split())


def _commands(cmd: click.Command, path: tuple[str, ...] = ()):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _commands(sub, (*path, name))


def test_no_help_text_looks_like_rich_markup():
    # "[default: x]" or "[a|b]" written into help text is parsed as a Rich tag and silently dropped.
    root = typer.main.get_command(app)
    offenders = [
        (" ".join(path), p.name)
        for path, cmd in _commands(root)
        for p in cmd.params
        if re.search(r"\[[a-zA-Z_]+[:=|\]]|\[/", getattr(p, "help", None) or "")
    ]
    assert offenders == []


def test_serve_help_shows_the_settings_defaults():
    text = _help("serve")
    for option, default in (("Bind address.", "127.0.0.1"), ("Port.", "8000"), ("SQLite store file, or a postgresql:// URL.", "BUNDLE/store.sqlite")):
        assert re.search(re.escape(option) + r" \[default: \(?" + re.escape(default), text), (option, text)
    assert "Bind address ." not in text and "Port ." not in text
    assert "critical|error|warning|info|debug|trace" in text


@pytest.mark.parametrize(
    ("command", "option", "choices"),
    [
        (("evaluate",), "--split", "train|val|test"),
        (("evaluate",), "--protocol", "time|loo"),
        (("train", "all"), "--protocol", "time|loo"),
        (("rank-demo",), "--dtype", "bfloat16|float32"),
    ],
)
def test_fixed_vocabularies_are_choices(command, option, choices):
    assert choices in _help(*command)
    r = runner.invoke(app, [*command, option, "bogus"])
    assert r.exit_code == 2  # refused by the parser, before any work
    assert "bogus" in r.output and all(c in r.output for c in choices.split("|"))


def test_top_k_short_flag():
    assert "-k" in _help("feed").split() and "--top-k" in _help("feed")
    r = runner.invoke(app, ["retrieve-demo", *TINY_DEMO, "--corpus-size", "40", "-k", "3", "--json"])
    assert r.exit_code == 0, r.output
    assert [len(u["results"]) for u in json.loads(r.stdout)["users"]] == [3, 3]


def test_bundle_protocol_reads_name_or_old_description():
    assert bundle_protocol({"dataset": {"split_protocol": "loo"}}) == "loo"
    assert bundle_protocol({"dataset": {"protocol": "time split: train ts < 5 <= val < 9 <= test"}}) == "time"
    assert bundle_protocol({"dataset": {"protocol": "leave-one-out over favorite: ..."}}) == "loo"
    assert bundle_protocol({}) is None


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """Two tiny synthetic worlds (seeds 0 and 1: different content hashes)."""
    return [synthesize(tmp_path_factory.mktemp(f"w{s}"), SynthConfig(num_users=30, num_posts=80,
                                                                     impressions_per_user=12, seed=s))
            for s in (0, 1)]


@pytest.fixture(scope="module")
def loo_bundle(tmp_path_factory, worlds):
    """An untrained tiny ranker and retriever recorded as trained on world 0 with leave-one-out."""
    world = worlds[0]
    d = tmp_path_factory.mktemp("bundle")
    cfg = PhoenixModelConfig.tiny(actions=world.actions)
    meta = {"name": world.name, "content_hash": world.manifest["content_sha256"], "split_protocol": "loo",
            "protocol": "leave-one-out"}
    save_model(d, "ranker", PhoenixModel(cfg, rngs=nnx.Rngs(0)), dataset=meta)
    save_model(d, "retrieval", PhoenixRetrievalModel(cfg, rngs=nnx.Rngs(1)), dataset=meta)
    return d


def _evaluate(bundle, world, *extra):
    return runner.invoke(app, ["evaluate", str(bundle), "--data", str(world.path), "--max-examples", "20",
                               "--quiet", "--json", *extra])


def test_evaluate_uses_the_bundles_protocol(loo_bundle, worlds):
    r = _evaluate(loo_bundle, worlds[0])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["protocol"]["description"].startswith("leave-one-out")
    r = _evaluate(loo_bundle, worlds[0], "--protocol", "time")  # an explicit flag wins, with a warning
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["protocol"]["description"].startswith("time split")
    assert "trained with --protocol loo" in r.stderr


def test_evaluate_refuses_another_dataset_unless_told(loo_bundle, worlds):
    r = _evaluate(loo_bundle, worlds[1])
    assert r.exit_code == 1
    assert "dataset mismatch" in r.output and "--ignore-dataset-mismatch" in r.output
    assert "Traceback" not in r.output
    r = _evaluate(loo_bundle, worlds[1], "--ignore-dataset-mismatch")
    assert r.exit_code == 0, r.output


def test_evaluate_progress_goes_to_stderr_and_json_stays_clean(loo_bundle, worlds):
    args = ["evaluate", str(loo_bundle), "--data", str(worlds[0].path), "--max-examples", "20", "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "retrieval" in json.loads(r.stdout)["model"]  # stdout is only the JSON
    assert "retrieval: model over the corpus" in r.stderr and "retrieval: popularity over the corpus" in r.stderr
    r = runner.invoke(app, [*args, "--quiet"])
    assert r.exit_code == 0 and "over the corpus" not in r.stderr


@pytest.mark.parametrize(
    "command",
    [("rank-demo",), ("retrieve-demo",), ("evaluate",), ("feed",), ("data", "synth"), ("data", "import"),
     ("data", "stats"), ("reference", "verify"), ("reference", "import"), ("train", "ranker"), ("train", "all"),
     ("bench", "list"), ("bench", "run")],
)
def test_commands_that_print_results_have_json(command):
    cmd = typer.main.get_command(app)
    for name in command:
        cmd = cmd.commands[name]
    assert "--json" in {opt for p in cmd.params for opt in getattr(p, "opts", ())}


def test_source_benchmarks_resolve_from_any_directory(tmp_path):
    # `phoenix-recsys bench run scale|replicas|ann` runs benchmarks/ from the source checkout, which is
    # not on sys.path when the console script starts (it failed with ModuleNotFoundError before).
    import subprocess
    import sys

    code = "from phoenix_recsys.cli.bench import _source_benchmarks as f; print(f('ann').__module__)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "benchmarks.run"
