"""An in-process transport with Kafka's semantics, for unit tests and the simulator.

A :class:`MemoryBroker` holds partitioned append-only logs; each :class:`MemoryTransport` is one
client with its own assignment and positions. All of it is thread-safe, so services running in
threads talk through one broker exactly as separate processes talk through Kafka.
"""

from __future__ import annotations

import itertools
import threading
import time
import zlib
from collections.abc import Iterable, Mapping

from fraudfl.transport.base import Record, TopicPartition, TopicSpec, Transport
from fraudfl.transport.errors import TransportError

DEFAULT_MAX_POLL_RECORDS = 500


class MemoryBroker:
    """Topics as lists of partitions, each a list of ``(key, value)`` records."""

    def __init__(self, max_record_bytes: int | None = None) -> None:
        self.max_record_bytes = max_record_bytes
        self._logs: dict[str, list[list[tuple[bytes | None, bytes]]]] = {}
        self._changed = threading.Condition()
        self._round_robin = itertools.count()

    def create_topic(self, name: str, partitions: int) -> None:
        if partitions < 1:
            raise ValueError("a topic needs at least one partition")
        with self._changed:
            self._logs.setdefault(name, [[] for _ in range(partitions)])

    def delete_topic(self, name: str) -> None:
        with self._changed:
            self._logs.pop(name, None)

    def topics(self) -> set[str]:
        with self._changed:
            return set(self._logs)

    def partitions(self, topic: str) -> int:
        with self._changed:
            log = self._logs.get(topic)
            if log is None:
                raise TransportError(f"topic {topic!r} does not exist")
            return len(log)

    def end_offset(self, tp: TopicPartition) -> int:
        with self._changed:
            log = self._logs.get(tp.topic)
            return 0 if log is None or tp.partition >= len(log) else len(log[tp.partition])

    def append(self, topic: str, key: bytes | None, value: bytes) -> TopicPartition:
        if self.max_record_bytes is not None and len(value) > self.max_record_bytes:
            raise TransportError(
                f"record of {len(value)} bytes exceeds the broker limit {self.max_record_bytes}"
            )
        with self._changed:
            log = self._logs.get(topic)
            if log is None:
                raise TransportError(f"topic {topic!r} does not exist")
            if key is None:
                partition = next(self._round_robin) % len(log)
            else:
                partition = zlib.crc32(key) % len(log)
            log[partition].append((key, value))
            self._changed.notify_all()
        return TopicPartition(topic, partition)

    def read(
        self, positions: Mapping[TopicPartition, int], max_records: int, timeout_s: float
    ) -> list[Record]:
        """Records from ``positions`` onwards, waiting up to ``timeout_s`` for the first one."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                out: list[Record] = []
                for tp, offset in positions.items():
                    log = self._logs.get(tp.topic)
                    if log is None or tp.partition >= len(log):
                        continue
                    for i, (key, value) in enumerate(
                        log[tp.partition][offset : offset + max_records - len(out)], start=offset
                    ):
                        out.append(Record(tp.topic, tp.partition, i, key, value))
                    if len(out) >= max_records:
                        break
                remaining = deadline - time.monotonic()
                if out or remaining <= 0:
                    return out
                self._changed.wait(remaining)

    def records(self, topic: str) -> list[Record]:
        """Every record of ``topic`` (for tests and observers)."""
        with self._changed:
            return [
                Record(topic, p, i, key, value)
                for p, log in enumerate(self._logs.get(topic, []))
                for i, (key, value) in enumerate(log)
            ]


class MemoryTransport(Transport):
    """One client of a :class:`MemoryBroker`."""

    def __init__(
        self, broker: MemoryBroker, max_poll_records: int = DEFAULT_MAX_POLL_RECORDS
    ) -> None:
        self.broker = broker
        self.max_poll_records = max_poll_records
        self._positions: dict[TopicPartition, int] = {}
        self._acknowledged: dict[TopicPartition, int] = {}
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("transport is closed")

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._check_open()
        tp = self.broker.append(topic, key, value)
        # Appending is acknowledging here; the end may include later writers' records, which
        # still puts it after this one.
        self._acknowledged[tp] = self.broker.end_offset(tp)

    def acknowledged(self) -> dict[TopicPartition, int]:
        return dict(self._acknowledged)

    def flush(self, timeout_s: float | None = None) -> None:
        self._check_open()

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        self._check_open()
        self._positions = {tp: self._positions.get(tp, 0) for tp in partitions}

    def poll(self, timeout_s: float) -> list[Record]:
        self._check_open()
        records = self.broker.read(dict(self._positions), self.max_poll_records, timeout_s)
        for record in records:
            self._positions[record.topic_partition] = record.offset + 1
        return records

    def position(self) -> dict[TopicPartition, int]:
        return dict(self._positions)

    def seek(self, offsets: Mapping[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            if tp not in self._positions:
                raise TransportError(f"{tp.topic}[{tp.partition}] is not assigned")
            if offset < 0:
                raise ValueError("offsets are non-negative")
            self._positions[tp] = offset

    def partitions_for(self, topic: str) -> int:
        return self.broker.partitions(topic)

    def highwater(self) -> dict[TopicPartition, int]:
        return {tp: self.broker.end_offset(tp) for tp in self._positions}

    def create_topics(self, specs: Iterable[TopicSpec]) -> None:
        for spec in specs:
            self.broker.create_topic(spec.name, spec.partitions)

    def delete_topics(self, names: Iterable[str]) -> None:
        for name in names:
            self.broker.delete_topic(name)

    def list_topics(self) -> set[str]:
        return self.broker.topics()

    def close(self) -> None:
        self._closed = True
