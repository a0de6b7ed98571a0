"""The dataset schema: which column is the label, which are features, which are ignored.

A dataset directory may carry a ``schema.toml`` (see ``docs/data.md``); without one the schema is
inferred from the first bank file's column types plus a label column named by the user.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from fraudfl.errors import FraudflError

Task = Literal["binary", "multiclass"]
TASKS: tuple[Task, ...] = ("binary", "multiclass")
# Models give two classes one logit (the binary task), so a multiclass task has three or more.
MIN_CLASSES: dict[Task, int] = {"binary": 2, "multiclass": 3}
SCHEMA_FILE = "schema.toml"
_SCHEMA_KEYS = {"label", "numeric", "categorical", "drop", "task", "num_classes", "categories"}
# An object column whose values are mostly numbers is almost surely a numeric column with a typo;
# inferring it as categorical would silently turn every amount into a category.
_NUMERIC_LOOKING_FRACTION = 0.5


@dataclass(frozen=True)
class Schema:
    """Column roles of a dataset. ``categories`` maps a categorical column to its vocabulary."""

    label: str
    numeric: list[str]
    categorical: list[str]
    drop: list[str] = field(default_factory=list)
    task: Task = "binary"
    num_classes: int = 2
    categories: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_schema(self, source="schema")

    @property
    def features(self) -> list[str]:
        """Feature columns in pipeline order: numeric first, then categorical."""
        return [*self.numeric, *self.categorical]

    @property
    def required(self) -> list[str]:
        """Columns every data file must contain."""
        return [*self.features, self.label]

    def with_categories(self, categories: Mapping[str, Sequence[str]]) -> Schema:
        """A copy whose vocabulary is ``categories`` for the given columns (others unchanged)."""
        merged = dict(self.categories)
        merged.update({col: list(values) for col, values in categories.items()})
        return replace(self, categories=merged)

    def to_toml(self) -> str:
        """The ``schema.toml`` text for this schema (readable back by :func:`load_schema`)."""
        lines = [
            f"label = {_toml_str(self.label)}",
            f'task = "{self.task}"',
            f"num_classes = {self.num_classes}",
            f"numeric = {_toml_list(self.numeric)}",
            f"categorical = {_toml_list(self.categorical)}",
            f"drop = {_toml_list(self.drop)}",
        ]
        if self.categories:
            lines += ["", "[categories]"]
            lines += [f"{_toml_str(c)} = {_toml_list(v)}" for c, v in self.categories.items()]
        return "\n".join(lines) + "\n"


def _toml_str(value: str) -> str:
    # JSON string escapes are a subset of TOML basic-string escapes.
    return json.dumps(value, ensure_ascii=False)


def _toml_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_toml_str(v) for v in values) + "]"


def _check_schema(schema: Schema, source: str) -> None:
    if not isinstance(schema.label, str) or not schema.label:
        raise FraudflError(f"{source}: 'label' must be a non-empty column name")
    for name in ("numeric", "categorical", "drop"):
        values = getattr(schema, name)
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise FraudflError(f"{source}: '{name}' must be a list of column names")
    roles: dict[str, str] = {schema.label: "label"}
    for name in ("numeric", "categorical", "drop"):
        for col in getattr(schema, name):
            if col in roles:
                raise FraudflError(
                    f"{source}: column '{col}' is listed as both {roles[col]} and {name}"
                )
            roles[col] = name
    if schema.task not in TASKS:
        raise FraudflError(f"{source}: 'task' must be one of {list(TASKS)}, got {schema.task!r}")
    if (
        not isinstance(schema.num_classes, int)
        or isinstance(schema.num_classes, bool)
        or schema.num_classes < 2
    ):
        raise FraudflError(f"{source}: 'num_classes' must be an integer >= 2")
    if schema.task == "binary" and schema.num_classes != 2:
        raise FraudflError(f"{source}: a binary task has num_classes = 2, got {schema.num_classes}")
    if schema.task == "multiclass" and schema.num_classes < MIN_CLASSES["multiclass"]:
        raise FraudflError(
            f"{source}: a multiclass task needs num_classes >= 3, got {schema.num_classes} "
            "(two classes are the binary task)"
        )
    if not schema.numeric and not schema.categorical:
        raise FraudflError(f"{source}: the schema has no feature columns")
    if not isinstance(schema.categories, dict):
        raise FraudflError(f"{source}: 'categories' must be a table of column = [values]")
    for col, vocab in schema.categories.items():
        if col not in schema.categorical:
            raise FraudflError(
                f"{source}: categories given for '{col}', which is not a categorical column"
            )
        if not isinstance(vocab, list) or not all(isinstance(v, str) for v in vocab):
            raise FraudflError(f"{source}: categories of '{col}' must be a list of strings")
        if len(set(vocab)) != len(vocab):
            raise FraudflError(f"{source}: categories of '{col}' contain duplicates")


def load_schema(path: Path) -> Schema:
    """Read and check a ``schema.toml``."""
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise FraudflError(f"{path}: cannot read schema: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise FraudflError(f"{path}: invalid TOML: {exc}") from exc
    unknown = sorted(set(raw) - _SCHEMA_KEYS)
    if unknown:
        raise FraudflError(
            f"{path}: unknown key(s) {unknown}; expected some of {sorted(_SCHEMA_KEYS)}"
        )
    if "label" not in raw:
        raise FraudflError(f"{path}: missing required key 'label'")
    task = raw.get("task", "binary")
    if task == "multiclass" and "num_classes" not in raw:
        raise FraudflError(f"{path}: a multiclass schema needs 'num_classes'")
    try:
        return Schema(
            label=raw["label"],
            numeric=raw.get("numeric", []),
            categorical=raw.get("categorical", []),
            drop=raw.get("drop", []),
            task=cast(Task, task),
            num_classes=raw.get("num_classes", 2),
            categories=raw.get("categories", {}),
        )
    except FraudflError as exc:
        # Re-raise naming the file rather than the generic "schema".
        raise FraudflError(f"{path}: {str(exc).removeprefix('schema: ')}") from None


def write_schema(schema: Schema, directory: Path) -> Path:
    path = directory / SCHEMA_FILE
    path.write_text(schema.to_toml(), encoding="utf-8")
    return path


def infer_schema(
    frame: pd.DataFrame,
    label_column: str,
    drop_columns: Sequence[str],
    *,
    task: Task | None = None,
    source: str = "data",
) -> Schema:
    """Infer column roles from dtypes: numeric dtypes -> numeric, strings/objects -> categorical.

    The task is ``binary`` when the labels seen are within {0, 1}, otherwise ``multiclass`` with
    ``num_classes = max label + 1``; pass ``task`` to force it. Invalid labels are left for
    validation to report with their row.
    """
    columns = [str(c) for c in frame.columns]
    if label_column not in columns:
        raise FraudflError(
            f"{source}: label column '{label_column}' not found; columns are {columns}"
        )
    for col in drop_columns:
        if col not in columns:
            raise FraudflError(f"{source}: drop column '{col}' not found; columns are {columns}")
    numeric: list[str] = []
    categorical: list[str] = []
    for col in columns:
        if col == label_column or col in drop_columns:
            continue
        series = frame[col]
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            numeric.append(col)
            continue
        if _numbers_as_strings(series, col, source):
            numeric.append(col)
        else:
            categorical.append(col)
    num_classes = 2
    if task is None or task == "multiclass":
        labels = pd.to_numeric(frame[label_column], errors="coerce")
        valid = labels[np.isfinite(labels)]
        max_label = int(valid.max()) if len(valid) else 1
        if task is None:
            task = "binary" if max_label <= 1 and (valid >= 0).all() else "multiclass"
        if task == "multiclass":
            num_classes = max(max_label + 1, 2)
    return Schema(
        label=label_column,
        numeric=numeric,
        categorical=categorical,
        drop=list(drop_columns),
        task=task,
        num_classes=num_classes,
    )


def _numbers_as_strings(series: pd.Series[Any], col: str, source: str) -> bool:
    """True if every value of a text column is a number; raises if most but not all are."""
    present = series.notna().to_numpy()
    if not present.any():
        return False
    parsed = pd.to_numeric(series.where(present), errors="coerce").notna().to_numpy()
    fraction = float(parsed[present].mean())
    if fraction == 1.0:
        return True
    if fraction >= _NUMERIC_LOOKING_FRACTION:
        bad = np.flatnonzero(present & ~parsed)[0]
        raise FraudflError(
            f"{source}: column '{col}' looks numeric but row {bad + 1} has the non-numeric value "
            f"{series.iloc[bad]!r}; fix the value, or declare the column in schema.toml"
        )
    return False
