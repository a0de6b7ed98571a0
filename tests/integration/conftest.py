"""Real-broker fixtures: every test gets its own Tansu broker on a free port."""

from collections.abc import Iterator

import pytest

from fraudfl.transport.broker import EmbeddedBroker
from fraudfl.transport.kafka import KafkaSettings


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A memory-backed broker for one test; a restart loses everything."""
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def durable_broker() -> Iterator[EmbeddedBroker]:
    """A broker on S3 storage (local moto): ``restart()`` keeps topics, records and offsets."""
    with EmbeddedBroker(durable=True) as b:
        yield b


def settings_for(b: EmbeddedBroker, **overrides: object) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=b.bootstrap_servers, **overrides)  # type: ignore[arg-type]
