"""Additive per-bank feature statistics.

Everything the feature pipeline needs (row count, per-numeric sum and sum of squares of the
present values, one-hot category counts, label counts, missing counts per feature column and a
fixed-grid histogram per numeric column, :mod:`fraudfl.data.sketch`) is a sum over rows, so the
consortium's statistics are the sum of the banks' statistics. ``to_vector`` lays them out as one
float64 vector whose layout depends only on the schema (with a declared vocabulary per one-hot
column), so the sum can be computed by secure aggregation without any bank revealing its own
statistics. Every entry but the sums is an integer count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fraudfl.data.schema import Schema, Transform
from fraudfl.data.sketch import GRID_BINS, grid_histogram
from fraudfl.data.validation import (
    FloatArray,
    IntArray,
    categorical_column,
    label_column,
    numeric_column,
    time_column,
)
from fraudfl.errors import FraudflError


def _same_roles(a: Schema, b: Schema) -> bool:
    return (
        a.label == b.label
        and a.numeric == b.numeric
        and a.categorical == b.categorical
        and a.hashed == b.hashed
        and a.time == b.time
        and a.transforms == b.transforms
        and a.task == b.task
        and a.num_classes == b.num_classes
    )


def log_amount(values: FloatArray) -> FloatArray:
    """The ``log`` transform, ``sign(x) * log(1 + |x|)``: defined for every x, monotone."""
    return np.asarray(np.sign(values) * np.log1p(np.abs(values)), dtype=np.float64)


def moment_values(values: FloatArray, transform: Transform) -> FloatArray:
    """The values whose mean and variance a column's transform needs (NaN stays NaN)."""
    return log_amount(values) if transform == "log" else values


@dataclass
class FeatureStats:
    """Sufficient statistics of one bank (or a sum of banks) for the feature pipeline.

    ``sums``/``sums_sq`` cover the present values only, after a ``log`` column's transform;
    ``missing_counts`` follow ``schema.features``; ``histograms`` has one grid histogram
    (:data:`~fraudfl.data.sketch.GRID_BINS` counts of the raw present values) per numeric column.
    """

    schema: Schema
    count: int
    sums: FloatArray  # per numeric column, schema order
    sums_sq: FloatArray
    category_counts: dict[str, dict[str, int]]  # one-hot column -> category -> rows
    label_counts: IntArray  # per class
    missing_counts: IntArray  # per feature column, schema.features order
    histograms: IntArray  # (numeric columns, GRID_BINS)

    @classmethod
    def empty(cls, schema: Schema) -> FeatureStats:
        return cls(
            schema=schema,
            count=0,
            sums=np.zeros(len(schema.numeric)),
            sums_sq=np.zeros(len(schema.numeric)),
            category_counts={col: {} for col in schema.one_hot},
            label_counts=np.zeros(schema.num_classes, dtype=np.int64),
            missing_counts=np.zeros(len(schema.features), dtype=np.int64),
            histograms=np.zeros((len(schema.numeric), GRID_BINS), dtype=np.int64),
        )

    def missing(self, column: str) -> int:
        """Rows in which the feature ``column`` is missing."""
        return int(self.missing_counts[self.schema.features.index(column)])

    def present(self, column: str) -> int:
        return self.count - self.missing(column)

    def histogram(self, column: str) -> IntArray:
        """The grid histogram of the numeric ``column``."""
        return np.asarray(self.histograms[self.schema.numeric.index(column)], dtype=np.int64)

    def __add__(self, other: FeatureStats) -> FeatureStats:
        if not isinstance(other, FeatureStats):
            return NotImplemented
        if not _same_roles(self.schema, other.schema):
            raise FraudflError("cannot add feature statistics of different schemas")
        counts: dict[str, dict[str, int]] = {}
        for col in self.schema.one_hot:
            merged = dict(self.category_counts[col])
            for category, n in other.category_counts[col].items():
                merged[category] = merged.get(category, 0) + n
            counts[col] = merged
        return FeatureStats(
            schema=self.schema,
            count=self.count + other.count,
            sums=self.sums + other.sums,
            sums_sq=self.sums_sq + other.sums_sq,
            category_counts=counts,
            label_counts=self.label_counts + other.label_counts,
            missing_counts=self.missing_counts + other.missing_counts,
            histograms=self.histograms + other.histograms,
        )

    def __radd__(self, other: object) -> FeatureStats:
        # Lets ``sum(stats_list)`` start from the integer 0.
        if other == 0:
            return self
        return NotImplemented

    @staticmethod
    def vector_size(schema: Schema) -> int:
        """Length of :meth:`to_vector` for ``schema`` (needs every vocabulary declared)."""
        vocab = _vocabularies(schema)
        return (
            1
            + 2 * len(schema.numeric)
            + sum(len(v) for v in vocab.values())
            + schema.num_classes
            + len(schema.features)
            + len(schema.numeric) * GRID_BINS
        )

    def to_vector(self) -> FloatArray:
        """``[count, sums, sums_sq, category counts (vocabulary order), label counts,
        missing counts (feature order), histograms (numeric order, grid order)]``."""
        vocab = _vocabularies(self.schema)
        parts: list[FloatArray] = [
            np.array([self.count], dtype=np.float64),
            self.sums.astype(np.float64),
            self.sums_sq.astype(np.float64),
        ]
        for col in self.schema.one_hot:
            counts = self.category_counts[col]
            outside = sorted(set(counts) - set(vocab[col]))
            if outside:
                raise FraudflError(
                    f"column '{col}': categories {outside} are not in the schema's vocabulary"
                )
            parts.append(np.array([counts.get(c, 0) for c in vocab[col]], dtype=np.float64))
        parts.append(self.label_counts.astype(np.float64))
        parts.append(self.missing_counts.astype(np.float64))
        parts.append(self.histograms.astype(np.float64).ravel())
        return np.concatenate(parts)

    @classmethod
    def from_vector(cls, schema: Schema, vector: FloatArray) -> FeatureStats:
        """Inverse of :meth:`to_vector` (counts are rounded to integers)."""
        vector = np.asarray(vector, dtype=np.float64)
        expected = cls.vector_size(schema)
        if vector.ndim != 1 or vector.shape[0] != expected:
            raise FraudflError(
                f"feature statistics vector has shape {vector.shape}, expected ({expected},)"
            )
        if not np.isfinite(vector).all():
            raise FraudflError("feature statistics vector has non-finite entries")
        vocab = _vocabularies(schema)
        n_num = len(schema.numeric)

        def as_counts(values: FloatArray, what: str) -> IntArray:
            counts = np.rint(values).astype(np.int64)
            if (counts < 0).any():
                raise FraudflError(f"feature statistics vector has negative {what}")
            return counts

        count = int(as_counts(vector[:1], "row count")[0])
        pos = 1
        sums = vector[pos : pos + n_num].copy()
        pos += n_num
        sums_sq = vector[pos : pos + n_num].copy()
        pos += n_num
        category_counts: dict[str, dict[str, int]] = {}
        for col in schema.one_hot:
            values = as_counts(vector[pos : pos + len(vocab[col])], f"counts for '{col}'")
            pos += len(vocab[col])
            category_counts[col] = {c: int(n) for c, n in zip(vocab[col], values, strict=True) if n}
        label_counts = as_counts(vector[pos : pos + schema.num_classes], "label counts")
        pos += schema.num_classes
        n_features = len(schema.features)
        missing_counts = as_counts(vector[pos : pos + n_features], "missing counts")
        pos += n_features
        histograms = as_counts(vector[pos:], "histogram counts").reshape(n_num, GRID_BINS)
        if (missing_counts > count).any() or (histograms.sum(axis=1) > count).any():
            raise FraudflError("feature statistics vector counts more values than rows")
        return cls(
            schema, count, sums, sums_sq, category_counts, label_counts, missing_counts,
            histograms,
        )


