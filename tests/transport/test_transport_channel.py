import os
import threading
from dataclasses import dataclass

import pytest

from fraudfl.errors import FraudflError
from fraudfl.identity import Allowlist, Identity
from fraudfl.transport import (
    BROADCAST,
    Channel,
    ChannelState,
    EncryptionKey,
    MemoryBroker,
    MemoryTransport,
    RejectReason,
    TopicLayout,
    TopicPartition,
    TransportError,
)
from fraudfl.transport.chunking import split
from fraudfl.transport.envelope import Envelope

FED = "fed1"
PARTICIPANTS = ("aggregator", "bank-a", "bank-b", "bank-c")


@dataclass
class Party:
    identity: Identity
    enc: EncryptionKey


@pytest.fixture(scope="module")
def parties() -> dict[str, Party]:
    return {p: Party(Identity.generate(p), EncryptionKey.generate(p)) for p in PARTICIPANTS}


@pytest.fixture(scope="module")
def allowlist(parties: dict[str, Party]) -> Allowlist:
    allow = Allowlist()
    for pid, party in parties.items():
        allow.enroll(pid, party.identity.public_bytes)
        allow.enroll_encryption_key(pid, party.enc.public_bytes)
    return allow


@pytest.fixture
def broker() -> MemoryBroker:
    b = MemoryBroker()
    TopicLayout(FED).create(MemoryTransport(b), ["bank-a", "bank-b", "bank-c"])
    return b


def channel(
    broker: MemoryBroker,
    parties: dict[str, Party],
    allowlist: Allowlist,
    pid: str,
    **kw: object,
) -> Channel:
    return Channel(
        MemoryTransport(broker),
        parties[pid].identity,
        allowlist,
        FED,
        encryption_key=parties[pid].enc,
        **kw,  # type: ignore[arg-type]
    )


def drain(ch: Channel, polls: int = 3) -> list[bytes]:
    out = []
    for _ in range(polls):
        out.extend(m.payload for m in ch.receive(0.01))
    return out


def test_layout_names_and_partitions(broker: MemoryBroker) -> None:
    layout = TopicLayout(FED)
    assert layout.control == "fraudfl.fed1.control"
    assert layout.to_aggregator == "fraudfl.fed1.to-aggregator"
    assert layout.inbox("bank-a") == "fraudfl.fed1.bank.bank-a"
    assert layout.models == "fraudfl.fed1.models"
    assert broker.partitions(layout.control) == 1
    assert len(broker.topics()) == 6
    with pytest.raises(FraudflError):
        layout.inbox("bank a/../x")
    with pytest.raises(FraudflError):
        TopicLayout("fed.1")
    t = MemoryTransport(broker)
    layout.create(t, ["bank-a"])  # idempotent
    assert layout.ensure(t, ["bank-a"]) == []
    assert layout.ensure(t, ["bank-a", "bank-z"]) == [layout.inbox("bank-z")]
    assert len(broker.topics()) == 7
    broker.create_topic("fraudfl.fed2.control", 3)
    with pytest.raises(FraudflError, match=r"fraudfl\.fed2\.control has 3 partitions, expected 1"):
        TopicLayout("fed2").ensure(t, ["bank-a"])

    class SingleReplica(MemoryTransport):
        """A broker reporting one replica per partition (Apache Kafka describes replicas)."""

        def replication_of(self, topic: str) -> int | None:
            return 1

    with pytest.raises(FraudflError, match=r"replication factor 1, below .* = 3"):
        layout.ensure(SingleReplica(broker), ["bank-a"], replication_factor=3)
    assert layout.ensure(SingleReplica(broker), ["bank-a"], replication_factor=1) == []


def test_large_sealed_message_chunked_end_to_end(
    broker: MemoryBroker, parties: dict[str, Party], allowlist: Allowlist
) -> None:
    layout = TopicLayout(FED)
    bank = channel(broker, parties, allowlist, "bank-a", max_record_bytes=64 * 1024)
    agg = channel(broker, parties, allowlist, "aggregator")
    agg.listen([layout.to_aggregator])
    payload = os.urandom(1_000_000)
    sent = bank.send(
        layout.to_aggregator,
        recipient="aggregator",
        round=3,
        stage="masked-input",
        payload_type="secagg.masked",
        payload=payload,
        seal_to=True,
    )
    records = broker.records(layout.to_aggregator)
    assert len(records) == 16 and all(len(r.value) <= 64 * 1024 for r in records)
    # The broker never sees the plaintext.
    assert payload[:1000] not in b"".join(r.value for r in records)
    got = []
    while len(got) < 1:
        got.extend(agg.receive(0.1))
    assert got[0].payload == payload
    assert got[0].sender == "bank-a" and got[0].round == 3 and got[0].stage == "masked-input"
    assert got[0].message_id == sent.message_id
    assert not agg.rejections


