"""Feed cursor size and cost (docs/serving.md "Feed cursors"): chars, issue and verify time per cursor.

    PYTHONPATH=. python -m benchmarks.cursor_size

Seeded ids (numpy default_rng(0)); timings are the mean of 200 calls on this machine.
"""

from __future__ import annotations

import time

import numpy as np

from phoenix_recsys.serve.api.cursor import CursorCodec


def main() -> None:
    """Print one row per (ids, id range): cursor length and mean issue/verify time."""
    rng = np.random.default_rng(0)
    print(f"{'ids':>5} {'id range':>10} {'chars':>7} {'issue ms':>9} {'verify ms':>9}")
    for n, hi, label in ((20, 10**6, "1e6"), (1000, 10**6, "1e6"), (1000, 2**40, "2^40"), (5000, 2**40, "2^40")):
        ids = rng.choice(hi, n, replace=False)
        codec = CursorCodec(b"k" * 32, max_ids=max(n, 1000))
        tok = codec.issue(1, ids)
        t0 = time.perf_counter()
        for _ in range(200):
            codec.issue(1, ids)
        issue = (time.perf_counter() - t0) / 200 * 1e3
        t0 = time.perf_counter()
        for _ in range(200):
            codec.verify(tok, 1)
        verify = (time.perf_counter() - t0) / 200 * 1e3
        print(f"{n:>5} {label:>10} {len(tok):>7} {issue:>9.2f} {verify:>9.2f}")


if __name__ == "__main__":
    main()
