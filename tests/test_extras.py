"""Model-only installs: the core works with the [serve] and [plots] extras absent, and using a serve
or plot feature without them fails naming the extra to install.

Absence is simulated in a subprocess by a `sys.meta_path` finder that refuses the extras' modules,
as an environment without them would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

BLOCKER = textwrap.dedent("""
    import sys
    BLOCKED = {"fastapi", "uvicorn", "faiss", "matplotlib", "starlette", "prometheus_client"}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
""")

SCRIPT = BLOCKER + textwrap.dedent("""
    import json, pathlib, sys
    out = pathlib.Path(sys.argv[1])
    import phoenix_recsys, phoenix_recsys.model, phoenix_recsys.train.run, phoenix_recsys.train.evaluate  # noqa
    import phoenix_recsys.train.plots  # importable; only drawing needs matplotlib
    from typer.testing import CliRunner
    from phoenix_recsys.cli.main import app
    r = CliRunner()
    res = {}
    job = out / "job.json"
    job.write_text(json.dumps({"model": {"model": {"emb_size": 8, "key_size": 4, "num_layers": 1, "num_q_heads": 2,
                                                   "num_kv_heads": 1}, "emb_size": 8, "history_seq_len": 4,
                                         "candidate_seq_len": 4,
                                         "hash_config": {"user_vocab_size": 101, "item_vocab_size": 211,
                                                         "author_vocab_size": 31}},
                               "train": {"batch_size": 16, "eval_every": 2}}))
    for name, argv in {
        "synth": ["data", "synth", "--out", str(out / "w"), "--users", "40", "--posts", "40", "--seed", "1"],
        "train": ["train", "ranker", "--data", str(out / "w"), "--out", str(out / "b"), "--steps", "2",
                  "--config", str(job), "--quiet"],
        "evaluate": ["evaluate", str(out / "b"), "--data", str(out / "w"), "--json"],
        "help": ["--help"],
    }.items():
        x = r.invoke(app, argv)
        res[name] = [x.exit_code, x.output[-400:]]
    try:
        phoenix_recsys.train.plots.plot_training_curves([{"step": 1, "loss": 1.0}])
    except ImportError as e:
        res["plot_error"] = str(e)
    try:
        from phoenix_recsys.serve.index import CorpusIndex  # noqa: F401  (loads FAISS on first use)
    except ImportError as e:
        res["serve_error"] = str(e)
    res["loaded"] = sorted(m for m in ("fastapi", "uvicorn", "faiss", "matplotlib") if m in sys.modules)
    print(json.dumps(res))
""")


def test_core_works_without_serve_and_plot_extras(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")]),
           "JAX_PLATFORMS": "cpu"}
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    for step in ("synth", "train", "evaluate", "help"):
        assert res[step][0] == 0, (step, res[step][1])
    assert (tmp_path / "b" / "ranker").is_dir()
    assert (tmp_path / "b" / "eval.json").is_file()
    assert not (tmp_path / "b" / "roc_calibration.png").exists()  # the plot is skipped, not faked
    assert "pip install 'phoenix-recsys[plots]'" in res["plot_error"]
    assert "pip install 'phoenix-recsys[serve]'" in res["serve_error"]
    assert res["loaded"] == []
