"""The signed, versioned envelope every fraudfl message travels in.

Wire format (version 1, all integers big-endian)::

    header   magic "FFLE" | version u8 | flags u8 | round u64 | timestamp_ms u64 | message_id 16B
             | federation | stage | sender | recipient | payload_type   (each: u8 length + UTF-8)
    body     payload length u32 | payload
    trailer  Ed25519 signature (64 bytes)

The signature is over ``SIGNING_CONTEXT + header + payload length + SHA-256(payload)``: hashing
the payload once with SHA-256 is several times faster than letting Ed25519 hash a multi-megabyte
model twice with SHA-512, and binds it just as firmly.

The header alone is the associated data when the payload is sealed (``FLAG_SEALED``), so a sealed
payload cannot be moved into another envelope. The decoder is the only way bytes become an
``Envelope``: it enforces sizes, the version and the absence of trailing bytes, and raises
:class:`RejectedMessage` with a reason.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from dataclasses import dataclass, field, replace

from fraudfl.identity import SIGNATURE_BYTES, Allowlist, Identity, verify
from fraudfl.transport.errors import RejectedMessage, RejectReason
from fraudfl.transport.replay import MESSAGE_ID_BYTES, ReplayGuard

MAGIC = b"FFLE"
VERSION = 1
BROADCAST = "*"
FLAG_SEALED = 0x01
_KNOWN_FLAGS = FLAG_SEALED
SIGNING_CONTEXT = b"fraudfl.transport.envelope\x00"
MAX_FIELD_BYTES = 255
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024 * 1024
_MAX_U64 = 2**64 - 1
_FIXED = struct.Struct(">4sBBQQ16s")
_LEN32 = struct.Struct(">I")
_TEXT_FIELDS = ("federation", "stage", "sender", "recipient", "payload_type")


def new_message_id() -> bytes:
    return os.urandom(MESSAGE_ID_BYTES)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Envelope:
    """One message: routing metadata, an opaque payload and (once signed) a signature."""

    federation: str
    round: int
    stage: str
    sender: str
    recipient: str
    payload_type: str
    payload: bytes
    message_id: bytes = field(default_factory=new_message_id)
    timestamp_ms: int = field(default_factory=now_ms)
    flags: int = 0
    signature: bytes = b""

    def __post_init__(self) -> None:
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str) or not 1 <= len(value.encode()) <= MAX_FIELD_BYTES:
                raise ValueError(f"envelope {name} must be 1-{MAX_FIELD_BYTES} bytes of text")
        if not 0 <= self.round <= _MAX_U64 or not 0 <= self.timestamp_ms <= _MAX_U64:
            raise ValueError("envelope round and timestamp must fit in 64 bits")
        if len(self.message_id) != MESSAGE_ID_BYTES:
            raise ValueError(f"message id must be {MESSAGE_ID_BYTES} bytes")
        if self.flags & ~_KNOWN_FLAGS:
            raise ValueError(f"unknown envelope flags {self.flags:#x}")
        if len(self.payload) >= 2**32:
            raise ValueError("payload too large for one envelope")

    @property
    def sealed(self) -> bool:
        return bool(self.flags & FLAG_SEALED)

    @property
    def is_broadcast(self) -> bool:
        return self.recipient == BROADCAST

    def header_bytes(self) -> bytes:
        """Everything before the payload; the AAD for sealing."""
        parts = [
            _FIXED.pack(MAGIC, VERSION, self.flags, self.round, self.timestamp_ms, self.message_id)
        ]
        for name in _TEXT_FIELDS:
            raw = getattr(self, name).encode()
            parts.append(bytes([len(raw)]) + raw)
        return b"".join(parts)

    def _signed_bytes(self) -> bytes:
        return b"".join(
            (
                SIGNING_CONTEXT,
                self.header_bytes(),
                _LEN32.pack(len(self.payload)),
                hashlib.sha256(self.payload).digest(),
            )
        )

    def signed_by(self, identity: Identity) -> Envelope:
        """A copy carrying ``identity``'s signature; the identity must be the sender."""
        if identity.participant_id != self.sender:
            raise ValueError(f"identity {identity.participant_id!r} cannot sign as {self.sender!r}")
        return replace(self, signature=identity.sign(self._signed_bytes()))

    def encode(self) -> bytes:
        if len(self.signature) != SIGNATURE_BYTES:
            raise ValueError("envelope must be signed before encoding")
        return b"".join(
            (self.header_bytes(), _LEN32.pack(len(self.payload)), self.payload, self.signature)
        )

    def signature_valid(self, public_key: bytes) -> bool:
        return verify(public_key, self.signature, self._signed_bytes())


