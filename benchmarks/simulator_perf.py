"""Simulator cost on the FedProx paper's setting: seconds per round, start-up, peak memory.

Setting: Synthetic(1,1), 30 devices, 10 per round, E = 20, batch 10, lr 0.01, logistic
regression, FedProx mu = 1, no stragglers (every sampled device does its full work, the most
expensive case). Every round includes the evaluation of the global model on the test set,
on every device and on all training data.

Runs with plain sums (secure aggregation off: the same quantised sum in the clear) and with the
real SecAgg protocol, both through the round engine.

Each measurement runs in a fresh Python process, so start-up is honest: from process start
(before ``import torch``) to the first round starting (imports, reading 30 CSV files,
validation, statistics, feature pipeline, model). Peak memory is the child's maximum RSS.

Targets on the 2-core reference machine: < 0.5 s per round, < 3 s start-up, < 500 MB.

    .venv/bin/python benchmarks/simulator_perf.py [--rounds 20] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fraudfl.data.generators.fedprox_synthetic import generate_fedprox_synthetic

RESULTS_DIR = Path(__file__).parent / "results"
TARGETS = {"seconds_per_round": 0.5, "startup_seconds": 3.0, "peak_rss_mb": 500.0}

CHILD = r"""
import json, resource, sys, time
spawned = float(sys.argv[1])
process_start = time.time()
from pathlib import Path
from typing import Any
from fraudfl.data import load_dataset
from fraudfl.simulation import SimulationConfig, run_simulation
imported = time.time()

config = SimulationConfig(
    strategy="fedprox", mu=1.0, rounds=int(sys.argv[3]), banks_per_round=10, local_epochs=20,
    batch_size=10, lr=0.01, straggler_fraction=0.0, seed=0, model="logistic",
    val_fraction=0.2, standardize=False, torch_threads=int(sys.argv[4]),
    secure_aggregation=sys.argv[5] == "secure",
)
dataset = load_dataset(Path(sys.argv[2]))
began = time.time()
result = run_simulation(dataset, config)
print(json.dumps({
    "spawned": spawned,
    "process_start": process_start,
    "imported": imported,
    "loaded": began,
    "first_round_start": began + result.startup_seconds,
    "round_seconds": [r.seconds for r in result.rounds],
    "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "final_accuracy": result.final["accuracy"],
}))
"""


def measure(data: Path, rounds: int, threads: int, sums: str) -> dict[str, Any]:
    spawned = time.time()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, repr(spawned), str(data), str(rounds), str(threads), sums],
        check=True, capture_output=True, text=True,
    )
    child = json.loads(out.stdout.strip().splitlines()[-1])
    seconds = child["round_seconds"]
    return {
        "sums": sums,
        "threads": threads,
        "rounds": rounds,
        "startup_seconds": child["first_round_start"] - spawned,
        "interpreter_start_seconds": child["process_start"] - spawned,
        "import_seconds": child["imported"] - child["process_start"],
        "load_seconds": child["loaded"] - child["imported"],
        "prepare_seconds": child["first_round_start"] - child["loaded"],
        "seconds_per_round": statistics.fmean(seconds),
        "median_seconds_per_round": statistics.median(seconds),
        "first_round_seconds": seconds[0],
        "max_round_seconds": max(seconds),
        "peak_rss_mb": child["peak_rss_kb"] / 1024,
        "final_accuracy": child["final_accuracy"],
    }


def bare_torch_start() -> float:
    """Seconds for a fresh interpreter to ``import torch`` and exit: the floor under start-up."""
    started = time.time()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sums", nargs="+", choices=["plain", "secure"],
                        default=["plain", "secure"],
                        help="plain sums, the real SecAgg protocol, or both (default)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "simulator_perf.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = generate_fedprox_synthetic(Path(tmp) / "synthetic_1_1", seed=0)
        runs = [measure(data, args.rounds, threads, sums)
                for sums in args.sums for threads in args.threads]
    torch_floor = bare_torch_start()

    load = os.getloadavg()
    print(f"Synthetic(1,1), 30 devices, 10/round, E=20, batch 10, logistic, FedProx mu=1; "
          f"{args.rounds} rounds; load average {load[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'sums':>6} {'torch threads':>13} {'s/round':>8} {'median':>8} {'round 1':>8} "
          f"{'start-up s':>10} {'peak MB':>8}")
    for r in runs:
        print(f"{r['sums']:>6} {r['threads']:>13} {r['seconds_per_round']:>8.3f} "
              f"{r['median_seconds_per_round']:>8.3f} {r['first_round_seconds']:>8.3f} "
              f"{r['startup_seconds']:>10.2f} {r['peak_rss_mb']:>8.0f}")
    for r in runs:
        print(f"start-up ({r['sums']} sums, {r['threads']} thread(s)): "
              f"interpreter {r['interpreter_start_seconds']:.2f}s, "
              f"imports {r['import_seconds']:.2f}s, "
              f"reading 30 CSVs {r['load_seconds']:.2f}s, "
              f"split/statistics/pipeline/model {r['prepare_seconds']:.2f}s")
    print(f"for reference, a bare `python -c 'import torch'` takes {torch_floor:.2f}s here")
    best = min((r for r in runs if r["sums"] == args.sums[0]),
               key=lambda r: r["seconds_per_round"])
    for key, target in TARGETS.items():
        verdict = "ok" if best[key] < target else "MISSED"
        print(f"{key}: {best[key]:.3f} (target < {target}) {verdict}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"targets": TARGETS, "load_average": load, "cpus": os.cpu_count(),
               "bare_torch_import_seconds": torch_floor, "runs": runs}
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
