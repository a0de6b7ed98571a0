"""`fraudfl score`: batch scoring of CSV and Parquet files through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudfl.cli import main
from fraudfl.scoring import Scorer
from fraudfl.scoring.batch import count_rows
from tests.scoring.conftest import TrainedBank


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_cli_scores_every_row(
    tmp_path: Path, artifact_dir: Path, trained_bank: TrainedBank, suffix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    raw = pd.read_csv(trained_bank.root / "test.csv", dtype={"card_type": str})
    source = tmp_path / f"in{suffix}"
    if suffix == ".csv":
        raw.to_csv(source, index=False)
    else:
        raw.to_parquet(source, index=False)
    out = tmp_path / f"scored{suffix}"
    code = main(["score", "--model", str(artifact_dir), "--input", str(source), "--output",
                 str(out), "--chunk-size", "700"])
    assert code == 0
    scored = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert len(scored) == len(raw) == count_rows(source)
    assert list(scored["transaction_id"]) == list(raw["transaction_id"])
    expected = Scorer(trained_bank.artifact).score_frame(raw)
    np.testing.assert_allclose(scored["fraud_probability"], expected.probabilities, rtol=1e-6)
    assert scored["fraud_decision"].sum() == expected.alerts
    assert f"{expected.alerts} alerts" in capsys.readouterr().out


def test_bad_value_names_file_row_and_column(
    tmp_path: Path, artifact_dir: Path, trained_bank: TrainedBank,
    capsys: pytest.CaptureFixture[str],
) -> None:
    raw = pd.read_csv(trained_bank.root / "test.csv")
    raw["amount"] = raw["amount"].astype(object)
    raw.loc[1234, "amount"] = "twelve"
    source = tmp_path / "in.csv"
    raw.to_csv(source, index=False)
    out = tmp_path / "out.csv"
    code = main(["score", "--model", str(artifact_dir), "--input", str(source), "--output",
                 str(out), "--chunk-size", "500"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{source}: row 1235, column 'amount'" in err and "twelve" in err
    assert not out.exists() and list(tmp_path.glob(".out.csv*")) == []


def test_missing_column_and_bad_paths(
    tmp_path: Path, artifact_dir: Path, trained_bank: TrainedBank,
    capsys: pytest.CaptureFixture[str],
) -> None:
    raw = pd.read_csv(trained_bank.root / "test.csv").drop(columns=["channel"])
    source = tmp_path / "in.csv"
    raw.to_csv(source, index=False)
    assert main(["score", "--model", str(artifact_dir), "--input", str(source),
                 "--output", str(tmp_path / "o.csv")]) == 2
    assert "channel" in capsys.readouterr().err
    assert main(["score", "--model", str(artifact_dir), "--input", str(source),
                 "--output", str(tmp_path / "o.json")]) == 2
    assert "unsupported output file type" in capsys.readouterr().err
    assert main(["score", "--model", str(tmp_path / "none"), "--input", str(source),
                 "--output", str(tmp_path / "o.csv")]) == 2
    assert "no model artifact" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_output_that_cannot_be_written(
    tmp_path: Path, artifact_dir: Path, trained_bank: TrainedBank,
    capsys: pytest.CaptureFixture[str], suffix: str,
) -> None:
    # An output "directory" that is a file was a NotADirectoryError traceback.
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    out = a_file / f"scored{suffix}"
    assert main(["score", "--model", str(artifact_dir), "--input",
                 str(trained_bank.root / "test.csv"), "--output", str(out)]) == 2
    assert f"{out}: cannot write" in capsys.readouterr().err
