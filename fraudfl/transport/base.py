"""The transport interface shared by the Kafka and in-memory implementations.

A transport moves opaque records through named, partitioned topics. Consumers ``assign``
partitions explicitly and track their own positions (``position``/``seek``), which services
checkpoint: nothing relies on broker-side consumer groups or end-offset queries.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple


class TopicPartition(NamedTuple):
    topic: str
    partition: int


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int


class Transport(abc.ABC):
    """Send to and read from partitioned topics."""

    @abc.abstractmethod
    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Queue one record; records with the same key go to the same partition, in order."""

    @abc.abstractmethod
    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every queued record is acknowledged; raise TransportError on failure."""

    @abc.abstractmethod
    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly these partitions from now on (replacing any earlier assignment)."""

    @abc.abstractmethod
    def poll(self, timeout_s: float) -> list[Record]:
        """Records after the current positions of assigned partitions, waiting up to timeout_s."""

    @abc.abstractmethod
    def position(self) -> dict[TopicPartition, int]:
        """The offset of the next record to be read, per assigned partition."""

    @abc.abstractmethod
    def seek(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Continue reading the given partitions at the given offsets."""

    @abc.abstractmethod
    def partitions_for(self, topic: str) -> int:
        """Number of partitions of ``topic``; raise TransportError when it does not exist."""

    @abc.abstractmethod
    def create_topics(self, specs: Iterable[TopicSpec]) -> None:
        """Create topics that do not exist yet; existing ones are left as they are."""

    @abc.abstractmethod
    def delete_topics(self, names: Iterable[str]) -> None:
        """Delete the named topics; missing ones are ignored."""

    @abc.abstractmethod
    def list_topics(self) -> set[str]: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def highwater(self) -> dict[TopicPartition, int]:
        """End of each assigned partition as last seen by the consumer (for lag metrics);
        partitions not yet fetched are missing. Default: nothing known."""
        return {}

    def replication_of(self, topic: str) -> int | None:
        """Replication factor of an existing topic, when the transport knows one."""
        return None

    def acknowledged(self) -> dict[TopicPartition, int]:
        """Per partition written to, the offset just after the last record a ``flush`` has
        confirmed (where to start reading to find what was written since). Default: nothing
        known."""
        return {}

    def assign_topics(self, topics: Iterable[str]) -> list[TopicPartition]:
        """Assign every partition of ``topics``; returns the assignment."""
        assignment = [
            TopicPartition(topic, p) for topic in topics for p in range(self.partitions_for(topic))
        ]
        self.assign(assignment)
        return assignment

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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

    def acknowledged(self) -> dict[TopicPartition, int]:
        return self.inner.acknowledged()

    def close(self) -> None:
        self.inner.close()
