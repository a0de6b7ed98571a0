"""``fraudfl simulate --model gbdt``: the tree flags, DP flags, --config's [trees] and
--save-model read by ``fraudfl score``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fraudfl.cli import main

TREE_FLAGS = ["--trees", "--max-depth", "--learning-rate", "--l2", "--min-child-weight",
              "--subsample", "--colsample"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("gbdt") / "banks"
    assert main(["--log-level", "WARNING", "generate-data", "banks", "--out", str(data),
                 "--banks", "3", "--transactions", "4000", "--fraud-rate", "0.018",
                 "--seed", "1"]) == 0
    return data


def test_help_lists_the_tree_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = capsys.readouterr().out
    for flag in TREE_FLAGS:
        assert flag in text
    assert "gbdt" in text


def test_gbdt_flags_run_the_engine_and_the_saved_model_scores(
    generated: Path, tmp_path: Path
) -> None:
    out, saved = tmp_path / "results.json", tmp_path / "model"
    assert main([
        "--log-level", "WARNING", "simulate", "--data", str(generated), "--model", "gbdt",
        "--trees", "3", "--max-depth", "2", "--learning-rate", "0.5", "--l2", "2.0",
        "--min-child-weight", "0.1", "--subsample", "1.0", "--colsample", "0.8",
        "--no-progress", "--out", str(out), "--save-model", str(saved),
    ]) == 0
    results = json.loads(out.read_text())
    cfg = results["config"]
    assert cfg["model"] == "gbdt"
    trees = cfg["trees"]
    assert (trees["n_estimators"], trees["max_depth"], trees["learning_rate"],
            trees["reg_lambda"], trees["min_child_weight"], trees["subsample"],
            trees["colsample_bytree"]) == (3, 2, 0.5, 2.0, 0.1, 1.0, 0.8)
    # stats + bins + label counts + 3 x (2 levels + leaves) at most.
    assert 3 + 3 <= cfg["engine_rounds"] <= 3 + 3 * 3
    assert [r["round"] for r in results["rounds"]] == [1, 2, 3]
    assert results["final"]["auprc"] > 0.05

    from fraudfl.scoring.artifact import load_artifact

    artifact = load_artifact(saved)
    assert artifact.trees is not None and artifact.trees.n_trees == 3
    assert artifact.trees.max_depth == 2
    test_file = next(generated.glob("test.*"))
    scored = tmp_path / "scored.csv"
    assert main(["score", "--model", str(saved), "--input", str(test_file),
                 "--output", str(scored)]) == 0
    assert scored.read_text().count("\n") > 10


def test_gbdt_under_dp_charges_each_bank(generated: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    assert main([
        "--log-level", "WARNING", "simulate", "--data", str(generated), "--model", "gbdt",
        "--trees", "2", "--max-depth", "2", "--subsample", "0.5", "--target-epsilon", "3",
        "--delta", "1e-5", "--no-progress", "--out", str(out),
    ]) == 0
    rounds = json.loads(out.read_text())["rounds"]
    epsilons = [r["epsilon"] for r in rounds]
    # Every bank spends a share per tree and stays within its target.
    for bank, eps in epsilons[-1].items():
        assert 0 < epsilons[0][bank] < eps <= 3.0 + 1e-9


def test_config_trees_section_with_flags_over_it(generated: Path, tmp_path: Path) -> None:
    config = tmp_path / "fed.toml"
    config.write_text('[training]\nmodel = "gbdt"\n'
                      '[trees]\nn_estimators = 5\nmax_depth = 2\nmax_bin = 16\n')
    out = tmp_path / "results.json"
    assert main(["simulate", "--data", str(generated), "--config", str(config),
                 "--trees", "2", "--no-progress", "--out", str(out)]) == 0
    trees = json.loads(out.read_text())["config"]["trees"]
    assert (trees["n_estimators"], trees["max_depth"], trees["max_bin"]) == (2, 2, 16)


@pytest.mark.parametrize(("args", "message"), [
    (["--trees", "3"], "--trees needs --model gbdt"),
    (["--model", "gbdt", "--max-depth", "0"], "--max-depth"),
    (["--model", "gbdt", "--subsample", "1.5"], "--subsample"),
    (["--model", "gbdt", "--baseline", "local"], "baseline is not supported"),
])
def test_tree_flag_errors_are_one_line(
    generated: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--data", str(generated), "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_rounds_table_prints(generated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--data", str(generated), "--model", "gbdt", "--trees", "1",
                 "--max-depth", "1", "--no-progress"]) == 0
    assert "AUPRC" in capsys.readouterr().out
