"""`make demo`: the main job on the embedded default, printed.

Until the training pipeline lands this runs the seeds' two demos (random weights) through our engine.
"""

from __future__ import annotations

from phoenix_recsys.cli import demos


def main() -> None:
    demos.rank_demo(users=1, num_candidates=8)
    demos.retrieve_demo(users=2)


if __name__ == "__main__":
    main()
