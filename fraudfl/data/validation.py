"""Column checks and conversions shared by the loader, the statistics and the feature pipeline.

Every error names its source (a file path or ``"input"``), the column and the first offending row.
Rows are numbered from 1 and count data rows only: row 1 is the first row after a CSV's header
(so it is on line 2 of the file), or the first row of a Parquet file.

A feature value is *missing* when the cell is empty (or NaN/null) or equals one of the schema's
``missing_values`` markers; missing is data (NaN in numeric and time columns, ``None``/NaN
in categorical ones) except in ``required`` columns and the label, where it is an error.
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
_EPOCH = pd.Timestamp(0, tz="UTC")


def _first(mask: npt.NDArray[np.bool_]) -> int:
    return int(np.flatnonzero(mask)[0])


def show(value: object) -> str:
    """A cell value for an error message: numbers plainly, text quoted."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value) if isinstance(value, str) else str(value)


def _where(source: str, row: int, col: str) -> str:
    return f"{source}: row {row + 1}, column '{col}'"


def missing_mask(series: pd.Series[Any], markers: Sequence[str] = ()) -> npt.NDArray[np.bool_]:
    """Rows whose value is missing: empty, NaN/null, blank text, or one of ``markers``.

    A marker that is a number (``-999``) also matches the same number in a numeric column
    (``-999.0`` in a Parquet file).
    """
    mask = series.isna().to_numpy(dtype=bool, copy=True)
    if pd.api.types.is_bool_dtype(series):
        return mask
    if pd.api.types.is_numeric_dtype(series):
        numbers = [m for m in (_as_number(v) for v in markers) if m is not None]
        if numbers:
            mask |= series.isin(numbers).to_numpy(dtype=bool)
        return mask
    text = series.astype(str).str.strip()
    mask |= (text == "").to_numpy(dtype=bool)
    if markers:
        mask |= text.isin(list(markers)).to_numpy(dtype=bool)
        numbers = [m for m in (_as_number(v) for v in markers) if m is not None]
        if numbers:
            parsed = pd.to_numeric(text, errors="coerce")
            mask |= parsed.isin(numbers).to_numpy(dtype=bool)
    return mask


def _as_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _missing_error(source: str, row: int, col: str, what: str) -> FraudflError:
    return FraudflError(
        f"{_where(source, row, col)}: missing value in a required {what} column "
        "(the schema lists it under 'required'; fill the value, or take the column out of "
        "'required' to treat missing as data)"
    )


def check_columns(columns: Sequence[str], schema: Schema, source: str) -> None:
    """Every required column present; every other column declared as dropped."""
    present = set(columns)
    missing = [c for c in schema.columns if c not in present]
    if missing:
        raise FraudflError(
            f"{source}: missing column(s) {', '.join(repr(c) for c in missing)} "
            f"required by the schema; the file has {list(columns)}"
        )
    known = set(schema.columns) | set(schema.drop)
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise FraudflError(
            f"{source}: column(s) {', '.join(repr(c) for c in unknown)} are not in the schema; "
            "list them under 'drop' (or --drop-columns) to ignore them, or declare them as "
            "numeric/categorical features"
        )


