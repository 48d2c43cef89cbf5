"""Quality benchmarks: train + evaluate on synthetic and public data (`make bench-quality`).

Each job is `phoenix-recsys bench run NAME` (see `phoenix_recsys/train/quality.py` for data, model,
steps and protocol); its summary is written to `benchmarks/results/quality-NAME.json` and rendered
here. Jobs take minutes each on 2 cores; ml1m is long and not part of the default set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, machine_info, markdown_table

DEFAULT_JOBS = ("synthetic", "movielens-small", "kuairand", "taobao")


def _f(x: Any, d: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{d}f}"


def run(jobs: tuple[str, ...] = DEFAULT_JOBS) -> dict:
    """Run the jobs (writing their result files) and return every quality result present."""
    from phoenix_recsys.train.quality import jobs as all_jobs
    from phoenix_recsys.train.quality import run_job

    known = all_jobs()
    for name in jobs:
        summary = run_job(known[name], Path("runs") / f"bench-{name}", progress=False)
        summary["machine"] = machine_info()
        (RESULTS_DIR / f"quality-{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return load()


def load() -> dict:
    """Every `quality-*.json` result file."""
    out = {}
    for p in sorted(RESULTS_DIR.glob("quality-*.json")):
        out[p.stem.removeprefix("quality-")] = json.loads(p.read_text())
    return out


def table(results: dict) -> str:
    """Markdown: per job, ranker AUROC per main action (with oracle ratio) and retrieval metrics."""
    parts = []
    for name, r in results.items():
        s = r["summary"]
        parts.append(f"**{name}** — {r['description']}; {r['steps']} steps; {r['seconds']} s on "
                     f"{r.get('machine', {}).get('cores', '?')} cores. Protocol: {r['protocol']['description']}.")
        if "ranker_auroc" in s:
            rows = []
            cols = [c for c in ("model", "popularity", "base_rate", "oracle") if any(c in v for v in s["ranker_auroc"].values())]
            for a, v in s["ranker_auroc"].items():
                rows.append([a, v["positives"], *[_f(v.get(c)) for c in cols], _f(v.get("ratio_to_oracle"), 3)])
            parts.append(markdown_table(["action (test AUROC)", "positives", *cols, "(model-0.5)/(oracle-0.5)"], rows))
        if "retrieval" in s:
            cols = sorted({c for v in s["retrieval"].values() for c in v}, key=["model", "popularity", "oracle"].index)
            rows = [[k, *[_f(v.get(c)) for c in cols]] for k, v in s["retrieval"].items()]
            parts.append(markdown_table(["retrieval (full corpus)", *cols], rows))
    return "\n\n".join(parts)


def main() -> dict:
    """Run the default jobs, or with PHOENIX_BENCH_RENDER_ONLY=1 only re-render existing results."""
    import os

    if os.environ.get("PHOENIX_BENCH_RENDER_ONLY") == "1":
        return load()
    return run()
