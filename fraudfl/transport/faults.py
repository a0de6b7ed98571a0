"""Fault injection for tests and chaos runs: transports that misbehave on purpose."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fraudfl.transport.base import Record, TopicPartition, TopicSpec, Transport


class ForwardingTransport(Transport):
    """Delegates every call to ``inner``: subclass it and override only what should misbehave
    (or be counted), instead of re-implementing the whole interface."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.inner.send(topic, key, value)

    def flush(self, timeout_s: float | None = None) -> None:
        self.inner.flush(timeout_s)

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        self.inner.assign(partitions)

    def poll(self, timeout_s: float) -> list[Record]:
        return self.inner.poll(timeout_s)

    def position(self) -> dict[TopicPartition, int]:
        return self.inner.position()

    def seek(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.inner.seek(offsets)

    def partitions_for(self, topic: str) -> int:
        return self.inner.partitions_for(topic)

    def create_topics(self, specs: Iterable[TopicSpec]) -> None:
        self.inner.create_topics(specs)

    def delete_topics(self, names: Iterable[str]) -> None:
        self.inner.delete_topics(names)

    def list_topics(self) -> set[str]:
        return self.inner.list_topics()

    def close(self) -> None:
        self.inner.close()


class DuplicatingTransport(ForwardingTransport):
    """Produces every record ``copies`` times (at-least-once, worst case), so receivers can be
    shown to handle every message the same when it arrives twice."""

    def __init__(self, inner: Transport, copies: int = 2) -> None:
        if copies < 1:
            raise ValueError("copies must be at least 1")
        super().__init__(inner)
        self.copies = copies

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        for _ in range(self.copies):
            self.inner.send(topic, key, value)
