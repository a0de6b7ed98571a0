"""The bank's calibrated DP-SGD noise multiplier, kept next to its privacy ledger.

A bank without a configured noise multiplier calibrates one so that its planned rounds (and the
personal training after each) spend its target epsilon. The noise is part of the bank's privacy
story, so it is persisted with what it was calibrated for (the plan) and the number of rounds
trained under it, in ``state_dir/noise_calibration.json``, written right after the accountant.
On a restart with the same plan the bank keeps using the same noise: history plus the rest of
the plan at that noise is what the calibration already bounded by the target. When the plan
changed (target, delta, accountant, sample rate, steps per round, planned rounds), the bank
recalibrates for the rounds of the new plan still ahead (planned minus trained, at least one)
on top of the spent history, so the budget still holds over the bank's whole life.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fraudfl.checkpoint import atomic_write_json
from fraudfl.errors import FraudflError

CALIBRATION_FILE = "noise_calibration.json"
_FORMAT: Literal["fraudfl.bank_node.noise_calibration"] = "fraudfl.bank_node.noise_calibration"


class NoisePlan(BaseModel):
    """What a noise multiplier is calibrated for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_epsilon: float = Field(gt=0)
    delta: float = Field(gt=0, lt=1)
    mechanism: str
    sample_rate: float = Field(gt=0, le=1)
    steps_per_round: int = Field(ge=1)
    planned_rounds: int = Field(ge=1)


class NoiseCalibration(BaseModel):
    """A calibrated noise multiplier, its plan, and the rounds trained under it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["fraudfl.bank_node.noise_calibration"] = _FORMAT
    version: Literal[1] = 1
    noise_multiplier: float = Field(gt=0)
    plan: NoisePlan
    rounds_trained: int = Field(default=0, ge=0)

    def remaining_rounds(self, plan: NoisePlan) -> int:
        """Rounds of ``plan`` still ahead of a bank that trained ``rounds_trained`` (>= 1)."""
        return max(1, plan.planned_rounds - self.rounds_trained)

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.model_dump())

    @classmethod
    def load(cls, path: Path) -> NoiseCalibration | None:
        """The saved calibration, None if there is none; a damaged file is an error naming it."""
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise FraudflError(f"{path}: unreadable noise calibration ({exc})") from exc
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "(file)"
            raise FraudflError(f"{path}: {field}: {err['msg']}") from exc
