"""The round engine over an in-memory grid: the services minus Kafka.

:class:`InMemoryGrid` moves the real :class:`~fraudfl.rounds.orchestrator.Orchestrator`'s
messages to the real :class:`~fraudfl.rounds.participant.BankParticipant` objects and their replies
back, with a simulated clock that jumps to the next stage deadline whenever nothing is in
flight. Everything a round computes (weight, threshold, noise calibration, DP-FedAvg's
denominator and accounting, FedPer, the strategy step) happens in those two state machines,
exactly as in the aggregator and bank-node services; what the grid leaves out is what the
services add around them: signing and sealing envelopes, Kafka, checkpoints, metrics.

``fraudfl simulate`` runs on it (:mod:`fraudfl.simulation`), and so do the tests of the round
protocol. A bank can be made to miss a round (``absent``: none of its replies in that round
arrive, as a bank too slow for the stage deadline) or to drop out for good (``drop``: its replies
from a given one on are lost).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fraudfl.rounds.messages import MODEL, ModelInfo, decode_model
from fraudfl.rounds.orchestrator import Orchestrator, Outbound
from fraudfl.rounds.participant import BankParticipant, Reply

log = logging.getLogger(__name__)

# Simulated seconds between two deliveries: keeps the clock moving so stage timing is defined.
_TICK = 0.001


class GridStalled(RuntimeError):
    """The federation neither finished nor had a deadline to wait for (a protocol bug)."""


@dataclass
class InMemoryGrid:
    """An orchestrator and its banks exchanging messages in one process."""

    orchestrator: Orchestrator
    banks: Mapping[str, BankParticipant]
    now: float = 0.0
    # (bank, round) -> True: the bank's replies in that round are lost (it reads everything, as
    # a bank does from the topics, but answers too late).
    absent: Callable[[str, int], bool] | None = None
    # bank -> predicate(reply) returning True to lose that reply and all after it (dropout).
    drop: dict[str, Callable[[Reply], bool]] = field(default_factory=dict)
    dead: set[str] = field(default_factory=set)
    # Called with each published model, in order, once the banks have received it.
    on_model: Callable[[ModelInfo, npt.NDArray[np.float32]], None] | None = None
    transcript: list[Outbound] | None = None

    def run(self, max_steps: int = 1_000_000) -> None:
        """Start the federation and deliver until it finishes."""
        self.pump(self.orchestrator.start(self.now), max_steps)

    def pump(self, out: list[Outbound], max_steps: int = 1_000_000) -> None:
        """Deliver ``out`` and everything it causes until the orchestrator finishes."""
        queue = list(out)
        for _ in range(max_steps):
            if self.orchestrator.finished and not queue:
                return
            if not queue:
                deadline = self.orchestrator.deadline()
                if deadline is None:
                    raise GridStalled(f"round {self.orchestrator.round}: nothing in flight and "
                                      "no deadline")
                self.now = max(self.now, deadline) + _TICK
                queue = self.orchestrator.timeout(self.now)
                continue
            replies = self.deliver(queue)
            queue = []
            for bank_id, reply in replies:
                self.now += _TICK
                queue += self.orchestrator.receive(
                    bank_id, reply.round, reply.payload_type, reply.payload, self.now
                )
        raise GridStalled(f"federation did not finish within {max_steps} deliveries")

    def deliver(self, out: list[Outbound]) -> list[tuple[str, Reply]]:
        """Hand each message to its recipients; the banks' replies, in order."""
        replies: list[tuple[str, Reply]] = []
        for msg in out:
            if self.transcript is not None:
                self.transcript.append(msg)
            targets = list(self.banks) if msg.recipient == "*" else [msg.recipient]
            for bank_id in targets:
                if bank_id in self.dead or bank_id not in self.banks:
                    continue
                for reply in self.banks[bank_id].receive(msg.payload_type, msg.payload):
                    if self.absent is not None and self.absent(bank_id, reply.round):
                        continue
                    rule = self.drop.get(bank_id)
                    if rule is not None and rule(reply):
                        self.dead.add(bank_id)
                        log.info("%s dropped out before sending %s", bank_id, reply.stage)
                        break
                    replies.append((bank_id, reply))
            if msg.payload_type == MODEL and self.on_model is not None:
                # After the banks have it (and, for model v0, have transformed their rows).
                self.on_model(*decode_model(msg.payload))
        return replies
