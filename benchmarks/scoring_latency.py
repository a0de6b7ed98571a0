"""HTTP latency and throughput of the scoring API (real uvicorn server, real HTTP client).

The server is `fraudfl serve` in its own process (so client and server do not share a GIL);
the client is httpx with one keep-alive connection per worker. Prints:

- single transaction: p50 / p90 / p99 / max latency of sequential POST /score requests;
- batches: transactions per second for several batch sizes, with 1 and 2 concurrent clients.

Targets on the 2-core development machine: p99 < 5 ms single, > 50k transactions/s batched.
Run: .venv/bin/python benchmarks/scoring_latency.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table
from scoring_support import build_bench_artifact  # benchmarks/ is on sys.path when run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fraudfl", "--log-level", "WARNING", "serve", "--model",
         str(model), "--port", str(port)],
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("scoring server did not start")


def single_latency(url: str, records: list[dict[str, Any]], n: int) -> np.ndarray:
    bodies = [json.dumps(r).encode() for r in records[: max(n, 1)]]
    headers = {"content-type": "application/json"}
    times = []
    with httpx.Client(base_url=url) as client:
        for i in range(200):  # warm-up
            client.post("/score", content=bodies[i % len(bodies)], headers=headers)
        for i in range(n):
            t0 = time.perf_counter()
            r = client.post("/score", content=bodies[i % len(bodies)], headers=headers)
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
    return np.array(times) * 1e3


def server_histogram(url: str) -> dict[float, float]:
    """Cumulative counts of the server-side duration histogram of POST /score, by bucket."""
    out: dict[float, float] = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if (line.startswith("fraudfl_scoring_request_duration_seconds_bucket")
                and 'endpoint="score"' in line):
            le = line.split('le="')[1].split('"')[0]
            out[math.inf if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def batch_throughput(url: str, records: list[dict[str, Any]], batch: int, clients: int,
                     seconds: float) -> float:
    bodies = [json.dumps(records[i : i + batch]).encode()
              for i in range(0, len(records) - batch + 1, batch)][:8]
    headers = {"content-type": "application/json"}
    scored = [0] * clients
    stop = time.monotonic() + seconds

    def work(k: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            client.post("/score", content=bodies[0], headers=headers)
            i = 0
            while time.monotonic() < stop:
                r = client.post("/score", content=bodies[i % len(bodies)], headers=headers)
                assert r.status_code == 200, r.text
                scored[k] += batch
                i += 1

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(scored) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=5.0, help="per batch measurement")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        model, records = build_bench_artifact(Path(tmp))
        port = free_port()
        server = start_server(model, port)
        url = f"http://127.0.0.1:{port}"
        try:
            before = server_histogram(url)
            lat = single_latency(url, records, args.requests)
            after = server_histogram(url)
            done = {le: after[le] - before.get(le, 0.0) for le in after}
            table = Table(title=f"POST /score, one transaction ({args.requests} sequential "
                                "requests, keep-alive)")
            for col in ("p50 ms", "p90 ms", "p99 ms", "max ms", "requests/s"):
                table.add_column(col, justify="right")
            table.add_row(*(f"{np.percentile(lat, q):.2f}" for q in (50, 90, 99)),
                          f"{lat.max():.2f}", f"{1e3 / lat.mean():.0f}")
            console.print(table)
            total = done[math.inf]
            console.print("server-side time of those requests (fraudfl_scoring_request_duration"
                          "_seconds): " + ", ".join(
                              f"{done[le] / total:.2%} <= {le * 1e3:g} ms"
                              for le in (0.0005, 0.001, 0.002, 0.005) if le in done))
            table = Table(title="POST /score, batches (transactions per second)")
            table.add_column("batch size", justify="right")
            table.add_column("1 client", justify="right")
            table.add_column("2 clients", justify="right")
            for batch in (100, 1000, 5000):
                row = [f"{batch_throughput(url, records, batch, c, args.seconds):,.0f}"
                       for c in (1, 2)]
                table.add_row(str(batch), *row)
            console.print(table)
            load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
            console.print(f"cpu cores: {os.cpu_count()}, load average {load}; server: fraudfl "
                          "serve (uvicorn + httptools, 1 worker); client: httpx, another process")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=20)


if __name__ == "__main__":
    main()
