"""What both generators share: preparing the output directory and writing frames."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from fraudfl.data.loading import DATA_SUFFIXES
from fraudfl.data.schema import SCHEMA_FILE, Schema, write_schema
from fraudfl.errors import FraudflError

FILE_FORMATS = ("csv", "parquet")


def prepare_output_dir(out_dir: Path, *, overwrite: bool) -> None:
    """Create ``out_dir``; refuse to mix a new dataset with an old one's files.

    A leftover ``bank_09.csv`` from a bigger earlier run would silently join the new dataset, so
    existing data files are an error unless ``overwrite`` removes them (and only them).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise FraudflError(f"{out_dir}: exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FraudflError(
            f"{out_dir}: cannot create the output directory: {exc.strerror}"
        ) from exc
    stale = [
        p
        for p in sorted(out_dir.iterdir())
        if p.is_file() and (p.suffix.lower() in DATA_SUFFIXES or p.name == SCHEMA_FILE)
    ]
    if stale and not overwrite:
        raise FraudflError(
            f"{out_dir}: already holds dataset files ({', '.join(p.name for p in stale[:5])}"
            f"{', ...' if len(stale) > 5 else ''}); choose an empty directory or overwrite them "
            "(--overwrite)"
        )
    for path in stale:
        path.unlink()


def write_frame(frame: pd.DataFrame, out_dir: Path, stem: str, file_format: str) -> Path:
    if file_format not in FILE_FORMATS:
        raise FraudflError(f"file format must be one of {list(FILE_FORMATS)}, got {file_format!r}")
    path = out_dir / f"{stem}.{file_format}"
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if file_format == "csv":
        # Arrow writes CSV ~8x faster than pandas. The generators' values never need quoting,
        # and the header is written unquoted so that it reads naturally.
        with path.open("wb") as fh:
            fh.write((",".join(frame.columns) + "\n").encode())
            pa_csv.write_csv(
                table, fh, pa_csv.WriteOptions(include_header=False, quoting_style="none")
            )
    else:
        pq.write_table(table, path)
    return path


def write_dataset(
    out_dir: Path,
    schema: Schema,
    banks: dict[str, pd.DataFrame],
    test: pd.DataFrame | None,
    file_format: str,
) -> None:
    write_schema(schema, out_dir)
    for bank_id, frame in banks.items():
        write_frame(frame, out_dir, bank_id, file_format)
    if test is not None and len(test):
        write_frame(test, out_dir, "test", file_format)
