"""The aggregator as a long-running service on a real broker: it finishes and stays up, is
extended through the admin endpoint, restarts without counting a recovery, never deletes
topics, and starts a new run only when told; banks refuse a newer run loudly until their
operator joins it, keeping their privacy ledgers."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from prometheus_client import CollectorRegistry

from aggregator.service import AggregatorService
from bank_node.service import BankNodeService
from fraudfl.admin import AdminServer, call, write_token
from fraudfl.errors import FraudflError
from fraudfl.monitoring import AggregatorMetrics, BankMetrics, new_registry, start_metrics_server
from fraudfl.monitoring.broker_probe import KafkaLogCounter
from fraudfl.monitoring.health import Health
from fraudfl.privacy.accountant import PrivacyAccountant
from fraudfl.rounds.run import RUN_FILE, RunRecord, join_run
from fraudfl.transport.broker import EmbeddedBroker
from fraudfl.transport.kafka import KafkaSettings, KafkaTransport
from tests.integration.federation_harness import ThreadFederation, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


class ServiceThread:
    """A service's ``run`` in a thread, with its exit status or exception kept."""

    def __init__(self, service: Any, name: str) -> None:
        self.stop = threading.Event()
        self.result: list[Any] = []
        self.thread = threading.Thread(target=self._run, args=(service,), name=name, daemon=True)
        self.thread.start()

    def _run(self, service: Any) -> None:
        try:
            self.result.append(service.run(self.stop))
        except BaseException as exc:
            self.result.append(exc)

    def join(self, timeout_s: float) -> Any:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "service did not end"
        return self.result[0]


def http_get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_finished_aggregator_stays_up_is_extended_and_restarts_without_recovery(
    tmp_path: Path, broker: EmbeddedBroker
) -> None:
    fed = ThreadFederation(tmp_path, broker, banks=3, rounds=1)
    cfg = fed.agg_config
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    registry = new_registry()
    metrics = AggregatorMetrics(registry, federation="itest")
    health = Health()
    server = start_metrics_server(0, "127.0.0.1", registry, health=health)
    admin = AdminServer(0, write_token(cfg.state_dir)).start()
    token = (cfg.state_dir / "admin.token").read_text()
    assert (cfg.state_dir / "admin.token").stat().st_mode & 0o777 == 0o600
    transport = KafkaTransport(fed.settings())
    fed.start_banks()
    agg = ServiceThread(AggregatorService(cfg, transport, metrics=metrics, health=health,
                                          admin=admin, stay_up=True), "aggregator")
    try:
        def status() -> dict[str, Any]:
            return call(admin.port, token, "status")

        wait_for(lambda: status().get("finished") is True, 240, "the planned round")
        assert status()["completed_rounds"] == 1 and status()["state"] == "finished"
        assert agg.thread.is_alive()  # finished, not exited
        assert sample(registry, "fraudfl_aggregator_finished", federation="itest") == 1
        assert sample(registry, "fraudfl_aggregator_last_round_completed_timestamp_seconds",
                      federation="itest") > 0
        code, live = http_get(f"{server.base_url}/healthz")
        assert code == 200 and live["state"] == "finished"
        # Metrics keep serving after the last round (they vanished with the process before).
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            assert b"fraudfl_aggregator_finished" in resp.read()

        with pytest.raises(FraudflError, match="wrong admin token"):
            call(admin.port, "not-the-token", "status")
        with pytest.raises(FraudflError, match="rounds must be an integer"):
            call(admin.port, token, "extend", {"rounds": 0})
        extended = call(admin.port, token, "extend", {"rounds": 2})
        assert extended["planned_rounds"] == 3 and extended["finished"] is False
        assert sample(registry, "fraudfl_aggregator_finished", federation="itest") == 0
        wait_for(lambda: status().get("finished") is True, 240, "the two extra rounds")
        assert status()["completed_rounds"] == 3
        fed.wait_banks_have_model(3)
        assert call(admin.port, token, "stop")["stopping"] is True
        assert agg.join(30) == 0
    finally:
        agg.stop.set()
        admin.stop()
        server.stop()
        transport.close()
    rounds = fed.rounds()
    assert [(r["round"], r["status"]) for r in rounds] == [
        (0, "completed"), (1, "completed"), (2, "completed"), (3, "completed")
    ]

    # A restarted finished aggregator is not a recovery, and (in batch mode) returns at once.
    registry2 = new_registry()
    metrics2 = AggregatorMetrics(registry2, federation="itest")
    with KafkaTransport(fed.settings()) as t2:
        assert AggregatorService(cfg, t2, metrics=metrics2).run() == 0
    for outcome in ("resumed", "round_aborted"):
        assert sample(registry2, "fraudfl_aggregator_recoveries_total", federation="itest",
                      outcome=outcome) == 0
    assert sample(registry2, "fraudfl_aggregator_finished", federation="itest") == 1
    fed.stop_all()


