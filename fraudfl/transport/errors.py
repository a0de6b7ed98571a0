"""Why the transport refuses a message or an operation."""

from __future__ import annotations

from enum import StrEnum

from fraudfl.errors import FraudflError


class RejectReason(StrEnum):
    """Labels for rejected inbound messages; services count rejections by these."""

    MALFORMED = "malformed"
    UNSUPPORTED_VERSION = "unsupported_version"
    TOO_LARGE = "too_large"
    CORRUPT = "corrupt"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_SENDER = "unknown_sender"
    WRONG_FEDERATION = "wrong_federation"
    WRONG_RECIPIENT = "wrong_recipient"
    REPLAY = "replay"
    # A chunk claims to belong to another sender's transfer.
    IMPERSONATION = "impersonation"
    UNDECRYPTABLE = "undecryptable"


class RejectedMessage(Exception):
    """An inbound message failed decoding or verification; ``reason`` says why."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class TransportError(FraudflError):
    """The broker or a topic could not be used (unreachable, missing topic, delivery failed)."""
