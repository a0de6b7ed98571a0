"""The transport against a real (Tansu) broker: chunking, resumable offsets, broker restarts."""

import os
import time
from collections.abc import Iterator

import pytest

from fraudfl.identity import Allowlist, Identity
from fraudfl.transport import Channel, ChannelState, EncryptionKey, TopicLayout, TopicPartition
from fraudfl.transport.broker import EmbeddedBroker
from fraudfl.transport.errors import RejectReason
from fraudfl.transport.kafka import KafkaSettings, KafkaTransport

pytestmark = pytest.mark.integration

FED = "itest"
BANKS = ("bank-a", "bank-b")
LIMIT = 900 * 1024


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[Identity, EncryptionKey]]:
    return {p: (Identity.generate(p), EncryptionKey.generate(p)) for p in ("aggregator", *BANKS)}


@pytest.fixture(scope="module")
def allowlist(keys: dict[str, tuple[Identity, EncryptionKey]]) -> Allowlist:
    allow = Allowlist()
    for pid, (ident, enc) in keys.items():
        allow.enroll(pid, ident.public_bytes)
        allow.enroll_encryption_key(pid, enc.public_bytes)
    return allow


class Parties:
    def __init__(
        self, b: EmbeddedBroker, keys: dict[str, tuple[Identity, EncryptionKey]], allow: Allowlist
    ) -> None:
        self.settings = KafkaSettings(bootstrap_servers=b.bootstrap_servers)
        self.keys = keys
        self.allow = allow
        self.transports: list[KafkaTransport] = []

    def channel(self, pid: str, **kw: object) -> Channel:
        transport = KafkaTransport(self.settings, **kw)  # type: ignore[arg-type]
        self.transports.append(transport)
        ident, enc = self.keys[pid]
        return Channel(transport, ident, self.allow, FED, encryption_key=enc)

    def close(self) -> None:
        for t in self.transports:
            t.close()


@pytest.fixture
def parties(
    broker: EmbeddedBroker, keys: dict[str, tuple[Identity, EncryptionKey]], allowlist: Allowlist
) -> Iterator[Parties]:
    p = Parties(broker, keys, allowlist)
    yield p
    p.close()


def receive_until(ch: Channel, count: int, timeout_s: float = 30.0) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        got.extend(m.payload for m in ch.receive(0.2))
    return got


def send(ch: Channel, topic: str, payload: bytes, **kw: object) -> None:
    ch.send(
        topic,
        recipient="aggregator",
        round=1,
        stage="masked-input",
        payload_type="test",
        payload=payload,
        **kw,  # type: ignore[arg-type]
    )


def test_topics_created_idempotently_and_verified(parties: Parties) -> None:
    layout = TopicLayout(FED)
    admin = KafkaTransport(parties.settings)
    parties.transports.append(admin)
    specs = layout.create(admin, BANKS)
    layout.create(admin, BANKS)  # already there: fine
    assert {s.name for s in specs} <= admin.list_topics()
    assert admin.partitions_for(layout.control) == 1
    assert admin.partitions_for(layout.inbox("bank-a")) == 1
    assert layout.ensure(admin, BANKS) == []  # nothing missing, nothing deleted
    # Tansu does not report replicas, so there is nothing to compare (Apache Kafka does).
    assert admin.replication_of(layout.control) is None
    assert layout.ensure(admin, [*BANKS, "bank-new"]) == [layout.inbox("bank-new")]
    assert {s.name for s in specs} <= admin.list_topics()


def test_five_megabyte_sealed_payload_chunked_under_900kb(parties: Parties) -> None:
    layout = TopicLayout(FED)
    bank = parties.channel("bank-a")
    layout.create(bank.transport, BANKS)
    agg = parties.channel("aggregator")
    agg.listen([layout.to_aggregator])
    payload = os.urandom(5 * 1024 * 1024)
    send(bank, layout.to_aggregator, payload, seal_to=True)
    bank.flush(30)
    got = receive_until(agg, 1)
    assert got == [payload]
    tp = TopicPartition(layout.to_aggregator, 0)
    assert agg.transport.position()[tp] == 6  # 5 MiB + overhead in 900 KiB chunks
    assert not agg.rejections


def test_self_tracked_offsets_survive_consumer_restart(parties: Parties) -> None:
    layout = TopicLayout(FED)
    bank = parties.channel("bank-a")
    layout.create(bank.transport, BANKS)
    # Messages of 1-3 chunks (64 KiB records), read 2 records per poll so that the checkpoint
    # lands in the middle of a multi-chunk message.
    bank.max_record_bytes = 64 * 1024
    payloads = [os.urandom(size) for size in [10, 100_000, 5, 150_000, 70_000, 1, 20_000, 3] * 2]
    for p in payloads:
        send(bank, layout.to_aggregator, p)
    bank.flush(30)

    first = parties.channel("aggregator", max_poll_records=2)
    first.listen([layout.to_aggregator])
    tp = TopicPartition(layout.to_aggregator, 0)
    seen: list[bytes] = []
    deadline = time.monotonic() + 30
    # Stop (as if crashing right after a checkpoint) while a message is half reassembled.
    while time.monotonic() < deadline:
        seen.extend(m.payload for m in first.receive(0.2))
        checkpoint = first.checkpoint()
        if seen and checkpoint.offsets[tp] < first.transport.position()[tp]:
            break
    else:
        pytest.fail("never stopped mid-message")
    state = ChannelState.from_bytes(checkpoint.to_bytes())
    first.transport.close()

    second = parties.channel("aggregator", max_poll_records=2)
    second.restore(state)
    second.listen([layout.to_aggregator])
    rest = receive_until(second, len(payloads) - len(seen))
    assert seen + rest == payloads  # nothing lost, nothing handled twice, order kept
    assert set(second.rejections) <= {RejectReason.REPLAY}


