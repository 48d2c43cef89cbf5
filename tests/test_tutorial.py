"""docs/tutorial.md runs as written: its python blocks execute in order in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_tutorial_runs(tmp_path, monkeypatch):
    blocks = python_blocks(TUTORIAL.read_text())
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "__tutorial__"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{TUTORIAL.name}[block {i}]", "exec"), ns)
    # What the tutorial claims, checked: a dataset from tables, both models, a report, a figure, a feed.
    assert ns["ds"].num_events == ns["world"].num_events
    assert sorted(ns["bundle"].meta["models"]) == ["ranker", "retrieval"]
    assert "hr@10" in ns["report"]["model"]["retrieval"]
    assert type(ns["fig"]).__name__ == "Figure"
    assert 1 <= len(ns["result"].items) <= 5
    assert [it.rank for it in ns["result"].items] == list(range(1, len(ns["result"].items) + 1))
