"""Grafana dashboards and recording rules name only metrics the services really export.

The list of exported names comes from a live scrape of a metrics server exposing all three
metric classes with observations recorded, not from a hand-written list. The same check against
the running services themselves (aggregator, bank nodes, scoring) is in
``tests/integration/test_prometheus_federation.py``.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from fraudfl.monitoring import MetricsServer
from tests.monitoring.promql import metric_names, template_query_metric_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
RULES = ROOT / "deploy/prometheus/rules/fraudfl.rules.yml"


def scraped_names(server: MetricsServer) -> set[str]:
    with urllib.request.urlopen(server.url, timeout=10) as response:
        text = response.read().decode()
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def panel_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def recording_rules() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["record"]: r["expr"] for g in groups for r in g["rules"] if "record" in r}


def alert_exprs() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r["expr"] for g in groups for r in g["rules"] if "alert" in r}


@pytest.fixture
def exported(live_metrics_server: MetricsServer) -> set[str]:
    names = scraped_names(live_metrics_server)
    assert "fraudfl_aggregator_round_duration_seconds_bucket" in names
    return names


def test_the_four_dashboards_exist_and_are_well_formed() -> None:
    assert [p.stem for p in DASHBOARDS] == [
        "bank-privacy-training", "federation-overview", "scoring", "secure-aggregation",
    ]
    uids = set()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        uids.add(dashboard["uid"])
        assert dashboard["title"].startswith("fraudfl / ")
        ids = [p["id"] for p in panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in panels(dashboard):
            assert panel.get("description") or panel["type"] == "row", panel["title"]
            if panel["type"] != "row":
                assert panel["targets"], f"{path.name}: {panel['title']} has no query"
                assert panel["datasource"]["uid"] == "${datasource}"
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24
    assert len(uids) == len(DASHBOARDS)


def test_recording_rules_use_exported_metrics(exported: set[str]) -> None:
    for record, expr in recording_rules().items():
        missing = metric_names(expr) - exported
        assert not missing, f"recording rule {record} uses unexported {sorted(missing)}"


def test_alerts_use_exported_metrics(exported: set[str]) -> None:
    # `up` is the one series Prometheus itself adds to every target.
    known = exported | set(recording_rules()) | {"up"}
    for alert, expr in alert_exprs().items():
        missing = metric_names(expr) - known
        assert not missing, f"alert {alert} uses unexported {sorted(missing)}"


def test_every_panel_and_variable_query_names_exported_metrics(exported: set[str]) -> None:
    known = exported | set(recording_rules())
    checked = 0
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for title, expr in panel_exprs(dashboard):
            names = metric_names(expr)
            assert names, f"{path.name}: panel {title!r} selects no metric: {expr}"
            missing = names - known
            assert not missing, f"{path.name}: panel {title!r} uses unexported {sorted(missing)}"
            checked += 1
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                names = template_query_metric_names(variable["query"]["query"])
                assert names and not names - known, (path.name, variable["name"], names)
    assert checked >= 50


def test_every_exported_fraudfl_family_is_on_a_dashboard(exported: set[str]) -> None:
    used: set[str] = set()
    for path in DASHBOARDS:
        for _, expr in panel_exprs(json.loads(path.read_text())):
            used |= metric_names(expr)
    for expr in recording_rules().values():
        used |= metric_names(expr)

    def family(name: str) -> str:
        for suffix in ("_bucket", "_count", "_sum", "_created"):
            if name.endswith(suffix):
                return name[: -len(suffix)]
        return name

    ours = {family(n) for n in exported if n.startswith("fraudfl_") and not n.endswith("_created")}
    shown = {family(n) for n in used}
    assert ours - shown == set()


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'histogram_quantile(0.95, sum by (stage, le) (rate(x_seconds_bucket{a=~"$f"}'
            "[$__rate_interval])))",
            {"x_seconds_bucket"},
        ),
        ("a_total / on (job) group_left (federation) b_info offset 5m", {"a_total", "b_info"}),
        ('sum without (le) (c{l="by (x)"}) > bool 1e3 and d:rule:ratio', {"c", "d:rule:ratio"}),
        ("time() - e_timestamp_seconds", {"e_timestamp_seconds"}),
    ],
)
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_template_query_extraction() -> None:
    assert template_query_metric_names('label_values(m_info{f=~"$f"}, bank)') == {"m_info"}
    assert template_query_metric_names("label_values(federation)") == set()


def test_docs_describe_every_exported_metric(exported: set[str]) -> None:
    docs = (ROOT / "docs/metrics.md").read_text()
    families = {
        n.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
        for n in exported
        if n.startswith("fraudfl_") and not n.endswith("_created")
    }
    assert len(families) >= 45
    undocumented = sorted(f for f in families if f"`{f}`" not in docs)
    assert not undocumented
    for record in recording_rules():
        assert f"`{record}`" in docs
    for alert in alert_exprs():
        assert f"`{alert}`" in docs