def test_new_run_needs_consent_and_keeps_topics_and_ledgers(
    tmp_path: Path, broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    fed = ThreadFederation(tmp_path, broker, banks=3, rounds=1)
    fed.start_banks()
    fed.start_aggregator()
    fed.wait("aggregator", 240)
    fed.wait_banks_have_model(1)
    first_run = RunRecord.load(fed.agg_config.state_dir)
    assert first_run is not None
    for bank in fed.bank_ids:
        pinned = RunRecord.load(fed.bank_configs[bank].state_dir)
        assert pinned is not None and pinned.run_id == first_run.run_id and pinned.participated
    spent = {
        b: PrivacyAccountant.load(fed.bank_configs[b].state_dir / "accountant.json").epsilon()
        for b in fed.bank_ids
    }
    assert all(e > 0 for e in spent.values())

    # The aggregator's volume is lost: a fresh aggregator refuses to start over the history.
    for f in fed.agg_config.state_dir.iterdir():
        f.unlink()
    with KafkaTransport(fed.settings()) as t, pytest.raises(FraudflError, match="--new-run"):
        AggregatorService(fed.agg_config, t).run()
    with KafkaTransport(fed.settings()) as t:
        topics = t.list_topics()
    assert {s.name for s in fed.layout.specs(fed.bank_ids)} <= topics  # nothing deleted

    # Told explicitly, it starts run-2; every bank took part in run 1 and refuses, loudly.
    short = fed.agg_config.model_copy(update={"timeouts": fed.agg_config.timeouts.model_copy(
        update={"advertise_keys": 5.0})})
    bank_metrics: dict[str, tuple[CollectorRegistry, BankMetrics]] = {}
    fed.stop_all()
    caplog.set_level(logging.ERROR, logger="bank_node.service")
    runners: dict[str, ServiceThread] = {}
    transports = [KafkaTransport(fed.settings()) for _ in range(len(fed.bank_ids) + 1)]
    for bank, transport in zip(fed.bank_ids, transports, strict=False):
        reg = new_registry()
        bank_metrics[bank] = (reg, BankMetrics(reg, federation="itest", bank=bank))
        runners[bank] = ServiceThread(BankNodeService(
            fed.bank_configs[bank], transport, metrics=bank_metrics[bank][1],
        ), bank)
    agg = ServiceThread(AggregatorService(short, transports[-1], new_run="run-2", stay_up=True),
                        "aggregator")
    try:
        wait_for(lambda: all(
            sample(reg, "fraudfl_bank_run_refused", federation="itest", bank=b) == 1
            for b, (reg, _) in bank_metrics.items()
        ), 60, "every bank to refuse run-2")
        refusals = [r for r in caplog.records if "REFUSING new run run-2" in r.getMessage()]
        assert {r.getMessage().split(":")[0] for r in refusals} == set(fed.bank_ids)
        for bank in fed.bank_ids:
            pinned = RunRecord.load(fed.bank_configs[bank].state_dir)
            assert pinned is not None and pinned.run_id == first_run.run_id
    finally:
        for r in [agg, *runners.values()]:
            r.stop.set()
        for r in [agg, *runners.values()]:
            assert r.join(120) == 0
        for t in transports:
            t.close()

    # The operators agree on run-3: the aggregator starts it from scratch; two banks join it
    # (round state archived, privacy ledger kept) and skip runs 1 and 2 in the topics; the third
    # is replaced by a new node with empty state, which finds the current run by itself.
    for f in fed.agg_config.state_dir.iterdir():
        f.unlink()
    joined, fresh = fed.bank_ids[:2], fed.bank_ids[2]
    for bank in joined:
        state = fed.bank_configs[bank].state_dir
        archived = join_run(state, "run-3")
        assert archived is not None and archived.name == f"bank.ckpt.{first_run.run_id}"
        assert (state / "accountant.json").exists()
        assert json.loads((state / RUN_FILE).read_text())["run_id"] == "run-3"
    for f in fed.bank_configs[fresh].state_dir.iterdir():
        if f.is_file():
            f.unlink()
    with KafkaTransport(fed.settings()) as t:
        agg = ServiceThread(AggregatorService(fed.agg_config, t, new_run="run-3"), "agg")
        # The run-3 marker is on the control topic before the new bank starts reading it.
        wait_for(lambda: (RunRecord.load(fed.agg_config.state_dir) or first_run).run_id
                 == "run-3", 30, "run-3 to start")
        fed.start_banks()
        assert agg.join(300) == 0
    fed.wait_banks_have_model(1)
    fed.stop_all()
    for bank in fed.bank_ids:
        state = fed.bank_configs[bank].state_dir
        pinned = RunRecord.load(state)
        assert pinned is not None and pinned.run_id == "run-3" and pinned.started_ms
    for bank in joined:
        after = PrivacyAccountant.load(fed.bank_configs[bank].state_dir / "accountant.json")
        assert after.epsilon() > spent[bank]  # the ledger went on from run 1, not renewed
    assert [(r["round"], r["status"]) for r in fed.rounds()] == [(0, "completed"),
                                                                  (1, "completed")]


def test_readyz_follows_the_broker_and_errors_are_counted(
    tmp_path: Path, durable_broker: EmbeddedBroker
) -> None:
    fed = ThreadFederation(tmp_path, durable_broker, banks=3, rounds=1)
    registry = new_registry()
    metrics = AggregatorMetrics(registry, federation="itest")
    counter = KafkaLogCounter(metrics).install()
    health = Health(poll_s=10.0)
    server = start_metrics_server(0, "127.0.0.1", registry, health=health)
    transport = KafkaTransport(fed.settings())
    probe = KafkaTransport(KafkaSettings(
        bootstrap_servers=durable_broker.bootstrap_servers, request_timeout_ms=3000))
    agg = ServiceThread(AggregatorService(fed.agg_config, transport, metrics=metrics,
                                          health=health, probe_transport=probe, stay_up=True),
                        "aggregator")
    ready = f"{server.base_url}/readyz"
    try:
        wait_for(lambda: http_get(ready)[0] == 200, 30, "readiness")
        _, body = http_get(ready)
        assert body["checks"]["topics"]["ok"] and body["checks"]["keys"]["ok"]
        assert sample(registry, "fraudfl_aggregator_broker_up", federation="itest") == 1

        def errors() -> float:
            return sum(sample(registry, "fraudfl_aggregator_kafka_errors_total",
                              federation="itest", reason=r)
                       for r in ("send_failed", "receive_failed", "connection_lost", "timeout"))

        before = errors()
        durable_broker.stop_broker()
        wait_for(lambda: http_get(ready)[0] == 503, 10, "/readyz to fail")
        _, body = http_get(ready)
        assert not body["checks"]["broker"]["ok"]
        assert http_get(f"{server.base_url}/healthz")[0] == 200  # alive: nothing to restart
        assert sample(registry, "fraudfl_aggregator_broker_up", federation="itest") == 0
        wait_for(lambda: errors() > before, 10, "the Kafka error counter")

        durable_broker.restart()
        wait_for(lambda: http_get(ready)[0] == 200, 30, "/readyz to recover")
        assert sample(registry, "fraudfl_aggregator_broker_up", federation="itest") == 1
    finally:
        agg.stop.set()
        assert agg.join(60) == 0
        counter.remove()
        server.stop()
        transport.close()
        probe.close()
