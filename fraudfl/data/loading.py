"""Loading a dataset directory: one file per bank, an optional test file and ``schema.toml``.

See ``docs/data.md`` for the format. Everything that is wrong with the data is a
:class:`FraudflError` naming the file, column and row; nothing is silently dropped or repaired.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from fraudfl.data.infer import infer_schema
from fraudfl.data.schema import (
    MIN_CLASSES,
    SCHEMA_FILE,
    TASKS,
    Schema,
    Task,
    load_schema,
)
from fraudfl.data.validation import validate_frame
from fraudfl.errors import FraudflError

log = logging.getLogger(__name__)

DATA_SUFFIXES = (".csv", ".parquet")
TEST_STEM = "test"


@dataclass
class FederatedDataset:
    """A validated dataset: one frame per bank (sorted by bank id) and an optional test frame.

    Frames hold the schema's columns only (numeric float64 with NaN where missing, categorical
    str or None, the time column as Unix seconds, label int64).
    """

    root: Path
    schema: Schema
    banks: dict[str, pd.DataFrame]
    test: pd.DataFrame | None

    @property
    def bank_ids(self) -> list[str]:
        return list(self.banks)

    def pooled(self) -> pd.DataFrame:
        """All banks' rows in one frame."""
        return pd.concat(list(self.banks.values()), ignore_index=True)


def read_table(path: Path, schema: Schema | None = None) -> pd.DataFrame:
    """Read one CSV or Parquet file without validating it.

    For CSV only empty cells count as missing (a literal ``NA`` is a value). Categorical columns
    are read as text so that codes such as ``0042`` keep their leading zeros; without a schema
    every column is read as text and converted after the schema is inferred.
    """
    suffix = path.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise FraudflError(f"{path}: unsupported file type; expected .csv or .parquet")
    try:
        if suffix == ".csv":
            dtype: Any = str if schema is None else dict.fromkeys(schema.categorical, str)
            frame = pd.read_csv(
                path, dtype=dtype, keep_default_na=False, na_values=[""], low_memory=False
            )
        else:
            frame = pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise FraudflError(f"{path}: the file is empty (no header row)") from None
    except pd.errors.ParserError as exc:
        raise FraudflError(f"{path}: cannot parse CSV: {exc}") from None
    except UnicodeDecodeError as exc:
        raise FraudflError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (pa.ArrowException, ValueError) as exc:
        raise FraudflError(f"{path}: cannot read {suffix[1:]} file: {exc}") from None
    except OSError as exc:
        raise FraudflError(f"{path}: cannot read file: {exc.strerror or exc}") from None
    frame.columns = [str(c) for c in frame.columns]
    if len(frame.columns) == 0:
        raise FraudflError(f"{path}: the file is empty (no columns)")
    return frame


def load_bank_file(path: Path, schema: Schema) -> pd.DataFrame:
    """Read and validate one bank's file against ``schema`` (categories must be declared ones)."""
    return validate_frame(read_table(path, schema), schema, str(path))


def find_data_files(root: Path) -> tuple[dict[str, Path], Path | None]:
    """Bank files by id (file stem, sorted) and the test file, if any."""
    if not root.is_dir():
        raise FraudflError(f"{root}: not a directory (expected a dataset directory)")
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(root.iterdir()):
        if (
            path.is_file()
            and not path.name.startswith(".")
            and path.suffix.lower() in DATA_SUFFIXES
        ):
            # Test.csv is the test set too (suffixes are case-insensitive): as a bank named
            # "Test" the held-out rows would silently be trained on.
            stem = TEST_STEM if path.stem.lower() == TEST_STEM else path.stem
            by_stem.setdefault(stem, []).append(path)
    for stem, paths in by_stem.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            what = "the test set" if stem == TEST_STEM else f"bank '{stem}'"
            raise FraudflError(f"{root}: {what} has more than one file ({names}); keep one")
    test_paths = by_stem.pop(TEST_STEM, None)
    banks = {stem: paths[0] for stem, paths in sorted(by_stem.items())}
    if not banks:
        raise FraudflError(
            f"{root}: no bank files; expected one <bank>.csv or <bank>.parquet per bank"
        )
    return banks, test_paths[0] if test_paths else None


def apply_overrides(
    schema: Schema,
    *,
    label_column: str | None,
    drop_columns: Sequence[str],
    task: Task | None,
) -> Schema:
    """``schema`` with the command-line overrides applied.

    A new label column stops being a feature and the old label is dropped (it must not become a
    feature); dropped columns stop being features.
    """
    label = schema.label
    numeric, categorical, drop = list(schema.numeric), list(schema.categorical), list(schema.drop)
    time = schema.time
    if label_column is not None and label_column != label:
        numeric = [c for c in numeric if c != label_column]
        categorical = [c for c in categorical if c != label_column]
        drop = [c for c in drop if c != label_column] + [label]
        time = None if time == label_column else time
        label = label_column
    for col in drop_columns:
        if col == label:
            raise FraudflError(f"--drop-columns: cannot drop the label column '{col}'")
        numeric = [c for c in numeric if c != col]
        categorical = [c for c in categorical if c != col]
        time = None if time == col else time
        if col not in drop:
            drop.append(col)
    features = {*numeric, *categorical, *([time] if time else [])}
    categories = {c: v for c, v in schema.categories.items() if c in categorical}
    hashed = {c: v for c, v in schema.hashed.items() if c in categorical}
    new_task = task or schema.task
    # A task switched to multiclass gets its class count from the labels (load_dataset); the
    # smallest valid one stands in until then.
    num_classes = schema.num_classes if new_task == schema.task else MIN_CLASSES[new_task]
    return replace(
        schema,
        label=label,
        numeric=numeric,
        categorical=categorical,
        drop=drop,
        task=new_task,
        num_classes=num_classes,
        categories=categories,
        required=[c for c in schema.required if c in features],
        transforms={c: v for c, v in schema.transforms.items() if c in numeric},
        impute={c: v for c, v in schema.impute.items() if c in numeric},
        hashed=hashed,
        hash_key=schema.hash_key if hashed else None,
        time=time,
    )


