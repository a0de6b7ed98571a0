"""Missing values have their own bin and a default direction learnt from where they belong."""

from __future__ import annotations

import numpy as np
import pytest

from fraudfl.trees import BankData, BinEdges, GBDTParams, train_federated


def _data(missing_like: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Label 1 iff x0 > 0, or x0 missing and ``missing_like == 'high'``."""
    rng = np.random.default_rng(seed)
    n = 2000
    x = rng.uniform(-1, 1, n)
    y = (x > 0).astype(np.int64)
    gone = rng.random(n) < 0.2
    x[gone] = np.nan
    y[gone] = 1 if missing_like == "high" else 0
    return x[:, None], y


@pytest.mark.parametrize(("missing_like", "default_left"), [("high", False), ("low", True)])
def test_default_direction_is_learnt(missing_like: str, default_left: bool) -> None:
    X, y = _data(missing_like)
    edges = BinEdges.of([np.linspace(-0.9, 0.9, 19)], max_bin=20)
    params = GBDTParams(n_estimators=3, max_depth=1, max_bin=20, learning_rate=0.5)
    halves = [slice(0, 700), slice(700, None)]
    model = train_federated(
        [BankData(edges.transform(X[s]), y[s]) for s in halves], params, edges
    ).ensemble
    # The root splits x0 at 0 ("bin <= 9" is "x <= 0") and sends missing values with the
    # rows they resemble.
    assert model.feature[0, 0] == 0
    assert edges.threshold_value(0, int(model.split_bin[0, 0])) == pytest.approx(0.0)
    assert bool(model.default_left[0, 0]) is default_left
    p = model.predict_proba(np.array([[np.nan], [-0.5], [0.5]]))
    if missing_like == "high":
        assert p[0] > 0.5 and p[0] == pytest.approx(p[2])
    else:
        assert p[0] < 0.5 and p[0] == pytest.approx(p[1])


def test_missingness_alone_can_be_the_split() -> None:
    """All values left, missing right: "is it missing?" is a candidate split."""
    rng = np.random.default_rng(1)
    n = 1000
    x = rng.normal(size=n)
    gone = rng.random(n) < 0.3
    x[gone] = np.nan
    y = gone.astype(np.int64)
    edges = BinEdges.of([np.linspace(-2, 2, 7)], max_bin=8)
    params = GBDTParams(n_estimators=1, max_depth=1, max_bin=8)
    model = train_federated([BankData(edges.transform(x[:, None]), y)], params, edges).ensemble
    assert model.feature[0, 0] == 0
    assert model.split_bin[0, 0] == 7 and not model.default_left[0, 0]
    p = model.predict_proba(np.array([[np.nan], [100.0], [-100.0]]))
    assert p[0] > 0.5 > p[1] and p[1] == p[2]
