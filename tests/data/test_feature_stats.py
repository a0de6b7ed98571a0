"""Feature statistics are additive; the pipeline fitted from their sum equals a pooled fit."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fraudfl.data import (
    FeaturePipeline,
    FeatureStats,
    Schema,
    compute_stats,
    sum_stats,
    train_val_split,
)
from fraudfl.data.sketch import GRID_BINS
from fraudfl.errors import FraudflError

SCHEMA = Schema(
    label="y",
    numeric=["amount", "age", "const"],
    categorical=["channel", "mcc"],
    categories={"channel": ["pos", "online", "atm"], "mcc": ["0042", "5411", "7995"]},
)


def bank_frame(rng: np.random.Generator, n: int, shift: float, fraud: float) -> pd.DataFrame:
    """A bank whose distributions differ from the others' (so pooled != average of means)."""
    return pd.DataFrame(
        {
            "amount": rng.lognormal(3 + shift, 1.0, n),
            "age": rng.normal(900 * (1 + shift), 300, n),
            "const": np.full(n, 7.0),
            "channel": rng.choice(
                ["pos", "online", "atm"], n, p=[0.6 - shift / 4, 0.3, 0.1 + shift / 4]
            ),
            "mcc": rng.choice(["0042", "5411", "7995"], n),
            "y": (rng.random(n) < fraud).astype(np.int64),
        }
    )


@pytest.fixture
def banks() -> list[pd.DataFrame]:
    rng = np.random.default_rng(7)
    return [
        bank_frame(rng, n, shift, fraud)
        for n, shift, fraud in [(3000, 0.0, 0.01), (700, 0.8, 0.05), (150, -0.3, 0.02)]
    ]


def test_stats_are_additive(banks: list[pd.DataFrame]) -> None:
    per_bank = [compute_stats(b, SCHEMA) for b in banks]
    summed = sum_stats(per_bank)
    assert sum(per_bank).count == summed.count  # sum() from 0 works too
    pooled = compute_stats(pd.concat(banks, ignore_index=True), SCHEMA)
    assert summed.count == pooled.count == 3850
    np.testing.assert_allclose(summed.sums, pooled.sums, rtol=1e-12)
    np.testing.assert_allclose(summed.sums_sq, pooled.sums_sq, rtol=1e-12)
    assert summed.category_counts == pooled.category_counts
    np.testing.assert_array_equal(summed.label_counts, pooled.label_counts)
    np.testing.assert_allclose(summed.to_vector(), pooled.to_vector(), rtol=1e-12)
    # The vector sum (what secure aggregation computes) is the stats' sum.
    vector_sum = np.sum([s.to_vector() for s in per_bank], axis=0)
    np.testing.assert_allclose(vector_sum, summed.to_vector(), rtol=1e-12)


def test_pipeline_fitted_from_summed_stats_equals_pooled_fit(banks: list[pd.DataFrame]) -> None:
    vector_sum = np.sum([compute_stats(b, SCHEMA).to_vector() for b in banks], axis=0)
    from_sum = FeaturePipeline.fit(FeatureStats.from_vector(SCHEMA, vector_sum))
    pooled_frame = pd.concat(banks, ignore_index=True)
    pooled = FeaturePipeline.fit(compute_stats(pooled_frame, SCHEMA))
    np.testing.assert_allclose(from_sum.means, pooled.means, rtol=1e-10)
    np.testing.assert_allclose(from_sum.stds, pooled.stds, rtol=1e-8)
    # ... and both equal the textbook mean / population std of the pooled rows.
    np.testing.assert_allclose(
        from_sum.means[:2], pooled_frame[["amount", "age"]].mean(), rtol=1e-10
    )
    np.testing.assert_allclose(
        from_sum.stds[:2], pooled_frame[["amount", "age"]].std(ddof=0), rtol=1e-8
    )
    assert from_sum.stds[2] == 1.0  # a constant column is centred, not divided by zero
    x_sum, y_sum = from_sum.transform(pooled_frame)
    x_pool, y_pool = pooled.transform(pooled_frame)
    np.testing.assert_allclose(x_sum, x_pool, atol=1e-6)
    np.testing.assert_array_equal(y_sum, y_pool)
    np.testing.assert_allclose(x_sum[:, :2].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x_sum[:, :2].std(axis=0), 1.0, atol=1e-5)


