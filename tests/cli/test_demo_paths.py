from __future__ import annotations

from pathlib import Path

import pytest

from fraudfl.cli.demo import LocalFederation


def test_relative_paths_are_resolved_before_children_run_in_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `fraudfl demo --dir fed` started bank nodes in fed/ with --config fed/banks/bank_00.toml.
    monkeypatch.chdir(tmp_path)
    local = LocalFederation(Path("fed"), Path("fed/aggregator.toml"),
                            {"bank_00": Path("fed/banks/bank_00.toml")}, Path("fed/logs"))
    assert local.root == tmp_path / "fed"
    assert local.aggregator_config == tmp_path / "fed/aggregator.toml"
    assert local.bank_configs == {"bank_00": tmp_path / "fed/banks/bank_00.toml"}
    assert local.log_dir == tmp_path / "fed/logs"


def test_a_childs_last_log_line_is_its_error(tmp_path: Path) -> None:
    # The demo's temporary directory, logs included, is removed on exit: a bank node's error
    # must be in the demo's own message, not only in a log file that is gone.
    local = LocalFederation(tmp_path, tmp_path / "a.toml", {}, tmp_path / "logs")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "bank_00.log").write_text("INFO start\nfraudfl bank-node: error: x\n\n")
    assert local.last_log_line("bank_00") == "fraudfl bank-node: error: x"
    assert local.last_log_line("bank_01") == "(no log)"
