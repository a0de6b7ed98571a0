"""The feature pipeline: numeric transforms, missing indicators, one-hot/hashed categoricals, time.

It is fitted from a :class:`~fraudfl.data.stats.FeatureStats` only, in practice the sum of the
banks' statistics, so fitting never needs any bank's rows. It travels with global models as JSON
and is applied identically in training and scoring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from fraudfl.data.hashing import hash_buckets
from fraudfl.data.schema import TASKS, TRANSFORMS, Task, Transform
from fraudfl.data.sketch import quantile, quantile_knots
from fraudfl.data.stats import FeatureStats, moment_values
from fraudfl.data.validation import (
    FloatArray,
    IntArray,
    categorical_column,
    label_column,
    numeric_column,
    time_column,
)
from fraudfl.errors import FraudflError

PIPELINE_FORMAT = "fraudfl.feature_pipeline"
PIPELINE_VERSION = 2
# The variance from summed statistics, sum(x^2)/n - mean^2, cancels catastrophically: for a
# constant column it comes out as rounding noise of up to ~10 float64 epsilons of mean(x^2)
# (measured over up to 40 banks of up to 400k rows). A variance below this share of mean(x^2)
# cannot be told from that noise: the column is treated as constant (centred, not scaled).
_VARIANCE_NOISE_FLOOR = 1e-13
# A uniform(0, 1) variable has standard deviation 1/sqrt(12): quantile features are rescaled to
# unit variance like the standardised ones.
_UNIFORM_SCALE = math.sqrt(12.0)
MISSING_SLOT = "<missing>"
TIME_FEATURES = ("hour_sin", "hour_cos", "dow_sin", "dow_cos")
_DAY = 86_400.0
# 1970-01-01, day 0 of Unix time, was a Thursday (Monday = 0).
_EPOCH_WEEKDAY = 3


def time_features(seconds: FloatArray) -> npt.NDArray[np.float64]:
    """Cyclical hour-of-day and day-of-week of Unix times (UTC); rows of NaN stay zero."""
    out = np.zeros((len(seconds), len(TIME_FEATURES)))
    present = ~np.isnan(seconds)
    t = seconds[present]
    day_phase = 2 * np.pi * np.mod(t, _DAY) / _DAY
    week_phase = 2 * np.pi * np.mod(np.floor(t / _DAY) + _EPOCH_WEEKDAY, 7) / 7
    out[present] = np.column_stack(
        [np.sin(day_phase), np.cos(day_phase), np.sin(week_phase), np.cos(week_phase)]
    )
    return out


@dataclass(eq=False)
class FeaturePipeline:
    """Numeric columns by their transform, then indicators, categoricals, time features.

    * numeric ``standard``: ``(x - mean) / std``; ``log``: the same on ``sign(x) log(1 + |x|)``;
      ``quantile``: ``(F(x) - 1/2) * sqrt(12)`` with ``F`` the federation's cumulative
      distribution from the summed grid histogram (:mod:`fraudfl.data.sketch`). A missing value
      takes ``fills[i]`` (the summed mean, or the sketch's median) before the transform.
    * ``indicators``: the feature columns in which some bank had missing values; a numeric,
      hashed or time column among them gets a 0/1 ``col:missing`` feature, a one-hot column a
      ``col=<missing>`` category.
    * categorical: one-hot over the vocabulary (a category outside it encodes as all zeros), or,
      for columns in ``hashed``, signed hashing into that many buckets with ``hash_key``.
    * ``time``: hour-of-day and day-of-week as sine/cosine pairs.
    """

    label: str
    task: Task
    num_classes: int
    numeric: list[str]
    means: FloatArray
    stds: FloatArray
    categorical: list[str]
    vocabularies: dict[str, list[str]]
    transforms: dict[str, Transform] = field(default_factory=dict)
    fills: FloatArray | None = None  # raw value taken by a missing numeric; None: the means
    knots: dict[str, tuple[FloatArray, FloatArray]] = field(default_factory=dict)
    indicators: list[str] = field(default_factory=list)
    hashed: dict[str, int] = field(default_factory=dict)
    hash_key: str | None = None
    time: str | None = None
    missing_values: list[str] = field(default_factory=list)
    required: list[str] = field(default_factory=list)
    feature_names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        names = list(self.numeric)
        names += [f"{col}:missing" for col in self.numeric if col in self.indicators]
        for col in self.categorical:
            if col in self.hashed:
                names += [f"{col}#{b}" for b in range(self.hashed[col])]
                names += [f"{col}:missing"] if col in self.indicators else []
            else:
                names += [f"{col}={cat}" for cat in self.vocabularies[col]]
                names += [f"{col}={MISSING_SLOT}"] if col in self.indicators else []
        if self.time is not None:
            names += [f"{self.time}:{f}" for f in TIME_FEATURES]
            names += [f"{self.time}:missing"] if self.time in self.indicators else []
        self.feature_names = names

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    @property
    def inputs(self) -> list[str]:
        """The columns a frame (or transaction) must hold to be transformed."""
        return [*self.numeric, *self.categorical, *([self.time] if self.time else [])]

    @property
    def is_plain(self) -> bool:
        """Standardised numerics and one-hot categoricals only, nothing missing: the
        version-1 pipeline, which scoring encodes without pandas."""
        return not (
            any(t != "standard" for t in self.transforms.values())
            or self.indicators
            or self.hashed
            or self.time
            or self.missing_values
        )

    def transform_of(self, column: str) -> Transform:
        return self.transforms.get(column, "standard")

    def hashed_blocks(self) -> tuple[tuple[int, int], ...]:
        """``(first feature, buckets)`` of every hashed column's bucket block, in feature order
        (what :class:`~fraudfl.models.ModelSpec` embeds)."""
        return tuple(
            (self.feature_names.index(f"{col}#0"), self.hashed[col])
            for col in self.categorical
            if col in self.hashed
        )

    @classmethod
    def fit(cls, stats: FeatureStats, *, standardize: bool = True) -> FeaturePipeline:
        """Fit from (summed) statistics only (``standardize=False``: numeric columns are
        neither centred nor scaled).

        Per numeric column: mean and population std of the present values (of their logs for a
        ``log`` column), the fill value (``impute``: mean, or median from the histogram) and,
        for a ``quantile`` column, the cumulative distribution knots. A column that no bank has
        any value of is centred at 0 with unit scale and filled with 0.
        """
        schema = stats.schema
        if stats.count <= 0:
            raise FraudflError("cannot fit the feature pipeline on statistics of zero rows")
        n_num = len(schema.numeric)
        present = np.array([stats.present(c) for c in schema.numeric], dtype=np.float64)
        seen = present > 0
        safe = np.where(seen, present, 1.0)
        means = np.where(seen, stats.sums / safe, 0.0)
        mean_squares = np.where(seen, stats.sums_sq / safe, 0.0)
        variances = np.maximum(mean_squares - np.square(means), 0.0)
        constant = variances <= _VARIANCE_NOISE_FLOOR * mean_squares
        stds = np.where(constant | ~seen, 1.0, np.sqrt(variances))
        fills = np.zeros(n_num)
        knots: dict[str, tuple[FloatArray, FloatArray]] = {}
        transforms: dict[str, Transform] = {}
        for i, col in enumerate(schema.numeric):
            transform = schema.transform_of(col)
            if not seen[i]:
                continue
            transforms[col] = transform
            histogram = stats.histogram(col)
            if schema.impute.get(col) == "median":
                fills[i] = quantile(histogram, 0.5)
            elif transform == "log":
                # The mean of the logs, taken back to a raw value.
                fills[i] = np.sign(means[i]) * np.expm1(abs(means[i]))
            else:
                fills[i] = means[i]
            if transform == "quantile":
                knots[col] = quantile_knots(histogram)
        indicators = [c for c in schema.features if stats.missing(c) > 0]
        vocabularies = {
            col: list(schema.categories.get(col) or sorted(stats.category_counts[col]))
            for col in schema.one_hot
        }
        if not standardize:
            means, stds = np.zeros_like(means), np.ones_like(stds)
        return cls(
            label=schema.label,
            task=schema.task,
            num_classes=schema.num_classes,
            numeric=list(schema.numeric),
            means=means,
            stds=stds,
            categorical=list(schema.categorical),
            vocabularies=vocabularies,
            transforms=transforms,
            fills=fills,
            knots=knots,
            indicators=indicators,
            hashed=dict(schema.hashed),
            hash_key=schema.hash_key,
            time=schema.time,
            missing_values=list(schema.missing_values),
            required=list(schema.required),
        )

    def _numeric_feature(self, i: int, values: FloatArray) -> FloatArray:
        col = self.numeric[i]
        transform = self.transform_of(col)
        if transform == "quantile" and col in self.knots:
            x, f = self.knots[col]
            uniform = np.interp(values, x, f)
            return np.asarray((uniform - 0.5) * _UNIFORM_SCALE, dtype=np.float64)
        scaled = (moment_values(values, transform) - self.means[i]) / self.stds[i]
        return np.asarray(scaled, dtype=np.float64)

    def transform_features(
        self, frame: pd.DataFrame, *, source: str = "input"
    ) -> npt.NDArray[np.float32]:
        """Feature matrix (float32, rows x ``num_features``); the label column is not needed."""
        absent = [c for c in self.inputs if c not in frame.columns]
        if absent:
            raise FraudflError(
                f"{source}: missing feature column(s) {absent}; the model expects {self.inputs}"
            )
        n = len(frame)
        # Built in float32 and row-major from the start, as returned: a float64 matrix cast at
        # the end held three times the result's memory at once on wide tables (1,800
        # features). Numeric columns and their indicators are computed column by column in
        # float64 in a column-major block, then cast into ``out`` in one copy: the same
        # rounding, the same values (compared on a 300k x 120 table).
        out = np.zeros((n, self.num_features), dtype=np.float32)
        rows = np.arange(n)
        markers, required = self.missing_values, set(self.required)
        fills = self.means if self.fills is None else self.fills
        flag = len(self.numeric)
        lead = np.zeros((n, flag + sum(c in self.indicators for c in self.numeric)),
                        dtype=np.float64, order="F")
        for i, col in enumerate(self.numeric):
            values = numeric_column(
                frame[col], col, source, markers=markers, allow_missing=col not in required
            )
            missing = np.isnan(values)
            values[missing] = fills[i]
            lead[:, i] = self._numeric_feature(i, values)
            if col in self.indicators:
                lead[:, flag] = missing
                flag += 1
        out[:, :flag] = lead
        del lead
        offset = flag
        for col in self.categorical:
            categories = categorical_column(
                frame[col], col, source, markers=markers, allow_missing=col not in required
            )
            missing = categories.isna().to_numpy()
            if col in self.hashed:
                buckets = self.hashed[col]
                assert self.hash_key is not None
                texts = [None if m else str(v) for v, m in zip(categories, missing, strict=True)]
                bucket, sign = hash_buckets(bytes.fromhex(self.hash_key), col, texts, buckets)
                hit = bucket >= 0
                out[rows[hit], offset + bucket[hit]] = sign[hit]
                offset += buckets
            else:
                vocab = self.vocabularies[col]
                codes = np.asarray(
                    pd.Categorical(categories, categories=vocab).codes, dtype=np.int64
                )
                known = codes >= 0
                out[rows[known], offset + codes[known]] = 1.0
                offset += len(vocab)
            if col in self.indicators:
                out[:, offset] = missing
                offset += 1
        if self.time is not None:
            stamps = time_column(
                frame[self.time], self.time, source, markers=markers,
                allow_missing=self.time not in required,
            )
            out[:, offset : offset + len(TIME_FEATURES)] = time_features(stamps)
            offset += len(TIME_FEATURES)
            if self.time in self.indicators:
                out[:, offset] = np.isnan(stamps)
        return out

    def transform_labels(self, frame: pd.DataFrame, *, source: str = "input") -> IntArray:
        if self.label not in frame.columns:
            raise FraudflError(f"{source}: missing label column '{self.label}'")
        return label_column(frame[self.label], self.label, self.task, self.num_classes, source)

    def transform(
        self, frame: pd.DataFrame, *, source: str = "input"
    ) -> tuple[npt.NDArray[np.float32], IntArray]:
        """Features (float32) and labels (int64)."""
        return self.transform_features(frame, source=source), self.transform_labels(
            frame, source=source
        )

    def to_dict(self) -> dict[str, Any]:
        fills = self.means if self.fills is None else self.fills
        numeric = []
        for i, name in enumerate(self.numeric):
            entry: dict[str, Any] = {
                "name": name,
                "transform": self.transform_of(name),
                "mean": float(self.means[i]),
                "std": float(self.stds[i]),
                "fill": float(fills[i]),
                "missing_indicator": name in self.indicators,
            }
            if name in self.knots:
                x, f = self.knots[name]
                entry["knots"] = {"x": [float(v) for v in x], "cdf": [float(v) for v in f]}
            numeric.append(entry)
        categorical: list[dict[str, Any]] = []
        for col in self.categorical:
            cat: dict[str, Any] = {"name": col, "missing_indicator": col in self.indicators}
            if col in self.hashed:
                cat["buckets"] = self.hashed[col]
            else:
                cat["categories"] = list(self.vocabularies[col])
            categorical.append(cat)
        return {
            "format": PIPELINE_FORMAT,
            "version": PIPELINE_VERSION,
            "label": self.label,
            "task": self.task,
            "num_classes": self.num_classes,
            "numeric": numeric,
            "categorical": categorical,
            "time": None
            if self.time is None
            else {"name": self.time, "missing_indicator": self.time in self.indicators},
            "missing_values": list(self.missing_values),
            "required": list(self.required),
            "hash_key": self.hash_key,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeaturePipeline:
        """Strict inverse of :meth:`to_dict` (the dict may come from another party).

        Version-1 dicts (standardised numerics and one-hot categoricals only) are read too.
        """

        def fail(what: str) -> FraudflError:
            return FraudflError(f"feature pipeline: {what}")

        if not isinstance(data, dict):
            raise fail("expected a JSON object")
        version = data.get("version")
        if data.get("format") != PIPELINE_FORMAT or version not in (1, PIPELINE_VERSION):
            raise fail(f"expected format {PIPELINE_FORMAT!r} version 1 or {PIPELINE_VERSION}")
        label, task, num_classes = data.get("label"), data.get("task"), data.get("num_classes")
        if not isinstance(label, str) or not label:
            raise fail("'label' must be a non-empty string")
        if task not in TASKS:
            raise fail(f"'task' must be one of {list(TASKS)}")
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise fail("'num_classes' must be an integer >= 2")
        if task == "binary" and num_classes != 2:
            raise fail("a binary task has num_classes = 2")
        numeric_raw, categorical_raw = data.get("numeric"), data.get("categorical")
        if not isinstance(numeric_raw, list) or not isinstance(categorical_raw, list):
            raise fail("'numeric' and 'categorical' must be lists")

        def finite(value: object) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(
                value
            )

        def numbers(value: object, what: str) -> FloatArray:
            if not isinstance(value, list) or not value or not all(finite(v) for v in value):
                raise fail(f"{what} must be a non-empty list of finite numbers")
            return np.asarray(value, dtype=np.float64)

        numeric, means, stds, fills = [], [], [], []
        transforms: dict[str, Transform] = {}
        knots: dict[str, tuple[FloatArray, FloatArray]] = {}
        indicators: list[str] = []
        for entry in numeric_raw:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise fail("each numeric entry needs a string 'name'")
            name = entry["name"]
            mean, std = entry.get("mean"), entry.get("std")
            fill = entry.get("fill", mean)
            if not all(finite(v) for v in (mean, std, fill)):
                raise fail(f"numeric '{name}' needs finite 'mean', 'std' and 'fill'")
            if cast(float, std) <= 0:
                raise fail(f"numeric '{name}' has a non-positive std")
            transform = entry.get("transform", "standard")
            if transform not in TRANSFORMS:
                raise fail(f"numeric '{name}': 'transform' must be one of {list(TRANSFORMS)}")
            transforms[name] = transform
            if transform == "quantile":
                raw_knots = entry.get("knots")
                if not isinstance(raw_knots, dict):
                    raise fail(f"numeric '{name}': a quantile transform needs 'knots'")
                x = numbers(raw_knots.get("x"), f"knots of '{name}'")
                f = numbers(raw_knots.get("cdf"), f"knots of '{name}'")
                if (
                    len(x) != len(f)
                    or np.any(np.diff(x) < 0)
                    or np.any(np.diff(f) < 0)
                    or f[0] < 0
                    or f[-1] > 1
                ):
                    raise fail(f"numeric '{name}': knots must be ascending, cdf within [0, 1]")
                knots[name] = (x, f)
            if entry.get("missing_indicator", False) is True:
                indicators.append(name)
            numeric.append(name)
            means.append(float(cast(float, mean)))
            stds.append(float(cast(float, std)))
            fills.append(float(cast(float, fill)))
        categorical: list[str] = []
        vocabularies: dict[str, list[str]] = {}
        hashed: dict[str, int] = {}
        for entry in categorical_raw:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise fail("each categorical entry needs a string 'name'")
            name = entry["name"]
            if "buckets" in entry:
                buckets = entry["buckets"]
                if not isinstance(buckets, int) or isinstance(buckets, bool) or buckets < 2:
                    raise fail(f"hashed '{name}' needs an integer 'buckets' >= 2")
                hashed[name] = buckets
            else:
                values = entry.get("categories")
                if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                    raise fail(f"categorical '{name}' needs a list of string 'categories'")
                vocabularies[name] = list(values)
            if entry.get("missing_indicator", False) is True:
                indicators.append(name)
            categorical.append(name)
        time_raw = data.get("time")
        time: str | None = None
        if time_raw is not None:
            if not isinstance(time_raw, dict) or not isinstance(time_raw.get("name"), str):
                raise fail("'time' must be null or an object with a string 'name'")
            time = time_raw["name"]
            if time_raw.get("missing_indicator", False) is True:
                indicators.append(time_raw["name"])
        markers, required = data.get("missing_values", []), data.get("required", [])
        if not isinstance(markers, list) or not all(isinstance(v, str) for v in markers):
            raise fail("'missing_values' must be a list of strings")
        if not isinstance(required, list) or not all(isinstance(v, str) for v in required):
            raise fail("'required' must be a list of column names")
        hash_key = data.get("hash_key")
        if hashed:
            try:
                bytes.fromhex(hash_key if isinstance(hash_key, str) else "")
            except ValueError:
                raise fail("'hash_key' must be a hex string") from None
            if not hash_key:
                raise fail("hashed columns need a 'hash_key'")
        elif hash_key is not None and not isinstance(hash_key, str):
            raise fail("'hash_key' must be a hex string or null")
        names = [*numeric, *categorical, *([time] if time else []), label]
        if len(set(names)) != len(names):
            raise fail("duplicate column names")
        return cls(
            label=label,
            task=cast(Task, task),
            num_classes=num_classes,
            numeric=numeric,
            means=np.array(means, dtype=np.float64),
            stds=np.array(stds, dtype=np.float64),
            categorical=categorical,
            vocabularies=vocabularies,
            transforms=transforms,
            fills=np.array(fills, dtype=np.float64),
            knots=knots,
            indicators=indicators,
            hashed=hashed,
            hash_key=hash_key,
            time=time,
            missing_values=list(markers),
            required=list(required),
        )
