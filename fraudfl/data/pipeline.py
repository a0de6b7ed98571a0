"""The feature pipeline: standardised numerics followed by one-hot categoricals.

It is fitted from a :class:`~fraudfl.data.stats.FeatureStats` only, in practice the sum of the
banks' statistics, so fitting never needs any bank's rows. It travels with global models as JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from fraudfl.data.schema import TASKS, Task
from fraudfl.data.stats import FeatureStats
from fraudfl.data.validation import (
    FloatArray,
    IntArray,
    categorical_column,
    label_column,
    numeric_column,
)
from fraudfl.errors import FraudflError

PIPELINE_FORMAT = "fraudfl.feature_pipeline"
PIPELINE_VERSION = 1
# The variance from summed statistics, sum(x^2)/n - mean^2, cancels catastrophically: for a
# constant column it comes out as rounding noise of up to ~10 float64 epsilons of mean(x^2)
# (measured over up to 40 banks of up to 400k rows). A variance below this share of mean(x^2)
# cannot be told from that noise: the column is treated as constant (centred, not scaled).
_VARIANCE_NOISE_FLOOR = 1e-13


@dataclass(eq=False)
class FeaturePipeline:
    """Numeric columns: ``(x - mean) / std``; categorical: one-hot over the vocabulary.

    A category outside the vocabulary (e.g. a merchant type first seen while scoring) encodes as
    all zeros for that column.
    """

    label: str
    task: Task
    num_classes: int
    numeric: list[str]
    means: FloatArray
    stds: FloatArray
    categorical: list[str]
    vocabularies: dict[str, list[str]]
    feature_names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.feature_names = [
            *self.numeric,
            *(f"{col}={cat}" for col in self.categorical for cat in self.vocabularies[col]),
        ]

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    @classmethod
    def fit(cls, stats: FeatureStats, *, standardize: bool = True) -> FeaturePipeline:
        """Fit from (summed) statistics: mean and population std per numeric column
        (``standardize=False``: numeric features pass unscaled)."""
        schema = stats.schema
        if stats.count <= 0:
            raise FraudflError("cannot fit the feature pipeline on statistics of zero rows")
        means = stats.sums / stats.count
        mean_squares = stats.sums_sq / stats.count
        variances = np.maximum(mean_squares - np.square(means), 0.0)
        constant = variances <= _VARIANCE_NOISE_FLOOR * mean_squares
        stds = np.where(constant, 1.0, np.sqrt(variances))
        if not standardize:
            means, stds = np.zeros_like(means), np.ones_like(stds)
        vocabularies = {
            col: list(schema.categories.get(col) or sorted(stats.category_counts[col]))
            for col in schema.categorical
        }
        return cls(
            label=schema.label,
            task=schema.task,
            num_classes=schema.num_classes,
            numeric=list(schema.numeric),
            means=means,
            stds=stds,
            categorical=list(schema.categorical),
            vocabularies=vocabularies,
        )

    def transform_features(
        self, frame: pd.DataFrame, *, source: str = "input"
    ) -> npt.NDArray[np.float32]:
        """Feature matrix (float32, rows x ``num_features``); the label column is not needed."""
        missing = [c for c in (*self.numeric, *self.categorical) if c not in frame.columns]
        if missing:
            raise FraudflError(
                f"{source}: missing feature column(s) {missing}; the model expects "
                f"{[*self.numeric, *self.categorical]}"
            )
        n = len(frame)
        out = np.zeros((n, self.num_features), dtype=np.float64)
        for i, col in enumerate(self.numeric):
            out[:, i] = (numeric_column(frame[col], col, source) - self.means[i]) / self.stds[i]
        offset = len(self.numeric)
        rows = np.arange(n)
        for col in self.categorical:
            vocab = self.vocabularies[col]
            values = categorical_column(frame[col], col, source)
            codes = np.asarray(pd.Categorical(values, categories=vocab).codes, dtype=np.int64)
            known = codes >= 0
            out[rows[known], offset + codes[known]] = 1.0
            offset += len(vocab)
        return out.astype(np.float32)

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
        return {
            "format": PIPELINE_FORMAT,
            "version": PIPELINE_VERSION,
            "label": self.label,
            "task": self.task,
            "num_classes": self.num_classes,
            "numeric": [
                {"name": name, "mean": float(mean), "std": float(std)}
                for name, mean, std in zip(self.numeric, self.means, self.stds, strict=True)
            ],
            "categorical": [
                {"name": col, "categories": list(self.vocabularies[col])}
                for col in self.categorical
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeaturePipeline:
        """Strict inverse of :meth:`to_dict` (the dict may come from another party)."""

        def fail(what: str) -> FraudflError:
            return FraudflError(f"feature pipeline: {what}")

        if not isinstance(data, dict):
            raise fail("expected a JSON object")
        if data.get("format") != PIPELINE_FORMAT or data.get("version") != PIPELINE_VERSION:
            raise fail(f"expected format {PIPELINE_FORMAT!r} version {PIPELINE_VERSION}")
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
        numeric, means, stds = [], [], []
        for entry in numeric_raw:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise fail("each numeric entry needs a string 'name'")
            mean, std = entry.get("mean"), entry.get("std")
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in (mean, std)):
                raise fail(f"numeric '{entry['name']}' needs finite 'mean' and 'std'")
            if cast(float, std) <= 0:
                raise fail(f"numeric '{entry['name']}' has a non-positive std")
            numeric.append(entry["name"])
            means.append(float(cast(float, mean)))
            stds.append(float(cast(float, std)))
        categorical: list[str] = []
        vocabularies: dict[str, list[str]] = {}
        for entry in categorical_raw:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise fail("each categorical entry needs a string 'name'")
            values = entry.get("categories")
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise fail(f"categorical '{entry['name']}' needs a list of string 'categories'")
            categorical.append(entry["name"])
            vocabularies[entry["name"]] = list(values)
        names = [*numeric, *categorical, label]
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
        )
