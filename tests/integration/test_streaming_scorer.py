"""The streaming scorer end to end on the embedded Kafka broker: every transaction of the
``transactions`` topic gets exactly one alert on ``fraud-alerts``, also when the scorer
crashes after its alerts are acknowledged but before saving its offsets and a new scorer takes
over (it finds the written alerts on the topic and does not produce them again)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fraudfl.data import FeaturePipeline, compute_stats, load_dataset
from fraudfl.data.generators import generate_bank_data
from fraudfl.models import ModelSpec
from fraudfl.scoring import ModelHolder, build_artifact, save_artifact
from fraudfl.scoring import stream as stream_module
from fraudfl.scoring.stream import StreamingScorer, StreamSettings, load_offsets
from fraudfl.transport import TopicPartition, TopicSpec
from fraudfl.transport.broker import EmbeddedBroker
from fraudfl.transport.kafka import KafkaSettings, KafkaTransport

pytestmark = pytest.mark.integration


def make_artifact(root: Path) -> tuple[Path, list[dict[str, Any]]]:
    """An artifact (untrained logistic model: scoring does not care) and raw transactions."""
    data_dir = root / "data"
    generate_bank_data(data_dir, n_banks=1, total_transactions=2_000, fraud_rate=0.015, seed=1)
    data = load_dataset(data_dir)
    frame = data.banks[data.bank_ids[0]]
    pipeline = FeaturePipeline.fit(compute_stats(frame, data.schema))
    X, y = pipeline.transform(frame)
    spec = ModelSpec("logistic", pipeline.num_features, 2)
    artifact = build_artifact(spec.build(seed=3), spec, pipeline, X, y, target_fpr=0.05,
                              version=1, round=1)
    save_artifact(artifact, root / "model")
    txs = []
    for i, row in enumerate(frame.to_dict(orient="records")):
        tx = {c: float(row[c]) for c in pipeline.numeric}
        tx.update({c: str(row[c]) for c in pipeline.categorical})
        tx["transaction_id"] = f"tx-{i:05d}"
        txs.append(tx)
    return root / "model", txs


def publish(transport: KafkaTransport, txs: list[dict[str, Any]]) -> None:
    for tx in txs:
        transport.send("transactions", tx["transaction_id"].encode(), json.dumps(tx).encode())
    transport.flush()


def read_alerts(settings: KafkaSettings, expected_unique: int) -> list[dict[str, Any]]:
    reader = KafkaTransport(settings)
    try:
        n = reader.partitions_for("fraud-alerts")
        reader.assign([TopicPartition("fraud-alerts", p) for p in range(n)])
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while len({a["transaction_id"] for a in out}) < expected_unique:
            assert time.monotonic() < deadline, "alerts missing"
            out += [a for r in reader.poll(0.5) for a in _alerts_of(r.value)]
        # Anything else already in the topic (duplicates) arrives with a few more polls.
        for _ in range(3):
            out += [a for r in reader.poll(0.3) for a in _alerts_of(r.value)]
        return out
    finally:
        reader.close()


def _alerts_of(value: bytes) -> list[dict[str, Any]]:
    data = json.loads(value)
    return data if isinstance(data, list) else [data]


def run_until(scorer: StreamingScorer, consumed_target: int) -> int:
    consumed = 0
    deadline = time.monotonic() + 60
    while consumed < consumed_target:
        assert time.monotonic() < deadline, f"consumed only {consumed} of {consumed_target}"
        consumed += scorer.process_once()
    return consumed


@pytest.mark.parametrize("alerts_per_record", [1, 40])
def test_no_alert_lost_or_duplicated_across_a_scorer_crash_and_restart(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    alerts_per_record: int,
) -> None:
    model_dir, txs = make_artifact(tmp_path)
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
    admin = KafkaTransport(settings)
    admin.create_topics([TopicSpec("transactions", 3), TopicSpec("fraud-alerts", 2)])
    first_wave, second_wave = txs[:600], txs[600:900]
    publish(admin, first_wave)

    stream_settings = StreamSettings(state_path=tmp_path / "offsets.json",
                                     alerts_per_record=alerts_per_record)
    first = StreamingScorer(ModelHolder(model_dir), KafkaTransport(settings, 100),
                            stream_settings)
    first.open()
    run_until(first, 200)
    committed_before_crash = sum(load_offsets(stream_settings.state_path,
                                              "transactions").values())
    assert committed_before_crash >= 200

    # Crash after the alerts of the next batch are acknowledged, before the offsets are saved.
    def crash(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt("scorer killed")

    written_before_crash = len(read_alerts(settings, committed_before_crash))

    monkeypatch.setattr(stream_module, "save_offsets", crash)
    with pytest.raises(KeyboardInterrupt):
        run_until(first, 10_000)
    first.transport.close()
    monkeypatch.undo()
    in_flight = read_alerts(settings, committed_before_crash + 1)
    assert len(in_flight) > committed_before_crash  # the crashed batch's alerts were written
    assert sum(load_offsets(stream_settings.state_path, "transactions").values()) == (
        committed_before_crash
    )

    # Transactions keep arriving while no scorer runs.
    publish(admin, second_wave)
    second = StreamingScorer(ModelHolder(model_dir), KafkaTransport(settings, 100),
                             stream_settings)
    second.open()
    run_until(second, 900 - committed_before_crash)
    assert sum(load_offsets(stream_settings.state_path, "transactions").values()) == 900
    second.transport.close()

    alerts = read_alerts(settings, 900)
    admin.close()
    ids = Counter(a["transaction_id"] for a in alerts)
    assert set(ids) == {tx["transaction_id"] for tx in first_wave + second_wave}
    # The batch in flight at the crash had its alerts written (more than before it) but not
    # its offsets saved: the restarted scorer read it again and produced none of them twice.
    assert written_before_crash == committed_before_crash
    assert len(alerts) == 900
    assert all(c == 1 for c in ids.values())
    assert all(a["status"] == "scored" for a in alerts)
    probabilities = np.array([a["probability"] for a in alerts])
    assert np.all((probabilities >= 0) & (probabilities <= 1))


def test_serve_config_runs_the_stream_scorer_with_its_kafka_section(
    tmp_path: Path, broker: EmbeddedBroker
) -> None:
    """`fraudfl serve --config` with a [stream] table: the stream scorer's clients come from
    [stream.kafka] (the same section that carries TLS/SASL settings in production)."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    _, txs = make_artifact(tmp_path)  # the artifact lands in tmp_path/model
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "scoring.toml"
    config.write_text(
        f'model = "model"\nport = {port}\n'
        + '[stream]\ntransactions_topic = "transactions"\nalerts_topic = "fraud-alerts"\n'
        + f'[stream.kafka]\nbootstrap_servers = "{broker.bootstrap_servers}"\n'
        + 'client_id = "scoring-bank-a"\n'
    )
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fraudfl", "serve", "--config", str(config)],
        stderr=subprocess.PIPE, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        producer = KafkaTransport(settings)
        deadline = time.monotonic() + 120
        while "transactions" not in producer.list_topics():  # the scorer creates it
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the stream scorer did not start"
            time.sleep(0.2)
        publish(producer, txs[:50])
        producer.close()
        alerts = read_alerts(settings, 50)
        assert {a["transaction_id"] for a in alerts} == {tx["transaction_id"] for tx in txs[:50]}
        assert all(a["status"] == "scored" for a in alerts)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
