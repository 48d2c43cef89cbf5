"""`make demo`: the main job on the embedded default, end to end, printed.

0. the seeds' run_ranker / run_retrieval demos on a fresh random model (`rank-demo`, `retrieve-demo`),
1. synthesise a small world with known truth (`data synth`),
2. train the ranker and the two-tower retriever briefly into one bundle (`train all`),
3. evaluate on the held-out time split: ours vs popularity vs the oracle ceiling (`evaluate`),
4. serve a feed for one user through the full pipeline (sources -> filters -> cached ranking ->
   weighted score -> diversity), with per-action bars and the reason for every item (`feed`).
Everything is seeded; outputs go to `./demo_out` (override with PHOENIX_DEMO_DIR).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from phoenix_recsys.cli._common import console

DEMO_USERS, DEMO_POSTS, DEMO_IMPRESSIONS, DEMO_STEPS = 1000, 600, 60.0, 300


def main() -> None:
    from phoenix_recsys.cli.train import print_report
    from phoenix_recsys.data.synth import SynthConfig, synthesize
    from phoenix_recsys.train.bundle import load_bundle
    from phoenix_recsys.train.evaluate import evaluate_bundle, write_report
    from phoenix_recsys.train.run import JobConfig, make_protocol, train_job

    root = Path(os.environ.get("PHOENIX_DEMO_DIR", "demo_out"))
    data, bundle_dir = root / "world", root / "bundle"
    if root.exists():
        shutil.rmtree(root)
    t0 = time.perf_counter()
    from phoenix_recsys.cli import demos

    console.rule("[bold]0. the seeds' demos: random weights, our engine")
    demos.rank_demo(users=1, num_candidates=4)
    demos.retrieve_demo(users=1, top_k=5)
    console.rule("[bold]1. synthetic world")
    ds = synthesize(data, SynthConfig(num_users=DEMO_USERS, num_posts=DEMO_POSTS,
                                      impressions_per_user=DEMO_IMPRESSIONS, seed=0))
    console.print(f"{ds.num_events:,} impressions of {DEMO_POSTS} posts by {DEMO_USERS} users -> {data}")

    console.rule("[bold]2. train ranker + retriever")
    job = JobConfig({}, {"eval_every": 100, "batch_size": 64, "learning_rate": 3e-3}, {}, {})
    train_job(data, bundle_dir, ["ranker", "retrieval"], config=job, steps=DEMO_STEPS, progress=True)

    console.rule("[bold]3. evaluate (test split): ours vs popularity vs oracle")
    bundle = load_bundle(bundle_dir)
    report, raw = evaluate_bundle(bundle, ds, split="test", protocol=make_protocol(ds, "time"))
    path = write_report(report, raw, bundle_dir)
    print_report(report)
    console.print(f"full report: {path}")

    console.rule("[bold]4. a feed from the trained bundle")
    try:
        from phoenix_recsys.cli.serve import print_feed_for_demo
    except ImportError:
        console.print("(feed pipeline not available in this build)")
    else:
        print_feed_for_demo(bundle_dir, data, root / "store.sqlite")
    console.print(f"[bold green]demo finished in {time.perf_counter() - t0:.0f} s[/]")


if __name__ == "__main__":
    main()
