"""Schema inference from raw bank tables: roles, encodings and transforms, with a report.

Used when a dataset directory has no ``schema.toml``: ``fraudfl simulate --data DIR
--label-column isFraud`` infers the schema from every bank's file, prints the report (column,
role, encoding, missing share) and writes ``schema.toml`` for the operator to edit and agree on;
``fraudfl init`` and the bank node then use that same file.

Rules, per column other than the label and the dropped ones (missing cells, i.e. empty cells and
the ``missing_values`` markers, are set aside first):

* every value a number -> ``numeric``; ``quantile`` transform if it has more than
  :data:`QUANTILE_MIN_DISTINCT` values and a skewness above :data:`QUANTILE_MIN_SKEW` (amounts,
  counts), else ``standard``;
* most but not all values numbers -> an error naming the first non-number (a typo would
  otherwise turn every amount into a category);
* every value an ISO 8601 timestamp -> the ``time`` column (the first such column; later ones
  are categorical);
* other text -> ``categorical``: one-hot over the sorted values when it has at most
  :data:`MAX_ONE_HOT` distinct values, otherwise hashed into a power-of-two number of buckets
  (:func:`hash_buckets_for`) with a fresh federation key;
* a column with no value at all is dropped.

In the in-process simulator every bank's rows are at hand, so the distinct counts are exact; in a
deployment the operator infers on data they may see (or a sample) and edits the file.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from fraudfl.data.schema import (
    MAX_HASH_BUCKETS,
    MIN_HASH_KEY_BYTES,
    Schema,
    Task,
    Transform,
)
from fraudfl.data.validation import missing_mask
from fraudfl.errors import FraudflError

log = logging.getLogger(__name__)

MAX_ONE_HOT = 50
QUANTILE_MIN_DISTINCT = 10
QUANTILE_MIN_SKEW = 1.0
MIN_INFERRED_BUCKETS = 16
MAX_INFERRED_BUCKETS = 256
# An object column whose values are mostly numbers is almost surely a numeric column with a typo;
# inferring it as categorical would silently turn every amount into a category.
_NUMERIC_LOOKING_FRACTION = 0.5

Role = Literal["label", "numeric", "categorical", "time", "drop"]


@dataclass(frozen=True)
class ColumnReport:
    """What inference decided for one column, and why (its missing share and distinct count)."""

    column: str
    role: Role
    encoding: str  # "standard", "quantile", "one-hot (n)", "hashed (n buckets)", ...
    missing_share: float
    distinct: int


@dataclass(frozen=True)
class InferredSchema:
    schema: Schema
    report: list[ColumnReport]


def hash_buckets_for(distinct: int) -> int:
    """Buckets for a column of ``distinct`` values: a quarter of them rounded up to a power of
    two, within [16, 256] (collisions are then shared by a few values each, and the feature
    matrix stays small)."""
    wanted = max(1, distinct // 4)
    buckets = 1 << (wanted - 1).bit_length()
    return int(min(MAX_INFERRED_BUCKETS, max(MIN_INFERRED_BUCKETS, buckets), MAX_HASH_BUCKETS))


def infer_schema(
    frames: pd.DataFrame | Mapping[str, pd.DataFrame],
    label_column: str,
    drop_columns: Sequence[str],
    *,
    task: Task | None = None,
    source: str = "data",
    missing_values: Sequence[str] = (),
    hash_key: str | None = None,
) -> Schema:
    """The inferred :class:`Schema` (see :func:`infer_schema_report`)."""
    return infer_schema_report(
        frames, label_column, drop_columns, task=task, source=source,
        missing_values=missing_values, hash_key=hash_key,
    ).schema


def infer_schema_report(
    frames: pd.DataFrame | Mapping[str, pd.DataFrame],
    label_column: str,
    drop_columns: Sequence[str],
    *,
    task: Task | None = None,
    source: str = "data",
    missing_values: Sequence[str] = (),
    hash_key: str | None = None,
) -> InferredSchema:
    """Infer column roles and encodings from one frame or from several banks' frames.

    The frames must share their columns. The task is ``binary`` when the labels seen are within
    {0, 1}, otherwise ``multiclass`` with ``num_classes = max label + 1``; pass ``task`` to force
    it. Invalid labels are left for validation to report with their row. Errors name ``source``
    (or the bank's name) and the first offending row of that bank.
    """
    named = {source: frames} if isinstance(frames, pd.DataFrame) else dict(frames)
    if not named:
        raise FraudflError(f"{source}: no data to infer a schema from")
    first_name, first = next(iter(named.items()))
    columns = [str(c) for c in first.columns]
    if label_column not in columns:
        raise FraudflError(
            f"{first_name}: label column '{label_column}' not found; columns are {columns}"
        )
    for col in drop_columns:
        if col not in columns:
            raise FraudflError(
                f"{first_name}: drop column '{col}' not found; columns are {columns}"
            )
    markers = list(missing_values)
    total_rows = sum(len(f) for f in named.values())
    numeric: list[str] = []
    categorical: list[str] = []
    drop = list(drop_columns)
    transforms: dict[str, Transform] = {}
    categories: dict[str, list[str]] = {}
    hashed: dict[str, int] = {}
    time: str | None = None
    report: list[ColumnReport] = []
    for col in columns:
        if col == label_column or col in drop_columns:
            continue
        pieces = [(name, frame[col]) for name, frame in named.items()]
        present = [(name, s[~missing_mask(s, markers)]) for name, s in pieces]
        n_present = sum(len(s) for _, s in present)
        missing_share = 1.0 - n_present / total_rows if total_rows else 0.0
        if n_present == 0:
            drop.append(col)
            report.append(ColumnReport(col, "drop", "always missing", 1.0, 0))
            continue
        kind = _value_kind(present, col, allow_time=time is None)
        if kind == "numeric":
            values = np.concatenate(
                [pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64) for _, s in present]
            )
            distinct = len(np.unique(values))
            transform = _numeric_transform(values, distinct)
            numeric.append(col)
            if transform != "standard":
                transforms[col] = transform
            report.append(ColumnReport(col, "numeric", transform, missing_share, distinct))
        elif kind == "time":
            time = col
            distinct = int(pd.concat([s for _, s in present]).nunique())
            report.append(ColumnReport(col, "time", "hour/weekday", missing_share, distinct))
        else:
            text = pd.concat([s.astype(str) for _, s in present], ignore_index=True)
            vocabulary = sorted(str(v) for v in pd.unique(text))
            categorical.append(col)
            if len(vocabulary) <= MAX_ONE_HOT:
                categories[col] = vocabulary
                encoding = f"one-hot ({len(vocabulary)})"
            else:
                hashed[col] = hash_buckets_for(len(vocabulary))
                encoding = f"hashed ({hashed[col]} buckets)"
            report.append(
                ColumnReport(col, "categorical", encoding, missing_share, len(vocabulary))
            )
    num_classes, task = _task(named, label_column, task)
    if hashed and hash_key is None:
        hash_key = secrets.token_hex(MIN_HASH_KEY_BYTES)
    label_missing = sum(int(f[label_column].isna().sum()) for f in named.values())
    report.insert(
        0,
        ColumnReport(
            label_column, "label", task, label_missing / total_rows if total_rows else 0.0,
            num_classes,
        ),
    )
    report += [ColumnReport(c, "drop", "dropped", 0.0, 0) for c in drop_columns]
    schema = Schema(
        label=label_column,
        numeric=numeric,
        categorical=categorical,
        drop=drop,
        task=task,
        num_classes=num_classes,
        categories=categories,
        missing_values=markers,
        transforms=transforms,
        hashed=hashed,
        hash_key=hash_key if hashed else None,
        time=time,
    )
    return InferredSchema(schema, report)


def _value_kind(
    present: list[tuple[str, pd.Series[Any]]], col: str, *, allow_time: bool
) -> Literal["numeric", "time", "categorical"]:
    if all(
        pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s) for _, s in present
    ):
        return "numeric"
    parsed_all = True
    for name, series in present:
        parsed = pd.to_numeric(series, errors="coerce").notna().to_numpy()
        if len(parsed) == 0 or parsed.all():
            continue
        parsed_all = False
        fraction = float(parsed.mean())
        if fraction >= _NUMERIC_LOOKING_FRACTION:
            bad = int(np.flatnonzero(~parsed)[0])
            row = int(series.index[bad]) + 1
            raise FraudflError(
                f"{name}: column '{col}' looks numeric but row {row} has the non-numeric value "
                f"{series.iloc[bad]!r}; fix the value, declare it a missing-value marker, or "
                "declare the column in schema.toml"
            )
    if parsed_all:
        return "numeric"
    if allow_time and all(_is_iso_time(s) for _, s in present):
        return "time"
    return "categorical"


def _is_iso_time(series: pd.Series[Any]) -> bool:
    text = series.astype(str)
    # A cheap shape check first: dates start with four digits and a dash.
    if not bool(text.str.match(r"^\d{4}-\d{2}-\d{2}").all()):
        return False
    stamps = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    return bool(stamps.notna().all())


def _numeric_transform(values: np.ndarray[Any, Any], distinct: int) -> Transform:
    if distinct <= QUANTILE_MIN_DISTINCT:
        return "standard"
    std = float(values.std())
    if std == 0.0:
        return "standard"
    skew = float(np.mean(((values - values.mean()) / std) ** 3))
    return "quantile" if abs(skew) > QUANTILE_MIN_SKEW else "standard"


def _task(
    named: Mapping[str, pd.DataFrame], label: str, task: Task | None
) -> tuple[int, Task]:
    if task == "binary":
        return 2, "binary"
    highest = 1
    negative = False
    for frame in named.values():
        labels = pd.to_numeric(frame[label], errors="coerce")
        valid = labels[np.isfinite(labels)]
        if len(valid):
            highest = max(highest, int(valid.max()))
            negative = negative or bool((valid < 0).any())
    if task is None and highest <= 1 and not negative:
        return 2, "binary"
    return max(highest + 1, 3), "multiclass"


def infer_directory(
    root: Path,
    label_column: str,
    drop_columns: Sequence[str] = (),
    *,
    task: Task | None = None,
    missing_values: Sequence[str] = (),
) -> InferredSchema:
    """Infer the schema of a dataset directory from all of its bank files."""
    from fraudfl.data.loading import find_data_files, read_table

    files, _ = find_data_files(root)
    frames = {str(path): read_table(path) for path in files.values()}
    return infer_schema_report(
        frames, label_column, drop_columns, task=task, missing_values=missing_values
    )
