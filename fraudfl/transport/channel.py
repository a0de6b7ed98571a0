"""A participant's view of the federation's topics: signed, sealed, chunked, deduplicated.

``Channel.send`` builds an envelope, optionally seals the payload to its recipients, signs it and
publishes it as chunk frames. ``Channel.receive`` polls, reassembles, decodes, verifies (federation,
enrolment, signature, recipient, replay) and opens sealed payloads; everything that fails is
counted by reason and logged, never acted on. ``checkpoint``/``restore`` give services the
offsets and seen-message ids to persist: after a restart, messages are neither lost (offsets never
pass a message still being reassembled) nor handled twice (replayed ids are dropped).
"""

from __future__ import annotations

import logging
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from fraudfl.errors import FraudflError
from fraudfl.identity import Allowlist, Identity
from fraudfl.transport.base import Record, TopicPartition, Transport
from fraudfl.transport.chunking import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_RECORD_BYTES,
    Reassembler,
    split,
)
from fraudfl.transport.envelope import (
    BROADCAST,
    FLAG_SEALED,
    Envelope,
    decode,
    verify_envelope,
)
from fraudfl.transport.errors import RejectedMessage, RejectReason
from fraudfl.transport.replay import DEFAULT_CAPACITY, ReplayGuard
from fraudfl.transport.sealing import EncryptionKey, open_sealed, seal

log = logging.getLogger(__name__)

RejectHook = Callable[[RejectReason, str, Record], None]
_Origin = tuple[TopicPartition, int]


@dataclass(frozen=True)
class VerifiedMessage:
    """A message that passed every check; ``envelope.payload`` is the opened plaintext."""

    envelope: Envelope
    topic: str
    partition: int
    offset: int

    @property
    def sender(self) -> str:
        return self.envelope.sender

    @property
    def round(self) -> int:
        return self.envelope.round

    @property
    def stage(self) -> str:
        return self.envelope.stage

    @property
    def payload_type(self) -> str:
        return self.envelope.payload_type

    @property
    def payload(self) -> bytes:
        return self.envelope.payload

    @property
    def message_id(self) -> bytes:
        return self.envelope.message_id


_STATE_MAGIC = b"FFLS"
_STATE_VERSION = 1
_STATE_HEAD = struct.Struct(">4sBI")
_STATE_TP = struct.Struct(">IQ")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


@dataclass(frozen=True)
class ChannelState:
    """What a service checkpoints for its channel: resume offsets and seen message ids."""

    offsets: dict[TopicPartition, int]
    seen: bytes

    def to_bytes(self) -> bytes:
        parts = [_STATE_HEAD.pack(_STATE_MAGIC, _STATE_VERSION, len(self.offsets))]
        for tp, offset in sorted(self.offsets.items()):
            name = tp.topic.encode()
            parts.append(_U16.pack(len(name)) + name + _STATE_TP.pack(tp.partition, offset))
        parts.append(_U32.pack(len(self.seen)) + self.seen)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> ChannelState:
        try:
            magic, version, count = _STATE_HEAD.unpack_from(data)
            if magic != _STATE_MAGIC or version != _STATE_VERSION:
                raise ValueError("not a version-1 channel state")
            pos = _STATE_HEAD.size
            offsets: dict[TopicPartition, int] = {}
            for _ in range(count):
                (length,) = _U16.unpack_from(data, pos)
                topic = data[pos + 2 : pos + 2 + length].decode()
                partition, offset = _STATE_TP.unpack_from(data, pos + 2 + length)
                offsets[TopicPartition(topic, partition)] = offset
                pos += 2 + length + _STATE_TP.size
            (length,) = _U32.unpack_from(data, pos)
            seen = data[pos + 4 : pos + 4 + length]
            if len(seen) != length or pos + 4 + length != len(data):
                raise ValueError("length mismatch")
            ReplayGuard.from_bytes(seen)
        except (struct.error, UnicodeDecodeError, ValueError, RejectedMessage) as exc:
            raise FraudflError(f"corrupt channel state: {exc}") from exc
        return cls(offsets, seen)


# The reassembly bucket shared by records whose key names no enrolled participant.
UNENROLLED = "(unenrolled)"


