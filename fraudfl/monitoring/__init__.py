"""Prometheus metrics of the fraudfl services and their HTTP exposition.

See ``docs/metrics.md`` for every metric, and :mod:`fraudfl.monitoring.metrics` for conventions.
"""

from fraudfl.monitoring.metrics import (
    AggregatorMetrics,
    BankMetrics,
    ScoringMetrics,
    config_digest,
    new_registry,
)
from fraudfl.monitoring.server import MetricsServer, start_metrics_server

__all__ = [
    "AggregatorMetrics",
    "BankMetrics",
    "MetricsServer",
    "ScoringMetrics",
    "config_digest",
    "new_registry",
    "start_metrics_server",
]
