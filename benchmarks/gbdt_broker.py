"""Seconds per tree of a gbdt federation over the embedded broker with secure aggregation.

Writes a federation (``fraudfl init``'s generator, ``messy`` as the simulation rows), starts the
embedded Tansu broker and runs the real aggregator and bank-node services in threads of this
process (SecAgg over Kafka, sealed and signed envelopes, checkpoints, no DP so the figure is the
protocol's own cost) for a few trees, then reads the aggregator's round log: a tree is its level
sums and its leaf sum, from the announcement of its first level to its published ensemble. The
100-tree figure is that mean times 100, an **extrapolation** (trees cost the same whatever their
index: each level is one secure sum of the same layout; margins are updated incrementally).

Used by ``benchmarks/gbdt.py --broker-trees N``; alone:

    .venv/bin/python benchmarks/gbdt_broker.py --banks 5 --max-depth 6 --trees 3
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from aggregator.service import AggregatorService
from bank_node.service import BankNodeService
from fraudfl.cli.init import FederationPlan, write_federation
from fraudfl.config import AggregatorConfig, BankNodeConfig, load_config
from fraudfl.transport.broker import EmbeddedBroker
from fraudfl.transport.kafka import KafkaSettings, KafkaTransport

# Generous stage deadlines: the figure is the time taken, never a timeout.
_TIMEOUTS = {stage: 1800.0 for stage in ("advertise_keys", "share_keys", "masked_input",
                                         "consistency_check", "unmask")}


def seconds_per_tree(
    *, banks: int, transactions: int, trees: int, max_depth: int, messy: bool, seed: int = 0,
    max_bin: int = 254, learning_rate: float = 0.1, workdir: Path | None = None,
) -> dict[str, Any]:
    """Run ``trees`` trees over the broker; the per-tree seconds and the round log's totals."""
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        root = workdir or Path(tmp)
        fed = write_federation(FederationPlan(
            directory=root / "fed", banks=banks, transactions=transactions,
            federation_id="benchgbdt", bootstrap_servers=broker.bootstrap_servers,
            min_banks=2, seed=seed, messy=messy, size_power_law=1.2,
            aggregator_overrides={
                "training": {"model": "gbdt"},
                "trees": {"n_estimators": trees, "max_depth": max_depth, "max_bin": max_bin,
                          "learning_rate": learning_rate, "min_child_samples": 20,
                          "min_child_weight": 1e-3, "clip": float(1 << 20),
                          # The nominal fraud rate as the prior: no label-count round.
                          "base_score": 0.005, "label_counts": False},
                "timeouts": _TIMEOUTS,
            },
            bank_overrides={"privacy": {"enabled": False}},
        ))
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        agg_cfg = load_config(AggregatorConfig, fed.aggregator_config, env={})
        stop = threading.Event()
        threads = []
        for path in fed.bank_configs.values():
            cfg = load_config(BankNodeConfig, path, env={})
            transport = KafkaTransport(settings)
            t = threading.Thread(target=BankNodeService(cfg, transport).run, args=(stop,),
                                 daemon=True)
            t.start()
            threads.append((t, transport))
        agg_transport = KafkaTransport(settings)
        started = time.monotonic()
        AggregatorService(agg_cfg, agg_transport).run()
        wall = time.monotonic() - started
        stop.set()
        for t, transport in threads:
            t.join(120)
            transport.close()
        agg_transport.close()
        log = [json.loads(x)
               for x in (agg_cfg.state_dir / "rounds.jsonl").read_text().splitlines()]
    tree_rounds = [r for r in log if r["kind"] == "tree"]
    assert all(r["status"] == "completed" for r in log), [r["reason"] for r in log]
    # A tree is its levels and its leaves: it ends with the round that published the new
    # ensemble (the round's number is the model's version).
    per_tree: list[float] = []
    start: float | None = None
    for r in tree_rounds:
        start = r["started_at"] if start is None else start
        if r["model_version"] == r["round"]:
            per_tree.append(r["finished_at"] - start)
            start = None
    mean = sum(per_tree) / len(per_tree)
    return {
        "banks": banks, "max_depth": max_depth, "trees_measured": len(per_tree),
        "seconds_per_tree": mean, "seconds_per_tree_each": per_tree,
        "extrapolated_seconds_100_trees": 100 * mean,
        "sums": len(tree_rounds), "wall_seconds": wall,
        "setup_seconds": sum(r["finished_at"] - r["started_at"] for r in log
                             if r["kind"] in ("stats", "tree_bins")),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--banks", type=int, default=5)
    ap.add_argument("--transactions", type=int, default=100_000)
    ap.add_argument("--trees", type=int, default=3)
    ap.add_argument("--max-depth", type=int, default=6)
    ap.add_argument("--clean", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = seconds_per_tree(banks=args.banks, transactions=args.transactions, trees=args.trees,
                           max_depth=args.max_depth, messy=not args.clean)
    print(json.dumps(out, indent=2))
    print(f"over the broker with secure aggregation: {out['seconds_per_tree']:.2f} s per tree "
          f"(measured, {out['trees_measured']} trees); 100 trees: "
          f"{out['extrapolated_seconds_100_trees'] / 60:.1f} min (EXTRAPOLATED)")


if __name__ == "__main__":
    main()
