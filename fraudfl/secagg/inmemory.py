"""Running whole rounds in one process: for the simulator, tests and benchmarks.

:class:`InMemoryFederation` holds the banks' identities, one :class:`SecAggClient` per bank and
an aggregator identity, and delivers messages between them through a queue; banks can be made
to drop out before answering a given stage. :func:`secure_sum` is the one-call form.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fraudfl.errors import FraudflError
from fraudfl.identity import Allowlist, Identity
from fraudfl.secagg.client import SecAggClient
from fraudfl.secagg.errors import RoundAborted
from fraudfl.secagg.graph import effective_degree
from fraudfl.secagg.messages import stage_rank
from fraudfl.secagg.quantize import Quantizer, Rounding
from fraudfl.secagg.server import SecAggServer, ServerStatus

log = logging.getLogger(__name__)

AGGREGATOR_ID = "aggregator"


@dataclass(frozen=True)
class SecureSumConfig:
    """How a secure sum is run: quantisation range and precision, threshold and graph.

    ``threshold_fraction`` sets t to the smallest integer above that fraction of each bank's
    group (the full federation, or k + 1 banks with SecAgg+); ``neighbours`` is the SecAgg+
    degree k (0 = full graph).
    """

    clip: float = 1.0
    bits: int = 32
    threshold_fraction: float = 0.5
    neighbours: int = 0
    weight_max: float = 1.0
    rounding: Rounding = Rounding.NEAREST

    def __post_init__(self) -> None:
        # Set by users (simulate --secagg-neighbours); RoundParams would only refuse it later,
        # mid-round, with a ValueError.
        if self.neighbours < 0:
            raise FraudflError(
                f"secure aggregation: neighbours must be >= 0 (0 = full graph), "
                f"got {self.neighbours}"
            )

    def group_size(self, n: int) -> int:
        degree = effective_degree(n, self.neighbours)
        return n if degree == 0 else degree + 1

    def threshold(self, n: int) -> int:
        return int(self.threshold_fraction * self.group_size(n)) + 1

    def quantizer(self, n: int) -> Quantizer:
        return Quantizer(self.clip, self.bits, n, self.weight_max, self.rounding)


@dataclass
class RoundOutcome:
    total: npt.NDArray[np.unsignedinteger]
    survivors: list[str]
    quantizer: Quantizer


class InMemoryFederation:
    """Banks and an aggregator exchanging protocol messages in memory."""

    def __init__(self, bank_ids: Sequence[str], federation_id: str = "simulation") -> None:
        self.federation_id = federation_id
        self.aggregator = Identity.generate(AGGREGATOR_ID)
        self.banks = {b: Identity.generate(b) for b in bank_ids}
        self.allowlist = Allowlist()
        self.allowlist.enroll(AGGREGATOR_ID, self.aggregator.public_bytes, "aggregator")
        for bank in self.banks.values():
            self.allowlist.enroll(bank.participant_id, bank.public_bytes)
        self.round = 0

    def ensure_banks(self, bank_ids: Sequence[str]) -> None:
        """Create and enrol identities for banks not seen before."""
        for b in bank_ids:
            if b not in self.banks:
                self.banks[b] = Identity.generate(b)
                self.allowlist.enroll(b, self.banks[b].public_bytes)

    def client(self, bank: str, config: SecureSumConfig) -> SecAggClient:
        return SecAggClient(
            self.banks[bank], self.allowlist, self.federation_id, AGGREGATOR_ID,
            rounding=config.rounding,
        )

    def run_round(
        self,
        inputs: Mapping[str, tuple[npt.ArrayLike, float | None]],
        config: SecureSumConfig,
        *,
        drop_before: Mapping[str, int] | None = None,
        round_number: int | None = None,
    ) -> RoundOutcome:
        """Run one round; ``drop_before[bank] = s`` makes a bank silent from stage ``s`` (1-5).

        Raises :class:`RoundAborted` when the round cannot complete.
        """
        if round_number is not None and round_number <= self.round:
            raise ValueError(f"round {round_number} is not after round {self.round}")
        self.round = self.round + 1 if round_number is None else round_number
        drop_before = drop_before or {}
        names = sorted(inputs)
        first = np.asarray(inputs[names[0]][0])
        weighted = inputs[names[0]][1] is not None
        server = SecAggServer.create(
            self.aggregator, self.allowlist, self.federation_id, self.round, names,
            threshold=config.threshold(len(names)), vector_length=first.size,
            neighbours=config.neighbours, weighted=weighted, bits=config.bits,
            clip=config.clip, weight_max=config.weight_max,
        )
        clients = {}
        for name in names:
            clients[name] = self.client(name, config)
            update, weight = inputs[name]
            clients[name].set_input(update, weight)
        queue = deque(server.start())
        while server.status is ServerStatus.RUNNING:
            if not queue:
                queue.extend(server.stage_timeout())
                continue
            out = queue.popleft()
            for name in out.recipients:
                for reply in clients[name].receive(out.data):
                    if name in drop_before and (
                        stage_rank(server.stage) >= stage_rank(drop_before[name])
                    ):
                        continue
                    queue.extend(server.receive(reply))
        if server.status is ServerStatus.ABORTED:
            raise RoundAborted(server.abort_reason)
        return RoundOutcome(server.result, server.survivors, server.params.quantizer())


def secure_sum(
    contributions: Sequence[npt.ArrayLike], config: SecureSumConfig | None = None
) -> npt.NDArray[np.float64]:
    """The sum of ``contributions`` (each clipped to ``[-clip, clip]``), computed by SecAgg.

    Within ``config.quantizer(n).error_bound()`` of the exact sum of the clipped vectors.
    """
    config = config or SecureSumConfig()
    fed = InMemoryFederation([f"bank-{i:04d}" for i in range(len(contributions))])
    inputs = {name: (c, None) for name, c in zip(sorted(fed.banks), contributions, strict=True)}
    outcome = fed.run_round(inputs, config)
    return outcome.quantizer.decode(outcome.total)


def secure_weighted_sum(
    updates: Sequence[npt.ArrayLike], weights: Sequence[float],
    config: SecureSumConfig | None = None,
) -> tuple[npt.NDArray[np.float64], float]:
    """(sum of weight_i * update_i, sum of weight_i), the server learning only these sums."""
    config = config or SecureSumConfig()
    fed = InMemoryFederation([f"bank-{i:04d}" for i in range(len(updates))])
    inputs = {
        name: (u, float(w))
        for name, u, w in zip(sorted(fed.banks), updates, weights, strict=True)
    }
    outcome = fed.run_round(inputs, config)
    return outcome.quantizer.decode_weighted(outcome.total)
