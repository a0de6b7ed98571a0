"""A real Prometheus server scraping a running federation on the embedded broker.

The bank nodes and the scoring service run as ``fraudfl`` processes (so the CLI's metrics wiring,
the default process collectors and the ``metrics_port`` config key are exercised as deployed);
the aggregator runs in a thread of the test with its own registry and metrics server, wired as
``fraudfl aggregator`` wires it, because the CLI process exits (and stops serving metrics) as soon
as its rounds are done, before a scrape could be relied on to see the final values.

Prometheus loads the deployment's rules and scrapes every target each second; the test checks
the key series against what the federation actually did (round log, bank status files), that
the rules load and no alert fires for a healthy federation, and that every dashboard query names
a metric the live services export.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from aggregator.service import AggregatorService
from bank_node.service import BANK_STAGES
from fraudfl.cli.demo import LocalFederation
from fraudfl.cli.init import FederationPlan, write_federation
from fraudfl.config import AggregatorConfig, load_config
from fraudfl.monitoring import AggregatorMetrics, config_digest, new_registry, start_metrics_server
from fraudfl.monitoring.metrics import fraudfl_version
from fraudfl.rounds.orchestrator import STAGE_LABELS
from fraudfl.transport.broker import EmbeddedBroker
from fraudfl.transport.kafka import KafkaSettings, KafkaTransport
from fraudfl.vocabulary import STAGES
from tests.integration.prometheus import (
    PrometheusServer,
    die_with_parent,
    free_port,
    require_binary,
)
from tests.monitoring import metrics_catalog
from tests.monitoring.promql import metric_names, template_query_metric_names

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/rules/fraudfl.rules.yml"
DASHBOARDS = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
FEDERATION = "promfed"
ROUNDS = 2
# Calibrated to spend the budget over 10 rounds: 2 rounds stay well below the 80% alert.
EPSILON_BUDGET = 8.0
PLANNED_ROUNDS = 10
SERVICE_TIMEOUT_S = 120.0
COMPONENTS = {
    "fraudfl-aggregator": "aggregator", "fraudfl-bank": "bank-node", "fraudfl-scoring": "scoring",
}
METRICS_DOC = ROOT / "docs/metrics.md"


@dataclass
class LiveFederation:
    """The finished federation, its still-running metrics endpoints, and Prometheus."""

    prom: PrometheusServer
    banks: list[str]
    # job -> {instance: service name}
    targets: dict[str, dict[str, str]]
    config_hashes: dict[str, str]
    rounds: list[dict[str, Any]]
    statuses: dict[str, dict[str, Any]]
    _scrapes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def instances(self) -> list[str]:
        return sorted(i for job in self.targets.values() for i in job)

    def scrapes(self) -> dict[str, list[str]]:
        """The services' ``/metrics`` text now, by component (``fraudfl_build_info``'s)."""
        if not self._scrapes:
            for job, instances in self.targets.items():
                self._scrapes[COMPONENTS[job]] = [_scrape(i) for i in sorted(instances)]
        return self._scrapes


def _values(result: list[dict[str, Any]]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


def _by(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {s["metric"].get(label, ""): float(s["value"][1]) for s in result}


def _scrape(instance: str) -> str:
    with urllib.request.urlopen(f"http://{instance}/metrics", timeout=10) as response:
        text: str = response.read().decode()
    return text


def _sample_names(text: str) -> set[str]:
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def _logs(log_dir: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(log_dir.glob("*"))
    )


def _wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _first_transactions(data_dir: Path, bank: str, n: int) -> list[dict[str, Any]]:
    """Rows of a bank's CSV as the scoring API takes them (the schema's numbers as numbers)."""
    numeric = set(tomllib.loads((data_dir / "schema.toml").read_text())["numeric"])
    with (data_dir / f"{bank}.csv").open(newline="") as fh:
        rows = [row for _, row in zip(range(n), csv.DictReader(fh), strict=False)]
    return [{k: float(v) if k in numeric else v for k, v in row.items()} for row in rows]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFederation]:
    require_binary("prometheus")  # before spending time on the federation
    root = tmp_path_factory.mktemp("promfed") / "fed"
    with EmbeddedBroker() as broker:
        fed = write_federation(
            FederationPlan(
                directory=root, banks=3, transactions=1500, federation_id=FEDERATION,
                bootstrap_servers=broker.bootstrap_servers, rounds=ROUNDS,
                aggregator_overrides={
                    "training": {"hidden": [8], "batch_size": 64},
                    "timeouts": {"advertise_keys": 60.0, "share_keys": 15.0,
                                 "masked_input": 15.0, "unmask": 15.0},
                },
                bank_overrides={"privacy": {"target_epsilon": EPSILON_BUDGET,
                                            "planned_rounds": PLANNED_ROUNDS}},
            )
        )
        banks = sorted(fed.bank_configs)
        bank_ports = {b: free_port() for b in banks}
        for bank, path in fed.bank_configs.items():
            # A root-table key must precede the first [section] of the TOML file.
            path.write_text(f"metrics_port = {bank_ports[bank]}\n" + path.read_text())
        scoring_port = free_port()

        agg_config = load_config(AggregatorConfig, fed.aggregator_config, env={})
        registry = new_registry()
        agg_hash = config_digest(fed.aggregator_config.read_bytes())
        metrics = AggregatorMetrics(registry, federation=FEDERATION, config_hash=agg_hash)
        agg_server = start_metrics_server(0, host="127.0.0.1", registry=registry)

        targets = {
            "fraudfl-aggregator": {f"127.0.0.1:{agg_server.port}": "aggregator"},
            "fraudfl-bank": {f"127.0.0.1:{bank_ports[b]}": b for b in banks},
            "fraudfl-scoring": {f"127.0.0.1:{scoring_port}": "scoring"},
        }
        scrape = [
            {"job_name": job, "static_configs": [{"targets": sorted(instances)}]}
            for job, instances in targets.items()
        ]
        local = LocalFederation(root, fed.aggregator_config, fed.bank_configs, root / "logs")
        scoring: subprocess.Popen[bytes] | None = None
        try:
            with PrometheusServer(scrape, rule_files=[RULES], interval="1s") as prom:
                for bank in banks:
                    local.start_bank(bank)
                # The scoring service of the first bank serves its node's model artifact as
                # soon as the first global model arrives.
                with (root / "logs" / "scoring.log").open("ab") as out:
                    scoring = subprocess.Popen(
                        [sys.executable, "-m", "fraudfl", "serve",
                         "--model", str(root / "state" / banks[0] / "model"),
                         "--port", str(scoring_port), "--wait-for-model",
                         "--poll-interval", "0.5", "--federation", FEDERATION],
                        cwd=root, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                        preexec_fn=die_with_parent,
                    )
                local.wait_banks_ready(timeout_s=SERVICE_TIMEOUT_S)

                settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
                transport = KafkaTransport(settings)
                service = AggregatorService(agg_config, transport, metrics=metrics)
                result: list[int | BaseException] = []

                def run_aggregator() -> None:
                    try:
                        result.append(service.run())
                    except BaseException as exc:  # reported below
                        result.append(exc)
                    finally:
                        transport.close()

                thread = threading.Thread(target=run_aggregator, name="aggregator", daemon=True)
                thread.start()
                thread.join(SERVICE_TIMEOUT_S)
                assert not thread.is_alive(), "aggregator still running\n" + _logs(local.log_dir)
                assert result == [0], f"aggregator: {result}\n{_logs(local.log_dir)}"

                rounds = [json.loads(line) for line in
                          (agg_config.state_dir / "rounds.jsonl").read_text().splitlines()]
                final = max(r["model_version"] or 0 for r in rounds)
                _wait_until(
                    lambda: all(local.bank_status(b).get("model_version") == final
                                for b in banks),
                    30.0, f"banks to use model v{final}",
                )
                _wait_until(lambda: _scoring_version(scoring_port) == final, 30.0,
                            f"scoring to serve model v{final}")
                _exercise_scoring(scoring_port, root / "data", banks[0])
                settled_at = time.time()

                statuses = {b: local.bank_status(b) for b in banks}
                hashes = {"aggregator": agg_hash} | {
                    b: config_digest(p.read_bytes()) for b, p in fed.bank_configs.items()
                }
                live = LiveFederation(prom, banks, targets, hashes, rounds, statuses)
                _wait_for_final_scrape(live, settled_at)
                yield live
        finally:
            if scoring is not None and scoring.poll() is None:
                scoring.terminate()
                try:
                    scoring.wait(10)
                except subprocess.TimeoutExpired:
                    scoring.kill()
                    scoring.wait()
            local.stop_all()
            agg_server.stop()


def _scoring_version(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            version = json.load(response).get("model_version")
    except (OSError, ValueError):
        return None
    return version if isinstance(version, int) else None


def _exercise_scoring(port: int, data_dir: Path, bank: str) -> None:
    """A batch and an invalid request, so the request, latency and error series move."""
    batch = _first_transactions(data_dir, bank, 5)
    for body in (batch, {"not": "a transaction"}):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/score", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
        except urllib.error.HTTPError as exc:
            assert exc.code == 422 and body is not batch, exc.read()


def _wait_for_final_scrape(live: LiveFederation, settled_at: float) -> None:
    """Until Prometheus holds the finished federation's values from every target and has
    evaluated the rules on them."""
    prom = live.prom
    n_targets = len(live.instances)
    # Every target scraped successfully after the services reached their final state.
    # (timestamp() needs a plain selector: of an expression it gives the evaluation time.)
    prom.wait_for(
        f'timestamp(up{{job=~"fraudfl-.*"}}) > {settled_at}', lambda r: len(r) == n_targets
    )
    prom.wait_for('up{job=~"fraudfl-.*"} == 1', lambda r: len(r) == n_targets)
    after = time.time()
    _wait_until(lambda: _last_evaluation(prom) > after, 30.0, "a rule evaluation")


def _last_evaluation(prom: PrometheusServer) -> float:
    """Unix time of the rule group's latest evaluation (0 before the first)."""
    groups = prom.api("rules")["groups"]
    stamp = groups[0].get("lastEvaluation", "") if groups else ""
    # RFC 3339 with nanoseconds: keep microseconds for datetime.
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,6})?\d*(Z|[+-]\d\d:\d\d)", stamp)
    if match is None or stamp.startswith("0001-"):
        return 0.0
    text = match.group(1) + (match.group(2) or "") + match.group(3).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def _one(prom: PrometheusServer, expr: str) -> float:
    values = _values(prom.query(expr))
    assert len(values) == 1, f"{expr}: {values}"
    return values[0]