def decode(data: bytes, *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Envelope:
    """Parse untrusted bytes into an (unverified) envelope, or raise :class:`RejectedMessage`."""
    if len(data) < _FIXED.size:
        raise RejectedMessage(RejectReason.MALFORMED, f"{len(data)} bytes is too short")
    magic, version, flags, round_, timestamp_ms, message_id = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise RejectedMessage(RejectReason.MALFORMED, "not an envelope (bad magic)")
    if version != VERSION:
        raise RejectedMessage(RejectReason.UNSUPPORTED_VERSION, f"envelope version {version}")
    if flags & ~_KNOWN_FLAGS:
        raise RejectedMessage(RejectReason.MALFORMED, f"unknown flags {flags:#x}")
    pos = _FIXED.size
    texts: list[str] = []
    for name in _TEXT_FIELDS:
        if pos >= len(data):
            raise RejectedMessage(RejectReason.MALFORMED, f"truncated before {name}")
        length = data[pos]
        end = pos + 1 + length
        if length == 0 or end > len(data):
            raise RejectedMessage(RejectReason.MALFORMED, f"bad {name} length")
        try:
            texts.append(data[pos + 1 : end].decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise RejectedMessage(RejectReason.MALFORMED, f"{name} is not UTF-8") from exc
        pos = end
    if pos + _LEN32.size > len(data):
        raise RejectedMessage(RejectReason.MALFORMED, "truncated before payload length")
    (payload_len,) = _LEN32.unpack_from(data, pos)
    pos += _LEN32.size
    if payload_len > max_payload_bytes:
        raise RejectedMessage(
            RejectReason.TOO_LARGE, f"payload of {payload_len} bytes > {max_payload_bytes}"
        )
    if len(data) != pos + payload_len + SIGNATURE_BYTES:
        raise RejectedMessage(
            RejectReason.MALFORMED,
            f"length {len(data)} does not match payload length {payload_len}",
        )
    payload = bytes(data[pos : pos + payload_len])
    signature = bytes(data[pos + payload_len :])
    federation, stage, sender, recipient, payload_type = texts
    return Envelope(
        federation=federation,
        round=round_,
        stage=stage,
        sender=sender,
        recipient=recipient,
        payload_type=payload_type,
        payload=payload,
        message_id=message_id,
        timestamp_ms=timestamp_ms,
        flags=flags,
        signature=signature,
    )


def _replay_key(envelope: Envelope) -> bytes:
    # Message ids are chosen by senders and visible to every reader of a topic: keyed by id
    # alone, one enrolled participant could send first under another's id and get the genuine
    # message dropped as a replay.
    sender = envelope.sender.encode()
    digest = hashlib.sha256(bytes([len(sender)]) + sender + envelope.message_id).digest()
    return digest[:MESSAGE_ID_BYTES]


def verify_envelope(
    envelope: Envelope,
    allowlist: Allowlist,
    *,
    federation: str,
    recipient: str | None = None,
    replay_guard: ReplayGuard | None = None,
) -> None:
    """Check an envelope before anything acts on it; raise :class:`RejectedMessage` if not fit.

    ``recipient`` (when given) is the verifying participant: the envelope must be addressed to it
    or broadcast. The (sender, message id) pair is recorded in ``replay_guard`` only once the
    signature holds, so neither forged messages nor another sender's reuse of an id can poison
    the store and block a genuine one.
    """
    if envelope.federation != federation:
        raise RejectedMessage(
            RejectReason.WRONG_FEDERATION,
            f"for federation {envelope.federation!r}, not {federation!r}",
        )
    key = allowlist.key_of(envelope.sender)
    if key is None:
        raise RejectedMessage(
            RejectReason.UNKNOWN_SENDER, f"sender {envelope.sender!r} is not enrolled"
        )
    if not envelope.signature_valid(key):
        raise RejectedMessage(
            RejectReason.BAD_SIGNATURE,
            f"signature does not match the enrolled key of {envelope.sender!r}",
        )
    if recipient is not None and envelope.recipient not in (recipient, BROADCAST):
        raise RejectedMessage(
            RejectReason.WRONG_RECIPIENT, f"addressed to {envelope.recipient!r}, not {recipient!r}"
        )
    if replay_guard is not None and not replay_guard.add(_replay_key(envelope)):
        raise RejectedMessage(
            RejectReason.REPLAY, f"message {envelope.message_id.hex()} already accepted"
        )
