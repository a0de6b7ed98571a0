"""splitter="random": structure from public randomness, leaves from the summed leaf sums."""

from __future__ import annotations

import numpy as np

from fraudfl.privacy.accountant import HistoryEntry, PrivacyAccountant, PrivacyBudget
from fraudfl.trees import BankData, BinEdges, GBDTParams, calibrate_tree_noise, train_federated
from fraudfl.trees.ensemble import level_nodes, traverse
from tests.trees.conftest import MAX_BIN


def _params(**kw: object) -> GBDTParams:
    base = dict(n_estimators=4, max_depth=3, max_bin=MAX_BIN, splitter="random",
                learning_rate=0.3, reg_lambda=1.0, seed=5)
    base.update(kw)
    return GBDTParams(**base)  # type: ignore[arg-type]


def test_structure_ignores_the_data_and_leaves_are_newton_steps(
    binary_banks: tuple[list[BankData], BinEdges, list[np.ndarray]],
) -> None:
    banks, edges, _ = binary_banks
    params = _params()
    fit = train_federated(banks, params, edges)
    model = fit.ensemble
    # One sum per tree (plus the label counts), complete trees, splits on real cut points.
    assert fit.sums == 1 + params.n_estimators
    internal = model.feature[:, : level_nodes(params.max_depth)[0]]
    assert np.all(internal >= 0)
    n_cuts = np.array([len(e) for e in edges.edges])
    assert np.all(model.split_bin[:, : internal.shape[1]] < n_cuts[internal])
    # Other labels, same structure: the splits did not look at the data.
    flipped = [BankData(b.X, 1 - b.y) for b in banks]
    other = train_federated(flipped, params, edges).ensemble
    np.testing.assert_array_equal(model.feature, other.feature)
    np.testing.assert_array_equal(model.split_bin, other.split_bin)
    # Leaves: -lr G / (H + lambda) of the pooled rows in each leaf at the previous margins.
    Xb = np.concatenate([b.X for b in banks])
    y = np.concatenate([b.y for b in banks]).astype(float)
    margin = np.full(len(y), model.base_margin[0])
    for t in range(model.n_trees):
        p = 1 / (1 + np.exp(-margin))
        leaf = traverse(model.feature[t:t + 1], model.split_bin[t:t + 1],
                        model.default_left[t:t + 1], Xb, params.max_depth, MAX_BIN)[:, 0]
        for node in np.unique(leaf):
            rows = leaf == node
            expected = -0.3 * (p[rows] - y[rows]).sum() / ((p[rows] * (1 - p[rows])).sum() + 1)
            assert abs(model.value[t, node] - expected) < 1e-9
        margin = margin + model.value[t, leaf]


def test_dp_random_trees_pay_for_the_leaves_only(
    binary_banks: tuple[list[BankData], BinEdges, list[np.ndarray]],
) -> None:
    banks, edges, _ = binary_banks
    params = _params(subsample=0.5, base_score=0.3)
    accs = [PrivacyAccountant(budget=PrivacyBudget(1.0, 1e-5)) for _ in banks]
    noise = calibrate_tree_noise(accs[0], 1.0, params)
    assert noise.steps_per_tree == 1 and noise.tree_multiplier == noise.step_multiplier
    best = calibrate_tree_noise(PrivacyAccountant(budget=PrivacyBudget(1.0, 1e-5)), 1.0,
                                params.model_copy(update={"splitter": "best"}))
    # Same per-round multiplier; the histogram splitter spreads it over max_depth + 1 sums.
    assert best.step_multiplier > 1.9 * noise.step_multiplier
    train_federated(banks, params, edges, noise=noise, accountants=accs)
    assert accs[0].history == (HistoryEntry(noise.tree_multiplier, 0.5, params.n_estimators),)


def test_feature_weights_steer_column_sampling_and_random_splits(
    binary_banks: tuple[list[BankData], BinEdges, list[np.ndarray]],
) -> None:
    import pytest

    from fraudfl.errors import FraudflError

    banks, edges, _ = binary_banks
    weights = (0.0, 1.0, 0.0, 3.0, 0.0, 0.0)
    random_fit = train_federated(banks, _params(feature_weights=weights, n_estimators=6), edges)
    used = random_fit.ensemble.feature[random_fit.ensemble.feature >= 0]
    assert set(used.tolist()) == {1, 3}
    assert np.count_nonzero(used == 3) > np.count_nonzero(used == 1)
    best_fit = train_federated(banks, _params(feature_weights=weights, splitter="best",
                                              colsample_bytree=0.5), edges)
    used = best_fit.ensemble.feature[best_fit.ensemble.feature >= 0]
    assert len(used) and set(used.tolist()) <= {1, 3}
    with pytest.raises(FraudflError, match="2 weights for 6 features"):
        train_federated(banks, _params(feature_weights=(1.0, 1.0)), edges)
    with pytest.raises(ValueError, match="at least one > 0"):
        _params(feature_weights=(0.0,) * 6)
