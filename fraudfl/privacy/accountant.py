"""A bank's privacy accountant: the one place all of a bank's private training is charged.

The state is the composition history ``[(noise_multiplier, sample_rate, steps), ...]`` of
Poisson-subsampled Gaussian mechanisms, exactly what Opacus' accountants keep; epsilon is
computed from it by an Opacus RDP or PRV accountant. The history is saved as JSON (never pickle)
after every round and restored on start, so epsilon composes over all rounds and restarts.

Every DP step has to be *authorised* first: :meth:`PrivacyAccountant.authorize` accounts the
planned round on a copy and refuses (``BudgetExhausted``) if it would push the bank past its
budget; :meth:`PrivacyAccountant.step` then only accepts steps of an authorised plan. Nothing can
train privately around the accountant without tripping that check.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

import numpy as np

from fraudfl.checkpoint import atomic_write_bytes
from fraudfl.errors import FraudflError

log = logging.getLogger(__name__)

Mechanism = Literal["rdp", "prv"]
MECHANISMS: tuple[str, ...] = get_args(Mechanism)
# Opacus is imported where epsilon is computed: importing it costs seconds (it pulls in
# torch.distributed and scipy.stats), which a simulation without DP should not pay.

STATE_FORMAT = "fraudfl.privacy.accountant"
STATE_VERSION = 1
# A bank's whole DP history is a handful of entries; anything bigger is not our file.
MAX_STATE_BYTES = 1 << 20
DEFAULT_DELTA_FACTOR = 0.1


def default_delta(n_records: int) -> float:
    """``0.1 / n``: delta must be well below 1/n, or "leak one record in full" would satisfy it."""
    if n_records <= 0:
        raise FraudflError(f"n_records: expected a positive number of records, got {n_records}")
    return DEFAULT_DELTA_FACTOR / n_records


def warn_if_vacuous(delta: float, n_records: int, label: str) -> None:
    """(epsilon, delta) with delta >= 1/n allows releasing a record in the clear: say so."""
    if n_records > 0 and delta >= 1.0 / n_records:
        log.warning("%s: delta %.3g is not below 1/records (%d records): the guarantee is "
                    "vacuous; use a delta well below %.3g", label, delta, n_records,
                    1.0 / n_records)


@dataclass(frozen=True)
class PrivacyBudget:
    """The (epsilon, delta) a bank promises its customers over the federation's whole life."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        # inf is allowed: "account at this delta, never decline" (e.g. a noise-only setting).
        if not self.epsilon > 0:
            raise FraudflError(f"epsilon: expected a number > 0, got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise FraudflError(f"delta: expected a number in (0, 1), got {self.delta}")


@dataclass(frozen=True)
class HistoryEntry:
    """``steps`` steps of the Poisson-subsampled Gaussian mechanism."""

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        if not (self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)):
            raise FraudflError(
                f"noise_multiplier: expected a finite number > 0, got {self.noise_multiplier}"
            )
        if not 0 < self.sample_rate <= 1:
            raise FraudflError(f"sample_rate: expected a number in (0, 1], got {self.sample_rate}")
        if self.steps <= 0:
            raise FraudflError(f"steps: expected a positive integer, got {self.steps}")


class BudgetExhausted(FraudflError):
    """A bank declines a round because it would spend more than its privacy budget."""

    def __init__(
        self, label: str, spent_epsilon: float, projected_epsilon: float, budget: PrivacyBudget
    ) -> None:
        self.label = label
        self.spent_epsilon = spent_epsilon
        self.projected_epsilon = projected_epsilon
        self.budget = budget
        super().__init__(
            f"{label}: privacy budget exhausted: spent epsilon={spent_epsilon:.4f}, "
            f"the next round would reach {projected_epsilon:.4f} > budget "
            f"{budget.epsilon:g} (delta={budget.delta:.3g}); declining to train"
        )


@functools.lru_cache(maxsize=256)
def _rdp_per_step(sample_rate: float, noise_multiplier: float) -> np.ndarray:
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as rdp_analysis

    rdp: np.ndarray = rdp_analysis.compute_rdp(
        q=sample_rate, noise_multiplier=noise_multiplier, steps=1,
        orders=RDPAccountant.DEFAULT_ALPHAS,
    )
    rdp.setflags(write=False)
    return rdp


