"""Splitting messages into broker-sized chunks and reassembling them safely.

Every encoded envelope travels as one or more chunk frames (version 1, big-endian)::

    magic "FFLC" | version u8 | transfer id 16B | index u32 | count u32 | total length u64
    | SHA-256 of the whole message 32B | SHA-256 of (the preceding header fields + data) 32B | data

The per-chunk digest lets a damaged chunk be dropped on arrival while a good duplicate still
completes the message; the whole-message digest (checked on completion) catches chunks that are
self-consistent but do not belong together. Reassembly tolerates duplicates and any arrival order,
and bounds memory by message size, number and bytes of pending messages, and age. It is sans-IO:
callers pass the current time.

Chunks are not signed (the envelope inside is), so anyone able to write to a topic can send
frames. Pending transfers are therefore held per *claimed sender* (the record key, which
honest senders set to their id; the channel maps keys of no enrolled participant to one shared
bucket): a sender whose bucket is full has its *new* transfers refused, and nothing already
pending is evicted for them. Forged frames fill only the bucket of the sender they claim and
cannot push out a genuine message being reassembled. The global limits stay as a backstop; they
evict from the bucket holding the most.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from fraudfl.transport.errors import RejectedMessage, RejectReason
from fraudfl.transport.replay import MESSAGE_ID_BYTES

log = logging.getLogger(__name__)

MAGIC = b"FFLC"
VERSION = 1
_HEADER = struct.Struct(">4sB16sIIQ32s32s")
HEADER_BYTES = _HEADER.size
_SIGNED = HEADER_BYTES - 32  # the chunk digest covers the header fields before it and the data
# Apache Kafka's default message.max.bytes is 1 MiB including record and batch overhead.
DEFAULT_MAX_RECORD_BYTES = 900 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_PENDING = 1024
DEFAULT_MAX_PENDING_BYTES = 1024 * 1024 * 1024
DEFAULT_EXPIRY_S = 600.0
DEFAULT_COMPLETED_MEMORY = 4096
# An honest participant has a few multi-chunk messages in flight at most (a model broadcast,
# a masked update); 16 leaves ample room.
DEFAULT_MAX_PENDING_PER_SENDER = 16
DEFAULT_MAX_PENDING_BYTES_PER_SENDER = 512 * 1024 * 1024
# Rough bookkeeping cost of one held part (memoryview, dict slot, origin), charged with the frame
# so that a flood of tiny chunks cannot hold far more memory than the pending-bytes budget says.
_PART_OVERHEAD = 128


def _chunk_digest(head: bytes | memoryview, data: bytes | memoryview) -> bytes:
    h = hashlib.sha256(head)
    h.update(data)
    return h.digest()


@dataclass(frozen=True)
class Chunk:
    transfer_id: bytes
    index: int
    count: int
    total_length: int
    digest: bytes
    # Parsed chunks hold a view into the received frame, so that multi-megabyte messages are
    # copied once, on completion.
    data: bytes | memoryview

    def encode(self) -> bytes:
        head = _HEADER.pack(
            MAGIC,
            VERSION,
            self.transfer_id,
            self.index,
            self.count,
            self.total_length,
            self.digest,
            b"",
        )[:_SIGNED]
        return b"".join((head, _chunk_digest(head, self.data), self.data))


def split(
    message: bytes, transfer_id: bytes, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> list[bytes]:
    """Encoded chunk frames of ``message``, each at most ``max_record_bytes`` long."""
    if len(transfer_id) != MESSAGE_ID_BYTES:
        raise ValueError(f"transfer id must be {MESSAGE_ID_BYTES} bytes")
    room = max_record_bytes - HEADER_BYTES
    if room < 1:
        raise ValueError(f"max_record_bytes must exceed the {HEADER_BYTES}-byte chunk header")
    digest = hashlib.sha256(message).digest()
    count = max(1, -(-len(message) // room))
    view = memoryview(message)
    return [
        Chunk(transfer_id, i, count, len(message), digest, view[i * room : (i + 1) * room]).encode()
        for i in range(count)
    ]


def parse_chunk(frame: bytes, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Chunk:
    """Decode one untrusted chunk frame, or raise :class:`RejectedMessage`."""
    if len(frame) < HEADER_BYTES:
        raise RejectedMessage(RejectReason.MALFORMED, f"chunk of {len(frame)} bytes too short")
    magic, version, transfer_id, index, count, total, digest, chunk_digest = _HEADER.unpack_from(
        frame
    )
    if magic != MAGIC:
        raise RejectedMessage(RejectReason.MALFORMED, "not a chunk (bad magic)")
    if version != VERSION:
        raise RejectedMessage(RejectReason.UNSUPPORTED_VERSION, f"chunk version {version}")
    if total > max_message_bytes:
        raise RejectedMessage(
            RejectReason.TOO_LARGE, f"message of {total} bytes > {max_message_bytes}"
        )
    data = memoryview(frame)[HEADER_BYTES:]
    if count < 1 or index >= count or count > max(1, total) or len(data) > total:
        raise RejectedMessage(
            RejectReason.MALFORMED, f"chunk {index}/{count} of {total} bytes is inconsistent"
        )
    if _chunk_digest(memoryview(frame)[:_SIGNED], data) != chunk_digest:
        raise RejectedMessage(RejectReason.CORRUPT, f"chunk {index}/{count} digest mismatch")
    return Chunk(transfer_id, index, count, total, digest, data)


# Chunks only join a transfer when all of its metadata agrees, so a forged chunk with a known
# transfer id but different length/digest opens a separate transfer instead of spoiling this one.
_TransferKey = tuple[bytes, int, int, bytes]
Origin = TypeVar("Origin")


@dataclass
class _Pending(Generic[Origin]):
    started: float
    parts: dict[int, bytes | memoryview] = field(default_factory=dict)
    origins: list[Origin] = field(default_factory=list)
    size: int = 0  # data bytes, checked against the announced total length
    held: int = 0  # memory charged to the pending budget: whole frames plus overhead
    sender: str | None = None


class Reassembler(Generic[Origin]):
    """Collects chunk frames and yields whole messages once all chunks are present.

    Each frame may carry an ``origin`` (e.g. its topic, partition and offset); the origins of
    incomplete transfers tell a consumer which offsets it must not checkpoint past yet.
    """

    def __init__(
        self,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        expiry_s: float = DEFAULT_EXPIRY_S,
        completed_memory: int = DEFAULT_COMPLETED_MEMORY,
        max_pending_per_sender: int = DEFAULT_MAX_PENDING_PER_SENDER,
        max_pending_bytes_per_sender: int = DEFAULT_MAX_PENDING_BYTES_PER_SENDER,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.expiry_s = expiry_s
        self.completed_memory = completed_memory
        self.max_pending_per_sender = max_pending_per_sender
        self.max_pending_bytes_per_sender = max_pending_bytes_per_sender
        self._pending: dict[_TransferKey, _Pending[Origin]] = {}
        self._pending_bytes = 0
        # Per claimed sender: pending transfers and bytes held.
        self._sender_count: dict[str, int] = {}
        self._sender_bytes: dict[str, int] = {}
        # Recently completed transfers: late duplicate chunks are dropped instead of starting a
        # new transfer that could only end in a duplicate message.
        self._completed: dict[_TransferKey, None] = {}

    @property
    def pending_transfers(self) -> set[bytes]:
        return {key[0] for key in self._pending}

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def pending_origins(self) -> list[Origin]:
        return [origin for p in self._pending.values() for origin in p.origins]

    def add(
        self, frame: bytes, now: float, origin: Origin | None = None, sender: str | None = None
    ) -> tuple[bytes, bytes] | None:
        """Take one frame; return ``(transfer_id, message)`` when it completes a message.

        ``sender`` is who the frame claims to come from (unauthenticated): transfers are
        bounded per sender. Raises :class:`RejectedMessage` for a bad frame, a sender over its
        limits, or a completed message whose digest does not match (that transfer is then
        discarded).
        """
        self.expire(now)
        chunk = parse_chunk(frame, self.max_message_bytes)
        key = (chunk.transfer_id, chunk.count, chunk.total_length, chunk.digest)
        if key in self._completed:
            return None
        pending = self._pending.get(key)
        if pending is not None and pending.sender != sender:
            # Same transfer claimed by another sender: a forgery, never merged into it.
            raise RejectedMessage(
                RejectReason.IMPERSONATION,
                f"chunk of transfer {chunk.transfer_id.hex()} under another sender's key",
            )
        if pending is None:
            if chunk.count > 1 and sender is not None:
                held = self._sender_count.get(sender, 0)
                if held >= self.max_pending_per_sender:
                    raise RejectedMessage(
                        RejectReason.TOO_LARGE,
                        f"{sender} already has {held} incomplete transfers; new one refused",
                    )
            pending = self._pending[key] = _Pending[Origin](started=now, sender=sender)
            if sender is not None:
                self._sender_count[sender] = self._sender_count.get(sender, 0) + 1
        if chunk.index in pending.parts:
            return None
        if pending.size + len(chunk.data) > chunk.total_length:
            self._drop(key)
            raise RejectedMessage(
                RejectReason.CORRUPT, f"transfer {chunk.transfer_id.hex()} exceeds its length"
            )
        pending.parts[chunk.index] = chunk.data
        if origin is not None:
            pending.origins.append(origin)
        pending.size += len(chunk.data)
        # A part is a view into its frame, so the whole frame stays alive until completion.
        cost = len(frame) + _PART_OVERHEAD
        pending.held += cost
        self._pending_bytes += cost
        if sender is not None:
            self._sender_bytes[sender] = self._sender_bytes.get(sender, 0) + cost
        if len(pending.parts) == chunk.count:
            return self._complete(key)
        if sender is not None and self._sender_bytes[sender] > self.max_pending_bytes_per_sender:
            self._drop(key)
            raise RejectedMessage(
                RejectReason.TOO_LARGE, f"{sender}: pending reassembly bytes over its limit"
            )
        self._enforce_bounds(keep=key)
        return None

    def expire(self, now: float) -> None:
        """Forget transfers that started more than ``expiry_s`` ago."""
        for key in [k for k, p in self._pending.items() if now - p.started > self.expiry_s]:
            log.warning("transfer %s expired incomplete", key[0].hex())
            self._drop(key)

    def _complete(self, key: _TransferKey) -> tuple[bytes, bytes]:
        pending = self._pending[key]
        self._drop(key)
        message = b"".join(pending.parts[i] for i in range(key[1]))
        if len(message) != key[2] or hashlib.sha256(message).digest() != key[3]:
            raise RejectedMessage(
                RejectReason.CORRUPT, f"transfer {key[0].hex()} failed its integrity check"
            )
        self._completed[key] = None
        while len(self._completed) > self.completed_memory:
            del self._completed[next(iter(self._completed))]
        return key[0], message

    def _drop(self, key: _TransferKey) -> None:
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        self._pending_bytes -= pending.held
        sender = pending.sender
        if sender is not None:
            self._sender_count[sender] -= 1
            self._sender_bytes[sender] = self._sender_bytes.get(sender, 0) - pending.held
            if not self._sender_count[sender]:
                del self._sender_count[sender]
                self._sender_bytes.pop(sender, None)

    def _enforce_bounds(self, keep: _TransferKey) -> None:
        # Oldest first, from the sender holding the most bytes (a flood, not a bystander);
        # the newest transfer is the one still arriving.
        while (
            len(self._pending) > self.max_pending or self._pending_bytes > self.max_pending_bytes
        ) and len(self._pending) > 1:
            heaviest = max(
                {p.sender for k, p in self._pending.items() if k != keep},
                key=lambda s: -1 if s is None else self._sender_bytes.get(s, 0),
            )
            oldest = next(
                k for k, p in self._pending.items() if k != keep and p.sender == heaviest
            )
            log.warning("dropping incomplete transfer %s: pending limits reached", oldest[0].hex())
            self._drop(oldest)
        if self._pending_bytes > self.max_pending_bytes:
            self._drop(keep)
            raise RejectedMessage(RejectReason.TOO_LARGE, "pending reassembly bytes over limit")
