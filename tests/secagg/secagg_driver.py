"""A step-by-step driver for one round, so tests can intercept, drop, forge and replay messages."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fraudfl.secagg import InMemoryFederation, SecAggClient, SecAggServer
from fraudfl.secagg.inmemory import AGGREGATOR_ID
from fraudfl.secagg.messages import stage_rank
from fraudfl.secagg.server import Outgoing, ServerStatus


@dataclass
class Driver:
    fed: InMemoryFederation
    server: SecAggServer
    clients: dict[str, SecAggClient]
    inputs: dict[str, npt.NDArray[np.float64]]
    weights: dict[str, float] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return sorted(self.clients)

    def to_clients(
        self, outgoing: Iterable[Outgoing], silent: Iterable[str] = ()
    ) -> dict[str, bytes]:
        """Deliver server messages; returns each (non-silent) bank's reply."""
        skip = set(silent)
        replies: dict[str, bytes] = {}
        for out in outgoing:
            for name in out.recipients:
                if name in skip:
                    continue
                for reply in self.clients[name].receive(out.data):
                    replies[name] = reply
        return replies

    def to_server(self, replies: dict[str, bytes]) -> list[Outgoing]:
        out: list[Outgoing] = []
        for name in sorted(replies):
            out.extend(self.server.receive(replies[name]))
        return out

    def run(
        self, drop_before: dict[str, int] | None = None, outgoing: list[Outgoing] | None = None
    ) -> None:
        """Play the round to its end; ``drop_before[bank] = s`` silences a bank from stage s
        (in running order: SecAgg+'s reveal stage comes before share keys)."""
        drop_before = drop_before or {}
        pending = self.server.start() if outgoing is None else outgoing
        while self.server.status is ServerStatus.RUNNING:
            silent = {b for b, s in drop_before.items()
                      if stage_rank(self.server.stage) >= stage_rank(s)}
            replies = self.to_clients(pending, silent)
            pending = self.to_server(replies)
            if not pending and self.server.status is ServerStatus.RUNNING:
                pending = self.server.stage_timeout()
        if pending:  # the abort broadcast, to the banks still listening
            silent = {b for b, s in drop_before.items()
                      if stage_rank(self.server.stage) >= stage_rank(s)}
            self.to_clients(pending, silent)

    def expected_total(self, banks: Iterable[str]) -> npt.NDArray[np.unsignedinteger]:
        """The exact ring sum of the named banks' encoded inputs."""
        q = self.server.params.quantizer()
        total = np.zeros(self.server.params.masked_length, dtype=np.uint64)
        for b in banks:
            if self.server.params.weighted:
                total += q.encode_weighted(self.inputs[b], self.weights[b]).astype(np.uint64)
            else:
                total += q.encode(self.inputs[b]).astype(np.uint64)
        return (total % (1 << q.bits)).astype(q.dtype)


def make_driver(
    n: int = 5,
    t: int | None = None,
    d: int = 16,
    *,
    neighbours: int = 0,
    weighted: bool = False,
    bits: int = 32,
    round_number: int = 1,
    seed: int = 0,
    fed: InMemoryFederation | None = None,
    min_threshold_fraction: float = 0.5,
) -> Driver:
    rng = np.random.default_rng(seed)
    fed = fed or InMemoryFederation([f"bank-{i:02d}" for i in range(n)], "fed-test")
    names = sorted(fed.banks)
    if t is None:
        t = n // 2 + 1
    server = SecAggServer.create(
        fed.aggregator, fed.allowlist, fed.federation_id, round_number, names, threshold=t,
        vector_length=d, neighbours=neighbours, weighted=weighted, bits=bits, clip=1.0,
        weight_max=10.0,
    )
    clients, inputs, weights = {}, {}, {}
    for name in names:
        clients[name] = SecAggClient(
            fed.banks[name], fed.allowlist, fed.federation_id, AGGREGATOR_ID,
            min_threshold_fraction=min_threshold_fraction,
        )
        inputs[name] = rng.uniform(-1.2, 1.2, d)
        weights[name] = float(rng.uniform(0.5, 10.0))
        clients[name].set_input(inputs[name], weights[name] if weighted else None)
    return Driver(fed, server, clients, inputs, weights)
