"""`make bench`: run every benchmark, write `benchmarks/results/*.json`, print tables, refresh BENCHMARKS.md.

Usage: python -m benchmarks.run [NAME ...]   (default: the quick ones; `quality` trains models for minutes)
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path

from benchmarks.common import machine_info

# name -> (module, BENCHMARKS.md section title)
BENCHMARKS = {
    "ranking": ("benchmarks.ranking", "Ranking throughput: cached context vs reference-style full forward"),
    "feed": ("benchmarks.feed", "Feed latency (full pipeline, one process)"),
    "quality": ("benchmarks.quality", "Quality"),
    "train_mesh": ("benchmarks.train_mesh", "Training throughput on a device mesh"),
    "scale": ("benchmarks.scale", "Scale: the feed over HTTP on a large skewed world"),
    "replicas": ("benchmarks.replicas", "Replicas: one and two servers on PostgreSQL beside one on SQLite"),
    "ann": ("benchmarks.ann", "ANN at 1M posts: recall@100 vs queries/s vs build time"),
}
QUICK = ("ranking", "feed")
MAKE_TARGETS = {"quality": "make bench-quality", "scale": "phoenix-recsys bench run scale",
                "replicas": "phoenix-recsys bench run replicas", "ann": "phoenix-recsys bench run ann"}
DOC = Path(__file__).parent.parent / "BENCHMARKS.md"


def _update_doc(name: str, title: str, body: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{body}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n## {title}\n\n{block}\n"
    DOC.write_text(text)


def main(argv: list[str]) -> None:
    names = argv or list(QUICK)
    m = machine_info()
    machine = f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, JAX {m['jax']} on {m['backend']}, {m['date']}"
    for name in names:
        if name not in BENCHMARKS:
            raise SystemExit(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
        module_name, title = BENCHMARKS[name]
        mod = importlib.import_module(module_name)
        print(f"== {title}", flush=True)
        load_start = os.getloadavg()[0]
        result = mod.main()
        tbl = mod.table(result)
        load = f"1-minute load average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end"
        print(tbl, flush=True)
        doc = (mod.__doc__ or "").strip()
        make = MAKE_TARGETS.get(name, "make bench" if name in QUICK else None)
        command = f"`{make}` (or `python -m benchmarks.run {name}`)" if make else f"`python -m benchmarks.run {name}`"
        body = f"{doc}\n\nCommand: {command}. Machine: {machine} ({load}).\n\n{tbl}"
        _update_doc(name, title, body)


if __name__ == "__main__":
    main(sys.argv[1:])