def test_sealed_broadcast_readable_only_by_listed_banks(
    broker: MemoryBroker, parties: dict[str, Party], allowlist: Allowlist
) -> None:
    layout = TopicLayout(FED)
    agg = channel(broker, parties, allowlist, "aggregator")
    agg.send(
        layout.models,
        recipient=BROADCAST,
        round=1,
        stage="model",
        payload_type="model.v1",
        payload=b"weights" * 1000,
        seal_to=["bank-a", "bank-b"],
    )
    readers = {p: channel(broker, parties, allowlist, p) for p in ("bank-a", "bank-b", "bank-c")}
    for r in readers.values():
        r.listen([layout.models])
    assert drain(readers["bank-a"]) == [b"weights" * 1000]
    assert drain(readers["bank-b"]) == [b"weights" * 1000]
    assert drain(readers["bank-c"]) == []
    assert readers["bank-c"].rejections == {RejectReason.UNDECRYPTABLE: 1}


def test_every_message_delivered_twice_gives_same_result(
    parties: dict[str, Party], allowlist: Allowlist
) -> None:
    layout = TopicLayout(FED)
    once, twice = MemoryBroker(), MemoryBroker()
    for b in (once, twice):
        layout.create(MemoryTransport(b), [])
    payloads = [os.urandom(n) for n in (10, 5000, 20_000)]
    bank = channel(once, parties, allowlist, "bank-a", max_record_bytes=2048)
    for i, p in enumerate(payloads):
        bank.send(
            layout.to_aggregator,
            recipient="aggregator",
            round=1,
            stage="s",
            payload_type="t",
            payload=p,
            seal_to=i % 2 == 0,
        )
    records = once.records(layout.to_aggregator)
    # Each record right after itself, then the whole log again (a redelivery after a restart).
    copier = MemoryTransport(twice)
    for r in [x for y in records for x in (y, y)] + records:
        copier.send(layout.to_aggregator, r.key, r.value)
    results = {}
    for name, b in (("once", once), ("twice", twice)):
        agg = channel(b, parties, allowlist, "aggregator")
        agg.listen([layout.to_aggregator])
        results[name] = drain(agg)
    assert results["once"] == results["twice"] == payloads


def test_rejections_are_counted_by_reason(
    broker: MemoryBroker, parties: dict[str, Party], allowlist: Allowlist
) -> None:
    layout = TopicLayout(FED)
    topic = layout.to_aggregator
    seen: list[RejectReason] = []
    agg = channel(
        broker, parties, allowlist, "aggregator", on_reject=lambda r, d, rec: seen.append(r)
    )
    agg.listen([topic])
    raw = MemoryTransport(broker)

    def push(env: Envelope) -> None:
        for frame in split(env.encode(), env.message_id):
            raw.send(topic, None, frame)

    good = Envelope(FED, 1, "s", "bank-a", "aggregator", "t", b"ok")
    stranger = Identity.generate("bank-z")
    push(Envelope(FED, 1, "s", "bank-z", "aggregator", "t", b"x").signed_by(stranger))
    push(
        Envelope(FED, 1, "s", "bank-a", "aggregator", "t", b"x").signed_by(
            Identity("bank-a", parties["bank-b"].identity.private_key)
        )
    )
    push(
        Envelope("fed2", 1, "s", "bank-a", "aggregator", "t", b"x").signed_by(
            parties["bank-a"].identity
        )
    )
    push(Envelope(FED, 1, "s", "bank-a", "bank-b", "t", b"x").signed_by(parties["bank-a"].identity))
    raw.send(topic, None, b"garbage")
    push(good.signed_by(parties["bank-a"].identity))
    assert drain(agg) == [b"ok"]
    assert seen == [
        RejectReason.UNKNOWN_SENDER,
        RejectReason.BAD_SIGNATURE,
        RejectReason.WRONG_FEDERATION,
        RejectReason.WRONG_RECIPIENT,
        RejectReason.MALFORMED,
    ]
    assert sum(agg.rejections.values()) == 5

    # Re-reading the log from the start (as after a restart) replays the accepted message.
    agg.restore(ChannelState({TopicPartition(topic, 0): 0}, agg.replay_guard.to_bytes()))
    assert drain(agg) == []
    assert agg.rejections[RejectReason.REPLAY] == 1


