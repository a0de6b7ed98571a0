"""What the aggregator and bank-node commands share: the metrics/health endpoint."""

from __future__ import annotations

from fraudfl.config import ServiceConfig
from fraudfl.monitoring import MetricsServer, start_metrics_server
from fraudfl.monitoring.health import Health
from fraudfl.monitoring.server import ServerTLS


def metrics_server(config: ServiceConfig, health: Health) -> MetricsServer | None:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``metrics_host:metrics_port`` (None when
    the port is not configured)."""
    if config.metrics_port is None:
        return None
    tls = None if config.metrics_tls is None else ServerTLS(
        config.metrics_tls.certfile, config.metrics_tls.keyfile, config.metrics_tls.client_cafile
    )
    auth = None if config.metrics_basic_auth is None else (
        config.metrics_basic_auth.username,
        config.metrics_basic_auth.password.get_secret_value(),
    )
    return start_metrics_server(
        config.metrics_port, config.metrics_host, health=health, tls=tls, basic_auth=auth
    )
