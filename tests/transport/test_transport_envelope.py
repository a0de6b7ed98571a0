from dataclasses import replace

import pytest

from fraudfl.identity import Allowlist, Identity
from fraudfl.transport.envelope import BROADCAST, Envelope, decode, verify_envelope
from fraudfl.transport.errors import RejectedMessage, RejectReason
from fraudfl.transport.replay import ReplayGuard

FED = "fed1"


@pytest.fixture(scope="module")
def bank_a() -> Identity:
    return Identity.generate("bank-a")


@pytest.fixture(scope="module")
def bank_b() -> Identity:
    return Identity.generate("bank-b")


@pytest.fixture(scope="module")
def allowlist(bank_a: Identity, bank_b: Identity) -> Allowlist:
    allow = Allowlist()
    allow.enroll(bank_a.participant_id, bank_a.public_bytes)
    allow.enroll(bank_b.participant_id, bank_b.public_bytes)
    return allow


def make(sender: Identity, **overrides: object) -> Envelope:
    fields: dict[str, object] = {
        "federation": FED,
        "round": 7,
        "stage": "masked-input",
        "sender": sender.participant_id,
        "recipient": "aggregator",
        "payload_type": "secagg.masked",
        "payload": b"\x00\x01payload\xff" * 10,
    }
    fields.update(overrides)
    return Envelope(**fields).signed_by(sender)  # type: ignore[arg-type]


def check(data: bytes, allowlist: Allowlist, guard: ReplayGuard | None = None) -> Envelope:
    envelope = decode(data)
    verify_envelope(envelope, allowlist, federation=FED, recipient="aggregator", replay_guard=guard)
    return envelope


def reason_of(data: bytes, allowlist: Allowlist, guard: ReplayGuard | None = None) -> str:
    with pytest.raises(RejectedMessage) as info:
        check(data, allowlist, guard)
    return info.value.reason.value


def test_round_trip_keeps_every_field(bank_a: Identity, allowlist: Allowlist) -> None:
    sent = make(bank_a, round=2**40, stage="é-stage", payload=b"")
    got = check(sent.encode(), allowlist)
    assert got == sent
    assert len(got.message_id) == 16


def test_broadcast_is_accepted_by_anyone(bank_a: Identity, allowlist: Allowlist) -> None:
    sent = make(bank_a, recipient=BROADCAST)
    assert check(sent.encode(), allowlist).is_broadcast


def test_message_ids_are_random(bank_a: Identity) -> None:
    assert len({make(bank_a).message_id for _ in range(50)}) == 50


def test_forged_signature(bank_a: Identity, allowlist: Allowlist) -> None:
    sent = make(bank_a)
    forged = replace(sent, signature=bytes(64)).encode()
    assert reason_of(forged, allowlist) == "bad_signature"


def test_any_tampered_field_breaks_the_signature(bank_a: Identity, allowlist: Allowlist) -> None:
    sent = make(bank_a)
    for change in (
        {"round": 8},
        {"stage": "other"},
        {"recipient": "bank-b"},
        {"payload_type": "x"},
        {"payload": sent.payload + b"!"},
        {"message_id": bytes(16)},
        {"timestamp_ms": sent.timestamp_ms + 1},
        {"flags": 1},
    ):
        tampered = replace(sent, **change).encode()  # type: ignore[arg-type]
        assert reason_of(tampered, allowlist) == "bad_signature", change


def test_flipped_payload_bit(bank_a: Identity, allowlist: Allowlist) -> None:
    data = bytearray(make(bank_a).encode())
    data[-70] ^= 0x01
    assert reason_of(bytes(data), allowlist) == "bad_signature"


def test_unknown_sender(allowlist: Allowlist) -> None:
    stranger = Identity.generate("bank-z")
    assert reason_of(make(stranger).encode(), allowlist) == "unknown_sender"


def test_impersonation_with_own_key(bank_b: Identity, allowlist: Allowlist) -> None:
    # bank-b claims to be bank-a and signs with its own (enrolled) key.
    impostor = Identity("bank-a", bank_b.private_key)
    assert reason_of(make(impostor).encode(), allowlist) == "bad_signature"


