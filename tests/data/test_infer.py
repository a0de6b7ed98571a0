"""Schema inference on a messy table: roles, encodings, transforms and the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudfl.cli import main
from fraudfl.data import infer_schema_report, load_dataset, load_schema
from fraudfl.data.generators import generate_bank_data
from fraudfl.data.infer import hash_buckets_for
from fraudfl.errors import FraudflError


def messy_frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    amount = np.round(rng.lognormal(3, 1.5, n), 2).astype(str).astype(object)
    amount[rng.random(n) < 0.3] = ""
    return pd.DataFrame({
        "TransactionID": [str(i) for i in range(n)],
        "TransactionAmt": amount,
        "dist": np.round(rng.normal(0, 1, n), 3).astype(str),
        "card_bin": [f"{b:06d}" for b in rng.integers(0, 5000, n)],
        "ProductCD": rng.choice(["W", "C", "R", "H", "S"], n),
        "when": [f"2026-03-{1 + d:02d}T{h:02d}:15:00"
                 for d, h in zip(rng.integers(0, 28, n), rng.integers(0, 24, n), strict=True)],
        "empty": [""] * n,
        "isFraud": (rng.random(n) < 0.05).astype(int).astype(str),
    }).replace("", np.nan)


def test_messy_table_roles_and_report() -> None:
    rng = np.random.default_rng(3)
    frames = {"a.csv": messy_frame(rng, 2000), "b.csv": messy_frame(rng, 700)}
    inferred = infer_schema_report(frames, "isFraud", ["TransactionID"])
    schema = inferred.schema
    # Numeric-looking codes with leading zeros are numbers to inference; here card_bin has
    # 5000 possible values, most of which parse as numbers: it is numeric.
    assert schema.numeric == ["TransactionAmt", "dist", "card_bin"]
    assert schema.transforms == {"TransactionAmt": "quantile"}
    assert schema.categorical == ["ProductCD"]
    assert schema.categories == {"ProductCD": ["C", "H", "R", "S", "W"]}
    assert schema.time == "when"
    assert "empty" in schema.drop and "TransactionID" in schema.drop
    report = {r.column: r for r in inferred.report}
    assert report["TransactionAmt"].role == "numeric"
    assert 0.25 < report["TransactionAmt"].missing_share < 0.35
    assert report["empty"].encoding == "always missing"
    assert report["isFraud"].role == "label" and report["isFraud"].encoding == "binary"
    assert report["when"].role == "time"


def test_high_cardinality_text_is_hashed_with_a_fresh_key() -> None:
    rng = np.random.default_rng(4)
    n = 3000
    frame = pd.DataFrame({
        "device": [f"dev-{i}" for i in rng.integers(0, 900, n)],
        "email": rng.choice(["gmail.com", "yahoo.com", None], n),
        "y": (rng.random(n) < 0.1).astype(int),
    })
    one = infer_schema_report(frame, "y", []).schema
    two = infer_schema_report(frame, "y", []).schema
    assert one.hashed == {"device": hash_buckets_for(frame["device"].nunique())} == {
        "device": 256}
    assert one.categories == {"email": ["gmail.com", "yahoo.com"]}
    assert one.hash_key is not None and len(bytes.fromhex(one.hash_key)) == 16
    assert one.hash_key != two.hash_key  # from `secrets`, never derived from the data
    assert hash_buckets_for(100) == 32 and hash_buckets_for(10) == 16


def test_a_typo_in_a_numeric_column_names_file_column_and_row() -> None:
    frame = pd.DataFrame({"amount": ["1", "2", "3x", "4", None], "y": ["0", "1", "0", "0", "1"]})
    with pytest.raises(FraudflError) as info:
        infer_schema_report({"bank_q.csv": frame}, "y", [])
    msg = str(info.value)
    assert "bank_q.csv" in msg and "'amount'" in msg and "row 3" in msg and "'3x'" in msg


def test_simulate_infers_prints_and_writes_the_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "raw"
    generate_bank_data(data, n_banks=3, total_transactions=4000, fraud_rate=0.015, seed=2,
                       messy=True)
    (data / "schema.toml").unlink()
    code = main(["--log-level", "WARNING", "simulate", "--data", str(data),
                 "--label-column", "is_fraud", "--drop-columns", "transaction_id",
                 "--rounds", "1", "--no-progress", "--model", "logistic"])
    assert code == 0
    out = capsys.readouterr().out
    assert "inferred schema" in out and "device_id" in out and "hashed" in out
    schema = load_schema(data / "schema.toml")
    assert schema.time == "timestamp"
    assert set(schema.hashed) == {"merchant_id", "device_id"}
    assert schema.transforms.get("amount") == "quantile"
    # The written file is what the next run (and init, and the bank nodes) load.
    assert load_dataset(data).schema == schema
