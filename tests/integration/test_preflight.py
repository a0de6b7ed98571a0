"""``fraudfl preflight`` against a real broker: what passes, what fails and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from fraudfl.cli import main
from fraudfl.identity import Identity
from fraudfl.transport.broker import EmbeddedBroker
from fraudfl.transport.kafka import KafkaSettings, KafkaTransport
from fraudfl.transport.topics import TopicLayout
from tests.integration.federation_harness import ThreadFederation

pytestmark = pytest.mark.integration


def preflight(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, str]]:
    code = main(["--log-level", "ERROR", "preflight", "--config", str(config)])
    lines = capsys.readouterr().out.splitlines()
    return code, {line.split(":")[0].split(None, 1)[1]: line.split(None, 1)[0] for line in lines}


def test_preflight_checks(tmp_path: Path, broker: EmbeddedBroker,
                          capsys: pytest.CaptureFixture[str]) -> None:
    fed = ThreadFederation(tmp_path, broker, banks=2, rounds=1)
    agg, bank = fed.fed.aggregator_config, fed.fed.bank_configs["bank_00"]

    # Before the topics exist: the aggregator would create them, a bank cannot start.
    code, checks = preflight(agg, capsys)
    assert code == 0, checks
    assert checks == {"config": "ok", "keys": "ok", "allowlist": "ok", "broker": "ok",
                      "topics": "ok", "read access": "skip", "clock skew": "skip"}
    code, checks = preflight(bank, capsys)
    assert code == 1 and checks["topics"] == "FAIL"

    with KafkaTransport(KafkaSettings(bootstrap_servers=broker.bootstrap_servers)) as t:
        TopicLayout("itest").ensure(t, fed.bank_ids)
    code, checks = preflight(bank, capsys)
    assert code == 0 and checks["topics"] == checks["read access"] == "ok", checks

    # A key that is not the one enrolled fails the keys check.
    key = fed.bank_configs["bank_00"].identity_key
    key.unlink()
    Identity.generate("bank_00").save(key.parent)
    code, checks = preflight(bank, capsys)
    assert code == 1 and checks["keys"] == "FAIL"

    broker.stop_broker()
    code, checks = preflight(agg, capsys)
    assert code == 1 and checks["broker"] == "FAIL" and checks["topics"] == "skip"