def test_wrong_federation(bank_a: Identity, allowlist: Allowlist) -> None:
    data = make(bank_a, federation="other-fed").encode()
    assert reason_of(data, allowlist) == "wrong_federation"


def test_wrong_recipient(bank_a: Identity, allowlist: Allowlist) -> None:
    data = make(bank_a, recipient="bank-b").encode()
    assert reason_of(data, allowlist) == "wrong_recipient"


def test_replay_is_rejected_after_first_acceptance(bank_a: Identity, allowlist: Allowlist) -> None:
    guard = ReplayGuard()
    data = make(bank_a).encode()
    check(data, allowlist, guard)
    assert reason_of(data, allowlist, guard) == "replay"


def test_forgery_does_not_poison_replay_guard(bank_a: Identity, allowlist: Allowlist) -> None:
    guard = ReplayGuard()
    genuine = make(bank_a)
    forged = replace(genuine, signature=bytes(64)).encode()
    assert reason_of(forged, allowlist, guard) == "bad_signature"
    check(genuine.encode(), allowlist, guard)


def test_another_sender_cannot_burn_a_message_id(
    bank_a: Identity, bank_b: Identity, allowlist: Allowlist
) -> None:
    guard = ReplayGuard()
    genuine = make(bank_a)
    squatter = make(bank_b, message_id=genuine.message_id)  # copied from the topic
    check(squatter.encode(), allowlist, guard)
    check(genuine.encode(), allowlist, guard)
    assert reason_of(genuine.encode(), allowlist, guard) == "replay"


@pytest.mark.parametrize("cut", [0, 1, 4, 10, 38, 45, 60, -65, -1])
def test_truncated(bank_a: Identity, allowlist: Allowlist, cut: int) -> None:
    data = make(bank_a).encode()
    assert reason_of(data[:cut], allowlist) == "malformed"


def test_trailing_bytes(bank_a: Identity, allowlist: Allowlist) -> None:
    assert reason_of(make(bank_a).encode() + b"\x00", allowlist) == "malformed"


def test_garbage(allowlist: Allowlist) -> None:
    import os

    for _ in range(200):
        data = os.urandom(int.from_bytes(os.urandom(1)) + 1)
        assert reason_of(data, allowlist) in {"malformed", "unsupported_version"}


def test_bad_magic_version_and_flags(bank_a: Identity, allowlist: Allowlist) -> None:
    data = make(bank_a).encode()
    assert reason_of(b"XXXX" + data[4:], allowlist) == "malformed"
    assert reason_of(data[:4] + b"\x02" + data[5:], allowlist) == "unsupported_version"
    assert reason_of(data[:5] + b"\x80" + data[6:], allowlist) == "malformed"


def test_oversized_payload(bank_a: Identity) -> None:
    data = make(bank_a, payload=b"x" * 2000).encode()
    with pytest.raises(RejectedMessage) as info:
        decode(data, max_payload_bytes=1000)
    assert info.value.reason is RejectReason.TOO_LARGE


def test_invalid_utf8_field(bank_a: Identity, allowlist: Allowlist) -> None:
    data = bytearray(make(bank_a).encode())
    start = 38 + 1  # first byte of the federation id
    data[start] = 0xFF
    assert reason_of(bytes(data), allowlist) == "malformed"


def test_sign_as_someone_else_is_refused(bank_a: Identity) -> None:
    envelope = Envelope(FED, 1, "s", "bank-b", "aggregator", "t", b"")
    with pytest.raises(ValueError):
        envelope.signed_by(bank_a)


def test_unsigned_cannot_be_encoded() -> None:
    with pytest.raises(ValueError):
        Envelope(FED, 1, "s", "bank-b", "aggregator", "t", b"").encode()


def test_replay_guard_serialises_and_stays_bounded() -> None:
    guard = ReplayGuard(capacity=3)
    ids = [bytes([i]) * 16 for i in range(5)]
    for i in ids:
        assert guard.add(i)
    assert len(guard) == 3
    assert ids[0] not in guard and ids[4] in guard
    restored = ReplayGuard.from_bytes(guard.to_bytes())
    assert not restored.add(ids[3])
    assert restored.add(ids[0])
    with pytest.raises(RejectedMessage):
        ReplayGuard.from_bytes(guard.to_bytes()[:-1])
