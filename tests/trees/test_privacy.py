"""DP for trees: sensitivity, noise calibration, noise shares and the accountant's charge."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fraudfl.privacy.accountant import (
    BudgetExhausted,
    HistoryEntry,
    PrivacyAccountant,
    PrivacyBudget,
)
from fraudfl.trees import BankData, BinEdges, GBDTParams, calibrate_tree_noise, train_federated
from fraudfl.trees.bank import TaskRefused, TreeBank
from fraudfl.trees.histogram import HistogramLayout, cell_codes, node_histograms
from fraudfl.trees.privacy import STAT_BOUNDS, add_noise_share, clip_gradients, level_sensitivity
from fraudfl.trees.protocol import LabelCountTask
from tests.trees.conftest import MAX_BIN

DELTA = 1e-5


def _params(**kw: object) -> GBDTParams:
    base = dict(n_estimators=5, max_depth=3, max_bin=MAX_BIN, subsample=0.5, base_score=0.3,
                learning_rate=0.3, min_child_weight=0.5)
    base.update(kw)
    return GBDTParams(**base)  # type: ignore[arg-type]


def test_one_row_moves_a_level_vector_by_at_most_the_sensitivity() -> None:
    rng = np.random.default_rng(0)
    n, n_features, k = 400, 6, 3
    codes = rng.integers(0, MAX_BIN + 1, (n, n_features)).astype(np.uint8)
    slots = rng.integers(-1, 4, (n, k))
    g, h = clip_gradients(rng.normal(0, 3, (n, k)), rng.normal(0, 1, (n, k)))
    layout = HistogramLayout(4 * k, (MAX_BIN + 1,) * n_features)
    slots = slots + np.arange(k) * 4 * (slots >= 0)  # each output's nodes in its own slots
    full = node_histograms(slots, cell_codes(codes, layout, MAX_BIN), g, h, layout)
    worst = 0.0
    for i in range(0, n, 37):
        keep = np.arange(n) != i
        less = node_histograms(slots[keep], cell_codes(codes[keep], layout, MAX_BIN), g[keep],
                               h[keep], layout)
        diff = ((full - less).reshape(-1, 3) / STAT_BOUNDS).reshape(-1)
        worst = max(worst, float(np.linalg.norm(diff)))
    assert worst <= level_sensitivity(n_features, k) + 1e-9
    assert worst > 0.5 * level_sensitivity(n_features, k)


def test_calibration_meets_the_target_over_the_planned_trees() -> None:
    params = _params(n_estimators=50, max_depth=6, subsample=0.3)
    acc = PrivacyAccountant(budget=PrivacyBudget(3.0, DELTA))
    noise = calibrate_tree_noise(acc, 3.0, params)
    assert noise.steps_per_tree == 7
    assert noise.step_multiplier == pytest.approx(noise.tree_multiplier * math.sqrt(7))
    eps = acc.projected_epsilon(noise.tree_multiplier, 0.3, 50)
    assert 2.95 <= eps <= 3.0
    # Subsampling amplifies: the same budget without it needs more noise.
    full = calibrate_tree_noise(
        PrivacyAccountant(budget=PrivacyBudget(3.0, DELTA)), 3.0, _params(n_estimators=50,
                                                                            max_depth=6,
                                                                            subsample=1.0))
    assert full.step_multiplier > 1.5 * noise.step_multiplier


def test_dp_job_charges_one_step_per_round_and_stays_in_budget(
    binary_banks: tuple[list[BankData], BinEdges, list[np.ndarray]],
) -> None:
    banks, edges, _ = binary_banks
    params = _params()
    accs = [PrivacyAccountant(budget=PrivacyBudget(2.0, DELTA), label=f"b{i}")
            for i in range(len(banks))]
    noise = calibrate_tree_noise(accs[0], 2.0, params)
    fit = train_federated(banks, params, edges, noise=noise, accountants=accs, seed=1)
    assert fit.ensemble.n_rounds == params.n_estimators
    for acc in accs:
        assert acc.history == (HistoryEntry(noise.tree_multiplier, 0.5, params.n_estimators),)
        assert acc.epsilon() <= 2.0
    # The noise is there: the same job without it gives different leaves.
    plain = train_federated(banks, params.model_copy(update={"subsample": 1.0}), edges)
    assert not np.allclose(plain.ensemble.value, fit.ensemble.value)


def test_a_bank_over_budget_declines_before_touching_data(
    binary_banks: tuple[list[BankData], BinEdges, list[np.ndarray]],
) -> None:
    banks, edges, _ = binary_banks
    params = _params()
    noise = calibrate_tree_noise(PrivacyAccountant(budget=PrivacyBudget(3.0, DELTA)), 3.0, params)
    accs = [PrivacyAccountant(budget=PrivacyBudget(3.0, DELTA)) for _ in banks]
    accs[1] = PrivacyAccountant(budget=PrivacyBudget(1.0, DELTA), label="small")
    with pytest.raises(BudgetExhausted, match="small"):
        train_federated(banks, params, edges, noise=noise, accountants=accs)
    assert accs[1].history == ()


def test_label_counts_are_not_released_under_dp(
    binary_banks: tuple[list[BankData], BinEdges, list[np.ndarray]],
) -> None:
    banks, _, _ = binary_banks
    params = _params()
    acc = PrivacyAccountant(budget=PrivacyBudget(3.0, DELTA))
    bank = TreeBank(banks[0].X, banks[0].y, params, rng=np.random.default_rng(0),
                    noise=calibrate_tree_noise(acc, 3.0, params), accountant=acc)
    with pytest.raises(TaskRefused, match="label counts"):
        bank.handle(LabelCountTask(2))


def test_noise_shares_add_up_to_sigma() -> None:
    std = np.array([4.0, 1.0, 4.0])
    shares, size = 5, 3 * 40_000
    rng = np.random.default_rng(0)
    total = sum(add_noise_share(np.zeros(size), std, shares, rng) for _ in range(shares))
    np.testing.assert_allclose(total.reshape(-1, 3).std(axis=0), std, rtol=0.02)
    one = add_noise_share(np.zeros(size), std, shares, rng).reshape(-1, 3).std(axis=0)
    np.testing.assert_allclose(one, std / math.sqrt(shares), rtol=0.02)
