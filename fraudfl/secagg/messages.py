"""Wire messages of the secure-aggregation protocol and their one strict binary codec.

Every message is ``header || body || signature`` (all integers big-endian except vector data):

    header  = magic "FSAG" | version u8 | type u8 | stage u8 | round u64
              | federation_len u16 | federation utf-8 | sender_len u8 | sender utf-8
              | body_len u32
    signature = Ed25519 over header || body by the sender's long-term identity key (64 bytes)

so every message is bound to (federation, round, stage) and its sender. Participants are named
in bodies by their u16 index in the round's sorted participant list. Body layouts are documented
on each payload class and in ``docs/secure-aggregation.md``. :func:`decode` checks magic,
version, type/stage pairing, every length and the absence of trailing bytes; it never
verifies signatures (the receiver does, knowing which key to expect).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from fraudfl.identity import SIGNATURE_BYTES, Identity
from fraudfl.secagg.crypto import KEY_BYTES, NO_VIEW, NONCE_BYTES, VIEW_BYTES
from fraudfl.secagg.errors import MessageRejected, RejectReason
from fraudfl.secagg.params import (
    MAX_PARTICIPANTS,
    MAX_VECTOR_LENGTH,
    RoundParams,
    valid_participant_id,
)
from fraudfl.secagg.quantize import SUPPORTED_BITS
from fraudfl.secagg.shamir import SHARE_BYTES

MAGIC = b"FSAG"
# Version 3: the consistency stage binds the view digest (SurvivorConfirm, UnmaskRequest).
VERSION = 3
MAX_MESSAGE_BYTES = 4 * MAX_VECTOR_LENGTH + (1 << 20)
_FIXED = struct.Struct(">4sBBBQ")
SHARE_PLAINTEXT_BYTES = 2 * SHARE_BYTES
SEALED_SHARE_BYTES = NONCE_BYTES + SHARE_PLAINTEXT_BYTES + 16

STAGE_SETUP = 0
STAGE_ADVERTISE = 1
STAGE_SHARE = 2
STAGE_MASKED = 3
STAGE_CONSISTENCY = 4
STAGE_UNMASK = 5
# SecAgg+ only, between advertising and sharing keys: banks reveal the graph nonces they
# committed to with their keys (fraudfl.secagg.graph). Numbered last to keep the others.
STAGE_REVEAL = 6
STAGE_NAMES = {
    0: "setup", 1: "advertise keys", 2: "share keys", 3: "masked input", 4: "consistency check",
    5: "unmask", 6: "reveal nonces",
}
# The order stages run in.
STAGE_ORDER = (
    STAGE_SETUP, STAGE_ADVERTISE, STAGE_REVEAL, STAGE_SHARE, STAGE_MASKED, STAGE_CONSISTENCY,
    STAGE_UNMASK,
)


def stage_rank(stage: int) -> int:
    """The position of ``stage`` in :data:`STAGE_ORDER`."""
    return STAGE_ORDER.index(stage)

KIND_SELF_MASK = 0  # share of b_u, revealed for banks that sent a masked input
KIND_MASK_KEY = 1  # share of s_sk_u, revealed for banks that dropped after sharing


class _Reader:
    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise MessageRejected(RejectReason.WRONG_LENGTH, f"truncated {what}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple[Any, ...]:
        s = struct.Struct(fmt)
        return s.unpack(self.take(s.size, what))

    def u8(self, what: str) -> int:
        return int(self.take(1, what)[0])

    def u16(self, what: str) -> int:
        (v,) = self.unpack(">H", what)
        return int(v)

    def u32(self, what: str) -> int:
        (v,) = self.unpack(">I", what)
        return int(v)

    def count(self, what: str) -> int:
        n = self.u16(what)
        if n > MAX_PARTICIPANTS:
            raise MessageRejected(RejectReason.MALFORMED, f"{what}: {n} exceeds the limit")
        return n

    def indices(self, what: str) -> tuple[int, ...]:
        n = self.count(what)
        return struct.unpack(f">{n}H", self.take(2 * n, what))

    def done(self, what: str) -> None:
        if self.pos != len(self.data):
            raise MessageRejected(
                RejectReason.WRONG_LENGTH, f"{len(self.data) - self.pos} trailing bytes in {what}"
            )


def _indices(values: tuple[int, ...]) -> bytes:
    return struct.pack(f">H{len(values)}H", len(values), *values)


def _text(value: str, width: str, what: str) -> bytes:
    raw = value.encode()
    limit = 0xFF if width == "B" else 0xFFFF
    if len(raw) > limit:
        raise ValueError(f"{what} is too long")
    return struct.pack(f">{width}", len(raw)) + raw


def _read_text(r: _Reader, width: str, what: str) -> str:
    n = r.u8(what) if width == "B" else r.u16(what)
    try:
        return bytes(r.take(n, what)).decode()
    except UnicodeDecodeError as exc:
        raise MessageRejected(RejectReason.MALFORMED, f"{what} is not UTF-8") from exc


class Payload(Protocol):
    TYPE: ClassVar[int]
    STAGE: ClassVar[int]

    def body(self) -> bytes: ...


@dataclass(frozen=True)
class RoundSetup:
    """Stage 0, server to all: ``t u16 | k u16 | d u32 | bits u8 | weighted u8 | clip f64 |
    weight_max f64 | graph_seed 32 | n u16 | n x (len u8 | id)``."""

    TYPE: ClassVar[int] = 1
    STAGE: ClassVar[int] = STAGE_SETUP
    _S: ClassVar[struct.Struct] = struct.Struct(">HHIBBdd32s")
    params: RoundParams

    def body(self) -> bytes:
        p = self.params
        head = self._S.pack(
            p.threshold, p.neighbours, p.vector_length, p.bits, int(p.weighted), p.clip,
            p.weight_max, p.graph_seed,
        )
        names = b"".join(_text(x, "B", "participant id") for x in p.participants)
        return head + struct.pack(">H", len(p.participants)) + names

    @classmethod
    def parse(cls, r: _Reader) -> RoundSetup:
        t, k, d, bits, weighted, clip, wmax, seed = r.unpack(cls._S.format, "round parameters")
        n = r.count("participant count")
        names = tuple(_read_text(r, "B", "participant id") for _ in range(n))
        params = RoundParams(
            participants=names, threshold=t, neighbours=k, vector_length=d,
            weighted=bool(weighted), bits=bits, clip=clip, weight_max=wmax, graph_seed=seed,
        )
        if weighted not in (0, 1):
            raise MessageRejected(RejectReason.MALFORMED, "weighted flag must be 0 or 1")
        try:
            params.validate()
        except ValueError as exc:
            raise MessageRejected(RejectReason.MALFORMED, f"round parameters: {exc}") from exc
        return cls(params)


NO_COMMITMENT = bytes(32)


@dataclass(frozen=True)
class AdvertiseKeys:
    """Stage 1, bank to server: ``c_pk 32 | s_pk 32 | nonce commitment 32`` (X25519 encryption
    and mask keys, and the commitment to the bank's SecAgg+ graph nonce)."""

    TYPE: ClassVar[int] = 2
    STAGE: ClassVar[int] = STAGE_ADVERTISE
    enc_public: bytes
    mask_public: bytes
    commitment: bytes = NO_COMMITMENT

    def body(self) -> bytes:
        return self.enc_public + self.mask_public + self.commitment

    @classmethod
    def parse(cls, r: _Reader) -> AdvertiseKeys:
        return cls(bytes(r.take(KEY_BYTES, "c_pk")), bytes(r.take(KEY_BYTES, "s_pk")),
                   bytes(r.take(32, "nonce commitment")))


@dataclass(frozen=True)
class KeyEntry:
    index: int
    enc_public: bytes
    mask_public: bytes
    signature: bytes  # the bank's own signature of its AdvertiseKeys message
    commitment: bytes = NO_COMMITMENT


@dataclass(frozen=True)
class KeyList:
    """Stage 1, server to all: ``count u16 | count x (index u16 | c_pk | s_pk | commitment 32 |
    sig 64)``."""

    TYPE: ClassVar[int] = 3
    STAGE: ClassVar[int] = STAGE_ADVERTISE
    entries: tuple[KeyEntry, ...]

    def body(self) -> bytes:
        return struct.pack(">H", len(self.entries)) + b"".join(
            struct.pack(">H", e.index) + e.enc_public + e.mask_public + e.commitment
            + e.signature
            for e in self.entries
        )

    @classmethod
    def parse(cls, r: _Reader) -> KeyList:
        entries = []
        for _ in range(r.count("key count")):
            idx = r.u16("index")
            enc, mask = bytes(r.take(KEY_BYTES, "c_pk")), bytes(r.take(KEY_BYTES, "s_pk"))
            commitment = bytes(r.take(32, "nonce commitment"))
            entries.append(
                KeyEntry(idx, enc, mask, bytes(r.take(SIGNATURE_BYTES, "key signature")),
                         commitment)
            )
        return cls(tuple(entries))


@dataclass(frozen=True)
class NonceReveal:
    """Reveal stage (SecAgg+), bank to server: ``nonce 32``, opening its commitment."""

    TYPE: ClassVar[int] = 12
    STAGE: ClassVar[int] = STAGE_REVEAL
    nonce: bytes

    def body(self) -> bytes:
        return self.nonce

    @classmethod
    def parse(cls, r: _Reader) -> NonceReveal:
        return cls(bytes(r.take(32, "nonce")))


@dataclass(frozen=True)
class NonceList:
    """Reveal stage (SecAgg+), server to all: ``count u16 | count x (index u16 | nonce 32)``,
    every nonce committed to in the key list."""

    TYPE: ClassVar[int] = 13
    STAGE: ClassVar[int] = STAGE_REVEAL
    nonces: tuple[tuple[int, bytes], ...]

    def body(self) -> bytes:
        return struct.pack(">H", len(self.nonces)) + b"".join(
            struct.pack(">H", i) + n for i, n in self.nonces
        )

    @classmethod
    def parse(cls, r: _Reader) -> NonceList:
        return cls(tuple(
            (r.u16("index"), bytes(r.take(32, "nonce"))) for _ in range(r.count("nonce count"))
        ))


@dataclass(frozen=True)
class ShareKeys:
    """Stage 2, bank to server: ``count u16 | count x (recipient u16 | sealed 160)``; sealed =
    AES-GCM nonce 12 | ciphertext of (b_share 66 | s_share 66) | tag 16."""

    TYPE: ClassVar[int] = 4
    STAGE: ClassVar[int] = STAGE_SHARE
    shares: tuple[tuple[int, bytes], ...]

    def body(self) -> bytes:
        return _sealed_list(self.shares)

    @classmethod
    def parse(cls, r: _Reader) -> ShareKeys:
        return cls(_read_sealed_list(r))


def _sealed_list(items: tuple[tuple[int, bytes], ...]) -> bytes:
    return struct.pack(">H", len(items)) + b"".join(
        struct.pack(">H", i) + ct for i, ct in items
    )


def _read_sealed_list(r: _Reader) -> tuple[tuple[int, bytes], ...]:
    return tuple(
        (r.u16("index"), bytes(r.take(SEALED_SHARE_BYTES, "sealed share")))
        for _ in range(r.count("share count"))
    )


@dataclass(frozen=True)
class ShareRouting:
    """Stage 2, server to one bank: ``U2 indices (count u16 | u16...) | count u16 |
    count x (sender u16 | sealed 160)`` — the shares addressed to that bank."""

    TYPE: ClassVar[int] = 5
    STAGE: ClassVar[int] = STAGE_SHARE
    survivors: tuple[int, ...]
    shares: tuple[tuple[int, bytes], ...]

    def body(self) -> bytes:
        return _indices(self.survivors) + _sealed_list(self.shares)

    @classmethod
    def parse(cls, r: _Reader) -> ShareRouting:
        return cls(r.indices("U2"), _read_sealed_list(r))


def _vector_body(vector: npt.NDArray[np.unsignedinteger]) -> bytes:
    bits = vector.dtype.itemsize * 8
    dtype = np.dtype(vector.dtype).newbyteorder("<")
    return struct.pack(">BI", bits, len(vector)) + vector.astype(dtype, copy=False).tobytes()


def _read_vector(r: _Reader, what: str) -> npt.NDArray[np.unsignedinteger]:
    bits, count = r.u8("bits"), r.u32("count")
    if bits not in SUPPORTED_BITS or count > MAX_VECTOR_LENGTH:
        raise MessageRejected(RejectReason.MALFORMED, f"bad vector header ({bits}, {count})")
    dtype = np.dtype(SUPPORTED_BITS[bits]).newbyteorder("<")
    return np.frombuffer(r.take(count * dtype.itemsize, what), dtype=dtype)


@dataclass(frozen=True)
class MaskedInput:
    """Stage 3, bank to server: ``bits u8 | count u32 | count x b-bit little-endian words``."""

    TYPE: ClassVar[int] = 6
    STAGE: ClassVar[int] = STAGE_MASKED
    vector: npt.NDArray[np.unsignedinteger]

    def body(self) -> bytes:
        return _vector_body(self.vector)

    @classmethod
    def parse(cls, r: _Reader) -> MaskedInput:
        return cls(_read_vector(r, "masked vector"))


@dataclass(frozen=True)
class PlainInput:
    """Plain-sum rounds only, bank to server, answering the setup: the quantised input in the
    clear (the layout of :class:`MaskedInput`, a type of its own so that no stage of the masked
    protocol takes it). A bank sends it only when its own settings allow rounds without masking
    (``fraudfl simulate``)."""

    TYPE: ClassVar[int] = 14
    STAGE: ClassVar[int] = STAGE_ADVERTISE
    vector: npt.NDArray[np.unsignedinteger]

    def body(self) -> bytes:
        return _vector_body(self.vector)

    @classmethod
    def parse(cls, r: _Reader) -> PlainInput:
        return cls(_read_vector(r, "plain vector"))


@dataclass(frozen=True)
class SurvivorList:
    """Stage 4, server to U3: ``U3 indices`` — the banks whose masked inputs are in the sum."""

    TYPE: ClassVar[int] = 10
    STAGE: ClassVar[int] = STAGE_CONSISTENCY
    survivors: tuple[int, ...]

    def body(self) -> bytes:
        return _indices(self.survivors)

    @classmethod
    def parse(cls, r: _Reader) -> SurvivorList:
        return cls(r.indices("U3"))


@dataclass(frozen=True)
class SurvivorConfirm:
    """Stage 4, bank to server: ``U3 indices | view 32``. The bank's signature over this message
    is its one-time commitment to U3 and to the digest of what it was shown for the round,
    forwarded to the other survivors in :class:`UnmaskRequest`."""

    TYPE: ClassVar[int] = 11
    STAGE: ClassVar[int] = STAGE_CONSISTENCY
    survivors: tuple[int, ...]
    view: bytes = NO_VIEW

    def body(self) -> bytes:
        return _indices(self.survivors) + self.view

    @classmethod
    def parse(cls, r: _Reader) -> SurvivorConfirm:
        return cls(r.indices("U3"), bytes(r.take(VIEW_BYTES, "view digest")))


@dataclass(frozen=True)
class UnmaskRequest:
    """Stage 5, server to the banks that confirmed: ``U3 indices | view 32 | count u16 | count x
    (index u16 | signature 64)``, the signatures of the banks' :class:`SurvivorConfirm` of U3
    and that view."""

    TYPE: ClassVar[int] = 7
    STAGE: ClassVar[int] = STAGE_UNMASK
    survivors: tuple[int, ...]
    confirmations: tuple[tuple[int, bytes], ...]
    view: bytes = NO_VIEW

    def body(self) -> bytes:
        return (
            _indices(self.survivors) + self.view + struct.pack(">H", len(self.confirmations))
            + b"".join(struct.pack(">H", i) + sig for i, sig in self.confirmations)
        )

    @classmethod
    def parse(cls, r: _Reader) -> UnmaskRequest:
        survivors = r.indices("U3")
        view = bytes(r.take(VIEW_BYTES, "view digest"))
        confirmations = tuple(
            (r.u16("index"), bytes(r.take(SIGNATURE_BYTES, "confirmation")))
            for _ in range(r.count("confirmation count"))
        )
        return cls(survivors, confirmations, view)


@dataclass(frozen=True)
class RevealedShare:
    owner: int
    kind: int  # KIND_SELF_MASK or KIND_MASK_KEY
    share: bytes


@dataclass(frozen=True)
class UnmaskShares:
    """Stage 5, bank to server: ``count u16 | count x (owner u16 | kind u8 | share 66)``."""

    TYPE: ClassVar[int] = 8
    STAGE: ClassVar[int] = STAGE_UNMASK
    shares: tuple[RevealedShare, ...]

    def body(self) -> bytes:
        return struct.pack(">H", len(self.shares)) + b"".join(
            struct.pack(">HB", s.owner, s.kind) + s.share for s in self.shares
        )

    @classmethod
    def parse(cls, r: _Reader) -> UnmaskShares:
        out = []
        for _ in range(r.count("share count")):
            owner, kind = r.u16("owner"), r.u8("kind")
            if kind not in (KIND_SELF_MASK, KIND_MASK_KEY):
                raise MessageRejected(RejectReason.MALFORMED, f"unknown share kind {kind}")
            out.append(RevealedShare(owner, kind, bytes(r.take(SHARE_BYTES, "share"))))
        return cls(tuple(out))


@dataclass(frozen=True)
class Abort:
    """Any stage, server to all: ``len u16 | reason utf-8``."""

    TYPE: ClassVar[int] = 9
    STAGE: ClassVar[int] = -1  # carries the server's current stage in the header
    reason: str

    def body(self) -> bytes:
        return _text(self.reason, "H", "abort reason")

    @classmethod
    def parse(cls, r: _Reader) -> Abort:
        return cls(_read_text(r, "H", "abort reason"))


_TYPES: dict[int, Any] = {
    cls.TYPE: cls
    for cls in (
        RoundSetup, AdvertiseKeys, KeyList, ShareKeys, ShareRouting, MaskedInput,
        SurvivorList, SurvivorConfirm, UnmaskRequest, UnmaskShares, Abort, NonceReveal,
        NonceList, PlainInput,
    )
}


@dataclass(frozen=True)
class Header:
    federation_id: str
    round: int
    stage: int
    sender: str


@dataclass(frozen=True)
class Message:
    """A decoded message; ``signed`` is the exact byte range the signature covers."""

    header: Header
    payload: Payload
    signature: bytes
    signed: bytes | memoryview


def signing_bytes(header: Header, payload: Payload) -> bytes:
    body = payload.body()
    return (
        _FIXED.pack(MAGIC, VERSION, payload.TYPE, header.stage, header.round)
        + _text(header.federation_id, "H", "federation id")
        + _text(header.sender, "B", "sender id")
        + struct.pack(">I", len(body))
        + body
    )


def encode(
    identity: Identity, federation_id: str, round_number: int, payload: Payload,
    stage: int | None = None,
) -> bytes:
    """Serialise and sign ``payload`` as ``identity``; ``stage`` is needed only for Abort."""
    if payload.STAGE >= 0:
        stage = payload.STAGE
    elif stage is None:
        raise ValueError(f"{type(payload).__name__} needs the stage it is sent in")
    header = Header(federation_id, round_number, stage, identity.participant_id)
    data = signing_bytes(header, payload)
    return data + identity.sign(data)


def decode(data: bytes | memoryview) -> Message:
    """Parse one message strictly; raises :class:`MessageRejected` (malformed / wrong_length)."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageRejected(RejectReason.WRONG_LENGTH, f"message of {len(data)} bytes")
    if len(data) < _FIXED.size + SIGNATURE_BYTES:
        raise MessageRejected(RejectReason.WRONG_LENGTH, "message shorter than a header")
    view = memoryview(data)
    r = _Reader(view[:-SIGNATURE_BYTES])
    magic, version, mtype, stage, round_number = r.unpack(_FIXED.format, "header")
    if magic != MAGIC:
        raise MessageRejected(RejectReason.MALFORMED, "not a fraudfl secagg message")
    if version != VERSION:
        raise MessageRejected(RejectReason.MALFORMED, f"unsupported version {version}")
    cls = _TYPES.get(mtype)
    if cls is None:
        raise MessageRejected(RejectReason.MALFORMED, f"unknown message type {mtype}")
    if stage not in STAGE_NAMES or (cls is not Abort and stage != cls.STAGE):
        raise MessageRejected(RejectReason.MALFORMED, f"type {mtype} cannot be stage {stage}")
    federation = _read_text(r, "H", "federation id")
    sender = _read_text(r, "B", "sender id")
    if not valid_participant_id(sender):
        raise MessageRejected(RejectReason.MALFORMED, f"invalid sender id {sender!r}")
    body_len = r.u32("body length")
    if body_len != len(r.data) - r.pos:
        raise MessageRejected(
            RejectReason.WRONG_LENGTH,
            f"body length field {body_len} but {len(r.data) - r.pos} bytes present",
        )
    payload = cls.parse(r)
    r.done("body")
    header = Header(federation, round_number, stage, sender)
    return Message(header, payload, bytes(view[-SIGNATURE_BYTES:]), view[:-SIGNATURE_BYTES])