def _per_bank(prom: PrometheusServer, expr: str) -> dict[str, float]:
    return _by(prom.query(expr), "bank")


def test_every_target_is_up_with_build_info_and_process_metrics(live: LiveFederation) -> None:
    prom = live.prom
    up = _by(prom.query('up{job=~"fraudfl-.*"}'), "instance")
    assert up == dict.fromkeys(live.instances, 1.0)
    started = prom.query("process_start_time_seconds")
    assert sorted(s["metric"]["instance"] for s in started) == live.instances
    assert all(0 < v <= time.time() for v in _values(started))
    memory = prom.query("process_resident_memory_bytes > 0")
    assert sorted(s["metric"]["instance"] for s in memory) == live.instances

    build = prom.query("fraudfl_build_info")
    assert all(s["metric"]["version"] == fraudfl_version() != "unknown" for s in build), build
    # Prometheus drops empty labels: the aggregator's bank, the scoring service's config hash.
    seen = {
        (s["metric"]["job"], s["metric"]["component"], s["metric"].get("bank", "")):
            s["metric"].get("config_hash", "")
        for s in build
    }
    expected = {("fraudfl-aggregator", "aggregator", ""): live.config_hashes["aggregator"]}
    expected |= {("fraudfl-bank", "bank-node", b): live.config_hashes[b] for b in live.banks}
    scoring_key = ("fraudfl-scoring", "scoring", live.banks[0])
    assert scoring_key in seen
    expected[scoring_key] = ""  # the scoring service has no config file
    assert seen == expected
    assert {s["metric"]["federation"] for s in build} == {FEDERATION}


