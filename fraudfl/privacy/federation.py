"""Privacy for an in-process federation: per-bank DP-SGD trainers and federation-level DP.

:class:`FederationPrivacy` is what ``fraudfl simulate`` plugs into the simulation's seams:

- a trainer (the simulation's ``LocalTrainer``) that holds one :class:`PrivacyAccountant` per
  bank, calibrates each bank's noise on its first round, trains with
  :func:`~fraudfl.training.private.train_private`, and saves each accountant after each round
  when a state directory is given (a rerun resumes from the spent epsilon);
- an aggregator wrapper applying bank-level DP (:mod:`fraudfl.privacy.bank_level`);
- a per-round report: record-level epsilon per bank, federation-level epsilon, declined banks.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from fraudfl.errors import FraudflError
from fraudfl.privacy.accountant import (
    BudgetExhausted,
    PrivacyAccountant,
    PrivacyBudget,
    default_delta,
)
from fraudfl.privacy.bank_level import BankDPAggregator, BankDPConfig, FederationAccountant
from fraudfl.privacy.options import PrivacyOptions
from fraudfl.strategy import Aggregator
from fraudfl.training.local import TrainConfig
from fraudfl.training.private import (
    DPConfig,
    PrivateLocalResult,
    dp_planned_steps,
    dp_sample_rate,
    train_private,
)

log = logging.getLogger(__name__)


def state_path(state_dir: Path, bank_id: str) -> Path:
    return state_dir / f"{bank_id}.privacy.json"


class PrivateTrainer:
    """A ``LocalTrainer`` doing DP-SGD, with one accountant per bank.

    Calibrated noise (a target epsilon without a noise multiplier) plans for every round plus
    ``personal_epochs`` epochs of personal training (fine-tuning, Ditto) through this same
    trainer, so that the personal training after the rounds fits in the target too.
    """

    def __init__(
        self, options: PrivacyOptions, planned_rounds: int, personal_epochs: int = 0
    ) -> None:
        if not options.record_level:
            raise ValueError("PrivateTrainer needs record-level DP options")
        if personal_epochs < 0:
            raise ValueError(f"personal_epochs must be >= 0, got {personal_epochs}")
        self.options = options
        self.planned_rounds = planned_rounds
        self.personal_epochs = personal_epochs
        self.state_dir = None if options.state_dir is None else Path(options.state_dir)
        if self.state_dir is not None:
            # Refused here rather than when the first round's spending is saved.
            try:
                self.state_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise FraudflError(
                    f"{self.state_dir}: cannot create the privacy state directory: "
                    f"{exc.strerror}"
                ) from exc
        self.accountants: dict[str, PrivacyAccountant] = {}
        self.dp: dict[str, DPConfig] = {}

    def _setup(self, bank_id: str, n: int, cfg: TrainConfig) -> tuple[PrivacyAccountant, DPConfig]:
        if bank_id in self.dp:
            return self.accountants[bank_id], self.dp[bank_id]
        opts = self.options
        delta = opts.delta if opts.delta is not None else default_delta(n)
        if delta >= 1.0 / n:
            # (epsilon, delta) with delta >= 1/n allows releasing a record in the clear.
            log.warning("%s: delta %.3g is not below 1/records (%d records): the guarantee is "
                        "vacuous; use a delta well below %.3g", bank_id, delta, n, 1.0 / n)
        budget = PrivacyBudget(
            opts.target_epsilon if opts.target_epsilon is not None else math.inf, delta
        )
        if bank_id in self.accountants:
            acc = self.accountants[bank_id]
        elif self.state_dir is None:
            acc = PrivacyAccountant(opts.accountant, budget=budget, label=bank_id)
        else:
            acc = PrivacyAccountant.load_or_create(
                state_path(self.state_dir, bank_id), opts.accountant, budget=budget,
                label=bank_id,
            )
        self.accountants[bank_id] = acc  # reported even if the bank cannot train
        if opts.noise_multiplier is not None:
            sigma = opts.noise_multiplier
        else:
            assert opts.target_epsilon is not None  # record_level without a noise multiplier
            spent = acc.epsilon()
            if spent >= opts.target_epsilon:  # restored with the budget used up: no noise fits
                exc = BudgetExhausted(bank_id, spent, spent, budget)
                log.warning("%s", exc)
                raise exc
            q = dp_sample_rate(n, cfg.batch_size)
            # Personal training uses the rounds' batch size, hence the same sample rate.
            personal = self.personal_epochs * -(-n // cfg.batch_size)
            steps = self.planned_rounds * dp_planned_steps(cfg, n) + personal
            sigma = acc.calibrate_noise(opts.target_epsilon, q, steps)
            log.info("%s: noise multiplier %.4f for epsilon %g over %d rounds (%d steps, q %.4f,"
                     " delta %.3g)", bank_id, sigma, opts.target_epsilon, self.planned_rounds,
                     steps, q, delta)
        dp = DPConfig(sigma, opts.max_grad_norm, opts.engine)
        self.dp[bank_id] = dp
        return acc, dp

    def __call__(
        self,
        bank_id: str,
        model: nn.Module,
        global_params: np.ndarray,
        X: np.ndarray,
        y: np.ndarray,
        cfg: TrainConfig,
        *,
        rng: np.random.Generator,
        work_fraction: float,
    ) -> PrivateLocalResult:
        acc, dp = self._setup(bank_id, len(y), cfg)
        result = train_private(model, global_params, X, y, cfg, rng=rng,
                               work_fraction=work_fraction, accountant=acc, dp=dp)
        if self.state_dir is not None:
            acc.save(state_path(self.state_dir, bank_id))
        return result

    def epsilons(self) -> dict[str, float]:
        """Record-level epsilon spent so far by every bank that has trained (or was restored)."""
        return {bank: acc.epsilon() for bank, acc in sorted(self.accountants.items())}


class FederationPrivacy:
    """Everything DP in one simulation run, built from :class:`PrivacyOptions`."""

    def __init__(
        self, options: PrivacyOptions, *, rounds: int, num_banks: int, banks_per_round: int,
        seed: int, personal_epochs: int = 0,
    ) -> None:
        self.options = options
        self.trainer = (PrivateTrainer(options, rounds, personal_epochs)
                        if options.record_level else None)
        self.bank_dp: BankDPConfig | None = None
        self.federation: FederationAccountant | None = None
        if options.bank_level:
            assert options.bank_dp_clip is not None and options.bank_dp_noise is not None
            self.bank_dp = BankDPConfig(options.bank_dp_clip, options.bank_dp_noise,
                                        min(banks_per_round, num_banks), num_banks)
            delta = (options.bank_dp_delta if options.bank_dp_delta is not None
                     else default_delta(num_banks))
            self.federation = FederationAccountant(self.bank_dp, delta, options.accountant)
        # Simulation noise is reproducible from the seed; a bank node uses secure_generator().
        self._rng = np.random.default_rng([seed, 5])

    def wrap(self, aggregator: Aggregator) -> Aggregator:
        if self.bank_dp is None or self.federation is None:
            return aggregator
        return BankDPAggregator(aggregator, self.bank_dp, self.federation, self._rng)

    def round_report(self, declined: list[str]) -> dict[str, Any]:
        """Fields added to a round's results entry."""
        report: dict[str, Any] = {"declined": declined}
        if self.trainer is not None:
            report["epsilon"] = self.trainer.epsilons()
        if self.federation is not None:
            report["federation_epsilon"] = self.federation.epsilon()
        return report
