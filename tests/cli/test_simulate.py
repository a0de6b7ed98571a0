import argparse
import json
from pathlib import Path

import numpy as np
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


def test_secure_aggregation_and_secagg_plus_flags(generated: Path, tmp_path: Path) -> None:
    out = tmp_path / "secure.json"
    assert main(["simulate", "--data", str(generated), "--rounds", "1", "--model", "logistic",
                 "--no-progress", "--secure-aggregation", "--secagg-neighbours", "2",
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["config"]["secure_aggregation"] is True


def test_personalization_is_reported_per_bank(
    generated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    code = main(["simulate", "--data", str(generated), "--rounds", "2", "--hidden", "16,8",
                 "--personalization", "finetune", "--personal-epochs", "1", "--no-progress",
                 "--out", str(out)])
    assert code == 0
    assert "personalisation (finetune)" in capsys.readouterr().out
    results = json.loads(out.read_text())
    pers = results["final"]["personalization"]
    assert pers["method"] == "finetune"
    assert [b["bank_id"] for b in pers["banks"]] == [
        b for b in sorted(results["rounds"][-1]["banks"])]
    assert all({"auprc", "roc_auc"} <= set(b["personal"]) for b in pers["banks"])


def test_save_model_writes_scoring_artifacts(generated: Path, tmp_path: Path) -> None:
    """The researcher's path to scoring: what simulate saves, score reads as it is."""
    saved = tmp_path / "model"
    assert main(["simulate", "--data", str(generated), "--rounds", "1", "--no-progress",
                 "--personalization", "finetune", "--personal-epochs", "1",
                 "--save-model", str(saved)]) == 0
    from fraudfl.scoring.artifact import load_artifact

    global_model = load_artifact(saved)
    assert global_model.personalization == "none" and global_model.bank_id == ""
    banks = sorted(p.name for p in saved.iterdir() if p.is_dir())
    assert banks
    for bank in banks:
        personal = load_artifact(saved / bank)
        assert personal.bank_id == bank and personal.personalization == "finetune"
        assert personal.params.shape == global_model.params.shape
        assert not np.array_equal(personal.params, global_model.params)
    test_file = next(generated.glob("test.*"))
    scored = tmp_path / "scored.csv"
    assert main(["score", "--model", str(saved), "--input", str(test_file),
                 "--output", str(scored)]) == 0
    assert scored.read_text().count("\n") > 10


def test_config_file_sections_and_flags(generated: Path, tmp_path: Path) -> None:
    """--config takes the services' sections; a flag overrides the file."""
    config = tmp_path / "fed.toml"
    config.write_text(
        'federation_id = "ignored-here"\n[rounds]\nrounds = 2\n'
        '[training]\nmodel = "logistic"\nlr = 0.2\nbatch_size = 128\n'
        '[strategy]\nname = "fedavg"\n'
    )
    out = tmp_path / "results.json"
    assert main(["simulate", "--data", str(generated), "--config", str(config), "--lr", "0.1",
                 "--no-progress", "--out", str(out)]) == 0
    cfg = json.loads(out.read_text())["config"]
    assert (cfg["rounds"], cfg["model"], cfg["strategy"]) == (2, "logistic", "fedavg")
    assert (cfg["lr"], cfg["batch_size"]) == (0.1, 128)


def test_config_file_errors_name_the_field(
    generated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "fed.toml"
    config.write_text("[training]\nlr = -1\n")
    assert main(["simulate", "--data", str(generated), "--config", str(config),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training.lr" in err[0] and str(config) in err[0]
