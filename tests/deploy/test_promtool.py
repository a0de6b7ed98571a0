"""promtool validates the Prometheus config and rules and runs the rules' unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration.prometheus import require_binary

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy/prometheus"


def promtool(*args: str | Path) -> str:
    binary = require_binary("promtool")
    result = subprocess.run(
        [binary, *map(str, args)], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_check_config() -> None:
    output = promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in output
    # The rule files the config names are found and checked with it.
    assert "fraudfl.rules.yml" in output


def test_check_rules() -> None:
    rules = yaml.safe_load((PROMETHEUS_DIR / "rules/fraudfl.rules.yml").read_text())
    count = sum(len(group["rules"]) for group in rules["groups"])
    output = promtool("check", "rules", "rules/fraudfl.rules.yml")
    assert f"SUCCESS: {count} rules found" in output


@pytest.mark.parametrize(
    "test_file", sorted(p.name for p in (PROMETHEUS_DIR / "tests").glob("*.yml"))
)
def test_rule_unit_tests(test_file: str) -> None:
    output = promtool("test", "rules", f"tests/{test_file}")
    assert "SUCCESS" in output


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    rules = yaml.safe_load((PROMETHEUS_DIR / "rules/fraudfl.rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    fired: set[str] = set()
    silent: set[str] = set()
    for path in (PROMETHEUS_DIR / "tests").glob("*.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case["exp_alerts"] else silent).add(case["alertname"])
    assert alerts == fired == silent
