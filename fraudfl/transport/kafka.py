"""The Kafka transport on kafka-python, for Apache Kafka in production and Tansu embedded.

Settings follow the shared broker notes: ``acks=all``; request and fetch sizes far above the
chunk size; explicit ``assign()`` with ``group_id=None`` and no auto-commit, so positions are the
service's own and go into its checkpoint; ``auto_offset_reset="earliest"`` only (Tansu's
end-offset answers are wrong, so "latest", ``end_offsets`` and ``seek_to_end`` are never used).
Fetches return at the first byte (``fetch_min_bytes=1``) and are held at most
``fetch_max_wait_ms`` (100 ms) when empty, because Tansu does not wake a held fetch when data
arrives. The idempotent producer is off because its producer id does not survive a restart of Tansu;
duplicates from retries are dropped by message id at the receiving ``Channel`` instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from os import PathLike, fspath
from typing import Any, Literal

from fraudfl.transport.base import Record, TopicPartition, TopicSpec, Transport
from fraudfl.transport.chunking import DEFAULT_MAX_RECORD_BYTES
from fraudfl.transport.errors import TransportError

log = logging.getLogger(__name__)

_CLIENT_MAX_BYTES = 64 * 1024 * 1024
_TOPIC_EXISTS = 36
_PRUNE_FUTURES_AT = 10_000
_UNKNOWN_TOPIC = 3
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Compression = Literal["none", "lz4", "gzip"]


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach the brokers; TLS/SASL fields are passed through to kafka-python as is.

    Field names match ``fraudfl.config.KafkaSettings``, so ``KafkaSettings(**cfg.model_dump())``
    converts a validated config section.
    """

    bootstrap_servers: str
    security_protocol: SecurityProtocol = "PLAINTEXT"
    ssl_cafile: str | PathLike[str] | None = None
    ssl_certfile: str | PathLike[str] | None = None
    ssl_keyfile: str | PathLike[str] | None = None
    ssl_check_hostname: bool = True
    ssl_password: str | None = field(default=None, repr=False)
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = field(default=None, repr=False)
    sasl_kerberos_service_name: str = "kafka"
    sasl_kerberos_domain_name: str | None = None
    sasl_oauth_token_file: str | PathLike[str] | None = None
    client_id: str | None = None
    # Size limit per record (one chunk); keep below the brokers' message.max.bytes.
    max_message_bytes: int = DEFAULT_MAX_RECORD_BYTES
    compression: Compression = "none"
    replication_factor: int = 1
    request_timeout_ms: int = 120_000
    # How long the broker may hold a fetch that found no data. Tansu does not answer a held
    # fetch when data arrives: with kafka-python's 500 ms default every stage of a secure sum
    # waited ~0.25 s on average. 20 ms was as fast for 10 banks but, with 50 banks polling 50
    # times a second each from one process, slower than 500 ms; 100 ms kept both
    # (benchmarks/secure_sum_stages.py, docs/services.md).
    fetch_max_wait_ms: int = 100

    def common(self) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "client_id": self.client_id or "fraudfl",
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
            "reconnect_backoff_max_ms": 1000,
            # Topics are created explicitly with their partition counts (docs/topics.md).
            "allow_auto_create_topics": False,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            opts["ssl_check_hostname"] = self.ssl_check_hostname
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                value = getattr(self, name)
                if value is not None:
                    opts[name] = fspath(value)
            if self.ssl_password is not None:
                opts["ssl_password"] = self.ssl_password
        if self.security_protocol.startswith("SASL"):
            opts["sasl_mechanism"] = self.sasl_mechanism
            if self.sasl_mechanism == "GSSAPI":
                opts["sasl_kerberos_service_name"] = self.sasl_kerberos_service_name
                if self.sasl_kerberos_domain_name is not None:
                    opts["sasl_kerberos_domain_name"] = self.sasl_kerberos_domain_name
            elif self.sasl_mechanism == "OAUTHBEARER":
                if self.sasl_oauth_token_file is None:
                    raise TransportError("OAUTHBEARER needs sasl_oauth_token_file")
                opts["sasl_oauth_token_provider"] = _file_token_provider(
                    fspath(self.sasl_oauth_token_file)
                )
            else:
                opts["sasl_plain_username"] = self.sasl_plain_username
                opts["sasl_plain_password"] = self.sasl_plain_password
        return opts

    def admin(self) -> dict[str, Any]:
        opts = self.common()
        del opts["allow_auto_create_topics"]
        return opts

    def producer(self) -> dict[str, Any]:
        return {
            **self.common(),
            "acks": "all",
            "enable_idempotence": False,
            "max_request_size": max(_CLIENT_MAX_BYTES, 2 * self.max_message_bytes),
            "linger_ms": 0,
            "delivery_timeout_ms": 300_000,
            "compression_type": None if self.compression == "none" else self.compression,
        }

    def consumer(self) -> dict[str, Any]:
        fetch = max(_CLIENT_MAX_BYTES, 2 * self.max_message_bytes)
        return {
            **self.common(),
            "group_id": None,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "fetch_max_wait_ms": self.fetch_max_wait_ms,
            "fetch_min_bytes": 1,
            "fetch_max_bytes": fetch,
            "max_partition_fetch_bytes": fetch,
            "receive_message_max_bytes": 2 * fetch,
        }


