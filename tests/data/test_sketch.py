"""The federated quantile sketch: summed grid histograms give the pooled bin edges exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraudfl.data import (
    MISSING_BIN,
    BinMapper,
    FeaturePipeline,
    FeatureStats,
    Schema,
    bin_edges,
    compute_stats,
    sum_stats,
)
from fraudfl.data.sketch import GRID_BINS, GRID_EDGES, grid_histogram, quantile_edges
from fraudfl.errors import FraudflError
from fraudfl.rounds import exact_sum

SCHEMA = Schema(label="y", numeric=["amount", "count", "signed"], categorical=[],
                transforms={"amount": "quantile", "count": "quantile"})


def bank(rng: np.random.Generator, n: int, shift: float) -> pd.DataFrame:
    amount = rng.lognormal(3 + shift, 1.5, n)
    amount[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({
        "amount": amount,
        "count": rng.poisson(1 + shift, n).astype(np.float64),
        "signed": rng.standard_t(2, n) * 50,
        "y": (rng.random(n) < 0.05).astype(np.int64),
    })


@pytest.fixture
def banks() -> list[pd.DataFrame]:
    rng = np.random.default_rng(11)
    return [bank(rng, n, s) for n, s in ((3000, 0.0), (800, 1.0), (150, 2.5))]


def test_grid_is_fixed_and_ascending() -> None:
    assert np.all(np.diff(GRID_EDGES) > 0)
    assert len(GRID_EDGES) + 1 == GRID_BINS
    counts = grid_histogram(np.array([-1e20, -3.0, 0.0, 1e-9, 1.0, 1.5, 1e20, np.nan]))
    assert counts.sum() == 7
    assert counts[0] == 1 and counts[-1] == 1


def test_summed_histograms_give_the_pooled_edges_exactly(banks: list[pd.DataFrame]) -> None:
    summed = sum_stats(compute_stats(f, SCHEMA) for f in banks)
    pooled = compute_stats(pd.concat(banks, ignore_index=True), SCHEMA)
    np.testing.assert_array_equal(summed.histograms, pooled.histograms)
    fed, ref = bin_edges(dict(zip(SCHEMA.numeric, summed.histograms, strict=True))), bin_edges(
        dict(zip(SCHEMA.numeric, pooled.histograms, strict=True)))
    for col in SCHEMA.numeric:
        np.testing.assert_array_equal(fed[col], ref[col])
    # A count column has few distinct values: few edges, each between two of them.
    assert 2 <= len(fed["count"]) < 20


def test_through_the_exact_secure_sum_encoding(banks: list[pd.DataFrame]) -> None:
    """What the services do: each bank encodes its vector in integer digits; the digit sums
    decode to the exact sum, so the aggregator's histograms equal the pooled ones."""
    n = len(banks)
    digits = [exact_sum.encode(compute_stats(f, SCHEMA).to_vector(), n, 32) for f in banks]
    totals = exact_sum.decode(np.sum(digits, axis=0), n, 32)
    summed = FeatureStats.from_vector(SCHEMA, totals)
    pooled = compute_stats(pd.concat(banks, ignore_index=True), SCHEMA)
    np.testing.assert_array_equal(summed.histograms, pooled.histograms)
    np.testing.assert_array_equal(summed.missing_counts, pooled.missing_counts)
    assert FeatureStats.vector_size(SCHEMA) == 1 + 2 * 3 + 2 + 3 + 3 * GRID_BINS
    pipe_fed, pipe_pooled = FeaturePipeline.fit(summed), FeaturePipeline.fit(pooled)
    for col in ("amount", "count"):
        for a, b in zip(pipe_fed.knots[col], pipe_pooled.knots[col], strict=True):
            np.testing.assert_array_equal(a, b)


def test_edges_split_continuous_values_into_near_equal_shares() -> None:
    rng = np.random.default_rng(2)
    values = rng.lognormal(4, 2, 200_000)
    edges = quantile_edges(grid_histogram(values), max_bins=16)
    shares = np.bincount(np.searchsorted(edges, values, side="right")) / len(values)
    assert len(edges) == 15
    # Edges sit on the grid (about 19% apart), so each share is 1/16 give or take one grid bin.
    assert shares.max() < 2.5 / 16 and shares.min() > 0.3 / 16


def test_bin_mapper_puts_missing_values_in_their_own_bin(banks: list[pd.DataFrame]) -> None:
    stats = sum_stats(compute_stats(f, SCHEMA) for f in banks)
    edges = bin_edges({c: stats.histogram(c) for c in SCHEMA.numeric}, max_bins=32)
    mapper = BinMapper(edges, missing_values=("-999",))
    frame = banks[0]
    bins = mapper.transform(frame)
    assert bins.dtype == np.uint8 and bins.shape == (len(frame), 3)
    amount = frame["amount"].to_numpy()
    assert (bins[np.isnan(amount), 0] == MISSING_BIN).all()
    present = ~np.isnan(amount)
    assert (bins[present, 0] < mapper.num_bins("amount")).all()
    order = np.argsort(amount[present])
    assert np.all(np.diff(bins[present, 0][order].astype(int)) >= 0)  # monotone in the value
    marked = pd.DataFrame({c: ["-999", "5"] for c in SCHEMA.numeric})
    assert mapper.transform(marked)[0].tolist() == [MISSING_BIN] * 3
    back = BinMapper.from_dict(mapper.to_dict())
    np.testing.assert_array_equal(back.transform(frame), bins)
    with pytest.raises(FraudflError, match="ascending"):
        BinMapper({"a": np.array([2.0, 1.0])})


def test_quantile_transform_is_near_uniform_with_unit_variance(
    banks: list[pd.DataFrame],
) -> None:
    stats = sum_stats(compute_stats(f, SCHEMA) for f in banks)
    pipeline = FeaturePipeline.fit(stats)
    pooled = pd.concat(banks, ignore_index=True)
    x = pipeline.transform_features(pooled.dropna())[:, 0]
    assert abs(x.mean()) < 0.1 and abs(x.std() - 1.0) < 0.1
    assert x.min() >= -np.sqrt(3) - 1e-6 and x.max() <= np.sqrt(3) + 1e-6
    # Heavy tails no longer dominate: the largest amount is within the uniform's range.
    raw = pooled["amount"].dropna()
    assert raw.max() / raw.std() > 10
