"""Every validation error names the file, the column and the (1-based data) row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from fraudfl.data import Schema, load_bank_file, load_dataset
from fraudfl.errors import FraudflError

WriteFile = Callable[[str, str], Path]
HEADER = "id,amount,hour,channel,Class\n"
SCHEMA = Schema(label="Class", numeric=["amount", "hour"], categorical=["channel"], drop=["id"])


def error_of(path: Path, schema: Schema = SCHEMA) -> str:
    with pytest.raises(FraudflError) as info:
        load_bank_file(path, schema)
    return str(info.value)


def test_valid_file_is_typed_and_keeps_only_schema_columns(write: WriteFile) -> None:
    path = write("bank.csv", HEADER + "1,10.5,3,pos,0\n2,250,23,online,1\n")
    frame = load_bank_file(path, SCHEMA)
    assert list(frame.columns) == ["amount", "hour", "channel", "Class"]
    assert frame["amount"].dtype == "float64"
    assert frame["Class"].dtype == "int64"
    assert frame["channel"].tolist() == ["pos", "online"]


def test_missing_column_names_file_and_column(write: WriteFile) -> None:
    path = write("bank_x.csv", "id,amount,channel,Class\n1,10.5,pos,0\n")
    msg = error_of(path)
    assert "bank_x.csv" in msg and "'hour'" in msg and "missing column" in msg


def test_non_numeric_value_names_row_column_and_value(write: WriteFile) -> None:
    path = write("bank_x.csv", HEADER + "1,10.5,3,pos,0\n2,11,4,pos,0\n3,12.x,5,pos,1\n")
    msg = error_of(path)
    assert "bank_x.csv" in msg
    assert "row 3" in msg  # third data row (line 4 of the file)
    assert "'amount'" in msg and "'12.x'" in msg and "non-numeric" in msg


def test_missing_numeric_value_is_data_unless_required(write: WriteFile) -> None:
    path = write("bank_x.csv", HEADER + "1,10.5,3,pos,0\n2,,4,pos,0\n")
    assert load_bank_file(path, SCHEMA)["amount"].isna().tolist() == [False, True]
    msg = error_of(path, replace(SCHEMA, required=["amount"]))
    assert "bank_x.csv" in msg and "row 2" in msg and "'amount'" in msg and "missing value" in msg


def test_missing_value_markers(write: WriteFile) -> None:
    path = write("bank_x.csv", HEADER + "1,-999,3,pos,0\n2,5,4,unknown,0\n3,-999.0,NA,pos,1\n")
    schema = replace(SCHEMA, missing_values=["-999", "unknown", "NA"])
    frame = load_bank_file(path, schema)
    assert frame["amount"].isna().tolist() == [True, False, True]
    assert frame["hour"].isna().tolist() == [False, False, True]
    assert frame["channel"].isna().tolist() == [False, True, False]
    msg = error_of(path, replace(schema, required=["channel"]))
    assert "bank_x.csv" in msg and "row 2" in msg and "'channel'" in msg


def test_literal_na_is_a_value_not_missing(write: WriteFile) -> None:
    path = write("bank_x.csv", HEADER + "1,NA,3,pos,0\n")
    msg = error_of(path)
    assert "row 1" in msg and "'NA'" in msg and "non-numeric" in msg


def test_infinite_value_is_an_error(write: WriteFile) -> None:
    path = write("bank_x.csv", HEADER + "1,10,3,pos,0\n2,inf,3,pos,0\n")
    msg = error_of(path)
    assert "row 2" in msg and "'amount'" in msg and "infinite" in msg


def test_empty_label_names_row(write: WriteFile) -> None:
    path = write("bank_x.csv", HEADER + "1,10.5,3,pos,0\n2,1,4,pos,\n")
    msg = error_of(path)
    assert "bank_x.csv" in msg and "row 2" in msg and "'Class'" in msg and "empty label" in msg


@pytest.mark.parametrize(
    ("value", "expected"), [("2", "label 2 is not 0 or 1"), ("yes", "label 'yes' is not a number")]
)
def test_non_binary_label_names_row_and_value(write: WriteFile, value: str, expected: str) -> None:
    path = write("bank_x.csv", HEADER + f"1,10.5,3,pos,0\n2,1,4,pos,1\n3,1,4,pos,{value}\n")
    msg = error_of(path)
    assert "bank_x.csv" in msg and "row 3" in msg and "'Class'" in msg and expected in msg


def test_fractional_label_is_not_an_integer(write: WriteFile) -> None:
    path = write("bank_x.csv", HEADER + "1,10.5,3,pos,0.5\n")
    msg = error_of(path)
    assert "row 1" in msg and "not an integer" in msg


def test_multiclass_labels_must_be_integers_in_range(write: WriteFile) -> None:
    schema = Schema(
        label="Class",
        numeric=["amount", "hour"],
        categorical=["channel"],
        drop=["id"],
        task="multiclass",
        num_classes=3,
    )
    ok = write("ok.csv", HEADER + "1,1,1,pos,0\n2,1,1,pos,2\n3,1,1,pos,1\n")
    assert load_bank_file(ok, schema)["Class"].tolist() == [0, 2, 1]
    out_of_range = write("bank_x.csv", HEADER + "1,1,1,pos,0\n2,1,1,pos,3\n")
    msg = error_of(out_of_range, schema)
    assert "bank_x.csv" in msg and "row 2" in msg and "outside 0..2" in msg
    negative = write("bank_y.csv", HEADER + "1,1,1,pos,-1\n")
    assert "row 1" in error_of(negative, schema)
    fractional = write("bank_z.csv", HEADER + "1,1,1,pos,1.5\n")
    assert "not an integer" in error_of(fractional, schema)


def test_empty_file_and_header_only_file(write: WriteFile) -> None:
    empty = write("bank_e.csv", "")
    msg = error_of(empty)
    assert "bank_e.csv" in msg and "empty" in msg
    header_only = write("bank_h.csv", HEADER)
    msg = error_of(header_only)
    assert "bank_h.csv" in msg and "no data rows" in msg


def test_unknown_column_must_be_declared_or_dropped(write: WriteFile) -> None:
    path = write("bank_x.csv", "id,amount,hour,channel,Class,extra\n1,1,1,pos,0,z\n")
    msg = error_of(path)
    assert "bank_x.csv" in msg and "'extra'" in msg and "drop" in msg


def test_missing_category_value(write: WriteFile) -> None:
    path = write("bank_x.csv", HEADER + "1,1,1,pos,0\n2,1,1,,0\n")
    assert load_bank_file(path, SCHEMA)["channel"].isna().tolist() == [False, True]
    msg = error_of(path, replace(SCHEMA, required=["channel"]))
    assert "row 2" in msg and "'channel'" in msg and "missing category" in msg


def test_category_outside_declared_vocabulary(write: WriteFile) -> None:
    schema = SCHEMA.with_categories({"channel": ["pos", "online"]})
    path = write("bank_x.csv", HEADER + "1,1,1,pos,0\n2,1,1,atm,0\n")
    msg = error_of(path, schema)
    assert "row 2" in msg and "'channel'" in msg and "'atm'" in msg


def test_unreadable_files(write: WriteFile, tmp_path: Path) -> None:
    bad_parquet = tmp_path / "bank_p.parquet"
    bad_parquet.write_bytes(b"this is not parquet")
    msg = error_of(bad_parquet)
    assert "bank_p.parquet" in msg and "cannot read" in msg
    binary = tmp_path / "bank_b.csv"
    binary.write_bytes(b"id,amount\n\xff\xfe\x00\x01,2\n")
    assert "bank_b.csv" in error_of(binary)
    assert "bank_missing.csv" in error_of(tmp_path / "bank_missing.csv")


def test_parquet_bank_file_with_typed_columns(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "id": [1, 2],
            "amount": [1.5, 2.0],
            "hour": [1, 2],
            "channel": ["pos", "atm"],
            "Class": [0, 1],
        }
    )
    frame.to_parquet(tmp_path / "bank.parquet")
    assert load_bank_file(tmp_path / "bank.parquet", SCHEMA)["Class"].tolist() == [0, 1]
    frame.loc[1, "amount"] = float("nan")
    frame.to_parquet(tmp_path / "bank_nan.parquet")
    assert load_bank_file(tmp_path / "bank_nan.parquet", SCHEMA)["amount"].isna().sum() == 1
    msg = error_of(tmp_path / "bank_nan.parquet", replace(SCHEMA, required=["amount"]))
    assert "bank_nan.parquet" in msg and "row 2" in msg and "'amount'" in msg


def test_mismatched_columns_between_banks(write: WriteFile, tmp_path: Path) -> None:
    write("bank_a.csv", "amount,Class\n1,0\n")
    write("bank_b.csv", "amount,merchant,Class\n1,x,0\n")
    with pytest.raises(FraudflError) as info:
        load_dataset(tmp_path, label_column="Class")
    msg = str(info.value)
    assert "bank_b.csv" in msg and "bank_a.csv" in msg and "'merchant'" in msg


def test_no_bank_files(tmp_path: Path) -> None:
    (tmp_path / "README.txt").write_text("nothing here")
    (tmp_path / "test.csv").write_text("amount,Class\n1,0\n")
    with pytest.raises(FraudflError, match="no bank files"):
        load_dataset(tmp_path, label_column="Class")
    with pytest.raises(FraudflError, match="not a directory"):
        load_dataset(tmp_path / "absent", label_column="Class")


def test_bank_with_two_files_is_ambiguous(write: WriteFile, tmp_path: Path) -> None:
    write("bank_a.csv", "amount,Class\n1,0\n")
    pd.DataFrame({"amount": [1.0], "Class": [0]}).to_parquet(tmp_path / "bank_a.parquet")
    with pytest.raises(FraudflError, match=r"bank_a\.csv, bank_a\.parquet"):
        load_dataset(tmp_path, label_column="Class")


def test_errors_in_a_later_bank_and_in_the_test_file_name_that_file(dataset_dir: Path) -> None:
    (dataset_dir / "bank_b.csv").write_text(HEADER + "1,1,1,pos,0\n2,oops,1,pos,0\n")
    with pytest.raises(FraudflError) as info:
        load_dataset(dataset_dir)
    assert "bank_b.csv: row 2, column 'amount'" in str(info.value)
    (dataset_dir / "bank_b.csv").write_text(HEADER + "1,1,1,pos,0\n")
    (dataset_dir / "test.csv").write_text(HEADER + "1,1,1,pos,7\n")
    with pytest.raises(FraudflError) as info:
        load_dataset(dataset_dir)
    assert "test.csv: row 1, column 'Class'" in str(info.value)
