"""Streaming scorer throughput and latency through the embedded Kafka broker, with its floors.

Publishes N transactions to a ``transactions`` topic, then runs the streaming scorer until
every one has its alert on ``fraud-alerts`` and its offsets saved (poll -> validate -> encode ->
score -> produce -> wait for acks -> save offsets, per poll batch). Two wire formats:

- ``1 tx/record``: one transaction per record in, one alert per record out (keyed by id);
- ``N tx/record``: JSON arrays of transactions per record in, alerts packed into arrays out
  (``StreamSettings.alerts_per_record``).

Latency is per transaction, from the poll that returned it to its alert being acknowledged by
the broker (p50 / p99 over transactions). The floors, measured in the same run: the model
alone (validate + encode + score, and score alone, no broker), and kafka-python's raw produce
(send + flush) and raw consume (poll) of the same records: a scorer cannot beat the slower of
its consume and produce floors.

    .venv/bin/python benchmarks/streaming_throughput.py [--transactions 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from scoring_support import build_bench_artifact  # benchmarks/ is on sys.path when run
from threadpoolctl import threadpool_limits

from fraudfl.scoring import ModelHolder
from fraudfl.scoring.stream import StreamingScorer, StreamSettings, load_offsets
from fraudfl.transport import TopicPartition, TopicSpec
from fraudfl.transport.broker import EmbeddedBroker
from fraudfl.transport.kafka import KafkaSettings, KafkaTransport


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transactions", type=int, default=50_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--poll-records", type=int, default=5000, help="max records per poll")
    ap.add_argument("--per-record", type=int, default=100,
                    help="transactions per input record in the array format")
    ap.add_argument("--alerts-per-record", type=int, default=500)
    args = ap.parse_args()
    threadpool_limits(1, "blas")
    console = Console()
    table = Table(title=f"streaming scorer through Tansu, {args.transactions:,} transactions, "
                        f"{args.partitions} partitions")
    for col in ("what", "tx/s", "p50 ms", "p99 ms", "seconds"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        model, records = build_bench_artifact(Path(tmp))
        txs = [{**records[i % len(records)], "transaction_id": f"tx-{i}"}
               for i in range(args.transactions)]
        holder = ModelHolder(model)
        scorer = holder.scorer
        bodies = [json.dumps(tx).encode() for tx in txs]
        t0 = time.perf_counter()
        valid = [scorer.validator.validate_one(b) for b in bodies]
        X = scorer.encoder.encode(valid)
        scorer.score_features(X)
        full = time.perf_counter() - t0
        t0 = time.perf_counter()
        scorer.score_features(X)
        alone = time.perf_counter() - t0
        table.add_row("floor: model alone (score)", f"{len(txs) / alone:,.0f}", "", "",
                      f"{alone:.2f}")
        table.add_row("floor: validate + encode + score", f"{len(txs) / full:,.0f}", "", "",
                      f"{full:.2f}")
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        arrays = [json.dumps(txs[i : i + args.per_record]).encode()
                  for i in range(0, len(txs), args.per_record)]
        formats: list[tuple[str, list[tuple[bytes | None, bytes]], int]] = [
            ("1 tx/record", [(tx["transaction_id"].encode(), b) for tx, b in zip(
                txs, bodies, strict=True)], 1),
            (f"{args.per_record} tx/record, {args.alerts_per_record} alerts/record",
             [(None, a) for a in arrays], args.alerts_per_record),
        ]
        for run, (label, wire, alerts_per_record) in enumerate(formats):
            topic, alerts = f"transactions-{run}", f"fraud-alerts-{run}"
            producer = KafkaTransport(settings)
            producer.create_topics([TopicSpec(topic, args.partitions),
                                    TopicSpec(alerts, args.partitions)])
            t0 = time.perf_counter()
            for key, value in wire:
                producer.send(topic, key, value)
            producer.flush()
            produce_s = time.perf_counter() - t0
            producer.close()
            table.add_row(f"floor: raw produce, {label.split(',')[0]}",
                          f"{len(txs) / produce_s:,.0f}", "", "", f"{produce_s:.2f}")
            consume_s = _raw_consume(settings, topic, args.partitions, len(wire),
                                     args.poll_records)
            table.add_row(f"floor: raw consume, {label.split(',')[0]}",
                          f"{len(txs) / consume_s:,.0f}", "", "", f"{consume_s:.2f}")
            state = Path(tmp) / f"offsets-{run}.json"
            batches: list[tuple[int, float]] = []
            stream = StreamingScorer(
                holder, KafkaTransport(settings, max_poll_records=args.poll_records),
                StreamSettings(state_path=state, transactions_topic=topic, alerts_topic=alerts,
                               alerts_per_record=alerts_per_record),
                on_batch=lambda n, s, batches=batches: batches.append((n, s)),
            )
            stream.open()
            t0 = time.perf_counter()
            consumed = 0
            while consumed < len(wire):
                consumed += stream.process_once()
            seconds = time.perf_counter() - t0
            assert sum(load_offsets(state, topic).values()) == len(wire)
            stream.transport.close()
            # Every transaction of a batch waits as long as its batch.
            per_tx = np.repeat([s for _, s in batches],
                               [n * len(txs) // len(wire) for n, _ in batches])
            table.add_row(f"scorer end to end, {label}", f"{len(txs) / seconds:,.0f}",
                          f"{np.percentile(per_tx, 50) * 1e3:.0f}",
                          f"{np.percentile(per_tx, 99) * 1e3:.0f}", f"{seconds:.2f}")
            KafkaTransport(settings).delete_topics([topic, alerts])
    console.print(table)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    console.print(f"cpu cores: {os.cpu_count()}, load average {load}; one scorer process, "
                  f"broker on the same machine; poll batch {args.poll_records} records")


def _raw_consume(settings: KafkaSettings, topic: str, partitions: int, records: int,
                 poll_records: int) -> float:
    reader = KafkaTransport(settings, max_poll_records=poll_records)
    reader.assign([TopicPartition(topic, p) for p in range(partitions)])
    t0 = time.perf_counter()
    got: list[Any] = []
    while len(got) < records:
        got += reader.poll(0.5)
    seconds = time.perf_counter() - t0
    reader.close()
    return seconds


if __name__ == "__main__":
    main()
