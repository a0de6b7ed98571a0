"""Typed events of the round state machines (h11 style): what happened, for the caller to log
and count. The orchestrator and the bank participant queue them next to the messages they
return; ``drain_events()`` hands them over. Nothing in a service diffs state to learn them.
"""

from __future__ import annotations

from dataclasses import dataclass

from fraudfl.vocabulary import AbortReason, RoundKind


@dataclass(frozen=True)
class RoundStarted:
    round: int
    kind: RoundKind
    selected: tuple[str, ...]


@dataclass(frozen=True)
class StageEnded:
    """A secure-aggregation stage closed (every expected bank answered, or its deadline)."""

    round: int
    stage: str
    seconds: float
    participants: int
    dropouts: int


@dataclass(frozen=True)
class BankDropped:
    round: int
    bank: str


@dataclass(frozen=True)
class BankDeclined:
    round: int
    bank: str
    reason: str
    detail: str


@dataclass(frozen=True)
class RoundCompleted:
    round: int
    kind: RoundKind
    seconds: float
    model_version: int
    survivors: tuple[str, ...]
    metrics: tuple[tuple[str, float], ...]
    federation_epsilon: float | None


@dataclass(frozen=True)
class RoundAborted:
    round: int
    kind: RoundKind
    cause: AbortReason
    reason: str


@dataclass(frozen=True)
class FederationFinished:
    completed: int
    planned: int


@dataclass(frozen=True)
class MessageRejected:
    """A message refused at the protocol or control layer (transport rejections are counted
    where they happen, by the channel)."""

    reason: str
    detail: str


# Bank side.
@dataclass(frozen=True)
class RoundJoined:
    round: int
    kind: RoundKind


@dataclass(frozen=True)
class Trained:
    """Local training finished (the caller, which holds the clock, times it)."""

    round: int
    examples: int
    loss: float


@dataclass(frozen=True)
class RoundDeclined:
    round: int
    reason: str
    detail: str


OrchestratorEvent = (RoundStarted | StageEnded | BankDropped | BankDeclined | RoundCompleted
                     | RoundAborted | FederationFinished | MessageRejected)
BankEvent = RoundJoined | Trained | RoundDeclined | MessageRejected
