"""A real Prometheus server scrapes a metrics server, runs the rules and every dashboard query."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from fraudfl.monitoring import start_metrics_server
from tests.integration.prometheus import PrometheusServer
from tests.monitoring.metrics_samples import BANKS, FEDERATION, SampleServices

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/rules/fraudfl.rules.yml"
DASHBOARDS = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))

pytestmark = pytest.mark.integration


def values(result: list[dict[str, Any]]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


def grafana_to_promql(expr: str) -> str:
    """Substitute the dashboards' variables as Grafana does for 'All'."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$federation", FEDERATION)
        .replace("$bank", ".*")
    )


def test_prometheus_scrapes_the_series_and_every_dashboard_query_has_data(
    registry: CollectorRegistry,
) -> None:
    services = SampleServices(registry)
    services.exercise()
    server = start_metrics_server(0, host="127.0.0.1", registry=registry)
    scrape = [
        {
            "job_name": "fraudfl-aggregator",
            "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}],
        }
    ]
    try:
        with PrometheusServer(scrape, rule_files=[RULES], interval="500ms") as prom:
            prom.wait_for('up{job="fraudfl-aggregator"}', lambda r: values(r) == [1.0])
            # Keep the services busy across several scrapes so that rates and ratios move.
            deadline = time.monotonic() + 60
            while True:
                services.exercise()
                seen = prom.query(
                    'count_over_time(fraudfl_aggregator_rounds_completed_total{kind="train"}[1m])'
                )
                ratio = prom.query("fraudfl:scoring_server_errors:ratio_5m")
                if values(seen) and values(seen)[0] >= 4 and len(ratio) == len(BANKS):
                    break
                assert time.monotonic() < deadline, f"too few scrapes: {seen}\n{prom.log_text()}"
                time.sleep(0.25)

            completed = values(
                prom.query('fraudfl_aggregator_rounds_completed_total{kind="train"}')
            )
            assert len(completed) == 1 and 0 < completed[0] <= services.rounds
            spent = prom.query(f'fraudfl_bank_privacy_epsilon_spent{{federation="{FEDERATION}"}}')
            assert sorted(s["metric"]["bank"] for s in spent) == sorted(BANKS)
            assert all(0 < v < 8.0 for v in values(spent))
            used = prom.query("fraudfl:bank_privacy_budget_used:ratio")
            assert sorted(values(used)) == [3.0 / 8.0, 4.0 / 8.0]
            build = prom.query('fraudfl_build_info{component="aggregator"}')
            assert build[0]["metric"]["config_hash"] == "0123456789abcdef"
            assert values(prom.query('process_start_time_seconds{job="fraudfl-aggregator"}'))
            # Rules load and evaluate without errors.
            groups = prom.api("rules")["groups"]
            assert [g["name"] for g in groups] == ["fraudfl"]
            assert all(r["health"] == "ok" for g in groups for r in g["rules"]), groups

            empty = []
            for path in DASHBOARDS:
                dashboard = json.loads(path.read_text())
                for panel in dashboard["panels"]:
                    for target in panel.get("targets", []):
                        expr = grafana_to_promql(target["expr"])
                        if not prom.query(expr):
                            empty.append(f"{path.name}: {panel['title']}: {expr}")
            assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
    finally:
        server.stop()


def test_helper_reports_a_server_that_cannot_start() -> None:
    broken = [{"job_name": "x", "scrape_interval": "banana"}]
    with pytest.raises(RuntimeError, match="prometheus exited"), PrometheusServer(broken):
        pass