@pytest.fixture
def durable_parties(
    durable_broker: EmbeddedBroker,
    keys: dict[str, tuple[Identity, EncryptionKey]],
    allowlist: Allowlist,
) -> Iterator[Parties]:
    p = Parties(durable_broker, keys, allowlist)
    yield p
    p.close()


def test_durable_broker_restart_mid_stream(
    durable_broker: EmbeddedBroker, durable_parties: Parties
) -> None:
    layout = TopicLayout(FED)
    bank = durable_parties.channel("bank-b")
    layout.create(bank.transport, BANKS)
    agg = durable_parties.channel("aggregator")
    agg.listen([layout.to_aggregator])
    payloads = [os.urandom(50_000 + i) for i in range(10)]

    for p in payloads[:5]:
        send(bank, layout.to_aggregator, p, seal_to=True)
    bank.flush(30)
    got = receive_until(agg, 3)

    durable_broker.stop_broker()
    for p in payloads[5:8]:  # queued by the producer while the broker is down
        send(bank, layout.to_aggregator, p, seal_to=True)
    got += receive_until(agg, 1, timeout_s=0.5)
    time.sleep(1)
    durable_broker.start()

    for p in payloads[8:]:
        send(bank, layout.to_aggregator, p, seal_to=True)
    bank.flush(60)
    got += receive_until(agg, len(payloads) - len(got), timeout_s=60)
    assert got == payloads

    # Records from before the restart are still on the broker for a new reader.
    fresh = durable_parties.channel("aggregator")
    fresh.listen([layout.to_aggregator])
    assert receive_until(fresh, len(payloads)) == payloads


def test_broker_cli_serves_until_interrupted() -> None:
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "fraudfl", "broker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("broker ready: bootstrap servers 127.0.0.1:")
        bootstrap = line.rsplit(" ", 1)[1].strip()
        client = KafkaTransport(KafkaSettings(bootstrap_servers=bootstrap))
        try:
            TopicLayout(FED).create(client, BANKS)
            assert TopicLayout(FED).control in client.list_topics()
        finally:
            client.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The broker child went down with the CLI: nothing listens on the port any more.
    import socket

    host, port = bootstrap.split(":")
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=1).close()


def test_broker_dies_with_a_killed_parent() -> None:
    import subprocess
    import sys

    script = (
        "import sys, time\n"
        "from fraudfl.transport.broker import EmbeddedBroker\n"
        "b = EmbeddedBroker().start()\n"
        "print(b.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.kill()  # SIGKILL: no atexit, no cleanup in the parent
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{child}/stat") as fh:
                if fh.read().split()[2] == "Z":
                    break  # exited, waiting to be reaped by init
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        os.kill(child, 9)
        pytest.fail("the broker outlived its parent")


def test_every_record_produced_twice_is_received_once(parties: Parties) -> None:
    from tests.transport.faults import DuplicatingTransport

    layout = TopicLayout(FED)
    ident, enc = parties.keys["bank-a"]
    raw = KafkaTransport(parties.settings)
    parties.transports.append(raw)
    bank = Channel(
        DuplicatingTransport(raw),
        ident,
        parties.allow,
        FED,
        encryption_key=enc,
        max_record_bytes=64 * 1024,
    )
    layout.create(raw, BANKS)
    payloads = [os.urandom(n) for n in (1, 200_000, 3000)]
    for p in payloads:
        send(bank, layout.to_aggregator, p, seal_to=True)
    bank.flush(30)
    agg = parties.channel("aggregator")
    agg.listen([layout.to_aggregator])
    assert receive_until(agg, len(payloads)) == payloads
    assert agg.receive(0.5) == []  # the duplicates complete nothing further
    assert agg.transport.position()[TopicPartition(layout.to_aggregator, 0)] == 2 * (1 + 4 + 1)


def test_lz4_compressed_records(parties: Parties) -> None:
    from dataclasses import replace

    layout = TopicLayout(FED)
    ident, enc = parties.keys["bank-a"]
    lz4 = KafkaTransport(replace(parties.settings, compression="lz4"))
    parties.transports.append(lz4)
    layout.create(lz4, BANKS)
    bank = Channel(lz4, ident, parties.allow, FED, encryption_key=enc)
    payload = bytes(2_000_000)  # compressible, unlike model weights
    send(bank, layout.to_aggregator, payload)
    bank.flush(30)
    agg = parties.channel("aggregator")
    agg.listen([layout.to_aggregator])
    assert receive_until(agg, 1) == [payload]


def test_second_broker_on_a_taken_port_is_refused(broker: EmbeddedBroker) -> None:
    from fraudfl.errors import FraudflError

    with pytest.raises(FraudflError, match="already in use"):
        EmbeddedBroker(broker.port).start()
    broker.restart()  # the port is ours again after a restart
    assert broker.running
