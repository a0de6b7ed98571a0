"""The dataset schema: which column is the label, which are features, which are ignored.

A dataset directory may carry a ``schema.toml`` (see ``docs/data.md``); without one the schema is
inferred (``fraudfl.data.infer``) from the bank files plus a label column named by the user.
Besides column roles the schema says how features are encoded: missing-value markers, columns
that may not be missing (``required``), per-column numeric transforms and imputation, hashed
high-cardinality categoricals (with the federation's hashing key) and a time column.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

from fraudfl.errors import FraudflError

Task = Literal["binary", "multiclass"]
TASKS: tuple[Task, ...] = ("binary", "multiclass")
# Models give two classes one logit (the binary task), so a multiclass task has three or more.
MIN_CLASSES: dict[Task, int] = {"binary": 2, "multiclass": 3}
SCHEMA_FILE = "schema.toml"
_SCHEMA_KEYS = {
    "label", "numeric", "categorical", "drop", "task", "num_classes", "categories",
    "missing_values", "required", "transforms", "impute", "hashed", "hash_key", "time",
}
Transform = Literal["standard", "quantile", "log"]
TRANSFORMS: tuple[Transform, ...] = ("standard", "quantile", "log")
Imputation = Literal["mean", "median"]
IMPUTATIONS: tuple[Imputation, ...] = ("mean", "median")
# Bucket counts of a hashed column: at least 2 (one bucket is a constant), at most 2^16 (the
# feature matrix is dense).
MIN_HASH_BUCKETS, MAX_HASH_BUCKETS = 2, 1 << 16
# A hashing key shorter than this could be guessed; BLAKE2b takes keys of up to 64 bytes.
MIN_HASH_KEY_BYTES, MAX_HASH_KEY_BYTES = 16, 64


@dataclass(frozen=True)
class Schema:
    """Column roles of a dataset and how each feature is encoded.

    ``categories`` maps a one-hot categorical column to its vocabulary; ``hashed`` maps a
    high-cardinality categorical column to its number of hash buckets (it has no vocabulary).
    ``missing_values`` are cell texts (or numbers) that mean "missing" besides an empty cell;
    a column in ``required`` may not be missing. ``transforms`` and ``impute`` give a numeric
    column's transform (default ``standard``) and imputed value (default ``mean``). ``time``
    names a timestamp column (Unix seconds or ISO 8601) that yields time-of-day and day-of-week
    features and orders the train/validation split.
    """

    label: str
    numeric: list[str]
    categorical: list[str]
    drop: list[str] = field(default_factory=list)
    task: Task = "binary"
    num_classes: int = 2
    categories: dict[str, list[str]] = field(default_factory=dict)
    missing_values: list[str] = field(default_factory=list)
    required: list[str] = field(default_factory=list)
    transforms: dict[str, Transform] = field(default_factory=dict)
    impute: dict[str, Imputation] = field(default_factory=dict)
    hashed: dict[str, int] = field(default_factory=dict)
    hash_key: str | None = None
    time: str | None = None

    def __post_init__(self) -> None:
        _check_schema(self, source="schema")

    @property
    def features(self) -> list[str]:
        """Feature columns in pipeline order: numeric, categorical, then the time column."""
        return [*self.numeric, *self.categorical, *([self.time] if self.time else [])]

    @property
    def columns(self) -> list[str]:
        """Columns every data file must contain."""
        return [*self.features, self.label]

    @property
    def one_hot(self) -> list[str]:
        """Categorical columns encoded one-hot over a vocabulary (the others are hashed)."""
        return [c for c in self.categorical if c not in self.hashed]

    def transform_of(self, column: str) -> Transform:
        return self.transforms.get(column, "standard")

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
        if self.time is not None:
            lines.append(f"time = {_toml_str(self.time)}")
        if self.missing_values:
            lines.append(f"missing_values = {_toml_list(self.missing_values)}")
        if self.required:
            lines.append(f"required = {_toml_list(self.required)}")
        if self.hash_key is not None:
            lines.append(f"hash_key = {_toml_str(self.hash_key)}")
        tables: list[tuple[str, dict[str, Any]]] = [
            ("transforms", dict(self.transforms)),
            ("impute", dict(self.impute)),
            ("hashed", dict(self.hashed)),
            ("categories", dict(self.categories)),
        ]
        for name, table in tables:
            if table:
                lines += ["", f"[{name}]"]
                lines += [f"{_toml_str(c)} = {_toml_value(v)}" for c, v in table.items()]
        return "\n".join(lines) + "\n"


def _toml_str(value: str) -> str:
    # JSON string escapes are a subset of TOML basic-string escapes.
    return json.dumps(value, ensure_ascii=False)


def _toml_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_toml_str(v) for v in values) + "]"


def _toml_value(value: object) -> str:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_str(value)
    return _toml_list(cast(Iterable[str], value))


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
    _check_encodings(schema, source)


def _check_encodings(schema: Schema, source: str) -> None:
    if not isinstance(schema.missing_values, list) or not all(
        isinstance(v, str) for v in schema.missing_values
    ):
        raise FraudflError(
            f"{source}: 'missing_values' must be a list of strings (e.g. [\"-999\"])"
        )
    if schema.time is not None:
        if not isinstance(schema.time, str) or not schema.time:
            raise FraudflError(f"{source}: 'time' must be a column name")
        if schema.time in (schema.label, *schema.numeric, *schema.categorical, *schema.drop):
            raise FraudflError(
                f"{source}: time column '{schema.time}' may not have another role as well"
            )
    features = set(schema.features)
    if not isinstance(schema.required, list) or not all(
        isinstance(c, str) for c in schema.required
    ):
        raise FraudflError(f"{source}: 'required' must be a list of column names")
    for col in schema.required:
        if col not in features:
            raise FraudflError(f"{source}: required column '{col}' is not a feature column")
    for name, table, allowed in (
        ("transforms", schema.transforms, TRANSFORMS),
        ("impute", schema.impute, IMPUTATIONS),
    ):
        if not isinstance(table, dict):
            raise FraudflError(f"{source}: '{name}' must be a table of column = value")
        for col, value in table.items():
            if col not in schema.numeric:
                raise FraudflError(
                    f"{source}: {name} given for '{col}', which is not a numeric column"
                )
            if value not in allowed:
                raise FraudflError(
                    f"{source}: {name} of '{col}' must be one of {list(allowed)}, got {value!r}"
                )
    if not isinstance(schema.hashed, dict):
        raise FraudflError(f"{source}: 'hashed' must be a table of column = buckets")
    for col, buckets in schema.hashed.items():
        if col not in schema.categorical:
            raise FraudflError(
                f"{source}: hashed buckets given for '{col}', which is not a categorical column"
            )
        if col in schema.categories:
            raise FraudflError(
                f"{source}: '{col}' has both a vocabulary and hash buckets; choose one"
            )
        if (
            not isinstance(buckets, int)
            or isinstance(buckets, bool)
            or not MIN_HASH_BUCKETS <= buckets <= MAX_HASH_BUCKETS
        ):
            raise FraudflError(
                f"{source}: buckets of hashed column '{col}' must be an integer in "
                f"[{MIN_HASH_BUCKETS}, {MAX_HASH_BUCKETS}], got {buckets!r}"
            )
    if schema.hash_key is not None:
        try:
            key = bytes.fromhex(schema.hash_key)
        except (TypeError, ValueError):
            raise FraudflError(f"{source}: 'hash_key' must be a hex string") from None
        if not MIN_HASH_KEY_BYTES <= len(key) <= MAX_HASH_KEY_BYTES:
            raise FraudflError(
                f"{source}: 'hash_key' must be {MIN_HASH_KEY_BYTES}-{MAX_HASH_KEY_BYTES} bytes "
                f"({2 * MIN_HASH_KEY_BYTES}-{2 * MAX_HASH_KEY_BYTES} hex digits)"
            )
    elif schema.hashed:
        raise FraudflError(
            f"{source}: hashed columns need the federation's 'hash_key' (32+ hex digits, e.g. "
            "from `python -c 'import secrets; print(secrets.token_hex(16))'`)"
        )


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
            missing_values=raw.get("missing_values", []),
            required=raw.get("required", []),
            transforms=raw.get("transforms", {}),
            impute=raw.get("impute", {}),
            hashed=raw.get("hashed", {}),
            hash_key=raw.get("hash_key"),
            time=raw.get("time"),
        )
    except FraudflError as exc:
        # Re-raise naming the file rather than the generic "schema".
        raise FraudflError(f"{path}: {str(exc).removeprefix('schema: ')}") from None


def write_schema(schema: Schema, directory: Path) -> Path:
    path = directory / SCHEMA_FILE
    path.write_text(schema.to_toml(), encoding="utf-8")
    return path
