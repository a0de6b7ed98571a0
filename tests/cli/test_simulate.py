import argparse
import json
from pathlib import Path

import pytest

from fraudfl.cli import main

FLAGS = [
    "--strategy", "--mu", "--rounds", "--banks-per-round", "--local-epochs", "--batch-size",
    "--lr", "--straggler-fraction", "--seed", "--model", "--label-column", "--drop-columns",
    "--out", "--plot", "--baseline",
]


def test_help_lists_the_documented_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in FLAGS:
        assert flag in text
    for name in ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi"):
        assert name in text


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("cli") / "banks"
    code = main(["--log-level", "WARNING", "generate-data", "banks", "--out", str(data),
                 "--banks", "3", "--transactions", "4000", "--fraud-rate", "0.015", "--seed", "1"])
    assert code == 0
    return data


def test_generate_then_simulate_end_to_end(
    generated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, plot = tmp_path / "results.json", tmp_path / "curves.png"
    code = main([
        "--log-level", "WARNING", "simulate", "--data", str(generated), "--strategy", "fedprox",
        "--mu", "0.1", "--rounds", "2", "--banks-per-round", "2", "--local-epochs", "1",
        "--batch-size", "64", "--lr", "0.05", "--straggler-fraction", "0.5", "--seed", "3",
        "--model", "logistic", "--baseline", "local", "--out", str(out), "--plot", str(plot),
        "--no-progress",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "AUPRC" in printed and "smallest bank" in printed

    results = json.loads(out.read_text())
    assert set(results) == {"config", "rounds", "final"}
    assert results["config"]["strategy"] == "fedprox" and results["config"]["mu"] == 0.1
    assert len(results["rounds"]) == 2
    first = results["rounds"][0]
    assert set(first) == {"round", "global", "banks"}
    assert {"auprc", "roc_auc", "recall_at_1pct_fpr", "loss"} <= set(first["global"])
    assert set(first["banks"]) == {"bank_00", "bank_01", "bank_02"}
    assert set(results["final"]["baselines"]) == {"local"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--data", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "bank_a.csv").write_text("amount,Class\n1.0,0\n2.0,1\n")
    assert main(["simulate", "--data", str(tmp_path), "--label-column", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_dp_runs_clip_at_the_dp_default() -> None:
    from fraudfl.cli.simulate import _apply_dependent_flags, register
    from fraudfl.config import DEFAULT_MAX_GRAD_NORM, PrivacySettings

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    private = parser.parse_args(["simulate", "--data", "d", "--target-epsilon", "3"])
    _apply_dependent_flags(private)
    assert private.max_grad_norm == DEFAULT_MAX_GRAD_NORM == PrivacySettings().max_grad_norm