def sum_stats(stats: Iterable[FeatureStats]) -> FeatureStats:
    """The sum of several banks' statistics (typed, unlike ``sum()``, which may return 0)."""
    items = list(stats)
    if not items:
        raise FraudflError("no feature statistics to add up")
    total = items[0]
    for item in items[1:]:
        total = total + item
    return total


def _vocabularies(schema: Schema) -> dict[str, list[str]]:
    missing = [c for c in schema.one_hot if not schema.categories.get(c)]
    if missing:
        raise FraudflError(
            f"categorical column(s) {missing} have no declared vocabulary; a fixed statistics "
            "layout needs [categories] in schema.toml (load_dataset fills it from the banks)"
        )
    return {c: schema.categories[c] for c in schema.one_hot}


def compute_stats(frame: pd.DataFrame, schema: Schema, *, source: str = "data") -> FeatureStats:
    """Statistics of one frame (typically one bank's validated frame)."""
    absent = [c for c in schema.columns if c not in frame.columns]
    if absent:
        raise FraudflError(f"{source}: missing column(s) {absent} required by the schema")
    markers, required = schema.missing_values, set(schema.required)
    n_num = len(schema.numeric)
    sums, sums_sq = np.zeros(n_num), np.zeros(n_num)
    histograms = np.zeros((n_num, GRID_BINS), dtype=np.int64)
    missing_counts = np.zeros(len(schema.features), dtype=np.int64)
    for i, col in enumerate(schema.numeric):
        values = numeric_column(
            frame[col], col, source, markers=markers, allow_missing=col not in required
        )
        present = values[~np.isnan(values)]
        missing_counts[i] = len(values) - len(present)
        moments = moment_values(present, schema.transform_of(col))
        sums[i] = moments.sum()
        sums_sq[i] = np.square(moments).sum()
        histograms[i] = grid_histogram(present)
    category_counts: dict[str, dict[str, int]] = {}
    for j, col in enumerate(schema.categorical):
        categories = categorical_column(
            frame[col], col, source, markers=markers, allow_missing=col not in required
        )
        missing_counts[n_num + j] = int(categories.isna().sum())
        if col not in schema.hashed:
            category_counts[col] = {
                str(k): int(v) for k, v in categories.value_counts().items()
            }
    if schema.time is not None:
        stamps = time_column(
            frame[schema.time], schema.time, source, markers=markers,
            allow_missing=schema.time not in required,
        )
        missing_counts[-1] = int(np.isnan(stamps).sum())
    labels = label_column(
        frame[schema.label], schema.label, schema.task, schema.num_classes, source
    )
    return FeatureStats(
        schema=schema,
        count=len(frame),
        sums=sums,
        sums_sq=sums_sq,
        category_counts=category_counts,
        label_counts=np.bincount(labels, minlength=schema.num_classes).astype(np.int64),
        missing_counts=missing_counts,
        histograms=histograms,
    )
