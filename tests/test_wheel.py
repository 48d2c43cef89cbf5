"""The package as a user gets it: a wheel built from the repo, and that wheel in a fresh Python 3.13 venv.

The wheel is built from a copy of the sources (pyproject.toml, README.md, phoenix_recsys/), so a
stale in-tree `build/` can neither leak files into it nor be left behind. Installs use the machine's
configured package index (pip config; a local mirror, so it works offline) with constraints.txt.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PY313 = "3.13.0"
TINY_RANK_DEMO = ["--emb-size", "16", "--num-layers", "1", "--num-heads", "1", "--num-kv-heads", "1",
                  "--key-size", "8", "--history-len", "4", "--num-candidates", "3", "--users", "1",
                  "--dtype", "float32", "--json"]  # fmt: skip


def _run(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel --no-deps` of a clean copy of the repo's sources."""
    src = tmp_path_factory.mktemp("wheel_src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "phoenix_recsys", src / "phoenix_recsys",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)], timeout=300)
    (whl,) = out.glob("phoenix_recsys-*.whl")
    return whl


def _package_files() -> set[str]:
    """The repo's package files that must ship: Python modules and the package-data suffixes."""
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["*"]
    suffixes = {".py", *(p.removeprefix("*") for p in patterns)}
    return {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "phoenix_recsys").rglob("*")
        if p.is_file() and p.suffix in suffixes and "__pycache__" not in p.parts
    }


def test_wheel_contents_metadata_and_entry_point(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        dist = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        meta = z.read(f"{dist}/METADATA").decode()
        entry = z.read(f"{dist}/entry_points.txt").decode()
    shipped = {n for n in names if n.startswith("phoenix_recsys/")}
    assert _package_files() - shipped == set()  # every module, SQL migration and explorer file ships
    for needed in ("phoenix_recsys/serve/ui/index.html", "phoenix_recsys/serve/ui/app.js",
                   "phoenix_recsys/serve/ui/style.css"):
        assert needed in shipped
    assert any(n.endswith(".sql") for n in shipped)
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    assert re.search(r"^phoenix-recsys = phoenix_recsys\.cli\.main:app$", entry, re.M)
    assert f"Version: {PYPROJECT['project']['version']}" in meta
    assert "Requires-Python: <3.14,>=3.11" in meta or "Requires-Python: >=3.11,<3.14" in meta
    # Ranges, not pins: `pip install` into an existing environment must not be forced onto our versions.
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    assert requires and not [r for r in requires if "==" in r.split(";")[0]]
    assert any("extra == \"serve\"" in r and r.startswith("Requires-Dist: fastapi") for r in requires)


def test_package_version_matches_metadata():
    import phoenix_recsys

    assert phoenix_recsys.__version__ == PYPROJECT["project"]["version"]


def _python313() -> str:
    if shutil.which("pyenv") is None:
        pytest.skip("pyenv is not installed, so no Python 3.13 to build a venv with")
    r = subprocess.run(["pyenv", "which", "python3.13"], capture_output=True, text=True,
                       env={**os.environ, "PYENV_VERSION": PY313}, timeout=60)
    if r.returncode != 0 or not r.stdout.strip():
        pytest.skip(f"no Python {PY313} under pyenv ({r.stderr.strip() or 'pyenv which failed'})")
    return r.stdout.strip()


def test_wheel_installs_into_fresh_python313_venv(wheel, tmp_path):
    python = _python313()
    venv = tmp_path / "venv"
    _run([python, "-m", "venv", str(venv)], timeout=120)
    bin_dir = venv / "bin"
    # Nothing of this checkout may leak in: no PYTHONPATH, and run from an empty directory.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["JAX_PLATFORMS"] = "cpu"
    _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), str(wheel)],
         timeout=600, env=env, cwd=tmp_path)
    r = _run([str(bin_dir / "python"), "-c", "import sys, phoenix_recsys; print(sys.version_info[:2], phoenix_recsys.__file__)"],
             timeout=60, env=env, cwd=tmp_path)
    assert "(3, 13)" in r.stdout and str(venv) in r.stdout
    r = _run([str(bin_dir / "phoenix-recsys"), "--help"], timeout=120, env=env, cwd=tmp_path)
    assert "rank-demo" in r.stdout and "serve" in r.stdout
    r = _run([str(bin_dir / "phoenix-recsys"), "rank-demo", *TINY_RANK_DEMO], timeout=300, env=env, cwd=tmp_path)
    out = json.loads(r.stdout)
    (user,) = out["users"]
    assert [c["rank"] for c in user["candidates"]] == [1, 2, 3]
    scores = [c["weighted_score"] for c in user["candidates"]]
    assert scores == sorted(scores, reverse=True)
    assert set(user["candidates"][0]["probabilities"]) == set(out["actions"])