def test_rounds_and_models_match_the_round_log(live: LiveFederation) -> None:
    prom, rounds = live.prom, live.rounds
    completed = [r for r in rounds if r["status"] == "completed"]
    assert len(completed) == len(rounds) == ROUNDS + 1  # the feature-statistics round 0, too
    for kind in ("stats", "train"):
        assert _one(prom, f'fraudfl_aggregator_rounds_completed_total{{kind="{kind}"}}') == len(
            [r for r in completed if r["kind"] == kind]
        )
        assert _one(prom, f'fraudfl_aggregator_rounds_started_total{{kind="{kind}"}}') == len(
            [r for r in rounds if r["kind"] == kind]
        )
    assert _one(prom, "sum(fraudfl_aggregator_rounds_aborted_total)") == 0
    assert _one(prom, "fraudfl_aggregator_current_round") == rounds[-1]["round"]
    assert _one(prom, "fraudfl_aggregator_banks_selected_total") == sum(
        len(r["selected"]) for r in rounds
    )
    assert _one(prom, "fraudfl_aggregator_round_duration_seconds_count") == len(completed)
    assert _one(prom, "fraudfl_aggregator_round_duration_seconds_sum") == pytest.approx(
        sum(r["finished_at"] - r["started_at"] for r in completed)
    )
    final = completed[-1]
    assert final["model_version"] > 0
    assert _one(prom, "fraudfl_aggregator_model_version") == final["model_version"]
    assert _per_bank(prom, "fraudfl_bank_model_version") == dict.fromkeys(
        live.banks, final["model_version"]
    )
    assert _one(prom, "fraudfl_scoring_model_version") == final["model_version"]
    quality = _by(prom.query("fraudfl_aggregator_global_model_quality"), "metric")
    for name in ("auprc", "roc_auc", "loss"):
        assert quality[name] == pytest.approx(final["metrics"][name])
    assert _one(prom, "fraudfl_aggregator_checkpoint_writes_total") > 0
    assert _one(prom, "sum(fraudfl_aggregator_recoveries_total)") == 0


