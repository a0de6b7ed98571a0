"""Column checks and conversions shared by the loader, the statistics and the feature pipeline.

Every error names its source (a file path or ``"input"``), the column and the first offending row.
Rows are numbered from 1 and count data rows only: row 1 is the first row after a CSV's header
(so it is on line 2 of the file), or the first row of a Parquet file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from fraudfl.data.schema import Schema, Task
from fraudfl.errors import FraudflError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _first(mask: npt.NDArray[np.bool_]) -> int:
    return int(np.flatnonzero(mask)[0])


def show(value: object) -> str:
    """A cell value for an error message: numbers plainly, text quoted."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value) if isinstance(value, str) else str(value)


def _where(source: str, row: int, col: str) -> str:
    return f"{source}: row {row + 1}, column '{col}'"


def check_columns(columns: Sequence[str], schema: Schema, source: str) -> None:
    """Every required column present; every other column declared as dropped."""
    present = set(columns)
    missing = [c for c in schema.required if c not in present]
    if missing:
        raise FraudflError(
            f"{source}: missing column(s) {', '.join(repr(c) for c in missing)} "
            f"required by the schema; the file has {list(columns)}"
        )
    known = set(schema.required) | set(schema.drop)
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise FraudflError(
            f"{source}: column(s) {', '.join(repr(c) for c in unknown)} are not in the schema; "
            "list them under 'drop' (or --drop-columns) to ignore them, or declare them as "
            "numeric/categorical features"
        )


def numeric_column(series: pd.Series[Any], col: str, source: str) -> FloatArray:
    """The column as float64; a missing, non-numeric or infinite value is an error."""
    if pd.api.types.is_bool_dtype(series) and not series.isna().any():
        return series.to_numpy(dtype=np.float64)
    if pd.api.types.is_numeric_dtype(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        parsed_ok = ~np.isnan(values)
    else:
        parsed = pd.to_numeric(series, errors="coerce")
        values = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
        parsed_ok = ~np.isnan(values)
    if not parsed_ok.all():
        row = _first(~parsed_ok)
        raw = series.iloc[row]
        if pd.isna(raw) or (isinstance(raw, str) and not raw.strip()):
            raise FraudflError(
                f"{_where(source, row, col)}: missing value in a numeric column "
                "(missing values are not allowed; fill or drop them before loading)"
            )
        raise FraudflError(f"{_where(source, row, col)}: non-numeric value {show(raw)}")
    infinite = np.isinf(values)
    if infinite.any():
        row = _first(infinite)
        raise FraudflError(f"{_where(source, row, col)}: infinite value {show(series.iloc[row])}")
    return values


def categorical_column(
    series: pd.Series[Any], col: str, source: str, vocabulary: Sequence[str] | None = None
) -> pd.Series[str]:
    """The column as strings; a missing value or one outside ``vocabulary`` is an error."""
    missing = series.isna().to_numpy()
    if missing.any():
        raise FraudflError(f"{_where(source, _first(missing), col)}: missing category value")
    values = series.astype(str)
    if vocabulary:
        unknown = ~values.isin(vocabulary).to_numpy()
        if unknown.any():
            row = _first(unknown)
            raise FraudflError(
                f"{_where(source, row, col)}: value {show(values.iloc[row])} is not among the "
                f"declared categories {list(vocabulary)}"
            )
    return values


def label_column(
    series: pd.Series[Any], col: str, task: Task, num_classes: int, source: str
) -> IntArray:
    """Labels as int64: 0/1 for a binary task, 0..num_classes-1 for a multi-class one."""
    missing = series.isna().to_numpy()
    if missing.any():
        raise FraudflError(f"{_where(source, _first(missing), col)}: empty label")
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        values = series.to_numpy(dtype=np.float64)
    else:
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.isnan(values)
        if bad.any():
            row = _first(bad)
            raw = series.iloc[row]
            what = "empty label" if not str(raw).strip() else f"label {show(raw)} is not a number"
            raise FraudflError(f"{_where(source, row, col)}: {what}")
    not_integer = ~np.isfinite(values) | (values != np.round(values))
    if not_integer.any():
        row = _first(not_integer)
        raise FraudflError(
            f"{_where(source, row, col)}: label {show(series.iloc[row])} is not an integer class"
        )
    if task == "binary":
        out = (values != 0) & (values != 1)
        if out.any():
            row = _first(out)
            raise FraudflError(
                f"{_where(source, row, col)}: label {show(series.iloc[row])} is not 0 or 1 "
                "(the task is binary)"
            )
    else:
        out = (values < 0) | (values >= num_classes)
        if out.any():
            row = _first(out)
            raise FraudflError(
                f"{_where(source, row, col)}: label {show(series.iloc[row])} is outside "
                f"0..{num_classes - 1} (multiclass task with num_classes = {num_classes})"
            )
    return values.astype(np.int64)


def validate_frame(
    frame: pd.DataFrame, schema: Schema, source: str, *, check_vocabulary: bool = True
) -> pd.DataFrame:
    """A typed copy holding only the schema's columns (numeric, categorical, label), in order.

    Numeric columns become float64, categorical ones strings, the label int64. Drop columns are
    removed. With ``check_vocabulary`` a category outside a declared vocabulary is an error.
    """
    columns = [str(c) for c in frame.columns]
    check_columns(columns, schema, source)
    if len(frame) == 0:
        raise FraudflError(f"{source}: the file has a header but no data rows")
    frame = frame.set_axis(columns, axis=1)
    out: dict[str, Any] = {}
    for col in schema.numeric:
        out[col] = numeric_column(frame[col], col, source)
    for col in schema.categorical:
        vocab = schema.categories.get(col) if check_vocabulary else None
        out[col] = categorical_column(frame[col], col, source, vocab).to_numpy(dtype=object)
    out[schema.label] = label_column(
        frame[schema.label], schema.label, schema.task, schema.num_classes, source
    )
    return pd.DataFrame(out, columns=schema.required)
