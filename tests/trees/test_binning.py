from __future__ import annotations

import numpy as np
import pytest

from fraudfl.errors import FraudflError
from fraudfl.trees import BinEdges, edges_from_histograms, feature_histograms
from fraudfl.trees.binning import TREE_GRID_BINS


def test_bins_follow_edge_le_x_lt_next_edge_and_missing_has_its_own_code() -> None:
    edges = BinEdges.of([[0.0, 1.0], [5.0]], max_bin=4)
    X = np.array([[-1.0, 5.0], [0.0, 4.9], [0.5, np.nan], [1.0, -3.0], [7.0, 9.0], [np.nan, 0.0]])
    codes = edges.transform(X)
    assert codes.dtype == np.uint8
    np.testing.assert_array_equal(codes[:, 0], [0, 1, 1, 2, 2, 4])
    np.testing.assert_array_equal(codes[:, 1], [1, 0, 4, 0, 1, 0])
    assert edges.threshold_value(0, 1) == 1.0
    assert edges.threshold_value(0, 2) == np.inf


def test_edges_from_summed_sketches_are_the_pooled_equal_count_cuts() -> None:
    rng = np.random.default_rng(0)
    banks = [rng.lognormal(b, 1.0, size=(3000 * (b + 1), 2)) for b in range(3)]
    for X in banks:
        X[:, 1] = rng.integers(0, 2, len(X))  # an indicator
        X[rng.random(len(X)) < 0.1, 0] = np.nan
    summed = sum(feature_histograms(X) for X in banks)
    assert summed.shape == (2 * TREE_GRID_BINS,)
    edges = edges_from_histograms(summed, 2, max_bin=16)
    pooled = np.concatenate(banks)
    # The same edges as from the pooled rows (the sum of integer counts is exact), ...
    assert edges == edges_from_histograms(feature_histograms(pooled), 2, 16)
    # ... no bin with much more than its 1/16 share on a heavy-tailed column (the sketch grid
    # resolves ~19% of x, so shares are uneven) and the indicator's 0 and 1 in different bins.
    codes = edges.transform(pooled)
    counts = np.bincount(codes[:, 0], minlength=17)
    present = counts[:16][counts[:16] > 0]
    assert len(present) >= 12
    assert present.max() < 2.5 * present.sum() / 16
    assert counts[16] == np.isnan(pooled[:, 0]).sum()
    assert len(np.unique(codes[:, 1])) == 2
    assert np.all(codes[pooled[:, 1] == 0, 1] == 0) and np.all(codes[pooled[:, 1] == 1, 1] == 1)


def test_bad_edges_and_shapes_are_refused() -> None:
    with pytest.raises(FraudflError, match="strictly increasing"):
        BinEdges.of([[1.0, 1.0]], max_bin=4)
    with pytest.raises(FraudflError, match="at most 3"):
        BinEdges.of([[1.0, 2.0, 3.0, 4.0]], max_bin=4)
    with pytest.raises(FraudflError, match="2 feature columns"):
        BinEdges.of([[0.0], [0.0]], max_bin=4).transform(np.zeros((3, 3)))
    with pytest.raises(FraudflError, match="max_bin"):
        edges_from_histograms(np.zeros(TREE_GRID_BINS), 1, 255)
    with pytest.raises(FraudflError, match="non-negative counts"):
        edges_from_histograms(np.zeros(TREE_GRID_BINS + 1), 1, 16)
    e = BinEdges.of([[0.5, 2.0], []], max_bin=300)
    assert e.transform(np.array([[np.nan, 1.0]])).dtype == np.uint16
    assert BinEdges.from_dict(e.to_dict()) == e
    with pytest.raises(FraudflError, match="'edges'"):
        BinEdges.from_dict({**e.to_dict(), "edges": [["1"]]})
