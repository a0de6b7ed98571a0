"""The time column: Unix seconds or ISO 8601, cyclical features, a time-ordered split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraudfl.data import FeaturePipeline, Schema, compute_stats, train_val_split
from fraudfl.data.pipeline import time_features
from fraudfl.data.validation import time_column
from fraudfl.errors import FraudflError

SCHEMA = Schema(label="y", numeric=["x"], categorical=[], time="ts")


def test_iso_and_unix_seconds_agree() -> None:
    iso = pd.Series(["2026-01-05T06:00:00", "2026-01-05T08:00:00+02:00", ""])
    unix = pd.Series(["1767592800", "1767592800.0", ""])
    a = time_column(iso, "ts", "f.csv", allow_missing=True)
    b = time_column(unix, "ts", "f.csv", allow_missing=True)
    np.testing.assert_array_equal(a[:2], [1767592800.0, 1767592800.0])
    np.testing.assert_array_equal(a[:2], b[:2])
    assert np.isnan(a[2]) and np.isnan(b[2])
    with pytest.raises(FraudflError, match=r"f.csv: row 2, column 'ts': 'soon' is not a timestamp"):
        time_column(pd.Series(["2026-01-05T06:00:00", "soon"]), "ts", "f.csv")


def test_hour_and_weekday_features() -> None:
    # 2026-01-05 is a Monday; 06:00 is a quarter of the day.
    seconds = np.array([1767592800.0, 1767592800.0 + 86_400 * 3 + 12 * 3600, np.nan])
    f = time_features(seconds)
    np.testing.assert_allclose(f[0], [1.0, 0.0, 0.0, 1.0], atol=1e-12)
    hour18, thursday = 2 * np.pi * 0.75, 2 * np.pi * 3 / 7
    np.testing.assert_allclose(
        f[1], [np.sin(hour18), np.cos(hour18), np.sin(thursday), np.cos(thursday)], atol=1e-9
    )
    assert f[2].tolist() == [0.0] * 4


def test_pipeline_adds_time_features_and_a_missing_indicator() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0],
                          "ts": ["2026-01-05T06:00:00", None, "2026-01-06T12:00:00"],
                          "y": [0, 1, 0]})
    pipeline = FeaturePipeline.fit(compute_stats(frame, SCHEMA))
    assert pipeline.feature_names == ["x", "ts:hour_sin", "ts:hour_cos", "ts:dow_sin",
                                      "ts:dow_cos", "ts:missing"]
    x = pipeline.transform_features(frame)
    assert x[:, -1].tolist() == [0.0, 1.0, 0.0]
    np.testing.assert_allclose(x[0, 1:5], [1.0, 0.0, 0.0, 1.0], atol=1e-6)


def test_time_ordered_split_validates_on_the_latest_rows() -> None:
    rng = np.random.default_rng(0)
    ts = rng.permutation(np.arange(100, dtype=np.float64)) * 3600
    ts[[3, 7]] = np.nan
    frame = pd.DataFrame({"x": rng.normal(size=100), "ts": ts,
                          "y": (rng.random(100) < 0.3).astype(np.int64)})
    train, val = train_val_split(frame, SCHEMA, 0.2, seed=0)
    assert len(val) == 20 and len(train) == 80
    assert val["ts"].min() > train["ts"].max()
    assert train["ts"].isna().sum() == 2  # rows without a time train
    # Without a time column the split is stratified by class, as before.
    plain = Schema(label="y", numeric=["x", "ts"], categorical=[])
    _train2, val2 = train_val_split(frame, plain, 0.2, seed=0)
    assert val2["y"].sum() == round(frame["y"].sum() * 0.2)
