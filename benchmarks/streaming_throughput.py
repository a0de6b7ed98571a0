"""Streaming scorer throughput through the embedded Kafka broker (Tansu).

Publishes N transactions (JSON, keyed by transaction id) to a ``transactions`` topic, then runs
the streaming scorer until every one has an alert record on ``fraud-alerts`` with its offsets
saved (poll -> validate -> score -> produce -> wait for acks -> save offsets, per poll batch).
Prints transactions per second for several poll batch sizes, and the producer-side publish
rate for reference.

    .venv/bin/python benchmarks/streaming_throughput.py [--transactions 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from scoring_support import build_bench_artifact  # benchmarks/ is on sys.path when run
from threadpoolctl import threadpool_limits

from fraudfl.scoring import ModelHolder
from fraudfl.scoring.stream import StreamingScorer, StreamSettings, load_offsets
from fraudfl.transport import TopicSpec
from fraudfl.transport.broker import EmbeddedBroker
from fraudfl.transport.kafka import KafkaSettings, KafkaTransport


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transactions", type=int, default=50_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--batches", default="500,2000,5000", help="max records per poll")
    args = ap.parse_args()
    threadpool_limits(1, "blas")
    console = Console()
    table = Table(title=f"streaming scorer through Tansu, {args.transactions:,} transactions, "
                        f"{args.partitions} partitions")
    for col in ("poll batch", "publish tx/s", "score+produce+ack+commit tx/s", "seconds"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        model, records = build_bench_artifact(Path(tmp))
        while len(records) < args.transactions:
            records = records + records
        bodies = []
        for i, rec in enumerate(records[: args.transactions]):
            tx_id = f"tx-{i}"
            bodies.append((tx_id.encode(), json.dumps({**rec, "transaction_id": tx_id}).encode()))
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        for run, batch in enumerate(int(b) for b in args.batches.split(",")):
            topic, alerts = f"transactions-{run}", f"fraud-alerts-{run}"
            producer = KafkaTransport(settings)
            producer.create_topics([TopicSpec(topic, args.partitions),
                                    TopicSpec(alerts, args.partitions)])
            t0 = time.perf_counter()
            for key, value in bodies:
                producer.send(topic, key, value)
            producer.flush()
            publish_rate = len(bodies) / (time.perf_counter() - t0)
            producer.close()
            state = Path(tmp) / f"offsets-{run}.json"
            scorer = StreamingScorer(
                ModelHolder(model), KafkaTransport(settings, max_poll_records=batch),
                StreamSettings(state_path=state, transactions_topic=topic, alerts_topic=alerts),
            )
            scorer.open()
            t0 = time.perf_counter()
            consumed = 0
            while consumed < len(bodies):
                consumed += scorer.process_once()
            seconds = time.perf_counter() - t0
            assert sum(load_offsets(state, topic).values()) == len(bodies)
            scorer.transport.close()
            table.add_row(str(batch), f"{publish_rate:,.0f}", f"{len(bodies) / seconds:,.0f}",
                          f"{seconds:.1f}")
            KafkaTransport(settings).delete_topics([topic, alerts])
    console.print(table)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    console.print(f"cpu cores: {os.cpu_count()}, load average {load}; one scorer process, "
                  "broker on the same machine")


if __name__ == "__main__":
    main()
