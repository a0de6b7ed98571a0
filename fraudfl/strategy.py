"""Server-side federated strategies that work from the *sum* of weighted updates only.

Secure aggregation reveals nothing but ``sum_i weight_i * update_i`` and ``sum_i weight_i``
(with ``update_i = w_local_i - w_global``), so every strategy here is written against a
:class:`SummedUpdate`. The plain path (:func:`sum_updates`) computes the very same sum, which
keeps strategies, wrappers (e.g. server-side DP noise) and the secure path interchangeable.

A round has two halves, as in Flower: :meth:`Strategy.configure_round` says what banks should
do (``mu``, whether partial work from stragglers is accepted) and :meth:`Strategy.aggregate`
turns the sum into the next global model.

- FedAvg (McMahan et al. 2017): sample-weighted average; stragglers that did not finish their
  work are dropped (``accept_partial_work=False``), as in the FedProx paper's baseline.
- FedProx (Li et al. 2020): FedAvg aggregation, ``mu`` sent to banks, partial work kept.
- FedAvgM (Hsu et al. 2019): server momentum on the averaged update.
- FedAdam / FedYogi (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2):
  adaptive server optimisers with ``eta``, ``beta1``, ``beta2``, ``tau``; the second moment
  starts at ``tau**2`` as in the paper, without bias correction.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from fraudfl.errors import FraudflError

StrategyName = Literal["fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi"]
STRATEGY_NAMES: tuple[StrategyName, ...] = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi")
ConfigValue = float | int | str | bool


@dataclass(frozen=True)
class RoundInstructions:
    """What the server asks of banks this round."""

    config: dict[str, ConfigValue] = field(default_factory=dict)
    accept_partial_work: bool = False


@dataclass(frozen=True)
class SummedUpdate:
    """The only view a strategy gets of a round's results."""

    weighted_update_sum: np.ndarray
    weight_sum: float
    num_participants: int
    num_partial: int = 0

    def mean_update(self) -> np.ndarray | None:
        """``sum(w_i * u_i) / sum(w_i)``, or None when nothing was contributed."""
        if self.num_participants == 0 or self.weight_sum <= 0:
            return None
        mean: np.ndarray = self.weighted_update_sum / self.weight_sum
        return mean


def sum_updates(
    contributions: Iterable[tuple[float, np.ndarray]], *, dim: int, num_partial: int = 0
) -> SummedUpdate:
    """Sum ``(weight, update)`` pairs in float64 (what secure aggregation would reveal)."""
    total = np.zeros(dim, dtype=np.float64)
    weight_sum = 0.0
    count = 0
    for weight, update in contributions:
        if weight < 0:
            raise FraudflError(f"contribution weight must be >= 0, got {weight}")
        if update.shape != (dim,):
            raise FraudflError(f"update has shape {update.shape}, expected ({dim},)")
        total += float(weight) * update.astype(np.float64)
        weight_sum += float(weight)
        count += 1
    return SummedUpdate(total, weight_sum, count, num_partial)


def _apply_step(global_params: np.ndarray, step: np.ndarray) -> np.ndarray:
    new: np.ndarray = (global_params.astype(np.float64) + step).astype(np.float32)
    return new


class Strategy(ABC):
    """Base class: subclasses implement :meth:`aggregate`."""

    name: str = "strategy"

    def __init__(self, fit_config: Mapping[str, ConfigValue] | None = None) -> None:
        self.fit_config: dict[str, ConfigValue] = dict(fit_config or {})

    @property
    def accept_partial_work(self) -> bool:
        return False

    def configure_round(self, server_round: int, global_params: np.ndarray) -> RoundInstructions:
        return RoundInstructions(
            config={**self.fit_config, "mu": 0.0},
            accept_partial_work=self.accept_partial_work,
        )

    @abstractmethod
    def aggregate(
        self, server_round: int, global_params: np.ndarray, summed: SummedUpdate
    ) -> np.ndarray:
        """The next global parameters (float32) from the current ones and the round's sum."""

    def state(self) -> dict[str, np.ndarray]:
        """Server optimiser state, for checkpoints (empty for stateless strategies)."""
        return {}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        if state:
            raise FraudflError(f"{self.name} keeps no state, got keys {sorted(state)}")


class FedAvg(Strategy):
    name = "fedavg"

    def aggregate(
        self, server_round: int, global_params: np.ndarray, summed: SummedUpdate
    ) -> np.ndarray:
        delta = summed.mean_update()
        if delta is None:
            return np.array(global_params, dtype=np.float32, copy=True)
        return _apply_step(global_params, delta)


class FedProx(FedAvg):
    name = "fedprox"

    def __init__(self, mu: float, fit_config: Mapping[str, ConfigValue] | None = None) -> None:
        super().__init__(fit_config)
        if mu < 0:
            raise FraudflError(f"FedProx mu must be >= 0, got {mu}")
        self.mu = mu

    @property
    def accept_partial_work(self) -> bool:
        return True

    def configure_round(self, server_round: int, global_params: np.ndarray) -> RoundInstructions:
        return RoundInstructions(
            config={**self.fit_config, "mu": self.mu}, accept_partial_work=True
        )


