"""The Kafka topics of one federation; see docs/topics.md for why they look like this."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fraudfl.errors import FraudflError
from fraudfl.identity import check_id
from fraudfl.transport.base import TopicSpec, Transport

PREFIX = "fraudfl"
# Kafka allows [a-zA-Z0-9._-] up to 249 characters in a topic name; ids are narrower.
check_name = check_id


@dataclass(frozen=True)
class TopicLayout:
    """Topic names and partition counts for federation ``federation``."""

    federation: str
    to_aggregator_partitions: int = 1

    def __post_init__(self) -> None:
        check_name("federation id", self.federation)
        if self.to_aggregator_partitions < 1:
            raise FraudflError("to_aggregator_partitions must be at least 1")

    @property
    def prefix(self) -> str:
        return f"{PREFIX}.{self.federation}."

    @property
    def control(self) -> str:
        """Aggregator -> everyone: round announcements and stage broadcasts (1 partition)."""
        return f"{self.prefix}control"

    @property
    def to_aggregator(self) -> str:
        """Banks -> aggregator, keyed by bank id."""
        return f"{self.prefix}to-aggregator"

    @property
    def models(self) -> str:
        """Versioned global models published by the aggregator (1 partition)."""
        return f"{self.prefix}models"

    def inbox(self, bank_id: str) -> str:
        """Messages addressed to one bank (1 partition)."""
        return f"{self.prefix}bank.{check_name('bank id', bank_id)}"

    def specs(self, bank_ids: Iterable[str]) -> list[TopicSpec]:
        return [
            TopicSpec(self.control, 1),
            TopicSpec(self.to_aggregator, self.to_aggregator_partitions),
            TopicSpec(self.models, 1),
            *(TopicSpec(self.inbox(b), 1) for b in sorted(set(bank_ids))),
        ]

    def create(self, transport: Transport, bank_ids: Iterable[str]) -> list[TopicSpec]:
        """Create the federation's topics (idempotent); returns what it asked for."""
        specs = self.specs(bank_ids)
        transport.create_topics(specs)
        return specs

    def ensure(
        self, transport: Transport, bank_ids: Iterable[str], *, replication_factor: int = 1
    ) -> list[str]:
        """Create the topics that are missing, check the ones that exist; returns the names
        created. Never deletes anything: a topic's records are the federation's history.

        An existing topic with other partition counts, or fewer replicas than configured, is a
        deployment error (the topic job and the services disagree) rather than something to
        repair silently.
        """
        specs = self.specs(bank_ids)
        existing = transport.list_topics()
        missing = [s for s in specs if s.name not in existing]
        transport.create_topics(missing)
        for spec in specs:
            if spec in missing:
                continue
            partitions = transport.partitions_for(spec.name)
            if partitions != spec.partitions:
                raise FraudflError(
                    f"topic {spec.name} has {partitions} partitions, expected {spec.partitions}"
                )
            replicas = transport.replication_of(spec.name)
            if replicas is not None and replicas < replication_factor:
                raise FraudflError(
                    f"topic {spec.name} has replication factor {replicas}, below "
                    f"kafka.replication_factor = {replication_factor}"
                )
        return [s.name for s in missing]
