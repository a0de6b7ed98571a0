"""Secure aggregation behind the simulator's :class:`~fraudfl.strategy.Aggregator` seam.

Each bank contributes ``(weight, update)``; the weight is normalised by a public
``weight_scale`` into ``[0, 1]`` and the bank masks ``[w * update, w]``, so the aggregator
learns only ``sum(w_i * update_i)`` and ``sum(w_i)``, which are scaled back to the caller's
units. The result equals :class:`~fraudfl.strategy.PlainAggregator`'s within
:meth:`SecureAggregator.error_bound` as long as no coordinate of ``w * update`` exceeds the clip
range (clipping is logged).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from fraudfl.errors import FraudflError
from fraudfl.secagg.inmemory import InMemoryFederation, SecureSumConfig
from fraudfl.strategy import Contribution, SummedUpdate

log = logging.getLogger(__name__)


class SecureAggregator:
    """Sums contributions with the full SecAgg / SecAgg+ protocol run in memory."""

    def __init__(
        self,
        config: SecureSumConfig | None = None,
        *,
        weight_scale: float | None = None,
        federation_id: str = "simulation",
    ) -> None:
        self.config = config or SecureSumConfig()
        if self.config.weight_max != 1.0:
            raise FraudflError("SecureAggregator normalises weights: weight_max must be 1.0")
        if weight_scale is not None and not weight_scale > 0:
            raise FraudflError(f"weight_scale must be > 0, got {weight_scale}")
        self.weight_scale = weight_scale
        self.federation = InMemoryFederation([], federation_id)
        self.last_error_bound = 0.0

    def error_bound(self, n: int, weight_scale: float) -> tuple[float, float]:
        """Worst-case error of (each coordinate of the weighted sum, the weight sum)."""
        q = self.config.quantizer(n)
        return q.error_bound() * weight_scale, q.weight_error_bound() * weight_scale

    def sum(
        self, server_round: int, contributions: Sequence[Contribution], dim: int
    ) -> SummedUpdate:
        if len(contributions) < 2:
            # The "sum" of one bank is its update: secure aggregation cannot hide it, so the
            # round is skipped, as the services abort a round below their minimum.
            log.warning(
                "round %d: %d contribution(s); secure aggregation needs at least 2, skipping",
                server_round, len(contributions),
            )
            return SummedUpdate(np.zeros(dim), 0.0, 0, 0)
        scale = self.weight_scale or max(c.weight for c in contributions) or 1.0
        inputs: dict[str, tuple[np.ndarray, float | None]] = {}
        clipped = 0
        for c in contributions:
            if not 0 <= c.weight <= scale:
                raise FraudflError(
                    f"bank {c.bank_id}: weight {c.weight} outside [0, weight_scale={scale}]"
                )
            if c.update.shape != (dim,):
                raise FraudflError(
                    f"bank {c.bank_id}: update has shape {c.update.shape}, expected ({dim},)"
                )
            w = c.weight / scale
            clipped += int(np.count_nonzero(np.abs(w * c.update) > self.config.clip))
            inputs[c.bank_id] = (c.update, w)
        if clipped:
            log.warning(
                "round %d: %d coordinates of weight * update exceed the clip range %g",
                server_round, clipped, self.config.clip,
            )
        self.federation.ensure_banks(list(inputs))
        outcome = self.federation.run_round(inputs, self.config, round_number=server_round)
        total, weight_sum = outcome.quantizer.decode_weighted(outcome.total)
        self.last_error_bound = self.error_bound(len(contributions), scale)[0]
        return SummedUpdate(
            weighted_update_sum=total * scale,
            weight_sum=weight_sum * scale,
            num_participants=len(outcome.survivors),
            num_partial=sum(c.partial for c in contributions),
        )
