"""Message transport for fraudfl: envelopes, signatures, sealing, chunking, transports.

Knows nothing of protocol meaning: payloads are opaque bytes with a type label. The Kafka
transport and the embedded broker live in ``fraudfl.transport.kafka`` and
``fraudfl.transport.broker`` and are imported from there, so importing this package stays cheap.
"""

from fraudfl.transport.base import Record, TopicPartition, TopicSpec, Transport
from fraudfl.transport.channel import Channel, ChannelState, VerifiedMessage
from fraudfl.transport.chunking import DEFAULT_MAX_RECORD_BYTES, Reassembler, split
from fraudfl.transport.envelope import BROADCAST, Envelope, decode, verify_envelope
from fraudfl.transport.errors import RejectedMessage, RejectReason, TransportError
from fraudfl.transport.memory import MemoryBroker, MemoryTransport
from fraudfl.transport.replay import ReplayGuard
from fraudfl.transport.sealing import EncryptionKey, open_sealed, seal
from fraudfl.transport.topics import TopicLayout

__all__ = [
    "BROADCAST",
    "DEFAULT_MAX_RECORD_BYTES",
    "Channel",
    "ChannelState",
    "EncryptionKey",
    "Envelope",
    "MemoryBroker",
    "MemoryTransport",
    "Reassembler",
    "Record",
    "RejectReason",
    "RejectedMessage",
    "ReplayGuard",
    "TopicLayout",
    "TopicPartition",
    "TopicSpec",
    "Transport",
    "TransportError",
    "VerifiedMessage",
    "decode",
    "open_sealed",
    "seal",
    "split",
    "verify_envelope",
]
