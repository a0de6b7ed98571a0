"""The streaming scorer: ``transactions`` topic in, ``fraud-alerts`` topic out, each once.

Each poll's transactions are scored with the model serving at that moment, one alert per
transaction is produced to the alerts topic (keyed by transaction id, or packed into arrays),
the producer is flushed until every record is acknowledged, and only then are the consumed
offsets saved, atomically, to the scorer's own state file, with where on each alerts partition
the alerts written after this save will begin. A crash anywhere before that save replays the
batch on restart; nothing is skipped. Before replaying, the scorer reads the alerts written
since the save and does not produce again the alerts it finds, so nothing is produced twice
(only a scorer's very first batch, with no state file yet, stays at least once).
Offsets are the scorer's own (explicit partition assignment, no consumer group), as the broker
notes advise.

Input records are JSON objects in the bank's schema (as for ``POST /score``). Output records
are JSON objects::

    {"transaction_id": ..., "partition": 0, "offset": 17, "status": "scored",
     "probability": 0.93, "fraud": true, "threshold": 0.71, "model_version": 4}

A transaction that does not match the schema is not dropped: it yields a record with
``"status": "invalid"`` and an ``"error"`` naming the field. With ``alerts_only`` only the
transactions at or above the threshold (and invalid ones) are produced.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fraudfl.checkpoint import atomic_write_json
from fraudfl.errors import FraudflError
from fraudfl.monitoring import ScoringMetrics
from fraudfl.scoring.holder import ModelHolder
from fraudfl.scoring.records import InvalidTransactions, Record
from fraudfl.transport.base import Record as KafkaRecord
from fraudfl.transport.base import TopicPartition, TopicSpec, Transport
from fraudfl.transport.errors import TransportError

log = logging.getLogger(__name__)

STATE_FORMAT = "fraudfl.stream_offsets"
# Reading the alerts written since the last save at start-up (normally one poll batch's).
ALERT_SCAN_TIMEOUT_S = 60.0
# An alert is under 300 bytes of JSON: this many stay far below a record's size limit.
MAX_ALERTS_PER_RECORD = 2_000


@dataclass(frozen=True)
class StreamSettings:
    state_path: Path
    transactions_topic: str = "transactions"
    alerts_topic: str = "fraud-alerts"
    alerts_only: bool = False
    poll_timeout_s: float = 0.2
    # A subset of the transactions topic's partitions, so several scorer processes (each with
    # its own state file) can share the stream; None = all partitions.
    partitions: tuple[int, ...] | None = None
    # Topics this scorer creates when missing (existing topics are left as they are).
    transactions_partitions: int = 4
    alerts_partitions: int = 4
    # 1: one alert record per transaction, keyed by its id. More: JSON arrays of up to this
    # many alerts per record (no key), for throughput (docs/scoring.md).
    alerts_per_record: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.alerts_per_record <= MAX_ALERTS_PER_RECORD:
            raise FraudflError(
                f"alerts_per_record must be in 1..{MAX_ALERTS_PER_RECORD}, "
                f"got {self.alerts_per_record}"
            )


def load_offsets(path: Path, topic: str) -> dict[TopicPartition, int]:
    """Saved next-offsets per partition of ``topic`` (empty when the scorer never ran)."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise FraudflError(f"{path}: cannot read the streaming scorer's offsets: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise FraudflError(f"{path}: not a {STATE_FORMAT} file")
    if data.get("topic") != topic:
        raise FraudflError(
            f"{path}: offsets are for topic {data.get('topic')!r}, not {topic!r}; "
            "use another state file per topic"
        )
    offsets = data.get("offsets")
    if not isinstance(offsets, dict) or not all(
        k.isdigit() and isinstance(v, int) and v >= 0 for k, v in offsets.items()
    ):
        raise FraudflError(f"{path}: 'offsets' must map partition numbers to offsets")
    return {TopicPartition(topic, int(k)): v for k, v in offsets.items()}


