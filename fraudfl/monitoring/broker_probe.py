"""Is the broker there, and are the federation's topics? Probed from a side thread.

kafka-python reconnects in the background and its consumer's ``poll`` returns nothing while
the broker is gone, so the main loop cannot tell a quiet federation from a lost broker. The
probe asks the broker for metadata every ``interval_s`` on its own admin connection (so it
never blocks or shares a client with the main loop), and records the answer in the service's
:class:`~fraudfl.monitoring.health.Health` (checks ``broker`` and ``topics``) and metrics.

kafka-python logs every failed connection attempt itself (at WARNING/ERROR, a few per second
while the broker is away); :class:`KafkaLogCounter` counts exactly those log records into the
service's Kafka error counter, so the counter and the log agree.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from fraudfl.monitoring.health import Health
from fraudfl.monitoring.metrics import ConsumedTopic, KafkaErrorReason
from fraudfl.transport.base import Transport
from fraudfl.transport.errors import TransportError

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 2.0


class KafkaMetrics(Protocol):
    def set_broker_up(self, up: bool) -> None: ...

    def kafka_error(self, reason: KafkaErrorReason) -> None: ...


class ProgressMetrics(Protocol):
    def set_consumer_progress(
        self, topic: ConsumedTopic, *, position: int, lag: int
    ) -> None: ...


def report_consumer_progress(
    transport: Transport, metrics: ProgressMetrics, roles: Mapping[str, ConsumedTopic]
) -> None:
    """Position and lag per topic (summed over its partitions) from the consumer's own view:
    partitions not fetched yet are left out rather than guessed. ``roles`` maps the topic names
    to their metric label."""
    try:
        ends = transport.highwater()
        positions = transport.position() if ends else {}
    except TransportError as exc:
        log.debug("no consumer progress: %s", exc)
        return
    per_topic: dict[str, tuple[int, int]] = {}
    for tp, end in ends.items():
        pos = positions.get(tp, 0)
        have = per_topic.get(tp.topic, (0, 0))
        per_topic[tp.topic] = (have[0] + pos, have[1] + max(0, end - pos))
    for topic, (pos, lag) in per_topic.items():
        if topic in roles:
            metrics.set_consumer_progress(roles[topic], position=pos, lag=lag)


class BrokerProbe:
    """Calls ``list_topics`` every ``interval_s`` until :meth:`stop`."""

    def __init__(
        self,
        list_topics: Callable[[], set[str]],
        health: Health,
        *,
        topics: Iterable[str] = (),
        metrics: KafkaMetrics | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.list_topics = list_topics
        self.health = health
        self.topics = sorted(topics)
        self.metrics = metrics
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._was_up: bool | None = None

    def expect_topics(self, topics: Iterable[str]) -> None:
        self.topics = sorted(topics)

    def probe(self) -> bool:
        """One metadata request; updates health and metrics. Returns whether the broker
        answered."""
        try:
            existing = self.list_topics()
        except Exception as exc:  # any client failure means "not reachable"; keep probing
            if self._was_up is not False:
                log.warning("broker unreachable: %s", exc)
                if self.metrics is not None:
                    self.metrics.kafka_error("connection_lost")
            self._was_up = False
            self.health.check("broker", False, f"unreachable: {exc}"[:300])
            self.health.check("topics", False, "unknown (broker unreachable)")
            if self.metrics is not None:
                self.metrics.set_broker_up(False)
            return False
        if self._was_up is False:
            log.info("broker reachable again")
        self._was_up = True
        self.health.check("broker", True)
        missing = [t for t in self.topics if t not in existing]
        self.health.check(
            "topics", not missing, f"missing: {', '.join(missing)}" if missing else ""
        )
        if self.metrics is not None:
            self.metrics.set_broker_up(True)
        return True

    def start(self) -> BrokerProbe:
        self._thread = threading.Thread(target=self._run, name="broker-probe", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.probe()
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


class KafkaLogCounter(logging.Handler):
    """Counts kafka-python's WARNING-and-above log records as Kafka errors."""

    def __init__(self, metrics: KafkaMetrics) -> None:
        super().__init__(level=logging.WARNING)
        self.metrics = metrics

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().lower()
        reason: KafkaErrorReason = "timeout" if "timed out" in text or "timeout" in text else (
            "connection_lost"
        )
        self.metrics.kafka_error(reason)

    def install(self, logger: str = "kafka") -> KafkaLogCounter:
        logging.getLogger(logger).addHandler(self)
        return self

    def remove(self, logger: str = "kafka") -> None:
        logging.getLogger(logger).removeHandler(self)