def test_vector_round_trip_and_layout(banks: list[pd.DataFrame]) -> None:
    stats = compute_stats(banks[1], SCHEMA)
    vector = stats.to_vector()
    assert vector.dtype == np.float64
    n_features = 3 + 2  # three numeric, two categorical
    assert vector.shape == (FeatureStats.vector_size(SCHEMA),) == (
        1 + 2 * 3 + 2 * 3 + 2 + n_features + 3 * GRID_BINS,
    )
    back = FeatureStats.from_vector(SCHEMA, vector)
    assert back.count == stats.count
    np.testing.assert_array_equal(back.sums, stats.sums)
    np.testing.assert_array_equal(back.sums_sq, stats.sums_sq)
    assert back.category_counts == stats.category_counts
    np.testing.assert_array_equal(back.label_counts, stats.label_counts)
    assert vector[0] == 700
    labels_at = 1 + 2 * 3 + 2 * 3
    assert vector[labels_at : labels_at + 2].tolist() == stats.label_counts.tolist()
    np.testing.assert_array_equal(back.missing_counts, stats.missing_counts)
    np.testing.assert_array_equal(back.histograms, stats.histograms)
    assert stats.histograms.sum() == 3 * 700


def test_vector_needs_declared_vocabulary_and_matching_length() -> None:
    schema = Schema(label="y", numeric=["a"], categorical=["c"])
    stats = compute_stats(pd.DataFrame({"a": [1.0], "c": ["x"], "y": [0]}), schema)
    with pytest.raises(FraudflError, match="no declared vocabulary"):
        stats.to_vector()
    with pytest.raises(FraudflError, match="expected"):
        FeatureStats.from_vector(SCHEMA, np.zeros(3))
    bad = np.zeros(FeatureStats.vector_size(SCHEMA))
    bad[0] = -5
    with pytest.raises(FraudflError, match="negative"):
        FeatureStats.from_vector(SCHEMA, bad)
    with pytest.raises(FraudflError, match="no feature statistics"):
        sum_stats([])
    with pytest.raises(FraudflError, match="zero rows"):
        FeaturePipeline.fit(FeatureStats.empty(SCHEMA))


def test_transform_one_hot_and_unseen_category() -> None:
    frame = pd.DataFrame(
        {
            "amount": [10.0, 20.0],
            "age": [1.0, 3.0],
            "const": [7.0, 7.0],
            "channel": ["online", "atm"],
            "mcc": ["0042", "5411"],
            "y": [1, 0],
        }
    )
    pipe = FeaturePipeline.fit(compute_stats(frame, SCHEMA))
    assert pipe.num_features == 3 + 3 + 3
    assert pipe.feature_names[3:6] == ["channel=pos", "channel=online", "channel=atm"]
    x, y = pipe.transform(frame)
    assert x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 3:], [[0, 1, 0, 1, 0, 0], [0, 0, 1, 0, 1, 0]])
    live = frame.drop(columns=["y"]).assign(channel=["crypto_kiosk", "pos"])
    features = pipe.transform_features(live)
    np.testing.assert_array_equal(features[0, 3:6], [0, 0, 0])  # unseen -> all zeros
    np.testing.assert_array_equal(features[1, 3:6], [1, 0, 0])


def test_transform_features_validates_input() -> None:
    frame = pd.DataFrame(
        {
            "amount": [10.0],
            "age": [1.0],
            "const": [7.0],
            "channel": ["pos"],
            "mcc": ["0042"],
            "y": [0],
        }
    )
    pipe = FeaturePipeline.fit(compute_stats(frame, SCHEMA))
    with pytest.raises(FraudflError, match=r"missing feature column\(s\) \['age'\]"):
        pipe.transform_features(frame.drop(columns=["age"]))
    text = frame.astype({"amount": object})
    text.loc[0, "amount"] = "ten"
    with pytest.raises(FraudflError, match="row 1, column 'amount': non-numeric value 'ten'"):
        pipe.transform_features(text)
    with pytest.raises(FraudflError, match="missing label column 'y'"):
        pipe.transform(frame.drop(columns=["y"]))


