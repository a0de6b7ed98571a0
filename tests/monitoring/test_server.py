"""The /metrics endpoint over real HTTP."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from fraudfl.errors import FraudflError
from fraudfl.monitoring import AggregatorMetrics, MetricsServer, start_metrics_server


def get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def test_serves_the_registry_and_reflects_new_values(registry: CollectorRegistry) -> None:
    metrics = AggregatorMetrics(registry, federation="fed-http")
    server = start_metrics_server(0, host="127.0.0.1", registry=registry)
    try:
        assert server.port > 0
        status, content_type, body = get(server.url)
        assert status == 200
        assert content_type.startswith("text/plain")
        series = 'fraudfl_aggregator_rounds_completed_total{federation="fed-http",kind="train"}'
        assert f"{series} 0.0" in body
        assert "process_start_time_seconds" in body

        metrics.round_started(4, selected_banks=3, kind="train")
        metrics.round_completed(duration_seconds=2.0, model_version=4, kind="train")
        _, _, body = get(server.url)
        values = {
            s.name: s.value
            for fam in text_string_to_metric_families(body)
            for s in fam.samples
            if s.labels.get("federation") == "fed-http" and s.labels.get("kind", "train") == "train"
        }
        assert values["fraudfl_aggregator_rounds_completed_total"] == 1
        assert values["fraudfl_aggregator_model_version"] == 4
    finally:
        server.stop()


def test_stop_releases_the_port(registry: CollectorRegistry) -> None:
    server = start_metrics_server(0, host="127.0.0.1", registry=registry)
    port = server.port
    server.stop()
    server.stop()
    with pytest.raises(urllib.error.URLError):
        get(f"http://127.0.0.1:{port}/metrics")
    again = start_metrics_server(port, host="127.0.0.1", registry=registry)
    try:
        assert again.port == port
        assert get(again.url)[0] == 200
    finally:
        again.stop()


def test_port_in_use_is_a_clear_error(registry: CollectorRegistry) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(FraudflError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            start_metrics_server(port, host="127.0.0.1", registry=registry)
    with pytest.raises(FraudflError, match="out of range"):
        start_metrics_server(70000, registry=registry)


def test_live_server_fixture_exposes_all_three_services(live_metrics_server: MetricsServer) -> None:
    _, _, body = get(live_metrics_server.url)
    for prefix in ("fraudfl_aggregator_", "fraudfl_bank_", "fraudfl_scoring_"):
        assert prefix in body


def test_healthz_and_readyz_follow_the_health_state(registry: CollectorRegistry) -> None:
    import json

    from fraudfl.monitoring.health import Health

    now = [100.0]
    health = Health(heartbeat_s=10.0, poll_s=5.0, clock=lambda: now[0])
    server = start_metrics_server(0, host="127.0.0.1", registry=registry, health=health)

    def status(path: str) -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(server.base_url + path, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    try:
        assert status("/healthz")[0] == 503  # no heartbeat yet
        health.beat()
        health.polled()
        health.check("broker", True)
        assert status("/healthz")[0] == 200
        assert status("/readyz")[0] == 200
        health.check("broker", False, "unreachable: ECONNREFUSED")
        code, body = status("/readyz")
        assert code == 503 and body["checks"]["broker"]["detail"].startswith("unreachable")  # type: ignore[index]
        health.check("broker", True)
        now[0] += 6.0  # no poll for 6 s: not ready, still alive
        assert status("/readyz")[0] == 503 and status("/healthz")[0] == 200
        now[0] += 5.0  # and a wedged main loop fails liveness
        assert status("/healthz")[0] == 503
        with pytest.raises(urllib.error.HTTPError):
            get(server.base_url + "/other")
        assert get(server.url)[0] == 200
    finally:
        server.stop()


def test_without_health_only_metrics_are_served(registry: CollectorRegistry) -> None:
    server = start_metrics_server(0, host="127.0.0.1", registry=registry)
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            get(server.base_url + "/readyz")
        assert info.value.code == 404
    finally:
        server.stop()


def test_metrics_over_tls_with_client_certificates(
    registry: CollectorRegistry, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import ssl

    from fraudfl.monitoring.server import ServerTLS
    from tests.scoring.test_scoring_security import make_pki

    pki = make_pki(tmp_path_factory.mktemp("pki"))
    tls = ServerTLS(pki.server_cert, pki.server_key, client_cafile=pki.ca)
    server = start_metrics_server(0, host="127.0.0.1", registry=registry, tls=tls)
    try:
        assert server.url.startswith("https://")
        anonymous = ssl.create_default_context(cafile=str(pki.ca))
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            urllib.request.urlopen(server.url, timeout=10, context=anonymous).read()
        client = ssl.create_default_context(cafile=str(pki.ca))
        client.load_cert_chain(str(pki.client_cert), str(pki.client_key))
        with urllib.request.urlopen(server.url, timeout=10, context=client) as response:
            assert response.status == 200 and b"process_start_time_seconds" in response.read()
    finally:
        server.stop()
    with pytest.raises(FraudflError, match="cannot load the TLS certificate"):
        start_metrics_server(0, host="127.0.0.1", registry=registry,
                             tls=ServerTLS(pki.ca, pki.server_key))


def test_basic_auth_guards_metrics_not_probes(registry: CollectorRegistry) -> None:
    import base64

    from fraudfl.monitoring.health import Health

    health = Health()
    health.beat()
    server = start_metrics_server(0, host="127.0.0.1", registry=registry, health=health,
                                  basic_auth=("prometheus", "s3cret-pw"))
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            get(server.url)
        assert info.value.code == 401
        assert info.value.headers["WWW-Authenticate"].startswith("Basic")
        for password in ("wrong", "s3cret-pw"):
            token = base64.b64encode(f"prometheus:{password}".encode()).decode()
            request = urllib.request.Request(server.url,
                                             headers={"Authorization": f"Basic {token}"})
            if password == "wrong":
                with pytest.raises(urllib.error.HTTPError):
                    urllib.request.urlopen(request, timeout=10)
            else:
                with urllib.request.urlopen(request, timeout=10) as response:
                    assert response.status == 200
        assert get(server.base_url + "/healthz")[0] == 200  # the kubelet has no password
    finally:
        server.stop()
