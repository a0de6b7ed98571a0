"""``fraudfl demo`` end to end: broker, aggregator and bank nodes as processes; exit 0 with a
summary, and no process left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _processes_mentioning(text: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if text in line and "pytest" not in line]


def test_demo_runs_and_stops_everything(tmp_path: Path) -> None:
    """With fine-tuning on, so the summary also compares global and personal models."""
    env = {**os.environ, "COLUMNS": "100"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fraudfl", "demo", "--banks", "2", "--rounds", "2",
         "--transactions", "2000", "--personalization", "finetune",
         "--dir", str(tmp_path / "fed")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "summary 2/2 rounds completed" in out
    assert "every process stopped" in out
    rounds = (tmp_path / "fed" / "state" / "aggregator" / "rounds.jsonl").read_text().splitlines()
    assert len(rounds) == 3
    # The services (started with configs under tmp_path) are gone with the demo.
    assert _processes_mentioning(str(tmp_path)) == []
    assert "personalisation (finetune): AUPRC on each bank's" in out
    for bank in ("bank_00", "bank_01"):
        state = tmp_path / "fed" / "state" / bank
        assert json.loads((state / "model" / "artifact.json").read_text())[
            "personalization"] == "finetune"
        # The summary's row: the final model's global and personal quality, from the bank.
        quality = json.loads((state / "status.json").read_text())["model_quality"]
        assert quality["version"] == 2 and quality["personalization"] == "finetune"
        assert set(quality) >= {"global", "personal"}
        assert any(line.startswith(f"│ {bank} │    v2 │") for line in out.splitlines()), out
