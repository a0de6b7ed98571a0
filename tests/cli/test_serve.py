"""`fraudfl serve` as a process: real uvicorn, /health, /score, /metrics, hot swap, clean exit."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from fraudfl.cli import main
from fraudfl.scoring import save_artifact
from tests.scoring.conftest import TrainedBank, transactions


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_process_end_to_end(tmp_path: Path, trained_bank: TrainedBank) -> None:
    artifact_dir = tmp_path / "model"  # the bank node has not written a model yet
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fraudfl", "serve", "--model", str(artifact_dir), "--port",
         str(port), "--poll-interval", "0.1", "--federation", "f1", "--wait-for-model"],
        stderr=subprocess.PIPE,
    )
    log: list[str] = []
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: log.extend(line.decode() for line in proc.stderr),
                              daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not any("waiting for a model artifact" in line for line in log):
        assert proc.poll() is None, "".join(log)
        assert time.monotonic() < deadline, "fraudfl serve did not start waiting"
        time.sleep(0.1)
    save_artifact(trained_bank.artifact, artifact_dir)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            assert proc.poll() is None, "".join(log)
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "fraudfl serve did not come up"
            time.sleep(0.2)
        r = httpx.post(f"{url}/score", json=transactions(trained_bank, 3))
        assert r.status_code == 200 and r.json()["count"] == 3
        assert httpx.post(f"{url}/score", json={"hour": 3}).status_code == 422
        art = trained_bank.artifact
        save_artifact(replace(art, version=9, round=12), artifact_dir)
        while httpx.get(f"{url}/model").json()["version"] != 9:
            assert time.monotonic() < deadline, "the new model was not picked up"
            time.sleep(0.1)
        assert httpx.get(f"{url}/model").json()["round"] == 12
        metrics = httpx.get(f"{url}/metrics").text
        assert 'fraudfl_scoring_transactions_total{bank="bank_00",federation="f1"} 3.0' in metrics
        assert 'fraudfl_scoring_model_version{bank="bank_00",federation="f1"} 9.0' in metrics
        assert "/score" in httpx.get(f"{url}/openapi.json").json()["paths"]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0


def test_serve_refuses_bad_stream_partitions_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An empty list used to assign no partition and score nothing without a word.
    for value, expected in ((",", "expected comma-separated partition numbers"),
                            ("a", "expected comma-separated partition numbers"),
                            ("-1", "expected comma-separated partition numbers"),
                            ("0,1,0", "listed twice")):
        code = main(["serve", "--model", str(tmp_path / "none"), "--port", "0",
                     "--bootstrap-servers", "127.0.0.1:1", "--stream-partitions", value])
        assert code == 2
        assert expected in capsys.readouterr().err


def test_serve_config_file_with_tls_tokens_and_env_overrides(
    tmp_path: Path, trained_bank: TrainedBank
) -> None:
    import os

    from tests.scoring.test_scoring_security import TOKEN, make_pki

    (tmp_path / "pki").mkdir()
    certs = make_pki(tmp_path / "pki")
    save_artifact(trained_bank.artifact, tmp_path / "model")
    (tmp_path / "tokens").write_text(f"# rotated monthly\n{TOKEN}\n")
    (tmp_path / "scoring.toml").write_text(
        'model = "model"\nhost = "127.0.0.1"\nport = 1\nauth_tokens_file = "tokens"\n'
        'federation = "f2"\n'
        f'[tls]\ncertfile = "{certs.server_cert}"\nkeyfile = "{certs.server_key}"\n'
        "[limits]\nmax_batch = 5\n"
    )
    port = free_port()
    env = {**os.environ, "FRAUDFL_PORT": str(port), "FRAUDFL_LOG__FORMAT": "json"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fraudfl", "serve", "--config", str(tmp_path / "scoring.toml")],
        stderr=subprocess.PIPE, env=env,
    )
    url = f"https://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(f"{url}/readyz", verify=str(certs.ca), timeout=1).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "fraudfl serve --config did not come up"
            time.sleep(0.2)
        with httpx.Client(base_url=url, verify=str(certs.ca), timeout=10) as c:
            assert c.post("/score", json=transactions(trained_bank, 3)).status_code == 401
            r = c.post("/score", json=transactions(trained_bank, 3), headers=auth)
            assert r.status_code == 200 and r.json()["count"] == 3
            assert c.post("/score", json=transactions(trained_bank, 6), headers=auth
                          ).status_code == 413
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert proc.stderr is not None
    lines = [line for line in proc.stderr.read().decode().splitlines() if line.strip()]
    assert code == 0
    # --log-format json via the environment: every line is one JSON object.
    import json

    records = [json.loads(line) for line in lines]
    assert any("scoring API on https://" in r["message"] for r in records)


def test_stream_scorer_passes_kafka_security_through(tmp_path: Path) -> None:
    """The embedded broker cannot speak SASL or TLS: the settings are checked on their way
    to kafka-python instead."""
    import os

    from fraudfl.cli.serve import scoring_config

    (tmp_path / "scoring.toml").write_text(
        'model = "model"\n[stream]\ntransactions_topic = "bank-a.tx"\n'
        '[stream.kafka]\nbootstrap_servers = "kafka:9093"\nsecurity_protocol = "SASL_SSL"\n'
        'sasl_mechanism = "SCRAM-SHA-512"\nsasl_plain_username = "scoring-bank-a"\n'
        'ssl_cafile = "ca.pem"\n'
    )
    args = main.__globals__["build_parser"]().parse_args(
        ["serve", "--config", str(tmp_path / "scoring.toml")])
    os.environ["FRAUDFL_STREAM__KAFKA__SASL_PLAIN_PASSWORD"] = "0123456789"
    try:
        config = scoring_config(args)
    finally:
        del os.environ["FRAUDFL_STREAM__KAFKA__SASL_PLAIN_PASSWORD"]
    assert config.stream is not None and config.stream.transactions_topic == "bank-a.tx"
    assert "0123456789" not in repr(config)
    opts = config.stream.kafka.transport_settings().consumer()
    assert opts["security_protocol"] == "SASL_SSL" and opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert opts["sasl_plain_username"] == "scoring-bank-a"
    assert opts["sasl_plain_password"] == "0123456789"  # verbatim, not the number 123456789
    assert opts["ssl_cafile"] == str(tmp_path / "ca.pem")
