"""``fraudfl privacy``: budgets from saved accountant state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fraudfl.cli import main
from fraudfl.privacy.accountant import PrivacyAccountant, PrivacyBudget


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    a = PrivacyAccountant("rdp", budget=PrivacyBudget(3.0, 1e-5), label="bank-a")
    a.charge(1.0, 0.01, 500)
    a.save(tmp_path / "bank-a.privacy.json")
    b = PrivacyAccountant("rdp", budget=PrivacyBudget(float("inf"), 1e-5), label="bank-b")
    b.charge(2.0, 0.02, 100)
    b.save(tmp_path / "bank-b.privacy.json")
    (tmp_path / "unrelated.json").write_text("{}")
    return tmp_path


def test_json_report_recomputes_spent_and_remaining(state_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["privacy", "--state-dir", str(state_dir), "--json"]) == 0
    rows = {r["bank"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"bank-a", "bank-b"}
    expected = PrivacyAccountant.load(state_dir / "bank-a.privacy.json").epsilon()
    assert rows["bank-a"]["epsilon_spent"] == pytest.approx(expected)
    assert rows["bank-a"]["epsilon_remaining"] == pytest.approx(3.0 - expected)
    assert rows["bank-a"]["steps"] == 500
    assert rows["bank-b"]["epsilon_budget"] is None


def test_table_names_each_bank(state_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["privacy", "--state", str(state_dir / "bank-a.privacy.json")]) == 0
    out = capsys.readouterr().out
    assert "bank-a" in out and "bank-b" not in out


def test_bad_state_file_is_one_line_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "x.json"
    bad.write_text('{"format": "fraudfl.privacy.accountant", "version": 1}')
    assert main(["privacy", "--state", str(bad)]) == 2
    assert "x.json" in capsys.readouterr().err
    assert main(["privacy", "--state-dir", str(tmp_path / "missing")]) == 2


def test_damaged_file_in_state_dir_is_not_skipped(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A truncated bank-c state used to be left out of the report without a word.
    (state_dir / "bank-c.privacy.json").write_text('{"format": "fraudfl.privacy.acc')
    assert main(["privacy", "--state-dir", str(state_dir)]) == 2
    assert "bank-c.privacy.json: not readable JSON" in capsys.readouterr().err
