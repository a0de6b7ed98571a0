"""Seconds to move one signed (and optionally sealed) message through the transport.

Prints a table: payload size, transport, sealed or not, send seconds (sign + seal + chunk +
acknowledged), receive seconds (reassemble + verify + open), and MB/s end to end.
Run: .venv/bin/python benchmarks/transport_throughput.py
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from fraudfl.identity import Allowlist, Identity
from fraudfl.transport import Channel, EncryptionKey, MemoryBroker, MemoryTransport, TopicLayout
from fraudfl.transport.base import Transport
from fraudfl.transport.broker import EmbeddedBroker
from fraudfl.transport.kafka import KafkaSettings, KafkaTransport

SIZES_MB = (0.4, 4.0, 20.0)  # 100k and 1M float32 parameters, and a 5M-parameter model
FED = "bench"


def parties() -> tuple[dict[str, tuple[Identity, EncryptionKey]], Allowlist]:
    keys = {p: (Identity.generate(p), EncryptionKey.generate(p)) for p in ("aggregator", "bank")}
    allow = Allowlist()
    for pid, (ident, enc) in keys.items():
        allow.enroll(pid, ident.public_bytes)
        allow.enroll_encryption_key(pid, enc.public_bytes)
    return keys, allow


def run(label: str, new_transport: Callable[[], Transport]) -> None:
    keys, allow = parties()
    layout = TopicLayout(FED)
    sender_t, receiver_t = new_transport(), new_transport()
    layout.create(sender_t, ["bank"])
    bank = Channel(sender_t, keys["bank"][0], allow, FED, encryption_key=keys["bank"][1])
    agg_id, agg_enc = keys["aggregator"]
    agg = Channel(receiver_t, agg_id, allow, FED, encryption_key=agg_enc)
    agg.listen([layout.to_aggregator])
    for size_mb in SIZES_MB:
        for sealed in (False, True):
            payload = os.urandom(int(size_mb * 1024 * 1024))
            t0 = time.perf_counter()
            bank.send(
                layout.to_aggregator,
                recipient="aggregator",
                round=1,
                stage="bench",
                payload_type="bench",
                payload=payload,
                seal_to=sealed,
            )
            bank.flush(120)
            t1 = time.perf_counter()
            got: list[bytes] = []
            while not got:
                got = [m.payload for m in agg.receive(1.0)]
            t2 = time.perf_counter()
            assert got == [payload]
            print(
                f"| {size_mb:6.1f} | {label:6} | {'yes' if sealed else 'no':6} | {t1 - t0:6.3f} "
                f"| {t2 - t1:7.3f} | {size_mb / (t2 - t0):6.1f} |"
            )
    sender_t.close()
    receiver_t.close()


def main() -> None:
    print("|   MiB | broker | sealed | send s | receive s | MiB/s |")
    print("|---|---|---|---|---|---|")
    memory = MemoryBroker()
    run("memory", lambda: MemoryTransport(memory))
    with EmbeddedBroker() as broker:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        run("tansu", lambda: KafkaTransport(settings))


if __name__ == "__main__":
    main()
