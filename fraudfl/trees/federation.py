"""In-process federated boosting: banks' handlers, a sum, the aggregator's reducer, in a loop.

This is the tree job without transport, for tests, benchmarks and research runs, the way the
round engine (issue 10) will run it with secure aggregation between the banks and the reducer.
``sum_vectors`` is where the engine's sum goes: :func:`plain_sum` adds the vectors in the
clear; :func:`quantized_sum` adds their fixed-point encodings in the ring secure aggregation
works in (masks cancel exactly, so a masked sum decodes to the same value); the real protocol
(``fraudfl.secagg.inmemory.secure_sum``) plugs in the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import reduce

import numpy as np
import numpy.typing as npt

from fraudfl.errors import FraudflError
from fraudfl.privacy.accountant import PrivacyAccountant
from fraudfl.secagg.inmemory import InMemoryFederation, SecureSumConfig
from fraudfl.secagg.quantize import Quantizer
from fraudfl.trees.bank import TreeBank
from fraudfl.trees.binning import BinEdges, BinnedArray
from fraudfl.trees.ensemble import TreeEnsemble
from fraudfl.trees.params import GBDTParams
from fraudfl.trees.privacy import TreeNoise
from fraudfl.trees.protocol import LeafTask, LevelTask, RoundRecord, TreeBuilder

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
SumFn = Callable[[Sequence[FloatArray]], FloatArray]


@dataclass(frozen=True)
class BankData:
    """One bank's binned training rows and labels, and optional validation rows."""

    X: BinnedArray
    y: npt.NDArray[np.int64]
    X_val: BinnedArray | None = None
    y_val: npt.NDArray[np.int64] | None = None


def plain_sum(vectors: Sequence[FloatArray]) -> FloatArray:
    """The vectors added in the clear, in bank order."""
    out: FloatArray = reduce(np.add, vectors)
    return out


def quantized_sum(clip: float, bits: int = 32) -> SumFn:
    """A sum through the fixed-point ring of secure aggregation (``fraudfl.secagg.quantize``).

    Each vector is clipped to ``[-clip, clip]`` and encoded, the encodings are added modulo
    ``2^bits`` (what unmasking yields) and decoded: within ``Quantizer.error_bound`` per
    coordinate of the plain sum.
    """

    def run(vectors: Sequence[FloatArray]) -> FloatArray:
        q = Quantizer(clip=clip, bits=bits, max_summands=len(vectors))
        total = reduce(lambda a, b: (a + b).astype(q.dtype), (q.encode(v) for v in vectors))
        return q.decode(total)

    return run


def secure_sum(config: SecureSumConfig, n_banks: int) -> SumFn:
    """Each sum by the real secure-aggregation protocol (in memory), one SecAgg round per step.

    The aggregator learns only the decoded sum, within ``config.quantizer(n).error_bound()``
    of the plain sum of the clipped vectors. Every step runs the full key agreement here; how a
    job can reuse it across steps is in ``docs/trees.md``.
    """
    fed = InMemoryFederation([f"bank-{i:04d}" for i in range(n_banks)])
    names = sorted(fed.banks)

    def run(vectors: Sequence[FloatArray]) -> FloatArray:
        inputs = {name: (v, None) for name, v in zip(names, vectors, strict=True)}
        outcome = fed.run_round(inputs, config)
        return outcome.quantizer.decode(outcome.total)

    return run


@dataclass
class FitResult:
    """The trained ensemble and what each boosting round cost."""

    ensemble: TreeEnsemble
    records: list[RoundRecord]
    best_round: int | None
    seconds_per_round: list[float] = field(default_factory=list)
    sums: int = 0


def train_federated(
    banks: Sequence[BankData],
    params: GBDTParams,
    edges: BinEdges,
    *,
    sum_vectors: SumFn = plain_sum,
    noise: TreeNoise | None = None,
    accountants: Sequence[PrivacyAccountant] | None = None,
    noise_shares: int | None = None,
    seed: int = 0,
    initial: TreeEnsemble | None = None,
) -> FitResult:
    """Boost trees over ``banks`` (one bank = local or pooled training with the same code).

    With ``noise`` every bank clips, adds ``noise`` / sqrt(``noise_shares``) (default: every
    bank's share is in the sum) and charges its accountant in ``accountants``. With
    ``initial``, ``params.n_estimators`` rounds are added to that ensemble (a bank's local
    trees on top of the federated model: pass its own rows as the only bank).
    """
    if not banks:
        raise FraudflError("tree job: no banks")
    if edges.max_bin != params.max_bin:
        raise FraudflError(f"tree job: edges have max_bin {edges.max_bin}, params {params.max_bin}")
    if noise is not None and (accountants is None or len(accountants) != len(banks)):
        raise FraudflError("tree job: DP needs one accountant per bank")
    shares = len(banks) if noise_shares is None else noise_shares
    handlers = [
        TreeBank(
            b.X, b.y, params,
            rng=np.random.default_rng([seed, i]),
            noise=noise,
            accountant=None if accountants is None else accountants[i],
            noise_shares=shares,
            X_val=b.X_val, y_val=b.y_val,
            label=f"bank {i}",
        )
        for i, b in enumerate(banks)
    ]
    builder = TreeBuilder(params, edges, estimate_base_score=noise is None, initial=initial)
    seconds: list[float] = []
    sums = 0
    start = time.perf_counter()
    while (task := builder.task) is not None:
        builder.reduce(sum_vectors([h.handle(task) for h in handlers]))
        sums += 1
        if isinstance(task, LeafTask):
            now = time.perf_counter()
            seconds.append(now - start)
            start = now
        elif not isinstance(task, LevelTask):
            start = time.perf_counter()
    for h in handlers:
        h.finish()
    return FitResult(builder.ensemble, builder.records, builder.best_round, seconds, sums)
