"""Differential privacy for histogram GBDT: bounded gradients, noise calibration, noise shares.

**Sensitivity.** Gradients are clipped to ``|g| <= 1`` and hessians to ``[0, 1/4]`` (no-ops for
the logistic and softmax losses, enforced anyway so the bound never depends on the loss code).
Each statistic is divided by its bound (:data:`STAT_BOUNDS`), so every coordinate moves by at
most 1 when a row is added or removed. In one tree level a row sits in exactly one open node of
each of the round's ``K`` trees (``K`` = 1, or the number of classes with softmax) and in exactly
one bin of each of the ``F`` sampled features, so it touches ``3 F K`` coordinates: the L2
sensitivity of the level vector is ``sqrt(3 F K)``; of the leaf vector (one cell per leaf)
``sqrt(3 K)``.

**One accountant step per tree.** Every sum of a boosting round (``max_depth`` levels and the
leaf sums) is computed on the same Poisson sample of rows (rate ``subsample``), each with
Gaussian noise of ``z`` times its sensitivity. The adaptive composition of ``m`` Gaussian
mechanisms with multiplier ``z`` is dominated by one Gaussian mechanism with multiplier
``z / sqrt(m)`` (Dong, Roth & Su 2019, Gaussian DP composition), and Poisson subsampling
amplifies a mechanism through its dominating pair (Zhu, Dong & Wang 2022), so one round is one
step of the subsampled Gaussian mechanism with ``tree_multiplier = z / sqrt(m)`` at sample rate
``subsample``: exactly what :class:`~fraudfl.privacy.accountant.PrivacyAccountant` composes.
The job authorises ``n_estimators`` such steps before touching data and charges one per round.

**Noise shares.** The banks' vectors are summed by secure aggregation, so the noise only has to
be in the sum: each bank adds ``N(0, sigma^2 / shares)`` and any ``shares`` contributions
together carry ``sigma``. ``shares`` is the secure-aggregation threshold (the fewest banks whose
vectors a completed sum contains), so dropouts can only add noise. See ``docs/trees.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fraudfl.errors import FraudflError
from fraudfl.privacy.accountant import PrivacyAccountant
from fraudfl.trees.histogram import N_STATS
from fraudfl.trees.params import GBDTParams

FloatArray = npt.NDArray[np.float64]

GRAD_BOUND = 1.0
HESS_BOUND = 0.25
# Per statistic (grad, hess, count): the most one row adds to a coordinate.
STAT_BOUNDS = np.array([GRAD_BOUND, HESS_BOUND, 1.0])


def clip_gradients(g: FloatArray, h: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``g`` into ``[-1, 1]``, ``h`` into ``[0, 1/4]``: the bounds the sensitivity assumes."""
    return np.clip(g, -GRAD_BOUND, GRAD_BOUND), np.clip(h, 0.0, HESS_BOUND)


def level_sensitivity(n_features: int, n_outputs: int) -> float:
    """L2 sensitivity of a bound-normalised level vector (see the module docstring)."""
    return math.sqrt(N_STATS * n_features * n_outputs)


@dataclass(frozen=True)
class TreeNoise:
    """Noise of one DP boosting job.

    ``step_multiplier`` (z) is the noise-to-sensitivity ratio of every sum; ``tree_multiplier``
    (``z / sqrt(steps_per_tree)``) and ``sample_rate`` are what the accountant is charged per
    boosting round.
    """

    step_multiplier: float
    steps_per_tree: int
    sample_rate: float

    @property
    def tree_multiplier(self) -> float:
        return self.step_multiplier / math.sqrt(self.steps_per_tree)

    def level_std(self, n_features: int, n_outputs: int) -> FloatArray:
        """Std of the noise in the *sum* per statistic (grad, hess, count) of a level vector."""
        std: FloatArray = (
            self.step_multiplier * level_sensitivity(n_features, n_outputs) * STAT_BOUNDS
        )
        return std

    def leaf_std(self, n_outputs: int) -> FloatArray:
        """Std of the noise in the sum per statistic of the leaf vector."""
        return self.level_std(1, n_outputs)


def calibrate_tree_noise(
    accountant: PrivacyAccountant,
    target_epsilon: float,
    params: GBDTParams,
    delta: float | None = None,
) -> TreeNoise:
    """The noise with which ``params.n_estimators`` boosting rounds keep the bank's total
    epsilon (history included) at or below ``target_epsilon`` at ``delta``.

    Each round is one subsampled Gaussian step (rate ``params.subsample``) of multiplier
    ``z / sqrt(max_depth + 1)``; the accountant finds the smallest such multiplier and ``z``
    follows.
    """
    tree_multiplier = accountant.calibrate_noise(
        target_epsilon, params.subsample, params.n_estimators, delta
    )
    return TreeNoise(
        step_multiplier=tree_multiplier * math.sqrt(params.steps_per_tree),
        steps_per_tree=params.steps_per_tree,
        sample_rate=params.subsample,
    )


def add_noise_share(
    vector: FloatArray, std: FloatArray, shares: int, rng: np.random.Generator
) -> FloatArray:
    """``vector`` (stats innermost) plus this bank's share ``N(0, std^2 / shares)`` of the noise.

    ``rng`` must be seeded from ``os.urandom`` in a deployment: noise a party can predict
    protects nothing.
    """
    if shares < 1:
        raise FraudflError(f"noise shares: expected >= 1 banks, got {shares}")
    scale = np.tile(std / math.sqrt(shares), vector.size // N_STATS)
    noisy: FloatArray = vector + rng.normal(0.0, 1.0, vector.size) * scale
    return noisy