def _epsilon_of(history: list[HistoryEntry], mechanism: Mechanism, delta: float) -> float:
    from opacus.accountants import RDPAccountant, create_accountant
    from opacus.accountants.analysis import rdp as rdp_analysis

    if not history:
        return 0.0
    if mechanism == "rdp":
        # RDPAccountant.get_privacy_spent, with the per-step RDP of each (q, sigma) cached: it
        # is linear in the steps, and recomputing it (fractional orders) took ~0.1-0.4 s per
        # call, several times per round. Same arithmetic, so the same epsilon bit for bit.
        rdp = sum(_rdp_per_step(h.sample_rate, h.noise_multiplier) * h.steps for h in history)
        eps, _ = rdp_analysis.get_privacy_spent(
            orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta
        )
        return float(eps)
    accountant = create_accountant(mechanism=mechanism)
    accountant.history = [(h.noise_multiplier, h.sample_rate, h.steps) for h in history]
    return float(accountant.get_epsilon(delta=delta))


def _appended(history: list[HistoryEntry], entry: HistoryEntry) -> list[HistoryEntry]:
    """The history with ``entry`` composed in, merging runs of identical mechanisms as Opacus."""
    if history and (history[-1].noise_multiplier, history[-1].sample_rate) == (
        entry.noise_multiplier,
        entry.sample_rate,
    ):
        last = history[-1]
        merged = HistoryEntry(last.noise_multiplier, last.sample_rate, last.steps + entry.steps)
        return [*history[:-1], merged]
    return [*history, entry]


@dataclass
class _Authorisation:
    noise_multiplier: float
    sample_rate: float
    remaining_steps: int


