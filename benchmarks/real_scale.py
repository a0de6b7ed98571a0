"""Start-up of ``fraudfl simulate`` on a real-sized table: 600k rows x 120 raw columns (issue 15).

Writes a wide synthetic table (CSV, one file per bank, a ``schema.toml``): 100 numeric columns
(heavy-tailed, 5% missing in a fifth of them), 16 one-hot categoricals (3-60 values), 2 hashed
high-cardinality ids, a timestamp and the label. Then times each start-up stage as
``fraudfl simulate`` runs it (``load_dataset``: read + validate; ``split_banks``; per-bank
``compute_stats``; ``FeaturePipeline.fit`` on the summed statistics; ``transform_data``) and
prints the floor beside it: pyarrow's multi-threaded CSV reader reading the same files into
Arrow tables, with no conversion or checking (what loading alone cannot beat). Peak memory
(max RSS) is printed too.

    .venv/bin/python benchmarks/real_scale.py [--rows 600000] [--banks 5]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from fraudfl.data import FeaturePipeline, Schema, load_dataset
from fraudfl.data.schema import write_schema
from fraudfl.data.stats import compute_stats
from fraudfl.simulation import split_banks, transform_data

NUMERIC, ONE_HOT, HASHED = 100, 16, 2


def write_table(root: Path, rows: int, banks: int, seed: int) -> Schema:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    columns: dict[str, object] = {}
    for i in range(NUMERIC):
        values = rng.lognormal(0.0, 1.0 + (i % 5) / 2, size=rows).round(4)
        if i % 5 == 0:
            values[rng.random(rows) < 0.05] = np.nan
        columns[f"num_{i:03d}"] = values
    categories = {}
    for i in range(ONE_HOT):
        vocab = [f"c{i}_{v}" for v in range(3 + (i * 57) // (ONE_HOT - 1))]
        categories[f"cat_{i:02d}"] = vocab
        columns[f"cat_{i:02d}"] = np.asarray(vocab)[rng.integers(0, len(vocab), rows)]
    for i in range(HASHED):
        columns[f"id_{i}"] = np.char.add("m", rng.zipf(1.3, rows).astype(str))
    columns["time"] = 1_700_000_000 + np.sort(rng.integers(0, 90 * 86_400, rows))
    columns["is_fraud"] = (rng.random(rows) < 0.01).astype(np.int64)
    frame = pd.DataFrame(columns)
    schema = Schema(
        label="is_fraud",
        numeric=[c for c in columns if c.startswith("num_")],
        categorical=[*categories, *(f"id_{i}" for i in range(HASHED))],
        categories=categories,
        hashed={f"id_{i}": 512 for i in range(HASHED)},
        hash_key="00112233445566778899aabbccddeeff",
        time="time",
    )
    write_schema(schema, root)
    bank_of = rng.integers(0, banks, rows)
    for b in range(banks):
        pacsv.write_csv(pa.Table.from_pandas(frame[bank_of == b], preserve_index=False),
                        root / f"bank_{b:02d}.csv")
    return schema


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=600_000)
    ap.add_argument("--banks", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        t0 = time.perf_counter()
        write_table(root, args.rows, args.banks, args.seed)
        megabytes = sum(p.stat().st_size for p in root.glob("*.csv")) / 1e6
        print(f"wrote {args.rows:,} rows x {NUMERIC + ONE_HOT + HASHED + 2} columns in "
              f"{args.banks} CSV files ({megabytes:.0f} MB) in {time.perf_counter() - t0:.1f} s")
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        for path in sorted(root.glob("*.csv")):
            pacsv.read_csv(path)
        floor = time.perf_counter() - t0
        t0 = time.perf_counter()
        dataset = load_dataset(root)
        times["load + validate"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        splits = split_banks(dataset, 0.2, args.seed)
        times["split"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        stats = [compute_stats(s.train, dataset.schema, source=s.bank_id) for s in splits]
        times["statistics"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        total = stats[0]
        for other in stats[1:]:
            total = total + other
        pipeline = FeaturePipeline.fit(total)
        times["sum + fit"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        prepared = transform_data(dataset, splits, pipeline)
        times["transform"] = time.perf_counter() - t0
    features = prepared.num_features
    print(f"{'stage':<18} {'seconds':>8}")
    for stage, seconds in times.items():
        print(f"{stage:<18} {seconds:>8.2f}")
    total_s = sum(times.values())
    print(f"{'start-up total':<18} {total_s:>8.2f}   (target < 10 s; {features} features)")
    print(f"{'floor: arrow read':<18} {floor:>8.2f}   (pyarrow.csv, no conversion; "
          f"start-up = {total_s / floor:.1f}x)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS) {peak:,.0f} MB")


if __name__ == "__main__":
    main()
