"""Bounded memory of message ids already accepted, to drop replays and duplicates.

Kafka delivers at least once and a restarted service re-reads from its last checkpoint, so the
same message id legitimately shows up again; this store makes handling idempotent. It is bounded
(oldest ids are forgotten first) and serialisable so services checkpoint it next to their offsets.
"""

from __future__ import annotations

import struct

from fraudfl.transport.errors import RejectedMessage, RejectReason

MESSAGE_ID_BYTES = 16
DEFAULT_CAPACITY = 65_536
_MAGIC = b"FFLR"
_HEADER = struct.Struct(">4sBII")  # magic, version, capacity, count
_VERSION = 1


class ReplayGuard:
    """Remembers up to ``capacity`` message ids, forgetting the oldest first."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        # dicts keep insertion order, which gives FIFO eviction without a second structure.
        self._seen: dict[bytes, None] = {}

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, message_id: bytes) -> bool:
        """Record ``message_id``; False when it was already present (a replay)."""
        if len(message_id) != MESSAGE_ID_BYTES:
            raise ValueError(f"message id must be {MESSAGE_ID_BYTES} bytes")
        if message_id in self._seen:
            return False
        self._seen[message_id] = None
        while len(self._seen) > self.capacity:
            del self._seen[next(iter(self._seen))]
        return True

    def to_bytes(self) -> bytes:
        return _HEADER.pack(_MAGIC, _VERSION, self.capacity, len(self._seen)) + b"".join(self._seen)

    @classmethod
    def from_bytes(cls, data: bytes) -> ReplayGuard:
        if len(data) < _HEADER.size:
            raise RejectedMessage(RejectReason.MALFORMED, "replay state truncated")
        magic, version, capacity, count = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise RejectedMessage(RejectReason.MALFORMED, "not a replay-guard state")
        if version != _VERSION:
            raise RejectedMessage(
                RejectReason.UNSUPPORTED_VERSION, f"replay state version {version}"
            )
        if capacity < 1 or count > capacity:
            raise RejectedMessage(RejectReason.MALFORMED, "replay state counts inconsistent")
        if len(data) != _HEADER.size + count * MESSAGE_ID_BYTES:
            raise RejectedMessage(RejectReason.MALFORMED, "replay state length mismatch")
        guard = cls(capacity)
        body = memoryview(data)[_HEADER.size :]
        for i in range(count):
            guard._seen[bytes(body[i * MESSAGE_ID_BYTES : (i + 1) * MESSAGE_ID_BYTES])] = None
        return guard
