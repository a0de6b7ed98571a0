"""With secure aggregation the sums are fixed-point; the model stays within the quantisation
bound."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fraudfl.secagg.inmemory import SecureSumConfig
from fraudfl.trees import BankData, BinEdges, GBDTParams, plain_sum, quantized_sum, train_federated
from fraudfl.trees.ensemble import traverse
from fraudfl.trees.federation import secure_sum
from tests.trees.conftest import MAX_BIN

# Largest |d/dm p(1 - p)| of the logistic hessian: at p = 1/2 +- 1/sqrt(12).
HESS_SLOPE = 1 / (6 * np.sqrt(3))


def test_secure_model_within_quantisation_bound(
    binary_banks: tuple[list[BankData], BinEdges, list[np.ndarray]],
) -> None:
    banks, edges, _ = binary_banks
    params = GBDTParams(n_estimators=4, max_depth=3, learning_rate=0.3, max_bin=MAX_BIN,
                        min_child_weight=0.5, min_child_samples=5)
    # The largest coordinate a bank sends is a row count of one bin (< 2048 here).
    config = SecureSumConfig(clip=2048.0, bits=32)
    e = config.quantizer(len(banks)).error_bound()
    run_secure = secure_sum(config, len(banks))
    sum_errors: list[float] = []

    def checked(vectors: Sequence[np.ndarray]) -> np.ndarray:
        total = run_secure(vectors)
        sum_errors.append(float(np.abs(total - plain_sum(vectors)).max()))
        return total

    plain = train_federated(banks, params, edges).ensemble
    secure = train_federated(banks, params, edges, sum_vectors=checked).ensemble

    # Every sum the aggregator decoded is within the protocol's bound of the exact sum.
    assert len(sum_errors) == 1 + params.n_estimators * params.steps_per_tree
    assert 0 < max(sum_errors) <= e
    # Same splits (no gain is within 2e of another here) ...
    np.testing.assert_array_equal(plain.feature, secure.feature)
    np.testing.assert_array_equal(plain.split_bin, secure.split_bin)
    np.testing.assert_array_equal(plain.default_left, secure.default_left)
    # ... and leaf values within the bound propagated from e through the rounds: a margin
    # error D moves each gradient by <= D/4 and each hessian by <= HESS_SLOPE * D.
    Xb = np.concatenate([b.X for b in banks])
    y = np.concatenate([b.y for b in banks]).astype(float)
    lam, lr = params.reg_lambda, params.learning_rate
    drift = float(np.abs(plain.base_margin - secure.base_margin).max())
    margin = np.full(len(y), plain.base_margin[0])
    for t in range(plain.n_trees):
        p = 1 / (1 + np.exp(-margin))
        g, h = p - y, p * (1 - p)
        leaf = traverse(plain.feature[t:t + 1], plain.split_bin[t:t + 1],
                        plain.default_left[t:t + 1], Xb, params.max_depth, MAX_BIN)[:, 0]
        worst = 0.0
        for node in np.unique(leaf):
            rows = leaf == node
            count, G, H = rows.sum(), g[rows].sum(), h[rows].sum()
            dG, dH = e + count * drift / 4, e + count * HESS_SLOPE * drift
            b = H + lam
            bound = lr * (dG * b + abs(G) * dH) / (b * (b - dH))
            diff = abs(plain.value[t, node] - secure.value[t, node])
            assert diff <= bound, f"tree {t} leaf {node}: {diff} > {bound}"
            worst = max(worst, bound)
        drift += worst
        margin = margin + plain.value[t, leaf]
    assert drift < 1e-2  # the bound is not vacuous


def test_quantized_sum_matches_the_protocol_arithmetic() -> None:
    rng = np.random.default_rng(0)
    vectors = [rng.normal(0, 100, 500) for _ in range(4)]
    config = SecureSumConfig(clip=1000.0, bits=32)
    via_protocol = secure_sum(config, 4)(vectors)
    via_ring = quantized_sum(1000.0, 32)(vectors)
    np.testing.assert_array_equal(via_protocol, via_ring)
    assert np.abs(via_ring - plain_sum(vectors)).max() <= config.quantizer(4).error_bound()
