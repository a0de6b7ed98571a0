"""``fraudfl generate-data`` end to end: generate, then load what was written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fraudfl.cli import main
from fraudfl.data import load_dataset


def test_banks_then_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "banks"
    args = ["generate-data", "banks", "--out", str(out), "--banks", "4", "--transactions", "6000"]
    assert main([*args, "--seed", "2", "--format", "parquet"]) == 0
    table = capsys.readouterr().out
    assert "bank_00" in table and "bank_03" in table and "test" in table and "fraud rate" in table
    ds = load_dataset(out)
    assert ds.bank_ids == ["bank_00", "bank_01", "bank_02", "bank_03"]
    assert ds.test is not None
    assert sum(len(f) for f in ds.banks.values()) + len(ds.test) == 6000
    # The table reports the rates of what was written.
    rate = f"{ds.banks['bank_00']['is_fraud'].mean():.3%}"
    assert rate in table
    # A second run into the same directory would mix datasets: refused unless --overwrite.
    assert main(args) == 2
    assert "already holds dataset files" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--banks", "3"]) == 0
    assert load_dataset(out).bank_ids == ["bank_00", "bank_01", "bank_02"]


def test_fedprox_synthetic_then_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fp"
    args = ["generate-data", "fedprox-synthetic", "--alpha", "0.5", "--beta", "0.5"]
    assert main([*args, "--devices", "5", "--out", str(out), "--iid"]) == 0
    assert "device_04" in capsys.readouterr().out
    ds = load_dataset(out)
    assert ds.schema.task == "multiclass" and ds.schema.num_classes == 10
    assert len(ds.banks) == 5


def test_bad_argument_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["generate-data", "banks", "--out", str(tmp_path / "x"), "--fraud-rate", "0.3"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "fraud rate" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", [[], ["banks"], ["fedprox-synthetic"]])
def test_help(kind: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fraudfl", "generate-data", *kind, "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "usage: fraudfl generate-data" in result.stdout
    if kind:
        assert "--out" in result.stdout and "--seed" in result.stdout
