"""Drive an already running `serve` on a scale world: requests/s, latency per user class and the
server's CPU milliseconds per request, for A/B runs of two commits on one warm store.

`bench run scale` builds and seeds a fresh world each time (minutes) and so cannot interleave two
builds of the server on a shared, drifting box; this drives whatever server is on the port, with
`benchmarks.scale`'s load generator and user classes, and reads the server's CPU time (parent and
workers, user + system) from /proc before and after. CPU per request is the steadier figure when the
host's speed drifts between runs.

Usage (a store seeded as `benchmarks.scale` does, any size given by PHOENIX_SCALE_SIZE):

    phoenix-recsys serve BUNDLE --store STORE --read-only --public-reads --workers 2 --port 8731 &
    PYTHONPATH=. python -m benchmarks.scale_drive PORT PID [CONCURRENCY ...] [--seconds S]

Prints one JSON object per concurrency; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os

from benchmarks.scale import CLASSES, _drive, _size, server_cpu_s, user_classes
from phoenix_recsys.data.scale import user_event_counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("port", type=int)
    ap.add_argument("pid", type=int, help="the serve process (its workers are counted too)")
    ap.add_argument("concurrency", type=int, nargs="*", default=[1, 16])
    ap.add_argument("--seconds", type=float, default=15.0)
    args = ap.parse_args()
    cfg = _size()
    users = user_classes(cfg, user_event_counts(cfg))
    _drive(args.port, users, 2, min(8.0, args.seconds), seed=99)  # warm caches
    for c in args.concurrency:
        c0 = server_cpu_s(args.pid)
        r = _drive(args.port, users, c, args.seconds, seed=c)
        cpu = server_cpu_s(args.pid) - c0
        r.pop("_samples")
        r["server_cpu_ms_per_request"] = cpu / max(r["requests"], 1) * 1e3
        r["load_avg_1m"] = os.getloadavg()[0]
        print(json.dumps({k: r[k] for k in ("concurrency", "requests_per_s", "errors", "server_cpu_ms_per_request",
                                            *CLASSES, "load_avg_1m")}))  # fmt: skip


if __name__ == "__main__":
    main()