def test_secure_aggregation_stages_and_participants(live: LiveFederation) -> None:
    prom, n_rounds, n_banks = live.prom, len(live.rounds), len(live.banks)
    # The services run exactly the stages the metrics pre-create a series for.
    stages = set(STAGES)
    assert set(STAGE_LABELS.values()) == set(BANK_STAGES) == stages
    durations = _by(prom.query("fraudfl_aggregator_secagg_stage_duration_seconds_count"), "stage")
    # Every completed round passes each secure-aggregation stage once.
    assert durations == dict.fromkeys(stages, n_rounds)
    participants = _by(prom.query("fraudfl_aggregator_stage_participants"), "stage")
    assert participants == dict.fromkeys(stages, n_banks)
    assert _one(prom, "sum(fraudfl_aggregator_dropouts_total)") == 0
    for stage in BANK_STAGES:
        counts = _per_bank(
            prom, f'fraudfl_bank_secagg_stage_duration_seconds_count{{stage="{stage}"}}'
        )
        assert counts == dict.fromkeys(live.banks, n_rounds), stage


def test_privacy_and_training_series(live: LiveFederation) -> None:
    prom = live.prom
    spent = _per_bank(prom, "fraudfl_bank_privacy_epsilon_spent")
    budget = _per_bank(prom, "fraudfl_bank_privacy_epsilon_budget")
    remaining = _per_bank(prom, "fraudfl_bank_privacy_epsilon_remaining")
    assert set(spent) == set(budget) == set(remaining) == set(live.banks)
    for bank in live.banks:
        assert budget[bank] == EPSILON_BUDGET
        assert 0 < spent[bank] < 0.8 * budget[bank]
        assert spent[bank] == pytest.approx(live.statuses[bank]["epsilon"])
        assert remaining[bank] == pytest.approx(budget[bank] - spent[bank])
    assert all(0 < d < 1 for d in _per_bank(prom, "fraudfl_bank_privacy_delta").values())
    used = _per_bank(prom, "fraudfl:bank_privacy_budget_used:ratio")
    assert used == pytest.approx({b: spent[b] / budget[b] for b in live.banks})

    # The feature-statistics round is joined with a masked vector as well; training is not.
    for kind in ("stats", "train"):
        assert _per_bank(prom, f'fraudfl_bank_rounds_joined_total{{kind="{kind}"}}') == {
            b: sum(b in r["survivors"] for r in live.rounds if r["kind"] == kind)
            for b in live.banks
        }
    trained = [r for r in live.rounds if r["kind"] == "train"]
    assert _per_bank(prom, "sum by (bank) (fraudfl_bank_rounds_declined_total)") == dict.fromkeys(
        live.banks, 0
    )
    assert _per_bank(prom, "fraudfl_bank_training_duration_seconds_count") == dict.fromkeys(
        live.banks, len(trained)
    )
    assert all(v > 0 for v in _per_bank(prom, "fraudfl_bank_training_examples_total").values())
    assert all(v > 0 for v in _per_bank(prom, "fraudfl_bank_training_loss").values())
    auprc = _per_bank(prom, 'fraudfl_bank_validation_quality{metric="auprc"}')
    assert set(auprc) == set(live.banks) and all(0 <= v <= 1 for v in auprc.values())


