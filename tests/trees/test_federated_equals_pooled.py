"""Federated GBDT from summed per-bank vectors == a pooled, independently written histogram GBDT.

Why an independent reference and not ``train_federated`` on the pooled rows: see
``tests/trees/reference.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from fraudfl.trees import BankData, GBDTParams, TreeEnsemble, train_federated
from tests.trees.conftest import MAX_BIN, federated_edges, make_banks
from tests.trees.reference import RefModel, fit_reference, reference_margin


def _params(num_class: int, **kw: object) -> GBDTParams:
    base = dict(n_estimators=6, max_depth=4, learning_rate=0.3, reg_lambda=1.0,
                min_child_weight=0.5, min_child_samples=5, gamma=0.0, max_bin=MAX_BIN,
                num_class=num_class, seed=3)
    base.update(kw)
    return GBDTParams(**base)  # type: ignore[arg-type]


def _assert_same(model: TreeEnsemble, ref: RefModel) -> int:
    """Same splits and leaves, leaf values to 1e-6; returns the number of splits compared."""
    np.testing.assert_allclose(model.base_margin, ref.base, atol=1e-12)
    k_out = model.n_outputs
    assert model.n_rounds == len(ref.rounds)
    splits = 0
    for r, trees in enumerate(ref.rounds):
        for k, tree in enumerate(trees):
            t = r * k_out + k
            internal = {int(i) for i in np.flatnonzero(model.feature[t] >= 0)}
            assert internal == set(tree.splits), f"round {r} tree {k}: split nodes differ"
            for node, (f, b, dl) in tree.splits.items():
                got = (model.feature[t, node], model.split_bin[t, node],
                       bool(model.default_left[t, node]))
                assert got == (f, b, dl), f"round {r} tree {k} node {node}"
                assert model.value[t, node] == 0.0
            for node, value in tree.leaves.items():
                assert model.feature[t, node] < 0
                assert model.value[t, node] == pytest.approx(value, abs=1e-6)
            leaves = {int(i) for i in np.flatnonzero(model.value[t] != 0.0)}
            assert leaves <= set(tree.leaves)
            splits += len(tree.splits)
    return splits


@pytest.mark.parametrize(
    ("num_class", "extra"),
    [
        (2, {}),
        (2, {"colsample_bytree": 0.5, "gamma": 0.5, "reg_lambda": 3.0}),
        (3, {}),
    ],
)
def test_federated_equals_pooled_reference(num_class: int, extra: dict[str, float]) -> None:
    Xs, ys = make_banks(num_class=num_class)
    edges = federated_edges(Xs)
    banks = [BankData(edges.transform(X), y) for X, y in zip(Xs, ys, strict=True)]
    params = _params(num_class, **extra)
    fed = train_federated(banks, params, edges)

    Xb = np.concatenate([b.X for b in banks])
    y = np.concatenate(ys)
    ref = fit_reference(
        Xb, y, num_class=num_class, n_estimators=params.n_estimators,
        max_depth=params.max_depth, learning_rate=params.learning_rate,
        reg_lambda=params.reg_lambda, min_child_weight=params.min_child_weight,
        min_child_samples=params.min_child_samples, gamma=params.gamma,
        colsample_bytree=params.colsample_bytree, max_bin=MAX_BIN, seed=params.seed,
    )
    splits = _assert_same(fed.ensemble, ref)
    # The comparison has teeth: trees that split, some splits sending missing values left.
    assert splits >= params.n_estimators * fed.ensemble.n_outputs * 3
    assert fed.ensemble.default_left.any()
    np.testing.assert_allclose(
        fed.ensemble.margin_binned(Xb), reference_margin(ref, Xb, MAX_BIN), atol=1e-6
    )


def test_one_bank_or_many_give_the_same_model() -> None:
    """The sum decomposes: the same code on the pooled rows gives the same trees."""
    Xs, ys = make_banks()
    edges = federated_edges(Xs)
    banks = [BankData(edges.transform(X), y) for X, y in zip(Xs, ys, strict=True)]
    pooled = BankData(np.concatenate([b.X for b in banks]), np.concatenate(ys))
    params = _params(2, n_estimators=4)
    a = train_federated(banks, params, edges).ensemble
    b = train_federated([pooled], params, edges).ensemble
    np.testing.assert_array_equal(a.feature, b.feature)
    np.testing.assert_array_equal(a.split_bin, b.split_bin)
    np.testing.assert_allclose(a.value, b.value, atol=1e-12)