def _file_token_provider(path: str) -> Any:
    """An OAUTHBEARER token provider reading ``path`` at each request (refreshed outside)."""
    from kafka.net.sasl.oauth import AbstractTokenProvider

    class FileTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
        def token(self) -> str:
            try:
                with open(path, encoding="utf-8") as fh:
                    return fh.read().strip()
            except OSError as exc:
                raise TransportError(f"cannot read the OAUTHBEARER token {path}: {exc}") from exc

    return FileTokenProvider()


class KafkaTransport(Transport):
    """A producer, a consumer and an admin client, each created on first use."""

    def __init__(self, settings: KafkaSettings, max_poll_records: int = 500) -> None:
        self.settings = settings
        self.max_poll_records = max_poll_records
        self._producer: Any = None
        self._consumer: Any = None
        self._admin: Any = None
        self._futures: list[Any] = []
        self._acknowledged: dict[TopicPartition, int] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._assigned: list[TopicPartition] = []

    # kafka-python is imported lazily so that in-memory users never load it.
    def _get_producer(self) -> Any:
        if self._producer is None:
            from kafka import KafkaProducer
            from kafka.errors import KafkaError

            try:
                self._producer = KafkaProducer(**self.settings.producer())
            except KafkaError as exc:
                raise TransportError(
                    f"cannot connect a producer to {self.settings.bootstrap_servers}: {exc}"
                ) from exc
        return self._producer

    def _get_consumer(self) -> Any:
        if self._consumer is None:
            from kafka import KafkaConsumer
            from kafka.errors import KafkaError

            try:
                self._consumer = KafkaConsumer(**self.settings.consumer())
            except KafkaError as exc:
                raise TransportError(
                    f"cannot connect a consumer to {self.settings.bootstrap_servers}: {exc}"
                ) from exc
        return self._consumer

    def _get_admin(self) -> Any:
        if self._admin is None:
            from kafka import KafkaAdminClient
            from kafka.errors import KafkaError

            try:
                self._admin = KafkaAdminClient(**self.settings.admin())
            except KafkaError as exc:
                raise TransportError(
                    f"cannot reach the brokers at {self.settings.bootstrap_servers}: {exc}"
                ) from exc
        return self._admin

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        if len(value) > self.settings.max_message_bytes:
            raise TransportError(
                f"record of {len(value)} bytes exceeds max_message_bytes "
                f"{self.settings.max_message_bytes}; chunk it first"
            )
        from kafka.errors import KafkaError

        if len(self._futures) >= _PRUNE_FUTURES_AT:
            # Without flushes the list would grow forever; failures stay for flush() to report.
            self._futures = [f for f in self._futures if not f.succeeded()]
        try:
            self._futures.append(self._get_producer().send(topic, key=key, value=value))
        except KafkaError as exc:
            raise TransportError(f"cannot send to {topic}: {exc}") from exc

    def flush(self, timeout_s: float | None = None) -> None:
        if self._producer is None:
            return
        from kafka.errors import KafkaError

        futures, self._futures = self._futures, []
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise TransportError(f"flush failed: {exc}") from exc
        failed = [f.exception for f in futures if f.failed()]
        if failed or any(not f.is_done for f in futures):
            raise TransportError(
                f"{len(failed)} of {len(futures)} records were not delivered"
                + (f": {failed[0]}" if failed else " in time")
            )
        acked = self._acknowledged
        for f in futures:
            meta = f.value
            tp = TopicPartition(meta.topic, meta.partition)
            if meta.offset >= acked.get(tp, 0):
                acked[tp] = meta.offset + 1

    def acknowledged(self) -> dict[TopicPartition, int]:
        return dict(self._acknowledged)

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        from kafka import TopicPartition as KafkaTP

        wanted = list(dict.fromkeys(partitions))
        self._get_consumer().assign([KafkaTP(tp.topic, tp.partition) for tp in wanted])
        self._positions = {tp: off for tp, off in self._positions.items() if tp in wanted}
        # kafka-python keeps positions across re-assignment only for partitions it had; restore
        # ours so that an assignment change never moves a partition we were already reading.
        for tp, offset in self._positions.items():
            self._consumer.seek(KafkaTP(tp.topic, tp.partition), offset)
        self._assigned = wanted

    def poll(self, timeout_s: float) -> list[Record]:
        from kafka.errors import KafkaError

        consumer = self._get_consumer()
        try:
            batches = consumer.poll(
                timeout_ms=int(timeout_s * 1000), max_records=self.max_poll_records
            )
        except KafkaError as exc:
            raise TransportError(f"poll failed: {exc}") from exc
        out: list[Record] = []
        for ktp, records in batches.items():
            tp = TopicPartition(ktp.topic, ktp.partition)
            for r in records:
                out.append(Record(tp.topic, tp.partition, r.offset, r.key, r.value))
            if records:
                self._positions[tp] = records[-1].offset + 1
        return out

    def position(self) -> dict[TopicPartition, int]:
        from kafka import TopicPartition as KafkaTP

        if self._consumer is None:
            return {}
        out: dict[TopicPartition, int] = {}
        for tp in self._assigned:
            offset = self._positions.get(tp)
            if offset is None:
                # Never read and never sought: the start of the log ("earliest").
                offset = self._consumer.position(
                    KafkaTP(tp.topic, tp.partition),
                    timeout_ms=self.settings.request_timeout_ms,
                )
                if offset is None:
                    raise TransportError(f"no position for {tp.topic}[{tp.partition}] yet")
            out[tp] = offset
        return out

    def seek(self, offsets: Mapping[TopicPartition, int]) -> None:
        from kafka import TopicPartition as KafkaTP

        consumer = self._get_consumer()
        assigned = set(self._assigned)
        for tp, offset in offsets.items():
            if tp not in assigned:
                raise TransportError(f"{tp.topic}[{tp.partition}] is not assigned")
            consumer.seek(KafkaTP(tp.topic, tp.partition), offset)
            self._positions[tp] = offset

    def partitions_for(self, topic: str) -> int:
        admin = self._get_admin()
        deadline = time.monotonic() + 10.0
        while True:
            described = admin.describe_topics([topic])
            entry = described[0] if described else None
            if entry and entry.get("error_code", 0) == 0 and entry.get("partitions"):
                return len(entry["partitions"])
            if time.monotonic() > deadline:
                raise TransportError(f"topic {topic!r} does not exist")
            time.sleep(0.1)

    def create_topics(self, specs: Iterable[TopicSpec]) -> None:
        specs = list(specs)
        if not specs:
            return
        request = {
            s.name: {
                "num_partitions": s.partitions,
                "replication_factor": self.settings.replication_factor,
            }
            for s in specs
        }
        result = self._get_admin().create_topics(request, raise_errors=False)
        errors = [
            f"{t['name']}: {t.get('error_message') or t['error_code']}"
            for t in result.get("topics", [])
            if t["error_code"] not in (0, _TOPIC_EXISTS)
        ]
        if errors:
            raise TransportError("cannot create topics: " + "; ".join(errors))

    def delete_topics(self, names: Iterable[str]) -> None:
        names = list(names)
        if not names:
            return
        result = self._get_admin().delete_topics(names, raise_errors=False)
        errors = [
            f"{t.get('name')}: {t['error_code']}"
            for t in result.get("topics", [])
            if t["error_code"] not in (0, _UNKNOWN_TOPIC)
        ]
        if errors:
            raise TransportError("cannot delete topics: " + "; ".join(errors))

    def list_topics(self) -> set[str]:
        from kafka.errors import KafkaError

        try:
            return set(self._get_admin().list_topics())
        except KafkaError as exc:
            raise TransportError(f"cannot list topics: {exc}") from exc

    def highwater(self) -> dict[TopicPartition, int]:
        # The consumer's view from its latest fetch (Tansu's end_offsets() is wrong, see
        # docs/topics.md): None until a partition has been fetched once.
        from kafka import TopicPartition as KafkaTP

        if self._consumer is None:
            return {}
        out: dict[TopicPartition, int] = {}
        for tp in self._assigned:
            end = self._consumer.highwater(KafkaTP(tp.topic, tp.partition))
            if end is not None:
                out[tp] = int(end)
        return out

    def replication_of(self, topic: str) -> int | None:
        from kafka.errors import KafkaError

        try:
            described = self._get_admin().describe_topics([topic])
        except KafkaError as exc:
            raise TransportError(f"cannot describe {topic}: {exc}") from exc
        partitions = described[0].get("partitions") if described else None
        counts = [len(p.get("replicas") or ()) for p in partitions or ()]
        # Tansu (the embedded broker) describes no replicas at all: unknown, not zero.
        return min(counts) if counts and min(counts) > 0 else None

    def close(self) -> None:
        # Deliver what was queued before letting go of the producer.
        for client in (self._producer, self._consumer, self._admin):
            if client is not None:
                try:
                    client.close()
                except Exception:  # closing is best effort; the process may be exiting
                    log.debug("error closing %s", type(client).__name__, exc_info=True)
        self._producer = self._consumer = self._admin = None
