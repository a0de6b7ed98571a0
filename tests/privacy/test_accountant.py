"""The bank accountant: Opacus-equal epsilon, budget stop, persistence, calibration."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from fraudfl.errors import FraudflError
from fraudfl.privacy.accountant import (
    BudgetExhausted,
    PrivacyAccountant,
    PrivacyBudget,
    default_delta,
)

DELTA = 1e-5
SIGMA, Q, STEPS_PER_ROUND = 1.1, 0.02, 50


def run_round(acc: PrivacyAccountant, sigma: float = SIGMA, q: float = Q,
              steps: int = STEPS_PER_ROUND) -> None:
    acc.authorize(sigma, q, steps)
    for _ in range(steps):
        acc.step(sigma, q)
    assert acc.end_round() == 0


@pytest.mark.parametrize(("mechanism", "opacus_cls"), [("rdp", RDPAccountant),
                                                       ("prv", PRVAccountant)])
def test_epsilon_grows_and_matches_independent_opacus_accountant(
    mechanism: str, opacus_cls: type
) -> None:
    acc = PrivacyAccountant(mechanism, budget=PrivacyBudget(100.0, DELTA))  # type: ignore[arg-type]
    independent = opacus_cls()
    previous = 0.0
    # Rounds with different noise (as after a recalibration) must compose too.
    for sigma in (SIGMA, SIGMA, 1.5, 1.5):
        run_round(acc, sigma)
        for _ in range(STEPS_PER_ROUND):
            independent.step(noise_multiplier=sigma, sample_rate=Q)
        eps = acc.epsilon()
        assert eps > previous
        assert eps == pytest.approx(independent.get_epsilon(delta=DELTA), rel=1e-9)
        previous = eps
    assert [tuple(vars(h).values()) for h in acc.history] == independent.history


def test_budget_stop_triggers_exactly_at_the_round_that_would_exceed() -> None:
    probe = PrivacyAccountant("rdp")
    per_round = []
    for _ in range(6):
        run_round(probe)
        per_round.append(probe.epsilon(DELTA))
    # Budget strictly between the epsilon after round 4 and after round 5.
    budget = PrivacyBudget((per_round[3] + per_round[4]) / 2, DELTA)
    acc = PrivacyAccountant("rdp", budget=budget, label="bank-a")
    for _ in range(4):
        assert not acc.would_exceed(SIGMA, Q, STEPS_PER_ROUND)
        run_round(acc)
    assert acc.would_exceed(SIGMA, Q, STEPS_PER_ROUND)
    with pytest.raises(BudgetExhausted) as info:
        acc.authorize(SIGMA, Q, STEPS_PER_ROUND)
    exc = info.value
    assert exc.spent_epsilon == pytest.approx(per_round[3])
    assert exc.projected_epsilon == pytest.approx(per_round[4])
    assert exc.budget == budget
    assert "bank-a" in str(exc)
    # Declining spends nothing and authorises nothing.
    assert acc.epsilon() == pytest.approx(per_round[3])
    with pytest.raises(RuntimeError):
        acc.step(SIGMA, Q)
    assert 0 < acc.remaining_epsilon() < per_round[4] - per_round[3]


def test_steps_need_an_authorised_matching_round() -> None:
    acc = PrivacyAccountant("rdp")
    with pytest.raises(RuntimeError, match="without an authorised round"):
        acc.step(SIGMA, Q)
    acc.authorize(SIGMA, Q, 2)
    with pytest.raises(RuntimeError, match="authorised round is"):
        acc.step(SIGMA * 2, Q)
    acc.step(SIGMA, Q)
    acc.step(SIGMA, Q)
    with pytest.raises(RuntimeError):
        acc.step(SIGMA, Q)
    assert acc.total_steps == 2


def test_restarted_bank_continues_from_spent_epsilon(tmp_path: Path) -> None:
    path = tmp_path / "state" / "privacy.json"
    budget = PrivacyBudget(8.0, DELTA)
    acc = PrivacyAccountant.load_or_create(path, "rdp", budget=budget, label="bank-b")
    for _ in range(3):
        run_round(acc)
        acc.save(path)
    spent = acc.epsilon()
    assert spent > 0
    assert [p.name for p in path.parent.iterdir()] == ["privacy.json"]  # no temp files left

    restarted = PrivacyAccountant.load_or_create(path, "rdp", budget=budget, label="bank-b")
    assert restarted.epsilon() == pytest.approx(spent, rel=1e-12)
    assert restarted.history == acc.history
    run_round(restarted)
    run_round(acc)
    assert restarted.epsilon() == pytest.approx(acc.epsilon(), rel=1e-12)
    assert restarted.epsilon() > spent


def test_saved_state_is_plain_json(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    acc = PrivacyAccountant("prv", budget=PrivacyBudget(3.0, 1e-6), label="x")
    acc.charge(SIGMA, Q, 10)
    acc.save(path)
    data = json.loads(path.read_text())
    assert data["mechanism"] == "prv"
    assert data["history"] == [[SIGMA, Q, 10]]
    assert data["budget"] == {"epsilon": 3.0, "delta": 1e-6}


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(history=[[1.0, 1.5, 3]]), "history[0]"),
        (lambda d: d.update(history=[[1.0, 0.1, 2.5]]), "history[0]"),
        (lambda d: d.update(mechanism="gdp"), "mechanism"),
        (lambda d: d.update(budget={"epsilon": -1, "delta": 1e-5}), "budget"),
        (lambda d: d.update(version=99), "version"),
    ],
)
def test_corrupt_state_is_rejected_naming_the_field(tmp_path: Path, mutate, field: str) -> None:
    path = tmp_path / "p.json"
    acc = PrivacyAccountant("rdp", budget=PrivacyBudget(3.0, DELTA))
    acc.charge(SIGMA, Q, 5)
    data = acc.to_dict()
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(FraudflError, match=re.escape(str(path)) + ".*" + re.escape(field)):
        PrivacyAccountant.load(path)


def test_unreadable_state_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text("{not json")
    with pytest.raises(FraudflError, match="not valid JSON"):
        PrivacyAccountant.load(path)


def test_calibration_fresh_matches_opacus_and_respects_spent_history() -> None:
    from opacus.accountants.utils import get_noise_multiplier

    fresh = PrivacyAccountant("rdp", budget=PrivacyBudget(3.0, DELTA))
    sigma = fresh.calibrate_noise(3.0, Q, 10 * STEPS_PER_ROUND)
    assert sigma == get_noise_multiplier(
        target_epsilon=3.0, target_delta=DELTA, sample_rate=Q, steps=10 * STEPS_PER_ROUND
    )
    for _ in range(10):
        run_round(fresh, sigma)
    assert 3.0 - 0.01 <= fresh.epsilon() <= 3.0

    # A bank that already spent some budget: the remaining rounds get more noise, total holds.
    spent = PrivacyAccountant("rdp", budget=PrivacyBudget(3.0, DELTA))
    run_round(spent, 0.8)
    sigma_rest = spent.calibrate_noise(3.0, Q, 5 * STEPS_PER_ROUND)
    for _ in range(5):
        run_round(spent, sigma_rest)
    assert 3.0 - 0.01 <= spent.epsilon() <= 3.0


def test_calibrating_for_an_already_spent_target_is_a_budget_refusal() -> None:
    """A restarted bank whose spent epsilon already reaches the target must decline (and skip
    personal training), not fail: the refusal is ``BudgetExhausted`` like any over-budget round."""
    acc = PrivacyAccountant("rdp", budget=PrivacyBudget(100.0, DELTA))
    for _ in range(5):
        run_round(acc, 0.8)
    assert acc.epsilon() >= 1.0
    with pytest.raises(BudgetExhausted) as info:
        acc.calibrate_noise(1.0, Q, STEPS_PER_ROUND)
    assert info.value.spent_epsilon == pytest.approx(acc.epsilon())


def test_default_delta_is_below_one_over_n() -> None:
    assert default_delta(10_000) == pytest.approx(1e-5)
    with pytest.raises(FraudflError):
        default_delta(0)


def test_unlimited_budget_round_trips_as_strict_json(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    acc = PrivacyAccountant("rdp", budget=PrivacyBudget(float("inf"), DELTA))
    acc.charge(SIGMA, Q, 5)
    acc.save(path)
    assert json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(c))["budget"] == {
        "epsilon": None, "delta": DELTA}
    restored = PrivacyAccountant.load(path)
    assert restored.budget == PrivacyBudget(float("inf"), DELTA)
    assert not restored.would_exceed(0.1, 1.0, 10_000)