class PrivacyAccountant:
    """Composition history, epsilon, budget enforcement and persistence for one bank.

    ``delta`` is the budget's delta when there is a budget; otherwise it must be given to
    :meth:`epsilon`. ``label`` names the bank in log lines and errors.
    """

    def __init__(
        self,
        mechanism: Mechanism = "rdp",
        *,
        budget: PrivacyBudget | None = None,
        history: list[HistoryEntry] | None = None,
        label: str = "bank",
    ) -> None:
        if mechanism not in MECHANISMS:
            raise FraudflError(f"accountant: expected one of {MECHANISMS}, got {mechanism!r}")
        self.mechanism: Mechanism = mechanism
        self.budget = budget
        self.label = label
        self._history: list[HistoryEntry] = []
        for entry in history or []:
            self._history = _appended(self._history, entry)
        self._authorisation: _Authorisation | None = None
        self._last_epsilon: tuple[tuple[Any, ...], float] | None = None

    # ---- accounting -------------------------------------------------------------------------
    @property
    def history(self) -> tuple[HistoryEntry, ...]:
        return tuple(self._history)

    @property
    def total_steps(self) -> int:
        return sum(h.steps for h in self._history)

    def _delta(self, delta: float | None) -> float:
        if delta is not None:
            return delta
        if self.budget is None:
            raise ValueError("epsilon of an accountant without a budget needs an explicit delta")
        return self.budget.delta

    def epsilon(self, delta: float | None = None) -> float:
        """Epsilon spent so far at ``delta`` (default: the budget's delta)."""
        key = (tuple(self._history), self.mechanism, self._delta(delta))
        if self._last_epsilon is None or self._last_epsilon[0] != key:
            # Reports ask every round for every bank; a PRV epsilon costs a fraction of a second.
            self._last_epsilon = (key, _epsilon_of(self._history, self.mechanism, key[2]))
        return self._last_epsilon[1]

    def projected_epsilon(
        self, noise_multiplier: float, sample_rate: float, steps: int, delta: float | None = None
    ) -> float:
        """Epsilon after a planned round, computed on a copy of the history."""
        planned = _appended(self._history, HistoryEntry(noise_multiplier, sample_rate, steps))
        return _epsilon_of(planned, self.mechanism, self._delta(delta))

    def would_exceed(self, noise_multiplier: float, sample_rate: float, steps: int) -> bool:
        """Whether the planned round would take the bank past its budget (never, without one)."""
        if self.budget is None:
            return False
        projected = self.projected_epsilon(noise_multiplier, sample_rate, steps)
        return projected > self.budget.epsilon

    def remaining_epsilon(self) -> float:
        if self.budget is None:
            return math.inf
        return max(0.0, self.budget.epsilon - self.epsilon())

    # ---- the gate every private step goes through ------------------------------------------
    def authorize(self, noise_multiplier: float, sample_rate: float, steps: int) -> None:
        """Allow the next ``steps`` DP steps with this mechanism, or raise ``BudgetExhausted``.

        The check is on the whole planned round, so a bank never stops half-way through a
        round having already spent privacy on a model it will not send.
        """
        HistoryEntry(noise_multiplier, sample_rate, steps)  # validates the plan
        if self.budget is not None:
            projected = self.projected_epsilon(noise_multiplier, sample_rate, steps)
            if projected > self.budget.epsilon:
                exc = BudgetExhausted(self.label, self.epsilon(), projected, self.budget)
                log.warning("%s", exc)
                raise exc
        self._authorisation = _Authorisation(noise_multiplier, sample_rate, steps)

    def step(self, noise_multiplier: float, sample_rate: float) -> None:
        """Charge one DP step; it must belong to the current authorisation."""
        auth = self._authorisation
        if auth is None or auth.remaining_steps <= 0:
            raise RuntimeError(f"{self.label}: DP step taken without an authorised round")
        if (auth.noise_multiplier, auth.sample_rate) != (noise_multiplier, sample_rate):
            raise RuntimeError(
                f"{self.label}: DP step with noise={noise_multiplier}, q={sample_rate} but the "
                f"authorised round is noise={auth.noise_multiplier}, q={auth.sample_rate}"
            )
        auth.remaining_steps -= 1
        self._history = _appended(self._history, HistoryEntry(noise_multiplier, sample_rate, 1))

    def charge(self, noise_multiplier: float, sample_rate: float, steps: int) -> None:
        """Authorise and charge a whole round at once (mechanisms applied outside a loop)."""
        self.authorize(noise_multiplier, sample_rate, steps)
        for _ in range(steps):
            self.step(noise_multiplier, sample_rate)
        self.end_round()

    def end_round(self) -> int:
        """Close the authorisation; returns how many authorised steps were not taken."""
        unused = 0 if self._authorisation is None else self._authorisation.remaining_steps
        self._authorisation = None
        return unused

    # ---- noise calibration -----------------------------------------------------------------
    def calibrate_noise(
        self, target_epsilon: float, sample_rate: float, steps: int, delta: float | None = None
    ) -> float:
        """The smallest noise multiplier (within 0.01 in epsilon) with which ``steps`` more steps
        at ``sample_rate`` keep the total epsilon at or below ``target_epsilon``.

        On a fresh accountant this is Opacus' ``get_noise_multiplier``; with history already spent
        (a restarted bank) the search includes it, so the target holds over the whole life.
        """
        from opacus.accountants.utils import get_noise_multiplier

        delta_ = self._delta(delta)
        if not self._history:
            try:
                return float(
                    get_noise_multiplier(
                        target_epsilon=target_epsilon,
                        target_delta=delta_,
                        sample_rate=sample_rate,
                        steps=steps,
                        accountant=self.mechanism,
                    )
                )
            except ValueError as exc:
                raise FraudflError(
                    f"target epsilon {target_epsilon:g}: unreachable with {steps} steps at "
                    f"sample rate {sample_rate:.4g} ({exc})"
                ) from exc
        spent = self.epsilon(delta_)
        if spent >= target_epsilon:
            # Nothing is left to spend: the same refusal as a round over budget, so every
            # caller (a round, personal training) declines instead of failing.
            raise BudgetExhausted(
                self.label, spent, spent, PrivacyBudget(target_epsilon, delta_)
            )
        low, high = 0.0, 10.0
        while self.projected_epsilon(high, sample_rate, steps, delta_) > target_epsilon:
            high *= 2
            if high > 1e6:
                raise FraudflError(
                    f"target epsilon {target_epsilon:g}: unreachable after spending {spent:.4f}"
                )
        eps_high = self.projected_epsilon(high, sample_rate, steps, delta_)
        while target_epsilon - eps_high > 0.01:
            mid = (low + high) / 2
            eps = self.projected_epsilon(mid, sample_rate, steps, delta_)
            if eps < target_epsilon:
                high, eps_high = mid, eps
            else:
                low = mid
        return high

    # ---- persistence -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "label": self.label,
            "mechanism": self.mechanism,
            "budget": None
            if self.budget is None
            else {
                # JSON has no infinity: an unlimited budget is written as null.
                "epsilon": self.budget.epsilon if math.isfinite(self.budget.epsilon) else None,
                "delta": self.budget.delta,
            },
            "history": [[h.noise_multiplier, h.sample_rate, h.steps] for h in self._history],
        }

    @classmethod
    def from_dict(cls, data: object, source: str = "accountant state") -> PrivacyAccountant:
        def bad(field: str, expected: str) -> FraudflError:
            return FraudflError(f"{source}: field {field!r}: expected {expected}")

        if not isinstance(data, dict):
            raise FraudflError(f"{source}: expected a JSON object")
        if data.get("format") != STATE_FORMAT:
            raise bad("format", repr(STATE_FORMAT))
        if data.get("version") != STATE_VERSION:
            raise bad("version", str(STATE_VERSION))
        label = data.get("label")
        if not isinstance(label, str):
            raise bad("label", "a string")
        mechanism = data.get("mechanism")
        if mechanism not in MECHANISMS:
            raise bad("mechanism", f"one of {MECHANISMS}")
        raw_budget = data.get("budget")
        budget: PrivacyBudget | None = None
        if raw_budget is not None:
            if not isinstance(raw_budget, dict) or set(raw_budget) != {"epsilon", "delta"}:
                raise bad("budget", "null or {'epsilon': number or null, 'delta': number}")
            eps, delta = raw_budget["epsilon"], raw_budget["delta"]
            if not ((eps is None or _is_number(eps)) and _is_number(delta)):
                raise bad("budget", "numeric (or null) epsilon and numeric delta")
            try:
                budget = PrivacyBudget(math.inf if eps is None else float(eps), float(delta))
            except FraudflError as exc:
                raise bad("budget", str(exc)) from exc
        raw_history = data.get("history")
        if not isinstance(raw_history, list):
            raise bad("history", "a list of [noise_multiplier, sample_rate, steps]")
        history = []
        for i, row in enumerate(raw_history):
            if (
                not isinstance(row, list)
                or len(row) != 3
                or not (_is_number(row[0]) and _is_number(row[1]))
                or not (isinstance(row[2], int) and not isinstance(row[2], bool))
            ):
                raise bad(f"history[{i}]", "[noise_multiplier, sample_rate, integer steps]")
            try:
                history.append(HistoryEntry(float(row[0]), float(row[1]), row[2]))
            except FraudflError as exc:
                raise bad(f"history[{i}]", str(exc)) from exc
        return cls(cast(Mechanism, mechanism), budget=budget, history=history, label=label)

    def save(self, path: Path) -> None:
        """Write the state atomically: a crash leaves the old or the new file, never a torn one."""
        try:
            atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())
        except OSError as exc:
            raise FraudflError(f"{path}: cannot write accountant state: {exc.strerror}") from exc

    @classmethod
    def load(cls, path: Path) -> PrivacyAccountant:
        try:
            if path.stat().st_size > MAX_STATE_BYTES:
                raise FraudflError(f"{path}: accountant state larger than {MAX_STATE_BYTES} bytes")
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise FraudflError(f"{path}: cannot read accountant state: {exc.strerror}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FraudflError(f"{path}: not valid JSON: {exc}") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def load_or_create(
        cls,
        path: Path,
        mechanism: Mechanism = "rdp",
        *,
        budget: PrivacyBudget | None = None,
        label: str = "bank",
    ) -> PrivacyAccountant:
        """Restore the bank's accountant from ``path`` if it exists, else start a fresh one.

        A restored history is never discarded. The configured budget and mechanism win over the
        stored ones (both are policy, not state); changes are logged so they are auditable.
        """
        if not path.exists():
            return cls(mechanism, budget=budget, label=label)
        acc = cls.load(path)
        if budget is not None and budget != acc.budget:
            log.warning("%s: privacy budget changed from %s to %s", label, acc.budget, budget)
            acc.budget = budget
        if mechanism != acc.mechanism:
            log.warning("%s: accountant changed from %s to %s", label, acc.mechanism, mechanism)
            acc.mechanism = mechanism
        acc.label = label
        log.info("%s: restored privacy history of %d DP steps from %s", label, acc.total_steps,
                 path)
        return acc


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