def test_kafka_traffic(live: LiveFederation) -> None:
    prom = live.prom
    for name in ("received_bytes", "sent_bytes", "messages_received", "messages_sent"):
        assert _one(prom, f"fraudfl_aggregator_{name}_total") > 0, name
    for name in ("sent_bytes", "received_bytes"):
        values = _per_bank(prom, f"fraudfl_bank_kafka_{name}_total")
        assert set(values) == set(live.banks) and all(v > 0 for v in values.values()), name
    # Every bank reply reaches the aggregator once: nothing lost, duplicated or rejected.
    assert _one(prom, "fraudfl_aggregator_received_bytes_total") == _one(
        prom, "sum(fraudfl_bank_kafka_sent_bytes_total)"
    )
    for component in ("aggregator", "bank"):
        for name in ("kafka_errors", "messages_rejected"):
            expr = f"sum(fraudfl_{component}_{name}_total)"
            assert _one(prom, expr) == 0, expr


def test_scoring_series(live: LiveFederation) -> None:
    prom = live.prom
    requests = {
        (s["metric"]["endpoint"], s["metric"]["outcome"]): float(s["value"][1])
        for s in prom.query('fraudfl_scoring_requests_total{endpoint="score"}')
    }
    assert requests == {("score", "ok"): 1, ("score", "client_error"): 1,
                        ("score", "server_error"): 0}
    assert _one(prom, "fraudfl_scoring_transactions_total") == 5
    assert _one(prom, 'fraudfl_scoring_request_duration_seconds_count{endpoint="score"}') == 2


def test_rules_load_and_only_finished_fires_for_a_healthy_federation(
    live: LiveFederation,
) -> None:
    groups = live.prom.api("rules")["groups"]
    assert [g["file"] for g in groups] == [str(RULES)]
    configured = yaml.safe_load(RULES.read_text())["groups"]
    names = [r.get("record") or r.get("alert") for g in configured for r in g["rules"]]
    loaded = [r["name"] for g in groups for r in g["rules"]]
    assert loaded == names
    # The federation has run its rounds and the aggregator reports it finished: that informs,
    # and nothing else (not stalled, no round missing, the brokers reachable) fires.
    for rule in (r for g in groups for r in g["rules"]):
        assert rule["health"] == "ok", rule
        if rule["type"] == "alerting":
            expected = "firing" if rule["name"] == "FraudflFederationFinished" else "inactive"
            assert rule["state"] == expected, rule
    alerts = live.prom.api("alerts")["alerts"]
    assert [(a["labels"]["alertname"], a["labels"]["severity"]) for a in alerts] == [
        ("FraudflFederationFinished", "info")
    ]


def test_dashboards_name_only_metrics_the_live_services_export(live: LiveFederation) -> None:
    scraped = {
        component: [_sample_names(text) for text in texts]
        for component, texts in live.scrapes().items()
    }
    exported = set().union(*(names for per_target in scraped.values() for names in per_target))
    # Each service contributes its own families to the union.
    for component, prefix in (("aggregator", "fraudfl_aggregator_"),
                              ("bank-node", "fraudfl_bank_"), ("scoring", "fraudfl_scoring_")):
        for names in scraped[component]:
            assert any(n.startswith(prefix) for n in names), component
    # Prometheus ingested every fraudfl series the services expose.
    stored = set(live.prom.api("label/__name__/values"))
    assert {n for n in exported if n.startswith("fraudfl_")} <= stored

    rules = yaml.safe_load(RULES.read_text())["groups"]
    recorded = {r["record"] for g in rules for r in g["rules"] if "record" in r}
    known = exported | recorded
    checked = 0
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        panels = [p for top in dashboard["panels"] for p in (top, *top.get("panels", []))]
        for panel in panels:
            for target in panel.get("targets", []):
                names = metric_names(target["expr"])
                missing = names - known
                assert names and not missing, (path.name, panel["title"], sorted(missing))
                # The query also runs against this server (variables as Grafana's "All").
                live.prom.query(
                    target["expr"].replace("$__rate_interval", "1m")
                    .replace("$federation", FEDERATION).replace("$bank", ".*")
                )
                checked += 1
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                names = template_query_metric_names(variable["query"]["query"])
                assert names and not names - known, (path.name, variable["name"], names)
    assert checked >= 50


def test_docs_list_exactly_the_metrics_the_live_services_export(live: LiveFederation) -> None:
    section = metrics_catalog.render(metrics_catalog.collect(live.scrapes()))
    doc = METRICS_DOC.read_text()
    if os.environ.get("FRAUDFL_UPDATE_METRICS_DOC"):
        METRICS_DOC.write_text(metrics_catalog.replace_section(doc, section))
        return
    assert metrics_catalog.current_section(doc) == section, (
        "docs/metrics.md lists other metrics than the live services export; regenerate with "
        "FRAUDFL_UPDATE_METRICS_DOC=1 pytest tests/integration/test_prometheus_federation.py"
    )
