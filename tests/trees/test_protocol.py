"""The job's task sequence: early stopping, refusals, and what the reducer accepts."""

from __future__ import annotations

import numpy as np
import pytest

from fraudfl.errors import FraudflError
from fraudfl.trees import BankData, BinEdges, GBDTParams, TaskRefused, TreeBank, train_federated
from fraudfl.trees.bank import log_loss_sum
from fraudfl.trees.protocol import LeafTask, LevelTask, TreeBuilder, ValidationTask
from tests.trees.conftest import MAX_BIN, make_banks


def test_early_stopping_keeps_the_best_round(
    binary_banks: tuple[list[BankData], BinEdges, list[np.ndarray]],
) -> None:
    banks, edges, _ = binary_banks
    # Validation rows from other draws of the same banks; a high learning rate and deep trees
    # overfit quickly, so the validation loss turns up well before 40 rounds.
    Xv, yv = make_banks(seed=9, sizes=(300, 300, 300))
    with_val = [BankData(b.X, b.y, edges.transform(x), y)
                for b, x, y in zip(banks, Xv, yv, strict=True)]
    params = GBDTParams(n_estimators=40, max_depth=6, learning_rate=1.0, reg_lambda=0.0,
                        min_child_weight=0.0, max_bin=MAX_BIN, early_stopping_rounds=3)
    fit = train_federated(with_val, params, edges)
    losses = [r.validation_loss for r in fit.records]
    assert all(v is not None for v in losses)
    best = int(np.argmin(losses)) + 1
    assert fit.best_round == best == fit.ensemble.n_rounds
    assert len(losses) == best + 3 < 40
    # The reported losses are the pooled validation log loss of the kept prefix of rounds.
    Xb = np.concatenate([edges.transform(x) for x in Xv])
    y = np.concatenate(yv)
    margin = fit.ensemble.margin_binned(Xb)
    assert log_loss_sum(margin, y) / len(y) == pytest.approx(losses[best - 1], rel=1e-9)


def test_a_bank_refuses_tasks_out_of_order(
    binary_banks: tuple[list[BankData], BinEdges, list[np.ndarray]],
) -> None:
    banks, edges, _ = binary_banks
    params = GBDTParams(n_estimators=2, max_depth=3, max_bin=MAX_BIN, base_score=0.4)
    builder = TreeBuilder(params, edges)
    first = builder.task
    assert isinstance(first, LevelTask) and first.depth == 0
    builder.reduce(sum(TreeBank(b.X, b.y, params, rng=np.random.default_rng(0)).handle(first)
                       for b in banks))
    second = builder.task
    assert isinstance(second, LevelTask) and second.depth == 1
    fresh = TreeBank(banks[0].X, banks[0].y, params, rng=np.random.default_rng(0))
    with pytest.raises(TaskRefused, match="current round is -1"):
        fresh.handle(second)
    leaf = LeafTask(round=0, ensemble=second.ensemble, trees=second.trees)
    with pytest.raises(TaskRefused, match="leaves of round 0"):
        fresh.handle(leaf)


def test_reducer_refuses_a_sum_of_the_wrong_shape_and_keeps_its_state(
    binary_banks: tuple[list[BankData], BinEdges, list[np.ndarray]],
) -> None:
    _, edges, _ = binary_banks
    builder = TreeBuilder(GBDTParams(n_estimators=1, max_depth=2, max_bin=MAX_BIN), edges)
    task = builder.task
    assert task is not None
    with pytest.raises(FraudflError, match="expected a sum of 2 values"):
        builder.reduce(np.zeros(3))
    with pytest.raises(FraudflError, match="not finite"):
        builder.reduce(np.array([1.0, np.nan]))
    assert builder.task is task
    builder.reduce(np.array([10.0, 30.0]))
    assert builder.ensemble.base_margin[0] == pytest.approx(np.log(3.0))
    assert not isinstance(builder.task, ValidationTask)


def test_a_bank_adds_local_trees_to_the_federated_model_on_its_budget(
    binary_banks: tuple[list[BankData], BinEdges, list[np.ndarray]],
) -> None:
    from fraudfl.privacy.accountant import HistoryEntry, PrivacyAccountant, PrivacyBudget
    from fraudfl.trees import calibrate_tree_noise

    banks, edges, _ = binary_banks
    params = GBDTParams(n_estimators=4, max_depth=3, max_bin=MAX_BIN, base_score=0.4)
    federated = train_federated(banks, params, edges).ensemble
    local = params.model_copy(update={"n_estimators": 2, "subsample": 0.5})
    acc = PrivacyAccountant(budget=PrivacyBudget(2.0, 1e-5))
    noise = calibrate_tree_noise(acc, 2.0, local)
    fit = train_federated([banks[2]], local, edges, noise=noise, accountants=[acc],
                          initial=federated)
    tuned = fit.ensemble
    assert tuned.n_rounds == 6
    np.testing.assert_array_equal(tuned.truncated(4).feature, federated.feature)
    np.testing.assert_array_equal(tuned.truncated(4).value, federated.value)
    np.testing.assert_array_equal(tuned.base_margin, federated.base_margin)
    assert acc.history == (HistoryEntry(noise.tree_multiplier, 0.5, 2),)
    with pytest.raises(FraudflError, match="initial ensemble"):
        train_federated([banks[2]], local.model_copy(update={"max_depth": 2}), edges,
                        initial=federated)
