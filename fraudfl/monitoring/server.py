"""HTTP exposition of a registry on ``/metrics``, and the service's ``/healthz`` and ``/readyz``.

One threaded WSGI server (prometheus-client's) per process. ``/metrics`` is the registry;
``/healthz`` and ``/readyz`` answer 200 or 503 from a :class:`~fraudfl.monitoring.health.Health`
fed by the service's main loop, so a wedged loop or a lost broker shows (a server started
without a ``Health``, e.g. the scoring service's separate metrics port, serves ``/metrics``
only). Any other path is 404. The server can speak
TLS, optionally requiring client certificates (Prometheus' ``tls_config``), and put ``/metrics``
behind HTTP basic authentication (``basic_auth``); the probes stay open.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from fraudfl.errors import FraudflError
from fraudfl.monitoring.health import Health

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]


@dataclass(frozen=True)
class ServerTLS:
    """Certificate and key of the endpoint; ``client_cafile`` makes client certificates
    mandatory (mutual TLS)."""

    certfile: Path
    keyfile: Path
    client_cafile: Path | None = None

    def context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(str(self.certfile), str(self.keyfile))
            if self.client_cafile is not None:
                ctx.load_verify_locations(cafile=str(self.client_cafile))
                ctx.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise FraudflError(
                f"{self.certfile}: cannot load the TLS certificate/key: {exc}"
            ) from exc
        return ctx


@dataclass
class MetricsServer:
    """A running metrics endpoint; ``port`` is the bound port (useful when 0 was asked for)."""

    host: str
    port: int
    _httpd: WSGIServer
    _thread: threading.Thread
    scheme: str = "http"

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/metrics"

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        if not self._thread.is_alive():
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        log.info("metrics server on %s:%d stopped", self.host, self.port)


def health_app(
    registry: CollectorRegistry, health: Health | None,
    basic_auth: tuple[str, str] | None = None,
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    metrics = make_wsgi_app(registry)
    expected = None if basic_auth is None else (
        "Basic " + base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode()
    ).encode()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/metrics", "/metrics/"):
            given = environ.get("HTTP_AUTHORIZATION", "").encode()
            if expected is not None and not hmac.compare_digest(given, expected):
                start_response("401 Unauthorized", [
                    ("Content-Type", "text/plain"),
                    ("WWW-Authenticate", 'Basic realm="fraudfl metrics"'),
                ])
                return [b"authentication required\n"]
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if path in ("/healthz", "/readyz") and health is not None:
            ok, body = health.live() if path == "/healthz" else health.ready()
            data = json.dumps(body, sort_keys=True).encode()
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
            )
            return [data]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found; try /metrics, /healthz or /readyz\n"]

    return app


def start_metrics_server(
    port: int,
    host: str = "0.0.0.0",
    registry: CollectorRegistry = REGISTRY,
    *,
    health: Health | None = None,
    tls: ServerTLS | None = None,
    basic_auth: tuple[str, str] | None = None,
) -> MetricsServer:
    """Serve ``registry`` at ``/metrics`` and ``health`` at ``/healthz``/``/readyz`` from a
    daemon thread.

    ``port=0`` binds a free port. A port that cannot be bound is a configuration error.
    """
    if not 0 <= port <= 65535:
        raise FraudflError(f"metrics port {port} is out of range; expected 0-65535")
    context = None if tls is None else tls.context()

    class Server(ThreadingWSGIServer):
        """Per call, so the address family set below stays local (as prometheus-client does)."""

    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        Server.address_family = family
        httpd = make_server(
            str(sockaddr[0]), port, health_app(registry, health, basic_auth), Server,
            handler_class=_SilentHandler,
        )
    except OSError as exc:
        raise FraudflError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    if context is not None:
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    bound_port = int(httpd.server_port)
    scheme = "http" if tls is None else "https"
    log.info("serving metrics on %s://%s:%d/metrics", scheme, host, bound_port)
    return MetricsServer(host=host, port=bound_port, _httpd=httpd, _thread=thread, scheme=scheme)
