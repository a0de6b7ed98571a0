import os
import random

import pytest

from fraudfl.transport.chunking import (
    DEFAULT_MAX_PENDING_PER_SENDER,
    HEADER_BYTES,
    Chunk,
    Reassembler,
    parse_chunk,
    split,
)
from fraudfl.transport.errors import RejectedMessage, RejectReason

TID = bytes(range(16))


def test_split_respects_record_limit_and_round_trips() -> None:
    message = os.urandom(100_000)
    frames = split(message, TID, max_record_bytes=4096)
    assert len(frames) == -(-len(message) // (4096 - HEADER_BYTES))
    assert all(len(f) <= 4096 for f in frames)
    r: Reassembler[None] = Reassembler()
    results = [r.add(f, 0.0) for f in frames]
    assert results[:-1] == [None] * (len(frames) - 1)
    assert results[-1] == (TID, message)
    assert r.pending_bytes == 0 and not r.pending_transfers


def test_empty_message_is_one_chunk() -> None:
    frames = split(b"", TID)
    assert len(frames) == 1
    assert Reassembler[None]().add(frames[0], 0.0) == (TID, b"")


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_and_duplicated_chunks_interleaved(seed: int) -> None:
    rng = random.Random(seed)
    messages = {os.urandom(16): os.urandom(rng.randrange(1, 50_000)) for _ in range(4)}
    frames = [f for tid, m in messages.items() for f in split(m, tid, 1000)]
    frames = frames + rng.sample(frames, len(frames) // 2)
    rng.shuffle(frames)
    r: Reassembler[None] = Reassembler()
    completed = [done for f in frames if (done := r.add(f, 0.0)) is not None]
    assert dict(completed) == messages
    assert len(completed) == len(messages)  # duplicates after completion are ignored


def test_corrupted_chunk_is_dropped_and_good_copy_completes() -> None:
    message = os.urandom(5000)
    frames = split(message, TID, 1000)
    bad = bytearray(frames[2])
    bad[-1] ^= 0xFF
    r: Reassembler[None] = Reassembler()
    with pytest.raises(RejectedMessage) as info:
        r.add(bytes(bad), 0.0)
    assert info.value.reason is RejectReason.CORRUPT
    done = [r.add(f, 0.0) for f in frames]
    assert done[-1] == (TID, message)


def test_consistent_but_foreign_chunk_fails_whole_digest() -> None:
    message = os.urandom(3000)
    frames = split(message, TID, 1000)
    genuine = parse_chunk(frames[1])
    # A self-consistent chunk claiming this transfer and its digest, with other data.
    forged = Chunk(TID, 1, genuine.count, 3000, genuine.digest, os.urandom(len(genuine.data)))
    r: Reassembler[None] = Reassembler()
    assert r.add(forged.encode(), 0.0) is None
    for frame in frames[:1] + frames[2:-1]:
        assert r.add(frame, 0.0) is None
    with pytest.raises(RejectedMessage) as info:
        r.add(frames[-1], 0.0)
    assert info.value.reason is RejectReason.CORRUPT
    assert not r.pending_transfers


def test_conflicting_metadata_does_not_spoil_genuine_transfer() -> None:
    message = os.urandom(3000)
    frames = split(message, TID, 1000)
    decoy = split(os.urandom(1500), TID, 1000)  # same transfer id, other length and digest
    r: Reassembler[None] = Reassembler()
    r.add(decoy[0], 0.0)
    assert [r.add(f, 0.0) for f in frames][-1] == (TID, message)
    assert r.pending_transfers == {TID}  # the decoy is still waiting, and will expire


def test_size_limit_checked_on_first_chunk() -> None:
    frames = split(os.urandom(10_000), TID, 1000)
    r: Reassembler[None] = Reassembler(max_message_bytes=5000)
    with pytest.raises(RejectedMessage) as info:
        r.add(frames[0], 0.0)
    assert info.value.reason is RejectReason.TOO_LARGE
    assert r.pending_bytes == 0


def test_pending_bounds_and_expiry() -> None:
    r: Reassembler[int] = Reassembler(max_pending=3, expiry_s=10.0)
    firsts = []
    for i in range(5):
        frames = split(os.urandom(3000), bytes([i]) * 16, 1000)
        firsts.append(frames)
        r.add(frames[0], float(i), origin=i)
    assert r.pending_transfers == {bytes([i]) * 16 for i in (2, 3, 4)}
    assert sorted(r.pending_origins()) == [2, 3, 4]
    r.expire(13.5)  # transfers started at 2 and 3 are now older than 10 s
    assert r.pending_transfers == {bytes([4]) * 16}


def test_pending_byte_budget() -> None:
    r: Reassembler[None] = Reassembler(max_pending_bytes=2500)
    a = split(os.urandom(3000), b"a" * 16, 1000)
    b = split(os.urandom(3000), b"b" * 16, 1000)
    r.add(a[0], 0.0)
    r.add(a[1], 0.0)
    r.add(b[0], 0.0)  # over budget: the older transfer goes
    assert r.pending_transfers == {b"b" * 16}
    assert r.pending_bytes <= 2500


def test_tiny_chunks_are_charged_for_the_memory_they_hold() -> None:
    """1-byte chunks of a huge announced message each pin a whole frame: the budget counts it."""
    budget = 100_000
    r: Reassembler[None] = Reassembler(max_pending_bytes=budget)
    total = 10**6
    with pytest.raises(RejectedMessage) as info:
        for i in range(5000):  # ~600 kB of frames, plus per-part bookkeeping
            r.add(Chunk(TID, i, total, total, bytes(32), b"x").encode(), 0.0)
    assert info.value.reason is RejectReason.TOO_LARGE
    assert r.pending_bytes <= budget


@pytest.mark.parametrize(
    "frame",
    [b"", b"FFLC", b"XXXX" + bytes(HEADER_BYTES), os.urandom(HEADER_BYTES + 10)],
)
def test_malformed_frames(frame: bytes) -> None:
    with pytest.raises(RejectedMessage):
        parse_chunk(frame)


def test_inconsistent_index() -> None:
    chunk = parse_chunk(split(b"abc", TID)[0])
    bad = Chunk(TID, 5, 1, chunk.total_length, chunk.digest, chunk.data)  # index 5 of 1
    with pytest.raises(RejectedMessage) as info:
        parse_chunk(bad.encode())
    assert info.value.reason is RejectReason.MALFORMED


def test_damaged_header_field_is_caught_by_chunk_digest() -> None:
    frame = bytearray(split(os.urandom(3000), TID, 1000)[0])
    frame[21:25] = (1).to_bytes(4, "big")  # index 0 -> 1: a chunk in the wrong place
    with pytest.raises(RejectedMessage) as info:
        parse_chunk(bytes(frame))
    assert info.value.reason is RejectReason.CORRUPT


def test_forged_transfers_cannot_evict_a_genuine_one() -> None:
    """1,024 forged frames (no key at all) used to evict a signed message being reassembled."""
    r: Reassembler[None] = Reassembler()
    genuine = os.urandom(5000)
    frames = split(genuine, b"g" * 16, 1000)
    r.add(frames[0], 0.0, sender="aggregator")
    refused = 0
    for i in range(1024):  # ~206 kB of frames opening new transfers, per claimed sender
        for j, claimed in enumerate(("(unenrolled)", "aggregator")):
            forged = split(os.urandom(300), i.to_bytes(15, "big") + bytes([j]), 200)[0]
            try:
                r.add(forged, 1.0, sender=claimed)
            except RejectedMessage as exc:
                assert exc.reason is RejectReason.TOO_LARGE
                refused += 1
    assert refused == 2 * (1024 - DEFAULT_MAX_PENDING_PER_SENDER) + 1
    done = None
    for frame in frames[1:]:
        done = r.add(frame, 2.0, sender="aggregator")
    assert done == (b"g" * 16, genuine)


def test_a_transfer_cannot_be_joined_under_another_senders_key() -> None:
    r: Reassembler[None] = Reassembler()
    frames = split(os.urandom(3000), TID, 1000)
    r.add(frames[0], 0.0, sender="bank-a")
    with pytest.raises(RejectedMessage) as info:
        r.add(frames[1], 0.0, sender="bank-b")
    assert info.value.reason is RejectReason.IMPERSONATION
    done = [r.add(f, 0.0, sender="bank-a") for f in frames[1:]]
    assert done[-1] is not None


def test_per_sender_byte_budget_refuses_only_that_sender() -> None:
    r: Reassembler[None] = Reassembler(max_pending_bytes_per_sender=4000)
    a = split(os.urandom(3000), b"a" * 16, 1000)  # four frames of ~1.1 kB each
    b = split(os.urandom(3000), b"b" * 16, 1000)
    r.add(b[0], 0.0, sender="bank-b")
    for frame in a[:3]:
        r.add(frame, 0.0, sender="flood")
    with pytest.raises(RejectedMessage):
        r.add(split(os.urandom(3000), b"c" * 16, 1000)[0], 0.0, sender="flood")
    assert r.pending_transfers == {b"a" * 16, b"b" * 16}
    done = [r.add(f, 0.0, sender="bank-b") for f in b[1:]]
    assert done[-1] is not None
