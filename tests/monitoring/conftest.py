"""Registries exposing all three metric classes, with observations recorded in each metric."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from fraudfl.monitoring import (
    AggregatorMetrics,
    BankMetrics,
    MetricsServer,
    ScoringMetrics,
    new_registry,
    start_metrics_server,
)
from fraudfl.monitoring.metrics import ENDPOINTS, QUALITY_METRICS, REJECT_REASONS, STAGES

# The real-Prometheus helper lives with the integration tests, which reuse it for the services.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

FEDERATION = "fed-test"
BANKS = ("bank-a", "bank-b")


def record_sample_observations(registry: CollectorRegistry) -> None:
    """Register every metric class on ``registry`` and record something in each metric."""
    agg = AggregatorMetrics(registry, federation=FEDERATION, config_hash="0123456789abcdef")
    for round_number in (1, 2):
        agg.round_started(round_number, selected_banks=len(BANKS))
        for stage in STAGES:
            agg.stage_completed(stage, duration_seconds=0.2, participants=2, dropouts=0)
        agg.round_completed(duration_seconds=3.5, model_version=round_number)
        agg.checkpoint_written(duration_seconds=0.004)
    agg.round_started(3, selected_banks=3)
    agg.stage_completed("masked_input", duration_seconds=30.0, participants=1, dropouts=2)
    agg.round_aborted("below_threshold")
    agg.recovered("resumed")
    agg.message_received(1500)
    agg.message_sent(900_000)
    agg.message_rejected(REJECT_REASONS[0])
    agg.kafka_error("timeout")
    for metric in QUALITY_METRICS:
        agg.set_model_quality(metric, 0.5)
    agg.set_federation_epsilon(2.0)

    for i, bank in enumerate(BANKS):
        bm = BankMetrics(registry, federation=FEDERATION, bank=bank, config_hash="fedcba98")
        bm.training_completed(duration_seconds=1.5 + i, examples=10_000, loss=0.12)
        for metric in QUALITY_METRICS:
            bm.set_validation_quality(metric, 0.6)
        bm.set_privacy(epsilon_spent=3.0 + i, epsilon_budget=8.0, delta=1e-5)
        bm.set_federation_epsilon(2.0)
        bm.round_joined()
        bm.round_declined("privacy_budget")
        for stage in STAGES:
            bm.stage_completed(stage, duration_seconds=0.1)
        bm.message_sent(400_000)
        bm.message_received(800_000)
        bm.kafka_error("send_failed")
        bm.message_rejected("replay")
        bm.set_model_version(2)

        sm = ScoringMetrics(registry, federation=FEDERATION, bank=bank)
        sm.model_loaded(1, swapped=False)
        sm.model_loaded(2, swapped=True)
        for endpoint in ENDPOINTS:
            sm.request_finished(endpoint, "ok", duration_seconds=0.002, transactions=10, alerts=1)
        sm.request_finished("score", "client_error", duration_seconds=0.0004)


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
