"""``fraudfl score``: batch-score a CSV/Parquet file with the bank's model artifact."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "score",
        help="score a CSV/Parquet file of transactions with a model artifact",
        description=(
            "Score every transaction of a CSV or Parquet file with the model artifact a bank "
            "node writes (see docs/scoring.md). The output has the input's columns plus "
            "fraud_probability and fraud_decision (1 at or above the model's threshold)."
        ),
    )
    parser.add_argument("--model", type=Path, required=True,
                        help="model artifact directory (or its artifact.json)")
    parser.add_argument("--input", type=Path, required=True, help="transactions (.csv/.parquet)")
    parser.add_argument("--output", type=Path, required=True,
                        help="scored transactions (.csv/.parquet)")
    parser.add_argument("--chunk-size", type=int, default=50_000,
                        help="rows scored at a time (default: 50000)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fraudfl.scoring.artifact import load_artifact
    from fraudfl.scoring.batch import count_rows, score_file
    from fraudfl.scoring.scorer import Scorer

    scorer = Scorer(load_artifact(args.model))
    total = count_rows(args.input)
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
        TimeRemainingColumn(), console=console, transient=False,
    ) as progress:
        task = progress.add_task("score", total=total)
        summary = score_file(
            scorer, args.input, args.output, chunk_rows=args.chunk_size,
            on_progress=lambda n: progress.advance(task, n),
        )
    print(
        f"scored {summary.rows} transactions with model v{summary.model_version}: "
        f"{summary.alerts} alerts at threshold {summary.threshold:.4f} -> {args.output}"
    )
    return 0
