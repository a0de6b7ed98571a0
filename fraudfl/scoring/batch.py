"""Batch scoring of a CSV or Parquet file (``fraudfl score``).

The input is read in chunks, so files larger than memory work and a progress bar can follow
along; each chunk goes through the feature pipeline (whose errors name the column and the
row, counted from the top of the file) and the model. The output holds every input column plus
``fraud_probability`` and ``fraud_decision`` (1 at or above the model's threshold), and is
written to a temporary file renamed into place at the end, so a failed run leaves no half file.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraudfl.errors import FraudflError
from fraudfl.scoring.scorer import Scorer

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".parquet")
PROBABILITY_COLUMN = "fraud_probability"
DECISION_COLUMN = "fraud_decision"
DEFAULT_CHUNK_ROWS = 50_000
# The pipeline numbers rows within the frame it is given: "row N, column ..."
_ROW_REF = re.compile(r"\brow (\d+)\b")

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class BatchSummary:
    rows: int
    alerts: int
    model_version: int
    threshold: float


def _check_suffix(path: Path, what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise FraudflError(f"{path}: unsupported {what} file type; expected .csv or .parquet")
    return suffix


def count_rows(path: Path) -> int:
    """Data rows in a CSV (newline count minus the header) or a Parquet file (metadata)."""
    if _check_suffix(path, "input") == ".parquet":
        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except (OSError, pa.ArrowException) as exc:
            raise FraudflError(f"{path}: cannot read parquet file: {exc}") from None
    lines = 0
    last = b"\n"
    try:
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                lines += block.count(b"\n")
                last = block[-1:]
    except OSError as exc:
        raise FraudflError(f"{path}: cannot read file: {exc.strerror or exc}") from None
    if last != b"\n":
        lines += 1
    return max(lines - 1, 0)


def _chunks(path: Path, scorer: Scorer, chunk_rows: int) -> Iterator[pd.DataFrame]:
    suffix = _check_suffix(path, "input")
    try:
        if suffix == ".csv":
            # Categorical codes stay text (leading zeros matter); only empty cells are missing,
            # as when the bank's training data was loaded.
            dtype = dict.fromkeys(scorer.artifact.pipeline.categorical, str)
            yield from pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=[""],
                                   chunksize=chunk_rows)
        else:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                yield batch.to_pandas()
    except pd.errors.EmptyDataError:
        raise FraudflError(f"{path}: the file is empty (no header row)") from None
    except pd.errors.ParserError as exc:
        raise FraudflError(f"{path}: cannot parse CSV: {exc}") from None
    except UnicodeDecodeError as exc:
        raise FraudflError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, pa.ArrowException) as exc:
        raise FraudflError(f"{path}: cannot read {suffix[1:]} file: {exc}") from None


class _Writer:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.suffix = _check_suffix(path, "output")
        if not path.parent.is_dir():
            raise FraudflError(f"{path}: cannot write: {path.parent} is not a directory")
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._parquet: pq.ParquetWriter | None = None
        self._wrote_csv_header = False

    def write(self, frame: pd.DataFrame) -> None:
        try:
            self._write(frame)
        except OSError as exc:
            raise FraudflError(f"{self.path}: cannot write: {exc.strerror or exc}") from exc

    def _write(self, frame: pd.DataFrame) -> None:
        if self.suffix == ".csv":
            frame.to_csv(self.tmp, mode="a" if self._wrote_csv_header else "w",
                         header=not self._wrote_csv_header, index=False)
            self._wrote_csv_header = True
            return
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.tmp, table.schema)
        self._parquet.write_table(table)

    def commit(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        try:
            if not self.tmp.exists():
                self.tmp.touch()
            os.replace(self.tmp, self.path)
        except OSError as exc:
            raise FraudflError(f"{self.path}: cannot write: {exc.strerror or exc}") from exc

    def abort(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        self.tmp.unlink(missing_ok=True)


def score_file(
    scorer: Scorer,
    input_path: Path,
    output_path: Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_progress: ProgressCallback | None = None,
) -> BatchSummary:
    """Score every row of ``input_path`` into ``output_path``; ``on_progress(rows)`` per chunk."""
    if chunk_rows < 1:
        raise FraudflError(f"chunk size must be >= 1, got {chunk_rows}")
    if not input_path.is_file():
        raise FraudflError(f"{input_path}: no such file")
    if output_path.resolve() == input_path.resolve():
        raise FraudflError(f"{output_path}: the output would overwrite the input")
    writer = _Writer(output_path)
    for col in (PROBABILITY_COLUMN, DECISION_COLUMN):
        if col in scorer.artifact.pipeline.numeric or col in scorer.artifact.pipeline.categorical:
            raise FraudflError(f"the model uses a column named '{col}', which the output adds")
    rows = alerts = 0
    try:
        for chunk in _chunks(input_path, scorer, chunk_rows):
            try:
                scores = scorer.score_frame(chunk, source=str(input_path))
            except FraudflError as exc:
                raise FraudflError(_shift_rows(str(exc), rows)) from None
            out = chunk.copy()
            out[PROBABILITY_COLUMN] = scores.probabilities
            out[DECISION_COLUMN] = scores.decisions.astype("int8")
            writer.write(out)
            rows += len(chunk)
            alerts += scores.alerts
            if on_progress is not None:
                on_progress(len(chunk))
        if rows == 0:
            raise FraudflError(f"{input_path}: the file has no data rows")
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    log.info("scored %d transactions from %s into %s (%d alerts)", rows, input_path,
             output_path, alerts)
    return BatchSummary(rows=rows, alerts=alerts, model_version=scorer.version,
                        threshold=scorer.threshold)


def _shift_rows(message: str, offset: int) -> str:
    """Renumber the pipeline's chunk-relative "row N" as a row of the whole file."""
    return _ROW_REF.sub(lambda m: f"row {int(m.group(1)) + offset}", message, count=1)
