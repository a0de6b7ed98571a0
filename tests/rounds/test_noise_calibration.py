"""A bank's calibrated DP-SGD noise survives restarts with its plan, and the budget holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fraudfl.errors import FraudflError
from fraudfl.privacy.accountant import PrivacyAccountant
from fraudfl.rounds.messages import MODEL, decode_model
from fraudfl.rounds.noise import CALIBRATION_FILE, NoiseCalibration
from fraudfl.rounds.orchestrator import Outbound
from fraudfl.rounds.participant import BankParticipant, Reply
from tests.rounds.federation import Federation, make_federation

TARGET = 3.0
BANK = "bank_00"


def _federation(tmp_path: Path, rounds: int = 3) -> Federation:
    return make_federation(
        tmp_path, n_banks=2, transactions=3000, rounds=rounds, privacy=True,
        target_epsilon=TARGET, planned_rounds=3,
    )


def _restart(fed: Federation, *, checkpoint: bool, planned_rounds: int | None = None) -> None:
    """Replace the bank by a new process' participant, restored as the bank node does: the
    accountant and the noise calibration from their files, the rest from the checkpoint."""
    old = fed.banks[BANK]
    state_dir = fed.bank_configs[BANK].state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    old.accountant.save(state_dir / "accountant.json")
    assert old.calibration is not None
    old.calibration.save(state_dir / CALIBRATION_FILE)
    config = fed.bank_configs[BANK]
    if planned_rounds is not None:
        config = config.model_copy(update={"privacy": config.privacy.model_copy(
            update={"planned_rounds": planned_rounds})})
    new = BankParticipant(
        config, old.identity, old.allowlist, old.frame, old.schema,
        PrivacyAccountant.load_or_create(
            state_dir / "accountant.json", "rdp", budget=old.accountant.budget, label=BANK
        ),
        NoiseCalibration.load(state_dir / CALIBRATION_FILE),
    )
    if checkpoint:
        new.load_state(*old.to_state())
    fed.banks[BANK] = new


def _restart_after_model(
    fed: Federation, version: int, *, checkpoint: bool, planned_rounds: int | None = None
) -> None:
    deliver = fed.grid.deliver

    def deliver_then_restart(out: list[Outbound]) -> list[tuple[str, Reply]]:
        replies = deliver(out)
        if any(m.payload_type == MODEL and decode_model(m.payload)[0].version == version
               for m in out):
            _restart(fed, checkpoint=checkpoint, planned_rounds=planned_rounds)
        return replies

    fed.grid.deliver = deliver_then_restart  # type: ignore[method-assign]


def test_restart_mid_federation_keeps_the_calibrated_noise(tmp_path: Path) -> None:
    fed = _federation(tmp_path)
    _restart_after_model(fed, 1, checkpoint=True)
    fed.pump(fed.orchestrator.start(fed.now))
    assert fed.orchestrator.completed == 3
    bank = fed.banks[BANK]
    assert bank.calibration is not None and bank.calibration.rounds_trained == 3
    # Every round before and after the restart used the one calibrated noise (the history
    # merges identical mechanisms: one entry), and the three planned rounds fit the budget.
    noises = {h.noise_multiplier for h in bank.accountant.history}
    assert noises == {bank.calibration.noise_multiplier}
    assert 0.9 * TARGET < bank.accountant.epsilon() <= TARGET


def test_noise_survives_a_lost_checkpoint(tmp_path: Path) -> None:
    """The calibration lives with the privacy ledger, not only in the checkpoint: a bank whose
    checkpoint is gone (crash before it was written) still trains with the same noise, not with
    the larger noise of calibrating all planned rounds again on top of its history."""
    fed = _federation(tmp_path, rounds=1)
    fed.pump(fed.orchestrator.start(fed.now))
    before = fed.banks[BANK].calibration
    assert before is not None and before.rounds_trained == 1
    _restart(fed, checkpoint=False)
    after = fed.banks[BANK]
    assert after.calibration == before
    steps = before.plan.steps_per_round
    redone = after.accountant.calibrate_noise(TARGET, before.plan.sample_rate, 3 * steps)
    assert redone > before.noise_multiplier  # what the bank would have used without it


def test_changed_plan_recalibrates_for_the_remaining_rounds(tmp_path: Path) -> None:
    """A restart with more planned rounds recalibrates on top of the spent history for the
    rounds of the new plan still ahead, and the budget holds over all of them. (bank_01 keeps
    its plan of 3 rounds and declines the fourth, which therefore aborts.)"""
    fed = _federation(tmp_path, rounds=4)
    _restart_after_model(fed, 1, checkpoint=True, planned_rounds=4)
    fed.pump(fed.orchestrator.start(fed.now))
    bank = fed.banks[BANK]
    assert bank.calibration is not None and bank.calibration.plan.planned_rounds == 4
    first, *rest = bank.accountant.history
    assert {h.noise_multiplier for h in rest} == {bank.calibration.noise_multiplier}
    assert bank.calibration.noise_multiplier > first.noise_multiplier
    assert bank.calibration.rounds_trained == 4
    assert 0.9 * TARGET < bank.accountant.epsilon() <= TARGET


def test_damaged_calibration_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / CALIBRATION_FILE
    assert NoiseCalibration.load(path) is None
    path.write_text(json.dumps({"noise_multiplier": -1.0, "plan": {}}))
    with pytest.raises(FraudflError, match=f"{CALIBRATION_FILE}: noise_multiplier"):
        NoiseCalibration.load(path)
