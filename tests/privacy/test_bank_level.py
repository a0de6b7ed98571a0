"""Bank-level DP: clipping, the stated noise variance, federation accounting and degradation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fraudfl.errors import FraudflError
from fraudfl.privacy.bank_level import (
    BankDPConfig,
    clip_update,
    privatize_update,
    secure_generator,
)

CFG = BankDPConfig(clip_norm=0.5, noise_multiplier=1.2, n_expected=5, total_banks=20)
DELTA = 1e-3


def test_clipping_bounds_the_update_norm_and_keeps_small_updates() -> None:
    rng = np.random.default_rng(0)
    for scale in (1e-3, 0.1, 10.0, 1e4):
        u = rng.normal(size=1000) * scale
        clipped = clip_update(u, CFG.clip_norm)
        assert np.linalg.norm(clipped) <= CFG.clip_norm * (1 + 1e-12)
        if np.linalg.norm(u) <= CFG.clip_norm:
            np.testing.assert_array_equal(clipped, u)
        else:
            assert np.linalg.norm(clipped) == pytest.approx(CFG.clip_norm)
            # Same direction: clipping only rescales.
            assert float(clipped @ u) == pytest.approx(CFG.clip_norm * np.linalg.norm(u))
    with pytest.raises(FraudflError):
        clip_update(np.array([1.0, np.nan]), 1.0)


def _variance_ci(samples: np.ndarray, alpha: float = 1e-6) -> tuple[float, float]:
    """Two-sided chi-square confidence interval for the variance of zero-mean normal draws."""
    k = samples.size
    ss = float(np.sum(samples.astype(np.float64) ** 2))
    return ss / stats.chi2.ppf(1 - alpha / 2, k), ss / stats.chi2.ppf(alpha / 2, k)


def test_each_bank_adds_noise_of_the_stated_variance() -> None:
    rng = np.random.default_rng(1)
    draws = np.concatenate([privatize_update(np.zeros(20_000), CFG, rng) for _ in range(10)])
    expected = CFG.noise_multiplier**2 * CFG.clip_norm**2 / CFG.n_expected
    low, high = _variance_ci(draws)
    assert low <= expected <= high
    # And it is not a looser noise: the interval is tight enough to reject +-5%.
    assert high < 1.05 * expected and low > 0.95 * expected
    assert abs(draws.mean()) < 6 * math.sqrt(expected / draws.size)


def test_the_sum_over_expected_banks_carries_sigma_squared_c_squared() -> None:
    rng = np.random.default_rng(2)
    dim = 40_000
    summed = sum(privatize_update(np.zeros(dim), CFG, rng).astype(np.float64)
                 for _ in range(CFG.n_expected))
    low, high = _variance_ci(np.asarray(summed))
    assert low <= (CFG.noise_multiplier * CFG.clip_norm) ** 2 <= high


def test_noised_update_is_clipped_update_plus_noise() -> None:
    u = np.full(10_000, 1.0)  # norm 100, far above C
    out = privatize_update(u, CFG, np.random.default_rng(3)).astype(np.float64)
    residual = out - clip_update(u, CFG.clip_norm)
    assert np.std(residual) == pytest.approx(CFG.noise_std, rel=0.05)


def test_secure_generator_is_unseeded() -> None:
    a, b = secure_generator(), secure_generator()
    assert not np.array_equal(a.normal(size=8), b.normal(size=8))


def test_invalid_config_is_a_user_error() -> None:
    with pytest.raises(FraudflError, match="banks per round"):
        BankDPConfig(clip_norm=1.0, noise_multiplier=1.0, n_expected=30, total_banks=20)
    with pytest.raises(FraudflError, match="clip norm"):
        BankDPConfig(clip_norm=0.0, noise_multiplier=1.0, n_expected=3, total_banks=20)


