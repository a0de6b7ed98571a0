"""The streaming scorer on the in-memory transport: offsets saved only after the producer's
acknowledgement, invalid transactions reported rather than dropped, resume from saved offsets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fraudfl.errors import FraudflError
from fraudfl.scoring import ModelHolder
from fraudfl.scoring.stream import StreamingScorer, StreamSettings, load_offsets
from fraudfl.transport import MemoryBroker, MemoryTransport, TopicPartition, TransportError
from tests.scoring.conftest import TrainedBank, transactions


class FailingFlush(MemoryTransport):
    """Records go out, but the acknowledgement never comes back (as after a broker crash)."""

    fail = True

    def flush(self, timeout_s: float | None = None) -> None:
        if self.fail:
            raise TransportError("1 of 1 records were not delivered in time")


def publish(transport: MemoryTransport, txs: list[dict[str, Any]]) -> None:
    for tx in txs:
        transport.send("transactions", str(tx["transaction_id"]).encode(),
                       json.dumps(tx).encode())


def alerts(broker: MemoryBroker) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in broker.records("fraud-alerts")]


def test_scores_every_transaction_and_reports_invalid_ones(
    tmp_path: Path, artifact_dir: Path, trained_bank: TrainedBank
) -> None:
    broker = MemoryBroker()
    settings = StreamSettings(state_path=tmp_path / "offsets.json", poll_timeout_s=0.01)
    scorer = StreamingScorer(ModelHolder(artifact_dir), MemoryTransport(broker), settings)
    scorer.open()
    txs = transactions(trained_bank, 120)
    txs[7] = {**txs[7], "amount": "lots"}
    publish(MemoryTransport(broker), txs)
    while scorer.process_once():
        pass
    out = alerts(broker)
    assert sorted(a["transaction_id"] for a in out) == list(range(120))
    invalid = [a for a in out if a["status"] == "invalid"]
    assert [a["transaction_id"] for a in invalid] == [7]
    assert "field 'amount'" in invalid[0]["error"]
    scored = [a for a in out if a["status"] == "scored"]
    assert all(a["model_version"] == 1 and 0 <= a["probability"] <= 1 for a in scored)
    assert all(a["fraud"] == (a["probability"] >= a["threshold"]) for a in scored)
    saved = load_offsets(settings.state_path, "transactions")
    assert sum(saved.values()) == 120
    keys = {r.key for r in broker.records("fraud-alerts")}
    assert keys == {str(i).encode() for i in range(120)}


def test_offsets_are_not_saved_until_alerts_are_acknowledged(
    tmp_path: Path, artifact_dir: Path, trained_bank: TrainedBank
) -> None:
    broker = MemoryBroker()
    settings = StreamSettings(state_path=tmp_path / "offsets.json", poll_timeout_s=0.01)
    transport = FailingFlush(broker)
    scorer = StreamingScorer(ModelHolder(artifact_dir), transport, settings)
    scorer.open()
    publish(MemoryTransport(broker), transactions(trained_bank, 30))
    with pytest.raises(TransportError):
        scorer.process_once()
    assert not settings.state_path.exists()
    assert scorer.committed == {}
    # The batch is read again once the producer works.
    transport.fail = False
    consumed = 0
    while n := scorer.process_once():
        consumed += n
    assert consumed == 30
    assert sum(load_offsets(settings.state_path, "transactions").values()) == 30


def test_restart_resumes_from_saved_offsets(
    tmp_path: Path, artifact_dir: Path, trained_bank: TrainedBank
) -> None:
    broker = MemoryBroker()
    settings = StreamSettings(state_path=tmp_path / "offsets.json", poll_timeout_s=0.01,
                              alerts_only=True)
    first = StreamingScorer(ModelHolder(artifact_dir), MemoryTransport(broker, 10), settings)
    first.open()
    publish(MemoryTransport(broker), transactions(trained_bank, 50))
    first.process_once()
    first.process_once()
    saved = load_offsets(settings.state_path, "transactions")
    assert sum(saved.values()) == 20
    second = StreamingScorer(ModelHolder(artifact_dir), MemoryTransport(broker, 10), settings)
    second.open()
    consumed = 0
    while n := second.process_once():
        consumed += n
    assert consumed == 30
    assert sum(load_offsets(settings.state_path, "transactions").values()) == 50
    assert all(a["fraud"] for a in alerts(broker))


def test_state_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "offsets.json"
    path.write_text('{"format": "fraudfl.stream_offsets", "topic": "other", "offsets": {}}')
    from fraudfl.errors import FraudflError

    with pytest.raises(FraudflError, match="not 'transactions'"):
        load_offsets(path, "transactions")
    path.write_text("[]")
    with pytest.raises(FraudflError, match=r"not a fraudfl\.stream_offsets"):
        load_offsets(path, "transactions")
    assert load_offsets(tmp_path / "none.json", "t") == {}
    assert TopicPartition("t", 0) not in load_offsets(tmp_path / "none.json", "t")


def test_a_failure_mid_batch_rewinds_instead_of_skipping(
    tmp_path: Path, artifact_dir: Path, trained_bank: TrainedBank,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fraudfl.scoring import Scorer

    broker = MemoryBroker()
    settings = StreamSettings(state_path=tmp_path / "offsets.json", poll_timeout_s=0.01)
    scorer = StreamingScorer(ModelHolder(artifact_dir), MemoryTransport(broker, 10), settings)
    scorer.open()
    publish(MemoryTransport(broker), transactions(trained_bank, 25))
    scorer.process_once()
    original = Scorer.score_records
    monkeypatch.setattr(Scorer, "score_records", lambda self, recs: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        scorer.process_once()
    monkeypatch.setattr(Scorer, "score_records", original)
    while scorer.process_once():
        pass
    assert sorted(a["transaction_id"] for a in alerts(broker)) == list(range(25))


def test_array_records_and_packed_alerts_score_each_transaction_once(
    tmp_path: Path, artifact_dir: Path, trained_bank: TrainedBank
) -> None:
    """Transactions arriving as JSON arrays and alerts packed into arrays give the same alerts
    as one record each; a wrong element is reported alone, with its place in the array."""
    broker = MemoryBroker()
    txs = transactions(trained_bank, 90)
    reference = MemoryBroker()
    one_each = StreamingScorer(ModelHolder(artifact_dir), MemoryTransport(reference),
                               StreamSettings(state_path=tmp_path / "a.json",
                                              poll_timeout_s=0.01))
    one_each.open()
    publish(MemoryTransport(reference), txs)
    while one_each.process_once():
        pass
    expected = {a["transaction_id"]: a["probability"] for a in alerts(reference)}

    settings = StreamSettings(state_path=tmp_path / "b.json", poll_timeout_s=0.01,
                              alerts_per_record=25)
    latencies: list[tuple[int, float]] = []
    scorer = StreamingScorer(ModelHolder(artifact_dir), MemoryTransport(broker), settings,
                             on_batch=lambda n, s: latencies.append((n, s)))
    scorer.open()
    producer = MemoryTransport(broker)
    bad = {**txs[41], "amount": "lots"}
    batches = [txs[:40], [*txs[40:41], bad, *txs[42:80]], txs[80:]]
    for batch in batches:
        producer.send("transactions", None, json.dumps(batch).encode())
    producer.send("transactions", None, b"[1, 2")  # not JSON: one invalid alert for the record
    while scorer.process_once():
        pass
    records = broker.records("fraud-alerts")
    assert all(r.key is None for r in records)
    assert max(len(json.loads(r.value)) for r in records) == 25
    out = [a for r in records for a in json.loads(r.value)]
    scored = {a["transaction_id"]: a["probability"] for a in out if a["status"] == "scored"}
    # Equal up to float32 rounding: batch sizes differ between the two runs.
    assert scored == pytest.approx({k: v for k, v in expected.items() if k != 41}, rel=1e-5)
    invalid = [a for a in out if a["status"] == "invalid"]
    assert [(a["transaction_id"], a.get("index")) for a in invalid] == [(41, 1), (None, None)]
    assert "field 'amount'" in invalid[0]["error"]
    assert sum(n for n, _ in latencies) == 4 and all(s >= 0 for _, s in latencies)
    assert sum(load_offsets(settings.state_path, "transactions").values()) == 4


def test_alerts_per_record_is_bounded(tmp_path: Path) -> None:
    with pytest.raises(FraudflError, match="alerts_per_record"):
        StreamSettings(state_path=tmp_path / "s.json", alerts_per_record=0)
