"""The DP options of a simulation run (``fraudfl simulate`` flags); cheap to import."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from fraudfl.config import DEFAULT_MAX_GRAD_NORM
from fraudfl.errors import FraudflError
from fraudfl.privacy.accountant import MECHANISMS, Mechanism

DPEngine = Literal["vectorized", "ghost", "hooks", "functorch"]
DP_ENGINES: tuple[str, ...] = get_args(DPEngine)


@dataclass(frozen=True)
class PrivacyOptions:
    """DP options of a simulation (the ``fraudfl simulate`` privacy flags).

    Record level is on when ``target_epsilon`` or ``noise_multiplier`` is set: with a target
    only, each bank's noise is calibrated so that taking part in *every* planned round spends
    exactly the target (conservative: sampled banks take part in fewer); with a noise
    multiplier, that noise is used and the target (if any) is the hard budget. ``delta``
    defaults to ``0.1 / records`` per bank. Bank level is on when ``bank_dp_noise`` is set.
    """

    target_epsilon: float | None = None
    delta: float | None = None
    noise_multiplier: float | None = None
    max_grad_norm: float = DEFAULT_MAX_GRAD_NORM
    accountant: Mechanism = "rdp"
    engine: DPEngine = "vectorized"
    state_dir: str | None = None
    bank_dp_clip: float | None = None
    bank_dp_noise: float | None = None
    bank_dp_delta: float | None = None

    def __post_init__(self) -> None:
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise FraudflError(f"--target-epsilon must be > 0, got {self.target_epsilon}")
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise FraudflError(f"--noise-multiplier must be > 0, got {self.noise_multiplier}")
        for name, delta in (("--delta", self.delta), ("--bank-dp-delta", self.bank_dp_delta)):
            if delta is not None and not 0 < delta < 1:
                raise FraudflError(f"{name} must be in (0, 1), got {delta}")
        if not 0 < self.max_grad_norm < math.inf:
            raise FraudflError(
                f"--max-grad-norm must be a finite number > 0, got {self.max_grad_norm}"
            )
        if self.accountant not in MECHANISMS:
            raise FraudflError(f"--accountant must be one of {MECHANISMS}")
        if self.engine not in DP_ENGINES:
            raise FraudflError(f"--dp-engine must be one of {DP_ENGINES}")
        if (self.bank_dp_clip is None) != (self.bank_dp_noise is None):
            raise FraudflError("bank-level DP needs both --bank-dp-clip and --bank-dp-noise")
        if self.bank_dp_delta is not None and not self.bank_level:
            raise FraudflError("--bank-dp-delta needs --bank-dp-clip and --bank-dp-noise")
        if not self.record_level and (self.delta is not None or self.state_dir is not None):
            raise FraudflError(
                "--delta/--privacy-state-dir need --target-epsilon or --noise-multiplier"
            )

    @property
    def record_level(self) -> bool:
        return self.target_epsilon is not None or self.noise_multiplier is not None

    @property
    def bank_level(self) -> bool:
        return self.bank_dp_noise is not None

    @property
    def enabled(self) -> bool:
        return self.record_level or self.bank_level