class _StatefulStrategy(Strategy):
    _state_keys: tuple[str, ...] = ()

    def state(self) -> dict[str, np.ndarray]:
        return {
            key: value.copy()
            for key in self._state_keys
            if (value := getattr(self, key)) is not None
        }

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        unknown = set(state) - set(self._state_keys)
        if unknown:
            raise FraudflError(f"{self.name}: unknown state keys {sorted(unknown)}")
        for key in self._state_keys:
            value = state.get(key)
            setattr(self, key, None if value is None else np.asarray(value, dtype=np.float64))


class FedAvgM(_StatefulStrategy):
    """``v <- momentum * v + delta``; ``w <- w + server_lr * v`` (delta = mean update)."""

    name = "fedavgm"
    _state_keys = ("velocity",)

    def __init__(
        self,
        server_lr: float = 1.0,
        momentum: float = 0.9,
        fit_config: Mapping[str, ConfigValue] | None = None,
    ) -> None:
        super().__init__(fit_config)
        if not (0 < server_lr < math.inf and 0 <= momentum < 1):  # also refuses NaN
            raise FraudflError("FedAvgM needs server_lr > 0 and momentum in [0, 1)")
        self.server_lr = server_lr
        self.momentum = momentum
        self.velocity: np.ndarray | None = None

    def aggregate(
        self, server_round: int, global_params: np.ndarray, summed: SummedUpdate
    ) -> np.ndarray:
        delta = summed.mean_update()
        if delta is None:
            return np.array(global_params, dtype=np.float32, copy=True)
        v = delta if self.velocity is None else self.momentum * self.velocity + delta
        self.velocity = v
        return _apply_step(global_params, self.server_lr * v)


class _FedOpt(_StatefulStrategy):
    """Reddi et al. 2021, Algorithm 2: ``m <- b1 m + (1-b1) delta``; second moment ``v`` per
    subclass; ``w <- w + eta * m / (sqrt(v) + tau)``."""

    _state_keys = ("m", "v")

    def __init__(
        self,
        eta: float = 1e-2,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        fit_config: Mapping[str, ConfigValue] | None = None,
    ) -> None:
        super().__init__(fit_config)
        # Written so that NaN fails too.
        if not (0 < eta < math.inf and 0 < tau < math.inf and 0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise FraudflError(
                f"{self.name} needs eta > 0, tau > 0, beta1 and beta2 in [0, 1); "
                f"got eta={eta}, tau={tau}, beta1={beta1}, beta2={beta2}"
            )
        self.eta, self.beta1, self.beta2, self.tau = eta, beta1, beta2, tau
        self.m: np.ndarray | None = None
        self.v: np.ndarray | None = None

    @abstractmethod
    def _second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray: ...

    def aggregate(
        self, server_round: int, global_params: np.ndarray, summed: SummedUpdate
    ) -> np.ndarray:
        delta = summed.mean_update()
        if delta is None:
            return np.array(global_params, dtype=np.float32, copy=True)
        m = np.zeros_like(delta) if self.m is None else self.m
        v = np.full_like(delta, self.tau**2) if self.v is None else self.v
        self.m = self.beta1 * m + (1.0 - self.beta1) * delta
        self.v = self._second_moment(v, delta * delta)
        step = self.eta * self.m / (np.sqrt(self.v) + self.tau)
        return _apply_step(global_params, step)


class FedAdam(_FedOpt):
    name = "fedadam"

    def _second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        v_next: np.ndarray = self.beta2 * v + (1.0 - self.beta2) * delta_sq
        return v_next


class FedYogi(_FedOpt):
    name = "fedyogi"

    def _second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        v_next: np.ndarray = v - (1.0 - self.beta2) * delta_sq * np.sign(v - delta_sq)
        return v_next


def make_strategy(
    name: str,
    *,
    mu: float = 0.0,
    server_lr: float = 1.0,
    server_momentum: float = 0.9,
    eta: float = 1e-2,
    beta1: float = 0.9,
    beta2: float = 0.99,
    tau: float = 1e-3,
    fit_config: Mapping[str, ConfigValue] | None = None,
) -> Strategy:
    """Build a strategy by name; options that a strategy does not use are ignored."""
    if name == "fedavg":
        return FedAvg(fit_config)
    if name == "fedprox":
        return FedProx(mu, fit_config)
    if name == "fedavgm":
        return FedAvgM(server_lr, server_momentum, fit_config)
    if name == "fedadam":
        return FedAdam(eta, beta1, beta2, tau, fit_config)
    if name == "fedyogi":
        return FedYogi(eta, beta1, beta2, tau, fit_config)
    raise FraudflError(f"unknown strategy {name!r}; expected one of {STRATEGY_NAMES}")