class Channel:
    """Sends and receives verified messages for one participant of one federation."""

    def __init__(
        self,
        transport: Transport,
        identity: Identity,
        allowlist: Allowlist,
        federation: str,
        *,
        encryption_key: EncryptionKey | None = None,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        replay_capacity: int = DEFAULT_CAPACITY,
        clock: Callable[[], float] = time.monotonic,
        on_reject: RejectHook | None = None,
    ) -> None:
        if encryption_key is not None and encryption_key.participant_id != identity.participant_id:
            raise ValueError("encryption key and identity belong to different participants")
        self.transport = transport
        self.identity = identity
        self.allowlist = allowlist
        self.federation = federation
        self.encryption_key = encryption_key
        self.max_record_bytes = max_record_bytes
        self.max_message_bytes = max_message_bytes
        self.replay_guard = ReplayGuard(replay_capacity)
        self.rejections: Counter[RejectReason] = Counter()
        self._clock = clock
        self._on_reject = on_reject
        self._reassembler: Reassembler[_Origin] = Reassembler(max_message_bytes=max_message_bytes)
        self._resume: dict[TopicPartition, int] = {}

    @property
    def participant_id(self) -> str:
        return self.identity.participant_id

    # -- sending -----------------------------------------------------------------------------

    def send(
        self,
        topic: str,
        *,
        recipient: str,
        round: int,
        stage: str,
        payload_type: str,
        payload: bytes,
        seal_to: bool | Sequence[str] = False,
        key: bytes | None = None,
    ) -> Envelope:
        """Sign and publish one message; returns the envelope as sent (payload sealed if asked).

        ``seal_to=True`` encrypts to ``recipient``; a sequence of ids encrypts to each of them
        (e.g. a broadcast readable by the listed banks only).
        """
        if seal_to is True:
            if recipient == BROADCAST:
                raise ValueError("a broadcast must name the participants to seal to")
            seal_ids: Sequence[str] = [recipient]
        elif seal_to is False:
            seal_ids = []
        elif isinstance(seal_to, str):
            seal_ids = [seal_to]
        else:
            seal_ids = seal_to
        envelope = Envelope(
            federation=self.federation,
            round=round,
            stage=stage,
            sender=self.participant_id,
            recipient=recipient,
            payload_type=payload_type,
            payload=b"",
            flags=FLAG_SEALED if seal_ids else 0,
        )
        if seal_ids:
            keys: dict[str, bytes] = {}
            for pid in seal_ids:
                public = self.allowlist.encryption_key_of(pid)
                if public is None:
                    raise FraudflError(f"allowlist has no encryption key for {pid!r}")
                keys[pid] = public
            payload = seal(payload, keys, envelope.header_bytes())
        envelope = replace(envelope, payload=payload).signed_by(self.identity)
        self.publish(topic, envelope, key=key)
        return envelope

    def publish(self, topic: str, envelope: Envelope, *, key: bytes | None = None) -> None:
        """Publish an already signed envelope (e.g. re-sending after a restart: same id)."""
        data = envelope.encode()
        if len(data) > self.max_message_bytes:
            raise FraudflError(
                f"message of {len(data)} bytes exceeds max_message_bytes {self.max_message_bytes}"
            )
        record_key = key if key is not None else envelope.sender.encode()
        for frame in split(data, envelope.message_id, self.max_record_bytes):
            self.transport.send(topic, record_key, frame)

    def flush(self, timeout_s: float | None = None) -> None:
        self.transport.flush(timeout_s)

    # -- receiving ---------------------------------------------------------------------------

    def listen(self, topics: Iterable[str]) -> list[TopicPartition]:
        """Read every partition of ``topics``, resuming at restored offsets where known."""
        assignment = self.transport.assign_topics(topics)
        resume = {tp: off for tp, off in self._resume.items() if tp in set(assignment)}
        if resume:
            self.transport.seek(resume)
        return assignment

    def receive(self, timeout_s: float) -> list[VerifiedMessage]:
        """Poll once; return the messages completed and verified by the records received."""
        out: list[VerifiedMessage] = []
        for record in self.transport.poll(timeout_s):
            message = self._accept(record)
            if message is not None:
                out.append(message)
        return out

    def _accept(self, record: Record) -> VerifiedMessage | None:
        try:
            done = self._reassembler.add(
                record.value, self._clock(), (record.topic_partition, record.offset),
                sender=self._claimed_sender(record.key),
            )
            if done is None:
                return None
            transfer_id, data = done
            envelope = decode(data, max_payload_bytes=self.max_message_bytes)
            if envelope.message_id != transfer_id:
                raise RejectedMessage(RejectReason.MALFORMED, "chunk transfer id != message id")
            verify_envelope(
                envelope,
                self.allowlist,
                federation=self.federation,
                recipient=self.participant_id,
                replay_guard=self.replay_guard,
            )
            if envelope.sealed:
                if self.encryption_key is None:
                    raise RejectedMessage(
                        RejectReason.UNDECRYPTABLE, "sealed message but no encryption key"
                    )
                plaintext = open_sealed(
                    envelope.payload, self.encryption_key, envelope.header_bytes()
                )
                envelope = replace(envelope, payload=plaintext)
        except RejectedMessage as exc:
            self._reject(exc, record)
            return None
        return VerifiedMessage(envelope, record.topic, record.partition, record.offset)

    def _claimed_sender(self, key: bytes | None) -> str:
        """The enrolled participant a record's key names, or one bucket for every other key
        (chunk frames are not signed; see :mod:`fraudfl.transport.chunking`)."""
        if key is not None:
            try:
                name = key.decode()
            except UnicodeDecodeError:
                return UNENROLLED
            if name in self.allowlist:
                return name
        return UNENROLLED

    def _reject(self, exc: RejectedMessage, record: Record) -> None:
        self.rejections[exc.reason] += 1
        # Duplicates are normal under at-least-once delivery and after restarts.
        level = logging.DEBUG if exc.reason is RejectReason.REPLAY else logging.WARNING
        log.log(
            level,
            "%s rejected a message on %s[%d]@%d: %s",
            self.participant_id,
            record.topic,
            record.partition,
            record.offset,
            exc,
        )
        if self._on_reject is not None:
            self._on_reject(exc.reason, exc.detail, record)

    # -- checkpoints -------------------------------------------------------------------------

    def checkpoint(self) -> ChannelState:
        """Offsets safe to resume from, plus seen message ids.

        An offset never passes the first chunk of a message still being reassembled, since the
        reassembly buffer is not part of the checkpoint; whatever gets read twice as a result is
        dropped by the replay guard.
        """
        offsets = self.transport.position()
        for tp, offset in self._reassembler.pending_origins():
            if tp in offsets:
                offsets[tp] = min(offsets[tp], offset)
        return ChannelState(offsets, self.replay_guard.to_bytes())

    def restore(self, state: ChannelState) -> None:
        """Continue from a checkpoint: call before or after ``listen``."""
        self.replay_guard = ReplayGuard.from_bytes(state.seen)
        self._reassembler = Reassembler(max_message_bytes=self.max_message_bytes)
        self._resume = dict(state.offsets)
        assigned = self.transport.position()
        resume = {tp: off for tp, off in self._resume.items() if tp in assigned}
        if resume:
            self.transport.seek(resume)
