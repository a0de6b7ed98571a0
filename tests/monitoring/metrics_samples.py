"""An aggregator, banks and scorers on one registry with something recorded in every metric."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from fraudfl.monitoring import AggregatorMetrics, BankMetrics, ScoringMetrics
from fraudfl.monitoring.metrics import (
    ENDPOINTS,
    QUALITY_METRICS,
    REJECT_REASONS,
    STAGES,
    RoundKind,
)

FEDERATION = "fed-test"
BANKS = ("bank-a", "bank-b")


class SampleServices:
    """An aggregator, banks and their scorers registered on one registry, as in a real scrape."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.aggregator = AggregatorMetrics(
            registry, federation=FEDERATION, config_hash="0123456789abcdef"
        )
        self.banks = [
            BankMetrics(registry, federation=FEDERATION, bank=bank, config_hash="fedcba98")
            for bank in BANKS
        ]
        self.scorers = [ScoringMetrics(registry, federation=FEDERATION, bank=b) for b in BANKS]
        self.rounds = 0

    def exercise(self) -> None:
        """Record one round's worth of events in every metric (a dropout and a rejection too)."""
        self.rounds += 1
        agg = self.aggregator
        kind: RoundKind = "stats" if self.rounds == 1 else "train"
        agg.round_started(self.rounds, selected_banks=len(BANKS) + 1, kind=kind)
        for stage in STAGES:
            agg.stage_completed(
                stage, duration_seconds=0.2, participants=len(BANKS),
                dropouts=1 if stage == "masked_input" else 0,
            )
        agg.round_completed(duration_seconds=3.5, model_version=self.rounds, kind=kind)
        agg.checkpoint_written(duration_seconds=0.004)
        agg.round_aborted("below_threshold")
        agg.recovered("resumed")
        agg.message_received(1500)
        agg.message_sent(900_000)
        agg.message_rejected(REJECT_REASONS[0])
        agg.kafka_error("timeout")
        for metric in QUALITY_METRICS:
            agg.set_model_quality(metric, 0.5)
        agg.set_federation_epsilon(2.0)
        agg.set_broker_up(True)
        agg.set_consumer_progress("to-aggregator", position=40, lag=2)
        agg.set_lifecycle(finished=False, planned_rounds=10)

        for i, bank in enumerate(self.banks):
            bank.training_completed(duration_seconds=1.5 + i, examples=10_000, loss=0.12)
            for metric in QUALITY_METRICS:
                bank.set_validation_quality(metric, 0.6)
            bank.set_privacy(epsilon_spent=3.0 + i, epsilon_budget=8.0, delta=1e-5)
            bank.set_federation_epsilon(2.0)
            bank.round_joined(kind)
            bank.round_declined("privacy_budget")
            for stage in STAGES:
                bank.stage_completed(stage, duration_seconds=0.1)
            bank.message_sent(400_000)
            bank.message_received(800_000)
            bank.kafka_error("send_failed")
            bank.message_rejected("replay")
            bank.set_model_version(self.rounds)
            bank.set_broker_up(True)
            bank.set_consumer_progress("models", position=self.rounds, lag=0)
            bank.set_run_refused(False)

        for scorer in self.scorers:
            scorer.model_loaded(self.rounds, swapped=self.rounds > 1)
            for endpoint in ENDPOINTS:
                scorer.request_finished(
                    endpoint, "ok", duration_seconds=0.002, transactions=10, alerts=1
                )
            scorer.request_finished("score", "client_error", duration_seconds=0.0004)
            scorer.request_finished("score", "server_error", duration_seconds=0.01)


def record_sample_observations(registry: CollectorRegistry) -> SampleServices:
    """Register every metric class on ``registry`` and record something in each metric."""
    services = SampleServices(registry)
    services.exercise()
    services.exercise()
    return services
