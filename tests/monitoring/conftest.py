"""Fixtures: registries exposing all three metric classes, and a live metrics server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from fraudfl.monitoring import MetricsServer, new_registry, start_metrics_server
from tests.monitoring.metrics_samples import record_sample_observations


@pytest.fixture
def registry() -> CollectorRegistry:
    return new_registry()


@pytest.fixture
def exercised_registry() -> CollectorRegistry:
    registry = new_registry()
    record_sample_observations(registry)
    return registry


@pytest.fixture
def live_metrics_server(exercised_registry: CollectorRegistry) -> Iterator[MetricsServer]:
    server = start_metrics_server(0, host="127.0.0.1", registry=exercised_registry)
    yield server
    server.stop()
