from __future__ import annotations

import numpy as np
import pytest

from fraudfl.errors import FraudflError
from fraudfl.trees import BinEdges, default_grid, edges_from_grid_counts, grid_counts


def test_bins_follow_x_le_edge_and_missing_has_its_own_code() -> None:
    edges = BinEdges.of([[0.0, 1.0], [5.0]], max_bin=4)
    X = np.array([[-1.0, 5.0], [0.0, 5.1], [0.5, np.nan], [1.0, -3.0], [7.0, 9.0], [np.nan, 0.0]])
    codes = edges.transform(X)
    assert codes.dtype == np.uint8
    np.testing.assert_array_equal(codes[:, 0], [0, 0, 1, 1, 2, 4])
    np.testing.assert_array_equal(codes[:, 1], [0, 1, 4, 0, 1, 0])
    assert edges.threshold_value(0, 1) == 1.0
    assert edges.threshold_value(0, 2) == np.inf


def test_edges_from_summed_counts_are_equal_count_quantiles() -> None:
    rng = np.random.default_rng(0)
    banks = [rng.lognormal(b, 1.0, size=(3000 * (b + 1), 2)) for b in range(3)]
    for X in banks:
        X[:, 1] = rng.integers(0, 2, len(X))  # an indicator
        X[rng.random(len(X)) < 0.1, 0] = np.nan
    grid = default_grid()
    summed = sum(grid_counts(X, grid) for X in banks)
    edges = edges_from_grid_counts(grid, summed, 2, max_bin=16)
    pooled = np.concatenate(banks)
    # The same edges as from the pooled counts (the sum is exact), ...
    again = edges_from_grid_counts(grid, grid_counts(pooled, grid), 2, 16)
    np.testing.assert_array_equal(edges.edges[0], again.edges[0])
    # ... near-equal-count bins on a heavy-tailed column, one cut for the indicator.
    codes = edges.transform(pooled)
    counts = np.bincount(codes[:, 0], minlength=17)
    present = counts[:16][counts[:16] > 0]
    assert len(present) == 16
    assert present.max() / present.min() < 1.2
    assert counts[16] == np.isnan(pooled[:, 0]).sum()
    assert len(edges.edges[1]) == 1 and 0 <= edges.edges[1][0] < 1


def test_bad_edges_and_shapes_are_refused() -> None:
    with pytest.raises(FraudflError, match="strictly increasing"):
        BinEdges.of([[1.0, 1.0]], max_bin=4)
    with pytest.raises(FraudflError, match="at most 3"):
        BinEdges.of([[1.0, 2.0, 3.0, 4.0]], max_bin=4)
    with pytest.raises(FraudflError, match="2 feature columns"):
        BinEdges.of([[0.0], [0.0]], max_bin=4).transform(np.zeros((3, 3)))
    e = BinEdges.of([[0.5, 2.0], []], max_bin=300)
    assert e.transform(np.array([[np.nan, 1.0]])).dtype == np.uint16
    assert BinEdges.from_dict(e.to_dict()) == e
    with pytest.raises(FraudflError, match="'edges'"):
        BinEdges.from_dict({**e.to_dict(), "edges": [["1"]]})
