"""End-to-end rounds over a real broker: seconds per round and bytes uploaded per bank per round.

For each (banks, model size) it writes a federation (``fraudfl init``), starts the embedded
Tansu broker, runs the real aggregator and bank-node services (secure aggregation, sealed and
signed envelopes, checkpoints) in threads of this process, and measures:

* seconds per training round: announcement to published model, from the aggregator's round log
  (local training included: one epoch on ~300 rows per bank, without DP so the figure is the
  federation's own cost; DP-SGD's cost is in ``dp_overhead.py``);
* bytes per bank per round: every record a bank sends (chunk frames, envelopes, signatures,
  sealing, the secure-aggregation messages), against the float32 size of its update, 4 d bytes.

Targets (issue 5): 10 banks x 100k parameters under 3 s per round; upload within 1.1x the
float32 update plus O(n) key material. All services share this process's two cores and GIL,
so the figures are pessimistic for a real deployment with one machine per bank.

    .venv/bin/python benchmarks/e2e_rounds.py [--banks 5 10 20] [--params 10k 100k 1M]
"""

from __future__ import annotations

import argparse
import json
import logging
import struct
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from aggregator.service import AggregatorService
from bank_node.service import BankNodeService
from fraudfl.checkpoint import load_checkpoint
from fraudfl.cli.init import FederationPlan, write_federation
from fraudfl.config import AggregatorConfig, BankNodeConfig, load_config
from fraudfl.models import ModelSpec
from fraudfl.transport.base import ForwardingTransport, Transport
from fraudfl.transport.broker import EmbeddedBroker
from fraudfl.transport.chunking import parse_chunk
from fraudfl.transport.kafka import KafkaSettings, KafkaTransport

_ROUND = struct.Struct(">Q")  # the envelope's round, after magic, version and flags
HIDDEN = {"10k": [256, 16], "100k": [512, 160], "1M": [1024, 900]}
ROWS_PER_BANK = 300


class CountingTransport(ForwardingTransport):
    """Counts the bytes a service sends per round (read from the envelope header in each
    message's first chunk); everything else is delegated."""

    def __init__(
        self, inner: Transport, counter: dict[tuple[str, int], int], name: str
    ) -> None:
        super().__init__(inner)
        self.counter, self.name = counter, name
        self._round_of: dict[bytes, int] = {}

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        chunk = parse_chunk(value)
        if chunk.index == 0:
            (self._round_of[chunk.transfer_id],) = _ROUND.unpack_from(bytes(chunk.data), 6)
        round_number = self._round_of.get(chunk.transfer_id, -1)
        self.counter[(self.name, round_number)] += len(value) + (len(key) if key else 0)
        self.inner.send(topic, key, value)


def run_case(n_banks: int, size: str, rounds: int, workdir: Path) -> dict[str, Any]:
    counter: dict[tuple[str, int], int] = defaultdict(int)
    with EmbeddedBroker() as broker:
        fed = write_federation(
            FederationPlan(
                directory=workdir, banks=n_banks, transactions=n_banks * ROWS_PER_BANK * 5 // 4,
                federation_id="bench", bootstrap_servers=broker.bootstrap_servers,
                rounds=rounds, min_banks=2, size_power_law=0.0,
                aggregator_overrides={
                    "training": {"hidden": HIDDEN[size], "batch_size": 64, "lr": 0.05},
                    "secagg": {"clip_range": 1.0},
                    "timeouts": {"advertise_keys": 600.0, "share_keys": 600.0,
                                 "masked_input": 600.0, "consistency_check": 600.0,
                                 "unmask": 600.0},
                },
                bank_overrides={"privacy": {"enabled": False}},
            )
        )
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        agg_cfg = load_config(AggregatorConfig, fed.aggregator_config, env={})
        stop = threading.Event()
        threads = []
        for bank, path in fed.bank_configs.items():
            cfg = load_config(BankNodeConfig, path, env={})
            transport = CountingTransport(KafkaTransport(settings), counter, bank)
            service = BankNodeService(cfg, transport)
            t = threading.Thread(target=service.run, args=(stop,), daemon=True)
            t.start()
            threads.append((t, transport))
        agg_transport = CountingTransport(KafkaTransport(settings), counter, "aggregator")
        started = time.monotonic()
        AggregatorService(agg_cfg, agg_transport).run()
        wall = time.monotonic() - started
        stop.set()
        for t, transport in threads:
            t.join(60)
            transport.close()
        agg_transport.close()
        log = [
            json.loads(x)
            for x in (agg_cfg.state_dir / "rounds.jsonl").read_text().splitlines()
        ]
        saved = load_checkpoint(agg_cfg.state_dir / "aggregator.ckpt")
        assert saved is not None
        d = ModelSpec.from_dict(saved[0]["orchestrator"]["spec"]).num_params
    train = [r for r in log if r["kind"] == "train" and r["status"] == "completed"]
    stats_round = next(r for r in log if r["kind"] == "stats")
    bank_bytes = [counter[(b, r["round"])] for b in fed.bank_configs for r in train]
    seconds = [r["finished_at"] - r["started_at"] for r in train]
    return {
        "banks": n_banks,
        "params": d,
        "rounds": len(train),
        "seconds_per_round": sum(seconds) / len(seconds),
        "max_round_seconds": max(seconds),
        "stats_round_seconds": stats_round["finished_at"] - stats_round["started_at"],
        "bytes_per_bank_per_round": sum(bank_bytes) / len(bank_bytes),
        "max_bytes_per_bank_per_round": max(bank_bytes),
        "float32_update_bytes": 4 * d,
        "wall_seconds": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--banks", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--params", nargs="+", default=["10k", "100k", "1M"], choices=HIDDEN)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, force=True)
    torch.set_num_threads(1)
    results = []
    print(f"{'banks':>5} {'params':>8} {'s/round':>8} {'max s':>7} {'bytes/bank/round':>17} "
          f"{'x float32':>9}")
    for size in args.params:
        for n in args.banks:
            with tempfile.TemporaryDirectory(prefix="fraudfl-bench-") as tmp:
                r = run_case(n, size, args.rounds, Path(tmp) / "fed")
            results.append(r)
            ratio = r["bytes_per_bank_per_round"] / r["float32_update_bytes"]
            print(f"{r['banks']:>5} {r['params']:>8} {r['seconds_per_round']:>8.2f} "
                  f"{r['max_round_seconds']:>7.2f} "
                  f"{r['bytes_per_bank_per_round']:>17.0f} {ratio:>9.3f}",
                  flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