def test_checkpoint_never_passes_a_partial_message_and_resumes_exactly_once(
    broker: MemoryBroker, parties: dict[str, Party], allowlist: Allowlist
) -> None:
    layout = TopicLayout(FED)
    topic = layout.to_aggregator
    bank = channel(broker, parties, allowlist, "bank-a", max_record_bytes=1024)
    raw = MemoryTransport(broker)
    first = bank.send(
        topic, recipient="aggregator", round=1, stage="s", payload_type="t", payload=b"a"
    )
    big = Envelope(FED, 1, "s", "bank-a", "aggregator", "t", os.urandom(5000)).signed_by(
        parties["bank-a"].identity
    )
    frames = split(big.encode(), big.message_id, 1024)
    for frame in frames[:3]:
        raw.send(topic, b"bank-a", frame)

    agg = channel(broker, parties, allowlist, "aggregator")
    agg.listen([topic])
    assert drain(agg) == [first.payload]
    state = ChannelState.from_bytes(agg.checkpoint().to_bytes())
    assert state.offsets == {TopicPartition(topic, 0): 1}  # held at the first chunk of `big`
    assert agg.transport.position() == {TopicPartition(topic, 0): 4}

    for frame in frames[3:]:
        raw.send(topic, b"bank-a", frame)
    bank.send(topic, recipient="aggregator", round=1, stage="s", payload_type="t", payload=b"c")

    restarted = channel(broker, parties, allowlist, "aggregator")
    restarted.restore(state)
    restarted.listen([topic])
    assert drain(restarted) == [big.payload, b"c"]
    assert not restarted.rejections


def test_send_requires_encryption_key_in_allowlist(
    broker: MemoryBroker, parties: dict[str, Party]
) -> None:
    allow = Allowlist()
    allow.enroll("bank-a", parties["bank-a"].identity.public_bytes)
    bank = Channel(MemoryTransport(broker), parties["bank-a"].identity, allow, FED)
    with pytest.raises(FraudflError, match="no encryption key for 'aggregator'"):
        bank.send(
            TopicLayout(FED).to_aggregator,
            recipient="aggregator",
            round=1,
            stage="s",
            payload_type="t",
            payload=b"x",
            seal_to=True,
        )


def test_corrupt_channel_state() -> None:
    with pytest.raises(FraudflError):
        ChannelState.from_bytes(b"FFLS\x01garbage")


def test_memory_transport_semantics(broker: MemoryBroker) -> None:
    t = MemoryTransport(broker)
    with pytest.raises(TransportError):
        t.send("nope", None, b"x")
    t.create_topics([])
    broker.create_topic("multi", 4)
    for i in range(40):
        t.send("multi", f"k{i % 5}".encode(), str(i).encode())
    t.assign_topics(["multi"])
    got = []
    while batch := t.poll(0.01):
        got.extend(batch)
    assert len(got) == 40
    # Same key, same partition, in send order.
    by_key: dict[bytes | None, list[int]] = {}
    for r in got:
        by_key.setdefault(r.key, []).append(int(r.value))
    assert all(v == sorted(v) for v in by_key.values())
    assert len({(r.key, r.partition) for r in got}) == 5
    t.seek({TopicPartition("multi", got[0].partition): 0})
    assert t.poll(0.01)


def test_memory_poll_wakes_on_send_from_another_thread(broker: MemoryBroker) -> None:
    reader = MemoryTransport(broker)
    topic = TopicLayout(FED).control
    reader.assign_topics([topic])
    timer = threading.Timer(0.05, lambda: MemoryTransport(broker).send(topic, None, b"hi"))
    timer.start()
    records = reader.poll(5.0)
    timer.join()
    assert [r.value for r in records] == [b"hi"]


def test_forged_chunk_flood_does_not_evict_a_signed_message(
    broker: MemoryBroker, parties: dict[str, Party], allowlist: Allowlist
) -> None:
    """Chunk frames are unsigned: 1,024 forged frames (206 kB, no key, or claiming the real
    sender) arriving mid-transfer used to evict the genuine message being reassembled."""
    layout = TopicLayout(FED)
    scratch = "scratch"
    broker.create_topic(scratch, 1)
    bank = channel(broker, parties, allowlist, "bank-a", max_record_bytes=64 * 1024)
    payload = os.urandom(300_000)
    bank.send(scratch, recipient="aggregator", round=1, stage="masked-input",
              payload_type="secagg.masked", payload=payload, seal_to=True)
    real = broker.records(scratch)
    assert len(real) > 1
    attacker = MemoryTransport(broker)
    attacker.send(layout.to_aggregator, real[0].key, real[0].value)
    for i in range(1024):
        forged = split(os.urandom(300), i.to_bytes(16, "big"), 200)[0]
        attacker.send(layout.to_aggregator, None if i % 2 else b"bank-a", forged)
    for r in real[1:]:
        attacker.send(layout.to_aggregator, r.key, r.value)
    agg = channel(broker, parties, allowlist, "aggregator")
    agg.listen([layout.to_aggregator])
    got = []
    for _ in range(20):
        got.extend(agg.receive(0.01))
    assert [m.payload for m in got] == [payload]
    assert agg.rejections[RejectReason.TOO_LARGE] > 900  # the flood, refused
