"""HTTP exposition of a registry on ``/metrics`` (prometheus-client's threaded WSGI server)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from fraudfl.errors import FraudflError

log = logging.getLogger(__name__)


@dataclass
class MetricsServer:
    """A running metrics endpoint; ``port`` is the bound port (useful when 0 was asked for)."""

    host: str
    port: int
    _httpd: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        if not self._thread.is_alive():
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        log.info("metrics server on %s:%d stopped", self.host, self.port)


def start_metrics_server(
    port: int, host: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY
) -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` from a daemon thread.

    ``port=0`` binds a free port. A port that cannot be bound is a configuration error.
    """
    if not 0 <= port <= 65535:
        raise FraudflError(f"metrics port {port} is out of range; expected 0-65535")
    try:
        httpd, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise FraudflError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    bound_port = int(httpd.server_port)
    log.info("serving metrics on http://%s:%d/metrics", host, bound_port)
    return MetricsServer(host=host, port=bound_port, _httpd=httpd, _thread=thread)
