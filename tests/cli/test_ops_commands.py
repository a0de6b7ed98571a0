"""Operator commands: --version, JSON logs, exit codes, healthcheck and admin."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from aggregator.service import AggregatorService
from fraudfl.admin import AdminServer, write_token
from fraudfl.cli import EXIT_USAGE, main
from fraudfl.cli.init import FederationPlan, write_federation
from fraudfl.config import AggregatorConfig, load_config
from fraudfl.monitoring import new_registry, start_metrics_server
from fraudfl.monitoring.health import Health
from fraudfl.monitoring.metrics import fraudfl_version
from fraudfl.transport.memory import MemoryBroker, MemoryTransport


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"fraudfl {fraudfl_version()}"


def test_json_logs_from_flag_and_environment(tmp_path: Path) -> None:
    for argv, env in ((["--log-format", "json"], {}), ([], {"FRAUDFL_LOG__FORMAT": "json"})):
        result = subprocess.run(
            [sys.executable, "-m", "fraudfl", *argv, "--log-level", "INFO", "init",
             str(tmp_path / f"fed{len(argv)}"), "--banks", "2", "--transactions", "1000"],
            capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", **env},
        )
        assert result.returncode == 0, result.stderr
        records = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
        assert records and {"time", "level", "logger", "message"} <= set(records[-1])
        assert any("wrote federation" in r["message"] for r in records)


def test_healthcheck_command(capsys: pytest.CaptureFixture[str]) -> None:
    health = Health()
    server = start_metrics_server(0, "127.0.0.1", new_registry(), health=health)
    try:
        url = f"{server.base_url}/healthz"
        assert main(["healthcheck", url]) == 1  # no heartbeat yet
        health.beat()
        assert main(["healthcheck", url]) == 0
    finally:
        server.stop()
    assert main(["healthcheck", url]) == 1
    assert main(["healthcheck", "file:///etc/passwd"]) == EXIT_USAGE


def test_admin_command_against_a_running_aggregator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fed = write_federation(FederationPlan(
        directory=tmp_path / "fed", banks=2, transactions=600, federation_id="adm", rounds=1,
        admin_port=0,
    ))
    config_path = fed.aggregator_config
    config = load_config(AggregatorConfig, config_path, env={})
    config.state_dir.mkdir(parents=True)
    admin = AdminServer(0, write_token(config.state_dir)).start()
    # The port was chosen by the OS: point the config at it, as an operator's file would.
    config_path.write_text(config_path.read_text().replace(
        "admin_port = 0", f"admin_port = {admin.port}"))
    service = AggregatorService(config, MemoryTransport(MemoryBroker()), admin=admin,
                                stay_up=True)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(service.run()), daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if admin.status():
                break
            threading.Event().wait(0.05)
        assert main(["admin", "status", "--config", str(config_path)]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["federation"] == "adm" and status["state"] == "advertise_keys"
        assert status["finished"] is False and status["planned_rounds"] == 1
        assert main(["admin", "extend", "--config", str(config_path)]) == EXIT_USAGE
        assert main(["admin", "extend", "3", "--config", str(config_path)]) == 0
        assert json.loads(capsys.readouterr().out)["planned_rounds"] == 4
        assert main(["admin", "stop", "--config", str(config_path)]) == 0
        thread.join(30)
        assert result == [0]
    finally:
        admin.stop()
    (config.state_dir / "admin.token").write_text("stale-token")
    assert main(["admin", "status", "--config", str(config_path)]) == EXIT_USAGE
    assert "cannot reach" in capsys.readouterr().err


def test_an_unreachable_broker_exits_3(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    fed = write_federation(FederationPlan(
        directory=tmp_path / "fed", banks=2, transactions=600, federation_id="down",
        bootstrap_servers=f"127.0.0.1:{port}",
    ))
    code = main(["--log-level", "ERROR", "aggregator", "--config", str(fed.aggregator_config)])
    assert code == 3
