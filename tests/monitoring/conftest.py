"""Fixtures: registries exposing all three metric classes, and a live metrics server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from metrics_samples import record_sample_observations
from prometheus_client import CollectorRegistry

from fraudfl.monitoring import MetricsServer, new_registry, start_metrics_server

# The real-Prometheus helper lives with the integration tests, which reuse it for the services.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))


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
