from __future__ import annotations

import numpy as np
import pytest

from fraudfl.trees import BankData, BinEdges, edges_from_histograms, feature_histograms

MAX_BIN = 15


def make_banks(
    num_class: int = 2, seed: int = 0, sizes: tuple[int, ...] = (1500, 900, 400)
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Non-identical banks with missing values (informative in feature 2) and a nonlinear label."""
    rng = np.random.default_rng(seed)
    Xs, ys = [], []
    for b, n in enumerate(sizes):
        X = rng.normal(0.3 * b, 1.0, size=(n, 6))
        X[:, 5] = rng.integers(0, 2, n)  # a 0/1 column: two bins only
        X[rng.random((n, 6)) < 0.08 + 0.05 * b] = np.nan
        x = np.nan_to_num(X)
        score = 1.5 * x[:, 0] - x[:, 1] ** 2 + 2.0 * np.isnan(X[:, 2]) + 0.8 * x[:, 5]
        if num_class == 2:
            y = (rng.random(n) < 1 / (1 + np.exp(-(score - 1.0)))).astype(np.int64)
        else:
            y = np.digitize(score + rng.normal(0, 0.7, n), [-0.5, 1.0]).astype(np.int64)
        Xs.append(X)
        ys.append(y)
    return Xs, ys


def federated_edges(Xs: list[np.ndarray], max_bin: int = MAX_BIN) -> BinEdges:
    """Cut points from the banks' summed quantile-sketch counts."""
    total = sum(feature_histograms(X) for X in Xs)
    return edges_from_histograms(total, Xs[0].shape[1], max_bin)


@pytest.fixture
def binary_banks() -> tuple[list[BankData], BinEdges, list[np.ndarray]]:
    Xs, ys = make_banks()
    edges = federated_edges(Xs)
    return [BankData(edges.transform(X), y) for X, y in zip(Xs, ys, strict=True)], edges, Xs
