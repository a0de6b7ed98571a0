"""Untrusted bytes only ever end in a RejectedMessage (never another exception)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from fraudfl.identity import Allowlist, Identity
from fraudfl.transport.chunking import Reassembler, split
from fraudfl.transport.envelope import Envelope, decode, verify_envelope
from fraudfl.transport.errors import RejectedMessage
from fraudfl.transport.sealing import EncryptionKey, open_sealed, seal

SENDER = Identity.generate("bank-a")
ALLOW = Allowlist({"bank-a": SENDER.public_bytes})
ENC = EncryptionKey.generate("bank-a")
VALID = Envelope("fed", 1, "s", "bank-a", "aggregator", "t", b"payload" * 20).signed_by(SENDER)
ENCODED = VALID.encode()
SEALED = seal(b"secret" * 10, {"bank-a": ENC.public_bytes}, b"aad")
FRAMES = split(ENCODED, VALID.message_id, 150)


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        out[pos % len(out)] = value
    return bytes(out[: cut % (len(out) + 1)])


edits = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4)


@settings(max_examples=200, deadline=None)
@given(edits, st.integers(0, 10_000))
def test_mutated_envelope_is_rejected_or_identical(e: list[tuple[int, int]], cut: int) -> None:
    data = mutate(ENCODED, e, cut)
    try:
        envelope = decode(data)
        verify_envelope(envelope, ALLOW, federation="fed", recipient="aggregator")
    except RejectedMessage:
        return
    assert data == ENCODED


@settings(max_examples=200, deadline=None)
@given(edits, st.integers(0, 10_000))
def test_mutated_sealed_payload_is_rejected_or_identical(
    e: list[tuple[int, int]], cut: int
) -> None:
    data = mutate(SEALED, e, cut)
    try:
        plaintext = open_sealed(data, ENC, b"aad")
    except RejectedMessage:
        return
    assert data == SEALED and plaintext == b"secret" * 10


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(FRAMES) - 1), edits, st.integers(0, 10_000))))
def test_mutated_chunks_never_yield_a_wrong_message(
    plan: list[tuple[int, list[tuple[int, int]], int]],
) -> None:
    r: Reassembler[None] = Reassembler()
    for index, e, cut in plan:
        try:
            done = r.add(mutate(FRAMES[index], e, cut), 0.0)
        except RejectedMessage:
            continue
        if done is not None:
            assert done == (VALID.message_id, ENCODED)
