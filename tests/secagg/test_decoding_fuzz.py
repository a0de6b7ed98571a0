"""Every secure-aggregation wire message, mutated, truncated or with counts claiming far more
entries than it holds, decodes or fails as MessageRejected: never another exception."""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudfl.identity import Identity
from fraudfl.secagg.errors import MessageRejected
from fraudfl.secagg.graph import graph_seed
from fraudfl.secagg.messages import (
    Abort,
    AdvertiseKeys,
    KeyEntry,
    KeyList,
    MaskedInput,
    NonceList,
    NonceReveal,
    RevealedShare,
    RoundSetup,
    ShareKeys,
    ShareRouting,
    SurvivorConfirm,
    SurvivorList,
    UnmaskRequest,
    UnmaskShares,
    decode,
    encode,
)
from fraudfl.secagg.params import RoundParams

IDENT = Identity.generate("aggregator")
NAMES = ("a", "b", "c")
PAYLOADS = [
    RoundSetup(RoundParams(NAMES, 2, 0, 5, True, 32, 0.5, 10.0, graph_seed("f", 1, NAMES))),
    AdvertiseKeys(b"\x01" * 32, b"\x02" * 32, b"\x03" * 32),
    KeyList((KeyEntry(0, b"\x01" * 32, b"\x02" * 32, b"\x03" * 64, b"\x04" * 32),)),
    NonceReveal(b"\x05" * 32),
    NonceList(((0, b"\x06" * 32), (1, b"\x07" * 32))),
    ShareKeys(((1, b"\x05" * 160),)),
    ShareRouting((0, 1, 2), ((1, b"\x07" * 160),)),
    MaskedInput(np.arange(6, dtype=np.uint32)),
    SurvivorList((0, 2)),
    SurvivorConfirm((0, 1, 2), b"\x08" * 32),
    UnmaskRequest((0, 2), ((0, b"\x0a" * 64),), b"\x09" * 32),
    UnmaskShares((RevealedShare(0, 0, b"\x08" * 66),)),
    Abort("below t"),
]
ENCODED = [encode(IDENT, "fed", 1, p, stage=2) for p in PAYLOADS]
edits = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4)


def decodes_or_rejects(data: bytes) -> None:
    try:
        msg = decode(data)
    except MessageRejected:
        return
    assert type(msg.payload) in {type(p) for p in PAYLOADS}


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ENCODED), edits, st.integers(0, 10_000))
def test_mutated_messages_decode_or_are_rejected(
    data: bytes, changes: list[tuple[int, int]], cut: int
) -> None:
    out = bytearray(data)
    for pos, value in changes:
        out[pos % len(out)] = value
    decodes_or_rejects(bytes(out[: cut % (len(out) + 1)]))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ENCODED), st.integers(0, 200), st.sampled_from([">H", ">I"]),
       st.integers(0, 2**32 - 1), st.binary(max_size=64))
def test_oversized_counts_and_lengths_are_rejected(
    data: bytes, pos: int, width: str, value: int, tail: bytes
) -> None:
    # Overwrite any 2- or 4-byte field with a huge count or length, and append junk.
    size = struct.calcsize(width)
    head = data[:-64]  # without the signature
    pos %= max(1, len(head) - size)
    forged = head[:pos] + struct.pack(width, value % (1 << (8 * size))) + head[pos + size:]
    decodes_or_rejects(forged + tail + data[-64:])
