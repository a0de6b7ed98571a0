"""Dataset directories: schema files, inference without one, command-line overrides."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fraudfl.data import Schema, load_dataset, load_schema, write_schema
from fraudfl.errors import FraudflError

WriteFile = Callable[[str, str], Path]


def test_loads_banks_sorted_with_test_and_schema(dataset_dir: Path) -> None:
    (dataset_dir / "bank_0.csv").write_text("id,amount,hour,channel,Class\n5,1,1,pos,0\n")
    ds = load_dataset(dataset_dir)
    assert ds.bank_ids == ["bank_0", "bank_a", "bank_b"]
    assert ds.schema.label == "Class"
    assert ds.schema.numeric == ["amount", "hour"]
    assert ds.schema.drop == ["id"]
    # Undeclared vocabulary: the sorted union of the banks' values (not the test file's).
    assert ds.schema.categories == {"channel": ["atm", "online", "pos"]}
    assert ds.test is not None and ds.test["channel"].tolist() == ["contactless"]
    assert len(ds.pooled()) == 6


def test_plain_directory_with_label_override_infers_schema(
    write: WriteFile, tmp_path: Path
) -> None:
    write("a.csv", "Time,V1,merchant,Amount,Class\n0,0.5,shop,10,0\n1,-1.2,web,20,1\n")
    write("b.csv", "Time,V1,merchant,Amount,Class\n0,0.1,shop,5,0\n")
    with pytest.raises(FraudflError, match="--label-column"):
        load_dataset(tmp_path)
    ds = load_dataset(tmp_path, label_column="Class", drop_columns=["Time"])
    assert ds.schema.numeric == ["V1", "Amount"]
    assert ds.schema.categorical == ["merchant"]
    assert ds.schema.drop == ["Time"]
    assert ds.schema.task == "binary"
    assert ds.banks["a"]["Class"].tolist() == [0, 1]


def test_inference_detects_multiclass_from_all_banks(write: WriteFile, tmp_path: Path) -> None:
    write("a.csv", "x,y\n0.5,0\n0.1,1\n")
    write("b.csv", "x,y\n0.3,4\n")
    ds = load_dataset(tmp_path, label_column="y")
    assert ds.schema.task == "multiclass" and ds.schema.num_classes == 5


def test_inference_rejects_numeric_column_with_a_typo(write: WriteFile, tmp_path: Path) -> None:
    write("a.csv", "amount,Class\n1,0\n2,0\n3x,1\n4,0\n")
    with pytest.raises(FraudflError) as info:
        load_dataset(tmp_path, label_column="Class")
    msg = str(info.value)
    assert "a.csv" in msg and "'amount'" in msg and "row 3" in msg and "'3x'" in msg


def test_unknown_drop_column_and_label_column(write: WriteFile, tmp_path: Path) -> None:
    write("a.csv", "amount,Class\n1,0\n")
    with pytest.raises(FraudflError, match="drop column 'nope' not found"):
        load_dataset(tmp_path, label_column="Class", drop_columns=["nope"])
    with pytest.raises(FraudflError, match="label column 'Fraud' not found"):
        load_dataset(tmp_path, label_column="Fraud")


def test_overrides_adjust_a_schema_file(dataset_dir: Path) -> None:
    ds = load_dataset(dataset_dir, drop_columns=["hour"])
    assert ds.schema.numeric == ["amount"]
    assert "hour" in ds.schema.drop
    assert "hour" not in ds.banks["bank_a"].columns
    with pytest.raises(FraudflError, match="cannot drop the label"):
        load_dataset(dataset_dir, drop_columns=["Class"])


def test_label_override_of_a_schema_file(dataset_dir: Path) -> None:
    # "hour" as a multi-class label: the old label must not silently become a feature.
    ds = load_dataset(dataset_dir, label_column="hour", task="multiclass")
    assert ds.schema.label == "hour"
    assert ds.schema.task == "multiclass" and ds.schema.num_classes == 24
    assert "Class" in ds.schema.drop and "hour" not in ds.schema.numeric


def test_multiclass_with_two_classes_is_refused(dataset_dir: Path, write: WriteFile) -> None:
    # Two classes get one logit (binary); as "multiclass" training crashed in cross-entropy.
    with pytest.raises(FraudflError, match=r"--task multiclass needs labels of 3 or more"):
        load_dataset(dataset_dir, task="multiclass")
    write("schema.toml", 'label = "Class"\nnumeric = ["amount"]\ntask = "multiclass"\n'
          "num_classes = 2\n")
    with pytest.raises(FraudflError, match=r"schema.toml: a multiclass task needs num_classes >= 3"
                       ):
        load_schema(dataset_dir / "schema.toml")


def test_schema_round_trip_through_toml(tmp_path: Path) -> None:
    schema = Schema(
        label="is fraud",
        numeric=["a"],
        categorical=["c", 'we"ird'],
        drop=["id"],
        task="multiclass",
        num_classes=3,
        categories={"c": ["x", "y"], 'we"ird': ["é", "b,c"]},
    )
    assert load_schema(write_schema(schema, tmp_path)) == schema


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('label = "Class"\nnumeric = ["a"]\nnumerik = ["b"]\n', "unknown key"),
        ('numeric = ["a"]\n', "missing required key 'label'"),
        ('label = "Class"\nnumeric = ["a", "Class"]\n', "both label and numeric"),
        ('label = "Class"\nnumeric = ["a"]\ntask = "regression"\n', "'task' must be one of"),
        ('label = "Class"\nnumeric = ["a"]\ntask = "multiclass"\n', "needs 'num_classes'"),
        ('label = "Class"\nnumeric = "a"\n', "'numeric' must be a list"),
        ('label = "Class"\nnumeric = ["a"]\n[categories]\nb = ["x"]\n', "not a categorical"),
        ('label = "Class"\nnumeric = [a\n', "invalid TOML"),
    ],
)
def test_bad_schema_file_names_the_file_and_field(
    write: WriteFile, tmp_path: Path, text: str, expected: str
) -> None:
    write("schema.toml", text)
    write("a.csv", "a,Class\n1,0\n")
    with pytest.raises(FraudflError) as info:
        load_dataset(tmp_path)
    assert "schema.toml" in str(info.value) and expected in str(info.value)


def test_plain_directory_loads_missing_values_and_reports_bad_ones(
    write: WriteFile, tmp_path: Path
) -> None:
    write("a.csv", "amount,channel,Class\n1,pos,0\n,web,1\n")
    write("b.csv", "amount,channel,Class\n1,pos,0\n2,,1\n")
    ds = load_dataset(tmp_path, label_column="Class")
    assert ds.banks["a"]["amount"].isna().tolist() == [False, True]
    assert ds.banks["b"]["channel"].isna().tolist() == [False, True]
    # The missing category is not a category of the vocabulary.
    assert ds.schema.categories == {"channel": ["pos", "web"]}
    write("b.csv", "amount,channel,Class\n1,pos,0\n2,web,\n")
    with pytest.raises(FraudflError) as info:
        load_dataset(tmp_path, label_column="Class")
    assert "b.csv: row 2, column 'Class': empty label" in str(info.value)


def test_codes_keep_leading_zeros_when_declared_categorical(
    write: WriteFile, tmp_path: Path
) -> None:
    write("schema.toml", 'label = "y"\nnumeric = ["amount"]\ncategorical = ["mcc"]\n')
    write("a.csv", "amount,mcc,y\n1,0042,0\n2,5411,1\n")
    ds = load_dataset(tmp_path)
    assert ds.banks["a"]["mcc"].tolist() == ["0042", "5411"]
    assert ds.schema.categories == {"mcc": ["0042", "5411"]}


def test_test_file_name_is_case_insensitive(dataset_dir: Path) -> None:
    # "Test.csv" was loaded as a bank named "Test": the held-out rows were trained on.
    (dataset_dir / "test.csv").rename(dataset_dir / "Test.csv")
    ds = load_dataset(dataset_dir)
    assert ds.bank_ids == ["bank_a", "bank_b"] and ds.test is not None
    (dataset_dir / "TEST.csv").write_text((dataset_dir / "Test.csv").read_text())
    with pytest.raises(FraudflError, match=r"the test set has more than one file"):
        load_dataset(dataset_dir)
