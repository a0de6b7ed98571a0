"""Errors raised by the secure-aggregation state machines.

A :class:`MessageRejected` leaves the state machine exactly as it was, so a caller can count the
rejection (by :class:`RejectReason`) and keep feeding it messages. :class:`RoundAborted` means
the round cannot finish (too few participants left); the state machine stays in a terminal
``aborted`` state with the same reason.
"""

from __future__ import annotations

from enum import StrEnum


class RejectReason(StrEnum):
    """Why an inbound message was refused; small and stable so services can count by it."""

    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_SENDER = "unknown_sender"
    WRONG_FEDERATION = "wrong_federation"
    WRONG_ROUND = "wrong_round"
    WRONG_STAGE = "wrong_stage"
    DUPLICATE = "duplicate"
    MALFORMED = "malformed"
    WRONG_LENGTH = "wrong_length"
    IMPERSONATION = "impersonation"
    INCONSISTENT = "inconsistent"
    DECRYPTION_FAILED = "decryption_failed"


class SecAggError(Exception):
    """Base class of secure-aggregation errors."""


class MessageRejected(SecAggError):
    """An inbound message was refused; the receiver's state is unchanged."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class RoundAborted(SecAggError):
    """The round ended without a result (e.g. fewer than ``t`` participants remain)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UsageError(SecAggError):
    """The local caller used the state machine wrongly (e.g. no input set before masking)."""