def numeric_column(
    series: pd.Series[Any],
    col: str,
    source: str,
    *,
    markers: Sequence[str] = (),
    allow_missing: bool = False,
) -> FloatArray:
    """The column as float64 with NaN where a value is missing.

    A non-numeric or infinite value is an error, and so is a missing one unless
    ``allow_missing``.
    """
    if pd.api.types.is_bool_dtype(series) and not series.isna().any():
        return series.to_numpy(dtype=np.float64, copy=True)
    missing = missing_mask(series, markers)
    if missing.any() and not allow_missing:
        raise _missing_error(source, _first(missing), col, "numeric")
    # A copy: callers fill the missing entries in place.
    if pd.api.types.is_numeric_dtype(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    else:
        parsed = pd.to_numeric(series.where(~missing), errors="coerce")
        values = parsed.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    bad = np.isnan(values) & ~missing
    if bad.any():
        row = _first(bad)
        raise FraudflError(
            f"{_where(source, row, col)}: non-numeric value {show(series.iloc[row])}"
        )
    values[missing] = np.nan
    infinite = np.isinf(values)
    if infinite.any():
        row = _first(infinite)
        raise FraudflError(f"{_where(source, row, col)}: infinite value {show(series.iloc[row])}")
    return values


def categorical_column(
    series: pd.Series[Any],
    col: str,
    source: str,
    vocabulary: Sequence[str] | None = None,
    *,
    markers: Sequence[str] = (),
    allow_missing: bool = False,
) -> pd.Series[Any]:
    """The column as strings, ``None`` where missing.

    A value outside ``vocabulary`` is an error, and so is a missing one unless ``allow_missing``.
    """
    missing = missing_mask(series, markers)
    if missing.any() and not allow_missing:
        row = _first(missing)
        raise FraudflError(
            f"{_where(source, row, col)}: missing category value (the column is required)"
        )
    text = series.astype(str).to_numpy(dtype=object)
    text[missing] = None
    values = pd.Series(text, index=series.index, dtype=object)
    if vocabulary:
        unknown = ~(values.isin(vocabulary).to_numpy() | missing)
        if unknown.any():
            row = _first(unknown)
            raise FraudflError(
                f"{_where(source, row, col)}: value {show(values.iloc[row])} is not among the "
                f"declared categories {list(vocabulary)}"
            )
    return values


def time_column(
    series: pd.Series[Any],
    col: str,
    source: str,
    *,
    markers: Sequence[str] = (),
    allow_missing: bool = False,
) -> FloatArray:
    """Timestamps as Unix seconds (float64, NaN where missing).

    Numbers are Unix seconds; text is ISO 8601 (``2026-01-31T14:05:00``, optionally with a UTC
    offset, which is converted to UTC; a timestamp without one is taken as UTC).
    """
    missing = missing_mask(series, markers)
    if missing.any() and not allow_missing:
        raise _missing_error(source, _first(missing), col, "time")
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    elif pd.api.types.is_datetime64_any_dtype(series):
        stamps = pd.to_datetime(series, utc=True)
        values = _unix_seconds(stamps)
    else:
        text = series.astype(str).where(~missing, None)
        numbers = pd.to_numeric(text, errors="coerce")
        if bool(numbers.notna().to_numpy()[~missing].all()):
            values = numbers.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        else:
            stamps = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
            values = _unix_seconds(stamps)
    bad = ~np.isfinite(values) & ~missing
    if bad.any():
        row = _first(bad)
        raise FraudflError(
            f"{_where(source, row, col)}: {show(series.iloc[row])} is not a timestamp "
            "(expected Unix seconds or ISO 8601 such as 2026-01-31T14:05:00)"
        )
    values[missing] = np.nan
    return values


def _unix_seconds(stamps: pd.Series[Any]) -> FloatArray:
    # Through a timedelta: the datetime unit (ns, us, s) depends on the input.
    seconds = (stamps - _EPOCH) / pd.Timedelta(seconds=1)
    return np.array(seconds.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


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
    """A typed copy holding only the schema's columns (numeric, categorical, time, label).

    Numeric columns become float64 (NaN where missing), categorical ones strings (NaN where
    missing), the time column Unix seconds (float64), the label int64. Drop columns are removed.
    With ``check_vocabulary`` a category outside a declared vocabulary is an error.
    """
    columns = [str(c) for c in frame.columns]
    check_columns(columns, schema, source)
    if len(frame) == 0:
        raise FraudflError(f"{source}: the file has a header but no data rows")
    frame = frame.set_axis(columns, axis=1)
    out: dict[str, Any] = {}
    markers = schema.missing_values
    required = set(schema.required)
    for col in schema.numeric:
        out[col] = numeric_column(
            frame[col], col, source, markers=markers, allow_missing=col not in required
        )
    for col in schema.categorical:
        vocab = schema.categories.get(col) if check_vocabulary else None
        out[col] = categorical_column(
            frame[col], col, source, vocab, markers=markers, allow_missing=col not in required
        ).to_numpy(dtype=object)
    if schema.time is not None:
        out[schema.time] = time_column(
            frame[schema.time], schema.time, source, markers=markers,
            allow_missing=schema.time not in required,
        )
    out[schema.label] = label_column(
        frame[schema.label], schema.label, schema.task, schema.num_classes, source
    )
    return pd.DataFrame(out, columns=schema.columns)
