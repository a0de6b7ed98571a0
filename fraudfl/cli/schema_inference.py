"""Schema inference for commands that take a raw dataset directory (``fraudfl simulate``).

Without a ``schema.toml`` and with ``--label-column``, the schema is inferred from every bank
file (:mod:`fraudfl.data.infer`), printed as a table (column, role, encoding, missing share,
distinct values) and written to ``DIR/schema.toml`` for the operator to edit and agree on; the
command then loads the directory with that file, as ``fraudfl init`` and the bank node do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fraudfl.data.infer import InferredSchema, infer_directory
from fraudfl.data.schema import SCHEMA_FILE, Task, write_schema


def needs_inference(data: Path, label_column: str | None) -> bool:
    return label_column is not None and not (data / SCHEMA_FILE).exists()


def report_table(inferred: InferredSchema, title: str) -> Table:
    table = Table(title=title)
    for name, justify in (("column", "left"), ("role", "left"), ("encoding", "left"),
                          ("missing", "right"), ("distinct", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in inferred.report:
        table.add_row(row.column, row.role, row.encoding, f"{row.missing_share:.1%}",
                      f"{row.distinct:,}" if row.distinct else "")
    return table


def infer_and_write(
    data: Path, label_column: str, drop_columns: Sequence[str], task: Task | None,
    console: Console,
) -> Path:
    """Infer, print and write ``data/schema.toml``; returns its path."""
    inferred = infer_directory(data, label_column, drop_columns, task=task)
    console.print(report_table(inferred, f"inferred schema of {data}"))
    path = write_schema(inferred.schema, data)
    console.print(f"schema written to {path}: edit it if needed, then give the same file to "
                  "the aggregator and every bank node (their `schema_file`)")
    return path