def test_pipeline_json_round_trip(banks: list[pd.DataFrame]) -> None:
    pipe = FeaturePipeline.fit(sum(compute_stats(b, SCHEMA) for b in banks))
    text = json.dumps(pipe.to_dict())
    back = FeaturePipeline.from_dict(json.loads(text))
    assert back.feature_names == pipe.feature_names
    np.testing.assert_array_equal(back.transform(banks[2])[0], pipe.transform(banks[2])[0])
    broken = json.loads(text)
    broken["numeric"][0]["std"] = 0
    with pytest.raises(FraudflError, match="non-positive std"):
        FeaturePipeline.from_dict(broken)
    with pytest.raises(FraudflError, match="format"):
        FeaturePipeline.from_dict({"format": "pickle"})


def test_adding_stats_of_different_schemas_fails(banks: list[pd.DataFrame]) -> None:
    other = Schema(label="y", numeric=["amount"], categorical=[])
    with pytest.raises(FraudflError, match="different schemas"):
        compute_stats(banks[0], SCHEMA) + compute_stats(banks[0], other)


def test_train_val_split_is_stratified_and_deterministic(banks: list[pd.DataFrame]) -> None:
    frame = banks[0]
    train, val = train_val_split(frame, SCHEMA, 0.25, seed=3)
    assert len(train) + len(val) == len(frame)
    frauds = int(frame["y"].sum())
    assert int(val["y"].sum()) == round(frauds * 0.25)
    assert int(train["y"].sum()) == frauds - round(frauds * 0.25)
    again_train, again_val = train_val_split(frame, SCHEMA, 0.25, seed=3)
    pd.testing.assert_frame_equal(val, again_val)
    pd.testing.assert_frame_equal(train, again_train)
    _, other_val = train_val_split(frame, SCHEMA, 0.25, seed=4)
    assert not other_val.equals(val)
    # Disjoint and complete: every row ends up in exactly one part.
    key = ["amount", "age"]
    rows = pd.concat([train[key], val[key]]).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(rows, frame[key].sort_values(key).reset_index(drop=True))
    with pytest.raises(FraudflError, match="val_fraction"):
        train_val_split(frame, SCHEMA, 1.0, seed=0)


@pytest.mark.parametrize("value", [99.99, 4.99, 0.1])
def test_constant_column_summed_over_banks_is_not_scaled_by_rounding_noise(value: float) -> None:
    """sum(x^2)/n - mean^2 of a constant column is rounding noise (~1e-8 of its value here),
    not spread: dividing by it would turn a new value at scoring time into a huge feature."""
    schema = Schema(label="y", numeric=["c"], categorical=[])

    def frame(n: int) -> pd.DataFrame:
        return pd.DataFrame({"c": np.full(n, value), "y": np.zeros(n, dtype=np.int64)})

    stats = sum_stats([compute_stats(frame(1000), schema), compute_stats(frame(1), schema)])
    pipeline = FeaturePipeline.fit(stats)
    assert pipeline.stds[0] == 1.0
    shifted = pd.DataFrame({"c": [value + 1.0]})
    assert pipeline.transform_features(shifted)[0, 0] == pytest.approx(1.0, rel=1e-6)


def test_small_scale_column_is_standardized() -> None:
    """Variation is judged relative to the column's own magnitude, not to 1."""
    schema = Schema(label="y", numeric=["tiny"], categorical=[])
    rng = np.random.default_rng(0)
    values = rng.normal(0.0, 1e-10, 500)
    stats = compute_stats(pd.DataFrame({"tiny": values, "y": np.zeros(500, np.int64)}), schema)
    pipeline = FeaturePipeline.fit(stats)
    assert pipeline.stds[0] == pytest.approx(values.std(), rel=1e-6)