def _labels_max(frames: Sequence[pd.DataFrame], label: str) -> int:
    """The highest numeric label (at least 1); invalid labels are left to validation."""
    highest = 1
    for frame in frames:
        if label in frame.columns:
            values = pd.to_numeric(frame[label], errors="coerce").dropna()
            if len(values):
                highest = max(highest, int(values.max()))
    return highest


def _check_same_columns(raw: dict[str, pd.DataFrame], files: dict[str, Path]) -> None:
    first_id = next(iter(raw))
    expected = list(raw[first_id].columns)
    for bank_id, frame in raw.items():
        columns = list(frame.columns)
        if set(columns) != set(expected):
            missing = [c for c in expected if c not in columns]
            extra = [c for c in columns if c not in expected]
            raise FraudflError(
                f"{files[bank_id]}: columns differ from {files[first_id].name}: "
                f"missing {missing}, extra {extra} (all bank files must have the same columns)"
            )


def load_dataset(
    root: Path,
    *,
    label_column: str | None = None,
    drop_columns: Sequence[str] = (),
    task: str | None = None,
) -> FederatedDataset:
    """Load and validate a dataset directory.

    With a ``schema.toml`` the overrides adjust it; without one ``label_column`` is required and
    the schema is inferred from all bank files (:mod:`fraudfl.data.infer`; the task from the
    labels of all banks). One-hot columns without a declared vocabulary get the sorted union of
    the banks' values, so every bank's statistics share one layout.
    """
    if task is not None and task not in TASKS:
        raise FraudflError(f"task must be one of {list(TASKS)}, got {task!r}")
    files, test_path = find_data_files(root)
    schema_path = root / SCHEMA_FILE
    file_schema = load_schema(schema_path) if schema_path.is_file() else None
    if file_schema is None and label_column is None:
        raise FraudflError(
            f"{root}: no {SCHEMA_FILE}; pass the label column (--label-column) so the schema can "
            "be inferred, or write a schema file (see docs/data.md)"
        )
    schema = (
        None
        if file_schema is None
        else apply_overrides(
            file_schema, label_column=label_column, drop_columns=drop_columns, task=task
        )
    )
    raw = {bank_id: read_table(path, schema) for bank_id, path in files.items()}
    _check_same_columns(raw, files)
    first_id = next(iter(raw))
    first_columns = list(raw[first_id].columns)
    for col in drop_columns:
        if col not in first_columns:
            raise FraudflError(
                f"{files[first_id]}: drop column '{col}' not found; columns are {first_columns}"
            )
    if schema is None:
        assert label_column is not None
        # Column roles from the first bank; the task from every bank's labels.
        schema = infer_schema(
            {str(files[b]): frame for b, frame in raw.items()}, label_column, drop_columns,
            task="binary",
        )
    needs_num_classes = task == "multiclass" and (
        file_schema is None or file_schema.task != "multiclass"
    )
    if needs_num_classes or (file_schema is None and task is None):
        highest = _labels_max(list(raw.values()), schema.label)
        if needs_num_classes and highest < 2:
            raise FraudflError(
                f"{root}: --task multiclass needs labels of 3 or more classes; the banks' labels "
                f"are 0..{highest} (two classes are the binary task)"
            )
        if needs_num_classes or highest > 1:
            schema = replace(schema, task="multiclass", num_classes=highest + 1)
    banks = {
        bank_id: validate_frame(frame, schema, str(files[bank_id]))
        for bank_id, frame in raw.items()
    }
    del raw
    test = None
    if test_path is not None:
        # Categories absent from the banks are legitimate in a test set: they encode to zeros.
        test = validate_frame(
            read_table(test_path, schema), schema, str(test_path), check_vocabulary=False
        )
    undeclared = [c for c in schema.one_hot if not schema.categories.get(c)]
    if undeclared:
        schema = schema.with_categories(
            {
                col: sorted(
                    set().union(*(set(frame[col].dropna().unique()) for frame in banks.values()))
                )
                for col in undeclared
            }
        )
    log.info(
        "loaded %d bank(s) from %s: %d rows, %d numeric and %d categorical features, %s task",
        len(banks),
        root,
        sum(len(f) for f in banks.values()),
        len(schema.numeric),
        len(schema.categorical),
        schema.task,
    )
    return FederatedDataset(root=root, schema=schema, banks=banks, test=test)
