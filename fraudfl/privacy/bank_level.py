"""Bank-level DP of model updates that works under secure aggregation (distributed DP-FedAvg).

What central DP-FedAvg (McMahan et al., "Learning Differentially Private Recurrent Language
Models", ICLR 2018) does at a trusted server, the banks do here between them:

- each bank clips its whole update ``u = w_local - w_global`` to L2 norm ``C``;
- each bank adds Gaussian noise with standard deviation ``sigma * C / sqrt(n_expected)``
  (variance ``sigma^2 C^2 / n_expected``), where ``n_expected`` is the number of banks per round;
- updates are summed with weight 1 each (secure aggregation reveals the sum only), so the sum
  carries noise of variance ``sigma^2 C^2`` against a sensitivity of ``C`` (one bank more or
  less changes the sum by at most ``C``): the Gaussian mechanism with noise multiplier
  ``sigma``, and no party ever adds all the noise or sees a clean update.

The guarantee protects a *whole bank's* participation (all its records at once) and is
accounted at the federation level with the Poisson-subsampled Gaussian RDP bound at sampling
rate ``q = banks per round / total banks`` (as DP-FedAvg does), separately from each bank's
record-level epsilon.

Trust assumption: the noise of a bank that does not add its share, or colludes with the server
and subtracts its own share, does not count. If only ``m < n_expected`` banks' shares remain in
the sum, its noise variance is ``m sigma^2 C^2 / n_expected``: the effective noise multiplier
degrades to ``sigma * sqrt(m / n_expected)`` (:func:`effective_noise_multiplier`,
:func:`degraded_epsilon`). The federation accountant charges every round at the noise that was
actually in the sum, so banks dropping out show up as a higher epsilon rather than silently.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from fraudfl.errors import FraudflError
from fraudfl.privacy.accountant import Mechanism, PrivacyAccountant


def secure_generator() -> np.random.Generator:
    """A noise generator seeded with 256 bits from ``os.urandom``.

    DP noise must be unpredictable to everyone else: a server or bank that could reproduce a
    bank's noise could subtract it from the sum. The seed is what an adversary would have to
    guess; the generator's outputs are never observed directly (only inside a noised sum), so
    PCG64's lack of prediction resistance is not exposed. Simulations and tests pass a
    seeded generator instead, for reproducibility.
    """
    return np.random.Generator(np.random.PCG64(int.from_bytes(os.urandom(32), "big")))


@dataclass(frozen=True)
class BankDPConfig:
    """Federation-wide bank-level DP parameters (announced by the aggregator each round)."""

    clip_norm: float
    noise_multiplier: float
    n_expected: int
    total_banks: int

    def __post_init__(self) -> None:
        if not (self.clip_norm > 0 and math.isfinite(self.clip_norm)):
            raise FraudflError(f"bank_dp clip norm must be a finite number > 0, got "
                               f"{self.clip_norm}")
        if not (self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)):
            raise FraudflError(f"bank_dp noise multiplier must be a finite number > 0, got "
                               f"{self.noise_multiplier}")
        if not 1 <= self.n_expected <= self.total_banks:
            raise FraudflError(f"bank_dp: banks per round must be in [1, {self.total_banks}], "
                               f"got {self.n_expected}")

    @property
    def sample_rate(self) -> float:
        return self.n_expected / self.total_banks

    @property
    def noise_std(self) -> float:
        """Each bank's share: ``sigma * C / sqrt(n_expected)``."""
        return self.noise_multiplier * self.clip_norm / math.sqrt(self.n_expected)


def clip_update(update: np.ndarray, clip_norm: float) -> np.ndarray:
    """``update * min(1, C / ||update||)`` in float64."""
    u = np.asarray(update, dtype=np.float64)
    norm = float(np.linalg.norm(u))
    if not math.isfinite(norm):
        raise FraudflError("update contains NaN or infinite values")
    return u * min(1.0, clip_norm / norm) if norm > 0 else u


def privatize_update(
    update: np.ndarray, cfg: BankDPConfig, rng: np.random.Generator
) -> np.ndarray:
    """A bank's clipped update plus its share of the Gaussian noise, as float32."""
    clipped = clip_update(update, cfg.clip_norm)
    noisy = clipped + rng.normal(0.0, cfg.noise_std, size=clipped.shape)
    return noisy.astype(np.float32)


# Gaussian concentration: ||N(0, s^2 I_d)|| exceeds s * (sqrt(d) + t) with probability at most
# exp(-t^2 / 2); t = 10 makes an honest sum's refusal a 2e-22 event.
NORM_TAIL = 10.0


def max_sum_norm(
    cfg: BankDPConfig, banks: int, dim: int, quantisation_error: float = 0.0
) -> float:
    """The largest L2 norm a sum of ``banks`` honest privatised updates can have (up to the
    :data:`NORM_TAIL` event): each clipped to C plus its noise share, and the sum's rounding
    (``quantisation_error`` per coordinate). A larger sum holds an update no honest bank sent;
    the aggregator refuses it rather than let one bank scale everyone's model."""
    noise = cfg.noise_std * math.sqrt(banks) * (math.sqrt(dim) + NORM_TAIL)
    return banks * cfg.clip_norm + noise + quantisation_error * math.sqrt(dim)


def effective_noise_multiplier(noise_multiplier: float, n_expected: int, noising: int) -> float:
    """The noise multiplier of a sum holding ``noising`` banks' shares instead of ``n_expected``."""
    if noising < 0 or n_expected < 1:
        raise FraudflError(f"need n_expected >= 1 and noising >= 0, got {n_expected}, {noising}")
    return noise_multiplier * math.sqrt(noising / n_expected)


def degraded_epsilon(
    cfg: BankDPConfig,
    rounds: int,
    delta: float,
    *,
    honest: int | None = None,
    mechanism: Mechanism = "rdp",
) -> float:
    """Federation-level epsilon after ``rounds`` rounds if only ``honest`` banks' noise counts
    (default: all ``n_expected``); infinite when no honest noise is left."""
    m = cfg.n_expected if honest is None else honest
    sigma = effective_noise_multiplier(cfg.noise_multiplier, cfg.n_expected, m)
    if sigma == 0:
        return math.inf
    acc = PrivacyAccountant(mechanism, label="federation")
    acc.charge(sigma, cfg.sample_rate, rounds)
    return acc.epsilon(delta)


