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
    from phoenix_recsys.train.quality import summarize_result

    for p in sorted(RESULTS_DIR.glob("quality-*.json")):
        r = json.loads(p.read_text())
        r["summary"] = summarize_result(r)  # the headline view follows the current code
        out[p.stem.removeprefix("quality-")] = r
    return out


def _goal_line(name: str, s: dict) -> str:
    """The issue's quality goal for this job, checked against the numbers above."""
    rk, rt = s.get("ranker_auroc", {}), s.get("retrieval", {})
    if name == "synthetic" and rk and rt:
        worst = min(v["ratio_to_oracle"] for v in rk.values())
        rec = rt["recall@100"]["model"] / rt["recall@100"]["oracle"]
        ok = worst >= 0.9 and rec >= 0.8
        return (f"Goal (AUROC ratio >= 0.9 for all five actions; Recall@100 >= 0.8 x oracle): worst ratio {worst:.3f}, "
                f"Recall@100 {rec:.3f} x oracle -> {'met' if ok else 'not met'}.")
    if name == "movielens-small" and rt:
        hr = rt["hr@10"]["model"] / rt["hr@10"]["popularity"]
        nd = rt["ndcg@10"]["model"] / rt["ndcg@10"]["popularity"]
        return (f"Goal (HR@10 and NDCG@10 >= 2x popularity): {hr:.2f}x and {nd:.2f}x -> "
                f"{'met' if min(hr, nd) >= 2 else 'not met'}.")
    if name == "ml1m" and rt:
        return f"Goal (HR@10 > 0.31, beating HSTU's 0.3097 on all 6,040 users): {rt['hr@10']['model']:.4f} -> " + (
            "met." if rt["hr@10"]["model"] > 0.31 else "not met.")
    if name == "ml1m-pure" and rt:
        hr, nd = rt["hr@10"], rt["ndcg@10"]
        sas = max(hr.get("sasrec") or 0.0, hr.get("sasrec_ce") or 0.0)
        ok = hr["model"] >= 0.3419 and nd["model"] >= 0.1979 and sas > 0 and hr["model"] >= 1.15 * sas
        return (f"Goal (mean HR@10 >= 0.3419, NDCG@10 >= 0.1979, HR@10 >= 1.15x our best SASRec): {hr['model']:.4f}, "
                f"{nd['model']:.4f}, {hr['model'] / sas if sas else float('nan'):.2f}x -> {'met' if ok else 'not met'}.")
    if rk and name in ("kuairand", "taobao"):
        beats = [a for a, v in rk.items() if v["model"] > max(v.get("popularity") or 0, v.get("base_rate") or 0)]
        return (f"Goal (every action above popularity and the user x item base rate): above both for "
                f"{len(beats)}/{len(rk)} actions ({', '.join(beats) or 'none'}).")
    return ""


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
            ratio = "oracle" in cols
            seeds = r.get("seeds")
            for a, v in s["ranker_auroc"].items():
                model = _f(v.get("model")) + (f" ± {v['model_sd']:.3f}" if "model_sd" in v else "")
                row = [a, v["positives"], model, *[_f(v.get(c)) for c in cols[1:]]]
                rows.append(row + [_f(v.get("ratio_to_oracle"), 3)] if ratio else row)
            model_head = f"model (mean ± sd over seeds {', '.join(map(str, seeds))})" if seeds else "model"
            heads = ["action (test AUROC)", "positives", model_head, *cols[1:]] + (
                ["(model-0.5)/(oracle-0.5)"] if ratio else [])
            parts.append(markdown_table(heads, rows))
        goal = _goal_line(name, s)
        if goal:
            parts.append(goal)
        if "retrieval" in s:
            # model, then popularity and the peers (in report order), then the oracle; "± sd" over seeds.
            cols = list(dict.fromkeys(c for v in s["retrieval"].values() for c in v
                                      if not c.endswith(("_sd", "_per_seed"))))
            cols.sort(key=lambda c: {"model": 0, "oracle": 2}.get(c, 1))

            def cell(v: dict, c: str) -> str:
                return _f(v.get(c)) + (f" ± {v[c + '_sd']:.4f}" if c + "_sd" in v else "")

            rows = [[k, *[cell(v, c) for c in cols]] for k, v in s["retrieval"].items()]
            seen = r.get("seen_rule") or r["protocol"].get("seen_rule", "all")
            parts.append(markdown_table([f"retrieval (full corpus, seen rule {seen})", *cols], rows))
    return "\n\n".join(parts)


def main() -> dict:
    """Run the default jobs, or with PHOENIX_BENCH_RENDER_ONLY=1 only re-render existing results."""
    import os

    if os.environ.get("PHOENIX_BENCH_RENDER_ONLY") == "1":
        return load()
    return run()
