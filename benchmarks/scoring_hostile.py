"""Hostile and oversized requests against a real uvicorn server: time to answer, answer size
and the server's memory growth, per kind of body (docs/scoring.md, "Deployed").

    PYTHONPATH=. python benchmarks/scoring_hostile.py [--repeats 5]

Limits are the defaults of ``ScoringLimits`` except ``max_batch``, raised to the hard maximum
(100,000) so that the 100k-empty-objects body reaches validation instead of the batch limit.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from scoring_support import build_bench_artifact  # benchmarks/ is on sys.path when run

from fraudfl.config import ScoringLimits
from fraudfl.scoring import ModelHolder
from fraudfl.scoring.api import create_app
from fraudfl.scoring.server import ServerThread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, records = build_bench_artifact(Path(tmp))
        valid = json.dumps(records[:10_000]).encode()
        bodies = {
            "100k empty objects (300 kB)": b"[" + b",".join([b"{}"] * 100_000) + b"]",
            "10k transactions, one invalid at the end": valid[:-1] + b', {"amount": "x"}]',
            "12 MB body (over max_body_bytes)": valid * 4,
            "10k valid transactions": valid,
        }
        limits = ScoringLimits(max_batch=100_000)
        with ServerThread(create_app(ModelHolder(model_dir), limits=limits)) as server, \
                httpx.Client(base_url=server.url, timeout=60) as client:
            print(f"{'body':<42} {'status':>6} {'median ms':>10} {'max ms':>8} "
                  f"{'answer bytes':>12} {'RSS growth MB':>14}")
            for name, body in bodies.items():
                rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                times, status, size = [], 0, 0
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    r = client.post("/score", content=body,
                                    headers={"content-type": "application/json"})
                    times.append((time.perf_counter() - started) * 1000)
                    status, size = r.status_code, len(r.content)
                growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
                print(f"{name:<42} {status:>6} {statistics.median(times):>10.1f} "
                      f"{max(times):>8.1f} {size:>12} {growth:>14.1f}")


if __name__ == "__main__":
    main()