def load_alert_marks(path: Path) -> dict[int, int]:
    """Per alerts partition, where this scorer's alerts written after its last save begin
    (empty when unknown: a state file from before marks were kept, or no scorer yet)."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise FraudflError(f"{path}: cannot read the streaming scorer's offsets: {exc}") from exc
    marks = data.get("alerts", {}) if isinstance(data, dict) else None
    if not isinstance(marks, dict) or not all(
        k.isdigit() and isinstance(v, int) and v >= 0 for k, v in marks.items()
    ):
        raise FraudflError(f"{path}: 'alerts' must map partition numbers to offsets")
    return {int(k): v for k, v in marks.items()}


def save_offsets(
    path: Path, topic: str, offsets: dict[TopicPartition, int],
    alerts: Mapping[int, int] | None = None,
) -> None:
    atomic_write_json(path, {
        "format": STATE_FORMAT,
        "topic": topic,
        "offsets": {str(tp.partition): off for tp, off in sorted(offsets.items())},
        "alerts": {str(p): off for p, off in sorted((alerts or {}).items())},
    })


class StreamingScorer:
    """Consumes transactions, produces scores, saves offsets after the producer's acks."""

    def __init__(
        self,
        holder: ModelHolder,
        transport: Transport,
        settings: StreamSettings,
        *,
        metrics: ScoringMetrics | None = None,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        """``on_batch(records, seconds)`` is called after each committed batch with the time
        from the poll's return to every alert of the batch being acknowledged."""
        self.holder = holder
        self.on_batch = on_batch
        self.transport = transport
        self.settings = settings
        self.metrics = metrics
        self.committed: dict[TopicPartition, int] = {}
        # Where alerts written after the last save begin, per alerts partition (saved with the
        # offsets), and the transactions whose alert a scan found already written.
        self.alert_marks: dict[int, int] = {}
        self._written: set[tuple[int, int, int | None]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = False

    def open(self) -> None:
        """Create missing topics, assign every partition and resume at the saved offsets."""
        s = self.settings
        self.transport.create_topics([
            TopicSpec(s.transactions_topic, s.transactions_partitions),
            TopicSpec(s.alerts_topic, s.alerts_partitions),
        ])
        n = self.transport.partitions_for(s.transactions_topic)
        wanted = range(n) if s.partitions is None else s.partitions
        bad = [p for p in wanted if not 0 <= p < n]
        if bad:
            raise FraudflError(f"{s.transactions_topic} has {n} partitions; cannot read {bad}")
        partitions = [TopicPartition(s.transactions_topic, p) for p in wanted]
        self.committed = load_offsets(s.state_path, s.transactions_topic)
        self.alert_marks = load_alert_marks(s.state_path)
        if self.committed:
            self._written = self._scan_alerts({tp.partition for tp in partitions})
        self.transport.assign(partitions)
        # Also after a failed batch in this process: back to the last save.
        self.transport.seek({tp: self.committed.get(tp, 0) for tp in partitions})
        self._ready = True
        log.info("streaming scorer reading %s (partitions %s) from %s, writing %s",
                 s.transactions_topic, [tp.partition for tp in partitions],
                 {tp.partition: off for tp, off in self.committed.items()} or "the start",
                 s.alerts_topic)

    def _scan_alerts(self, partitions: set[int]) -> set[tuple[int, int, int | None]]:
        """The transactions of ``partitions`` past the saved offsets that already have an
        alert: what a scorer stopped after its producer's acknowledgements but before its
        save wrote. Reads the alerts topic from the saved marks to its end (the consumer's
        high watermark: Tansu's end offsets are wrong)."""
        s = self.settings
        topic = s.alerts_topic
        tps = [TopicPartition(topic, p) for p in range(self.transport.partitions_for(topic))]
        self.transport.assign(tps)
        self.transport.seek({tp: self.alert_marks.get(tp.partition, 0) for tp in tps})
        found: set[tuple[int, int, int | None]] = set()
        deadline = time.monotonic() + ALERT_SCAN_TIMEOUT_S
        while True:
            for record in self.transport.poll(s.poll_timeout_s):
                for body in _alert_bodies(record.value):
                    part, off = body.get("partition"), body.get("offset")
                    if part in partitions and isinstance(off, int) and off >= self.committed.get(
                        TopicPartition(s.transactions_topic, part), 0
                    ):
                        found.add((part, off, body.get("index")))
            ends, positions = self.transport.highwater(), self.transport.position()
            if all(tp in ends and positions[tp] >= ends[tp] for tp in tps):
                break
            if time.monotonic() > deadline:
                raise TransportError(f"cannot read {topic} to its end to find written alerts")
        self.alert_marks = {tp.partition: positions[tp] for tp in tps}
        if found:
            log.info("streaming scorer: %d transaction(s) already have their alert on %s; "
                     "they are not produced again", len(found), topic)
        return found

    def process_once(self) -> int:
        """One poll -> score -> produce -> flush -> save offsets cycle; records consumed.

        Any failure before the offsets are saved (no acknowledgement, a broken artifact, a bug)
        rewinds the consumer to the saved offsets, so the batch is read again, never skipped.
        """
        if not self._ready:
            self.open()
        records = self.transport.poll(self.settings.poll_timeout_s)
        if not records:
            return 0
        started = time.perf_counter()
        try:
            scored, alerts = self._score_and_produce(records)
            self.transport.flush()
            acknowledged = time.perf_counter()
            positions = dict(self.transport.position())
            marks = dict(self.alert_marks)
            for tp, end in self.transport.acknowledged().items():
                if tp.topic == self.settings.alerts_topic:
                    marks[tp.partition] = max(end, marks.get(tp.partition, 0))
            save_offsets(self.settings.state_path, self.settings.transactions_topic, positions,
                         marks)
        except BaseException:
            # Some alerts of the batch may be written: reopen (rescan the alerts written since
            # the last save, seek back to it) before the next poll.
            self._ready = False
            if self.metrics is not None:
                self.metrics.request_finished("stream", "server_error",
                                              duration_seconds=time.perf_counter() - started)
            raise
        self.committed = positions
        self.alert_marks = marks
        if self._written:
            self._written = {w for w in self._written if w[1] >= positions.get(
                TopicPartition(self.settings.transactions_topic, w[0]), 0)}
        if self.on_batch is not None:
            self.on_batch(len(records), acknowledged - started)
        if self.metrics is not None:
            self.metrics.request_finished(
                "stream", "ok", duration_seconds=time.perf_counter() - started,
                transactions=scored, alerts=alerts,
            )
        return len(records)

    def _score_and_produce(self, records: list[KafkaRecord]) -> tuple[int, int]:
        """Queue the alert records of a poll batch; returns (transactions scored, alerts)."""
        scorer = self.holder.scorer
        valid: list[tuple[KafkaRecord, int | None, Record]] = []
        out: list[dict[str, Any]] = []  # alert bodies
        for rec in records:
            if rec.value.lstrip()[:1] == b"[":
                self._validate_array(rec, valid, out)
                continue
            try:
                valid.append((rec, None, scorer.validator.validate_one(rec.value)))
            except InvalidTransactions as exc:
                out.append(_alert(rec, None, _raw_id(rec.value, scorer.id_field), {
                    "status": "invalid", "error": str(exc),
                }))
        alerts = 0
        if valid:
            scores = scorer.score_records([tx for _, _, tx in valid])
            alerts = scores.alerts
            only_alerts, id_field = self.settings.alerts_only, scorer.id_field
            threshold, version = scorer.threshold, scorer.version
            for (rec, index, tx), p, fraud in zip(valid, scores.probabilities.tolist(),
                                                  scores.decisions.tolist(), strict=True):
                if only_alerts and not fraud:
                    continue
                # Written out rather than through _alert: this loop runs per transaction.
                body = {"transaction_id": tx.get(id_field), "partition": rec.partition,
                        "offset": rec.offset}
                if index is not None:
                    body["index"] = index
                body["status"] = "scored"
                body["probability"] = p
                body["fraud"] = fraud
                body["threshold"] = threshold
                body["model_version"] = version
                out.append(body)
        self._produce(out)
        return len(valid), alerts

    def _validate_array(
        self, rec: KafkaRecord, valid: list[tuple[KafkaRecord, int | None, Record]],
        out: list[dict[str, Any]],
    ) -> None:
        """A record holding a JSON array of transactions: one pydantic pass for the whole
        array; only when some element is wrong, element by element, so that each wrong one
        gets its own "invalid" alert and the others are scored."""
        validator = self.holder.scorer.validator
        try:
            txs, _ = validator.validate_json(rec.value)
            valid.extend((rec, i, tx) for i, tx in enumerate(txs))
            return
        except InvalidTransactions as exc:
            whole_error = str(exc)
        try:
            items = json.loads(rec.value)
        except ValueError:
            items = None
        if not isinstance(items, list) or not items:
            out.append(_alert(rec, None, None, {"status": "invalid", "error": whole_error}))
            return
        for i, item in enumerate(items):
            try:
                valid.append((rec, i, validator.validate_one(item)))
            except InvalidTransactions as exc:
                tx_id = item.get(validator.id_field) if isinstance(item, dict) else None
                out.append(_alert(rec, i, tx_id if _is_id(tx_id) else None, {
                    "status": "invalid", "error": str(exc),
                }))

    def _produce(self, alerts: list[dict[str, Any]]) -> None:
        """One record per alert (keyed by transaction id), or JSON arrays of up to
        ``alerts_per_record`` alerts: kafka-python's per-record cost, not the model, bounds a
        scorer that writes one record per transaction."""
        topic, per_record = self.settings.alerts_topic, self.settings.alerts_per_record
        if self._written:
            alerts = [b for b in alerts
                      if (b["partition"], b["offset"], b.get("index")) not in self._written]
        if per_record == 1:
            source = self.settings.transactions_topic
            for body in alerts:
                self.transport.send(topic, _alert_key(source, body), json.dumps(body).encode())
            return
        for start in range(0, len(alerts), per_record):
            chunk = alerts[start : start + per_record]
            self.transport.send(topic, None, json.dumps(chunk).encode())

    def run(self) -> None:
        """Process until :meth:`stop`; failures are logged and the batch retried."""
        while not self._stop.is_set():
            try:
                self.process_once()
            except TransportError as exc:
                log.warning("streaming scorer: %s; retrying", exc)
                self._stop.wait(1.0)
            except Exception:
                log.exception("streaming scorer: batch failed; retrying from the saved offsets")
                self._stop.wait(1.0)

    def start(self) -> None:
        self.open()
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="stream-scorer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None


def _alert(
    rec: KafkaRecord, index: int | None, tx_id: Any, fields: dict[str, Any]
) -> dict[str, Any]:
    """The alert body of one transaction; ``index`` is its place in an array record."""
    body = {"transaction_id": tx_id, "partition": rec.partition, "offset": rec.offset}
    if index is not None:
        body["index"] = index
    body.update(fields)
    return body


def _alert_key(topic: str, body: dict[str, Any]) -> bytes:
    """The transaction id, or where the transaction was when it has none."""
    tx_id = body["transaction_id"]
    if tx_id is not None:
        return str(tx_id).encode()
    index = body.get("index")
    where = f"{topic}/{body['partition']}/{body['offset']}"
    return (where if index is None else f"{where}/{index}").encode()


def _alert_bodies(value: bytes) -> list[dict[str, Any]]:
    """The alerts of one record of the alerts topic (one object or an array of them)."""
    try:
        data = json.loads(value)
    except ValueError:
        return []
    items = data if isinstance(data, list) else [data]
    return [item for item in items if isinstance(item, dict)]


def _is_id(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool)


def _raw_id(value: bytes, id_field: str) -> Any:
    """The id of a transaction that failed validation, when one can be read at all."""
    try:
        data = json.loads(value)
    except ValueError:
        return None
    tx_id = data.get(id_field) if isinstance(data, dict) else None
    return tx_id if _is_id(tx_id) else None
