"""Personalisation per bank: fine-tuning, FedPer personal layers, Ditto.

Banks differ (customers, products, fraud patterns), so each bank may serve a model adapted to
its own data rather than the global one. Three methods, each usable in the simulator and by the
bank node:

- ``finetune``: a few epochs of local training starting from the global model.
- ``ditto`` (Li et al., "Ditto: Fair and Robust Federated Learning Through Personalization",
  ICML 2021): the personal model solves ``min_v F_k(v) + (lambda/2) ||v - w||^2``, i.e. local
  training regularised towards the global model ``w``. It runs through the same trainer as
  federated rounds (the FedProx term *is* that regulariser, with ``mu = lambda``), starting
  from ``w``; see ``docs/personalization.md`` for how this differs from the paper's schedule.
- ``fedper`` (Arivazhagan et al., "Federated Learning with Personalization Layers", 2019): the
  model's body is federated (securely aggregated), its head (the last ``personal_layers`` linear
  layers) never leaves the bank. :class:`ParamPartition` splits the flat parameter vector;
  :class:`FedPerBank` is what a bank keeps and calls (only body coordinates leave it) and
  :class:`FedPerStrategy` runs the server strategy on the body.

All personal training goes through a :data:`LocalTrainer`.
Under DP that is :func:`private_trainer`, which charges every step to the bank's accountant,
the one place all private training of a bank goes through.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import numpy.typing as npt
from torch import nn

from fraudfl.errors import FraudflError
from fraudfl.models import Task, set_flat_params
from fraudfl.strategy import RoundInstructions, Strategy, SummedUpdate
from fraudfl.training.evaluation import evaluate
from fraudfl.training.local import LocalResult, LocalTrainer, TrainConfig, plain_trainer

if TYPE_CHECKING:  # Opacus is imported only when DP training is asked for
    from fraudfl.privacy.accountant import PrivacyAccountant
    from fraudfl.training.private import DPConfig

log = logging.getLogger(__name__)

Method = Literal["none", "finetune", "fedper", "ditto"]
METHODS: tuple[Method, ...] = get_args(Method)
FloatVec = npt.NDArray[np.float32]


def private_trainer(
    accountants: Mapping[str, PrivacyAccountant], dp: DPConfig
) -> LocalTrainer:
    """DP-SGD training charged to each bank's own accountant (``accountants[bank_id]``).

    A bank without an accountant is an error rather than a silent fallback to non-private
    training.
    """
    from fraudfl.training.private import train_private

    def train(
        bank_id: str,
        model: nn.Module,
        global_params: np.ndarray,
        X: np.ndarray,
        y: np.ndarray,
        cfg: TrainConfig,
        *,
        rng: np.random.Generator,
        work_fraction: float,
    ) -> LocalResult:
        accountant = accountants.get(bank_id)
        if accountant is None:
            raise FraudflError(f"bank '{bank_id}' has no privacy accountant for DP training")
        return train_private(model, global_params, X, y, cfg, rng=rng,
                             work_fraction=work_fraction, accountant=accountant, dp=dp)

    return train


@dataclass(frozen=True)
class PersonalizationConfig:
    """How a bank personalises. ``epochs``/``lr`` apply to fine-tuning and Ditto; ``lam`` is
    Ditto's lambda; ``personal_layers`` the number of final linear layers FedPer keeps local."""

    method: Method = "none"
    epochs: int = 3
    lr: float | None = None
    lam: float = 0.1
    personal_layers: int = 1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise FraudflError(f"personalization must be one of {METHODS}, got {self.method!r}")
        if self.epochs < 1:
            raise FraudflError(f"personalization epochs must be >= 1, got {self.epochs}")
        # isfinite too: inf passes a plain '> 0' and would train the model into NaNs.
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise FraudflError(f"personalization lr must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise FraudflError(f"Ditto lambda must be a finite number >= 0, got {self.lam}")
        if self.personal_layers < 1:
            raise FraudflError(f"personal_layers must be >= 1, got {self.personal_layers}")

    def train_config(self, base: TrainConfig) -> TrainConfig:
        """The personal training run: ``epochs`` passes, proximal ``lam`` for Ditto, else 0."""
        return replace(
            base,
            local_epochs=self.epochs,
            max_steps=None,
            lr=self.lr if self.lr is not None else base.lr,
            mu=self.lam if self.method == "ditto" else 0.0,
        )


@dataclass(frozen=True)
class ParamPartition:
    """The flat parameter vector split into a shared body ``[0, split)`` and a personal head
    ``[split, size)``: ``model.parameters()`` lists layers in order, so the head is a suffix."""

    split: int
    size: int

    @classmethod
    def for_model(cls, model: nn.Module, personal_layers: int = 1) -> ParamPartition:
        """Head = the last ``personal_layers`` ``nn.Linear`` layers and everything after the
        first of them (e.g. a LayerNorm between two head layers)."""
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if len(linears) <= personal_layers:
            raise FraudflError(
                f"FedPer needs a body to share: the model has {len(linears)} linear layer(s) "
                f"and {personal_layers} would stay personal; use the mlp model"
            )
        first_head = linears[-personal_layers].weight
        offset = 0
        for p in model.parameters():
            if p is first_head:
                break
            offset += p.numel()
        size = sum(p.numel() for p in model.parameters())
        return cls(split=offset, size=size)

    @property
    def shared_size(self) -> int:
        return self.split

    def shared(self, vec: np.ndarray) -> FloatVec:
        self._check(vec)
        out: FloatVec = np.array(vec[: self.split], dtype=np.float32)
        return out

    def personal(self, vec: np.ndarray) -> FloatVec:
        self._check(vec)
        out: FloatVec = np.array(vec[self.split :], dtype=np.float32)
        return out

    def merge(self, shared: np.ndarray, personal: np.ndarray) -> FloatVec:
        if shared.shape != (self.split,) or personal.shape != (self.size - self.split,):
            raise FraudflError(
                f"cannot merge body {shared.shape} and head {personal.shape} into a model of "
                f"{self.size} parameters split at {self.split}"
            )
        out: FloatVec = np.concatenate([shared, personal]).astype(np.float32)
        return out

    def _check(self, vec: np.ndarray) -> None:
        if vec.shape != (self.size,):
            raise FraudflError(f"parameter vector has shape {vec.shape}, expected ({self.size},)")


class FedPerBank:
    """A bank's FedPer state: its personal head. What the bank node keeps and calls.

    Per round: train from :meth:`start_params` (global body + own head), then
    :meth:`finish_round` stores the new head and returns the *body-only* update, the only
    vector that goes to (secure) aggregation. :meth:`personal_params` is the model to serve.
    """

    def __init__(self, partition: ParamPartition, head: np.ndarray | None = None) -> None:
        self.partition = partition
        self.head: FloatVec | None = None if head is None else np.asarray(head, np.float32)
        if self.head is not None and self.head.shape != (partition.size - partition.split,):
            raise FraudflError(f"FedPer head has shape {self.head.shape}, expected "
                               f"({partition.size - partition.split},)")

    def start_params(self, global_params: np.ndarray) -> FloatVec:
        """The global body with this bank's head (the global head before the first round)."""
        if self.head is None:
            return np.array(global_params, dtype=np.float32)
        return self.partition.merge(self.partition.shared(global_params), self.head)

    def finish_round(self, local_params: np.ndarray, global_params: np.ndarray) -> FloatVec:
        """Keep the trained head; return the body update ``w_local - w_global`` to send."""
        self.head = self.partition.personal(local_params)
        out: FloatVec = (self.partition.shared(local_params)
                         - self.partition.shared(global_params)).astype(np.float32)
        return out

    def personal_params(self, global_params: np.ndarray) -> FloatVec:
        return self.start_params(global_params)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state (the head as a list of floats; a few hundred values at most)."""
        return {
            "split": self.partition.split,
            "size": self.partition.size,
            "head": None if self.head is None else [float(v) for v in self.head],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FedPerBank:
        try:
            partition = ParamPartition(split=int(data["split"]), size=int(data["size"]))
            head = data["head"]
        except (KeyError, TypeError, ValueError) as exc:
            raise FraudflError(f"FedPer state: missing or invalid field {exc}") from None
        return cls(partition, None if head is None else np.asarray(head, dtype=np.float32))


class FedPerStrategy(Strategy):
    """Runs a strategy on the body only; the global head stays as initialised (each bank's
    head starts from it and then lives at the bank)."""

    def __init__(self, inner: Strategy, partition: ParamPartition) -> None:
        super().__init__(inner.fit_config)
        self.inner = inner
        self.partition = partition
        self.name = inner.name

    @property
    def accept_partial_work(self) -> bool:
        return self.inner.accept_partial_work

    def configure_round(self, server_round: int, global_params: np.ndarray) -> RoundInstructions:
        return self.inner.configure_round(server_round, self.partition.shared(global_params))

    def aggregate(
        self, server_round: int, global_params: np.ndarray, summed: SummedUpdate
    ) -> np.ndarray:
        body = self.inner.aggregate(server_round, self.partition.shared(global_params), summed)
        return self.partition.merge(np.asarray(body, dtype=np.float32),
                                    self.partition.personal(global_params))

    def state(self) -> dict[str, np.ndarray]:
        return self.inner.state()

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.inner.load_state(state)


def personalize(
    pcfg: PersonalizationConfig,
    *,
    bank_id: str,
    model: nn.Module,
    global_params: np.ndarray,
    X_train: np.ndarray,
    y_train: np.ndarray,
    base_cfg: TrainConfig,
    trainer: LocalTrainer = plain_trainer,
    rng: np.random.Generator,
    fedper: FedPerBank | None = None,
) -> FloatVec:
    """The bank's personal parameters from the global ones (``model`` is scratch space).

    ``finetune`` and ``ditto`` train ``pcfg.epochs`` epochs through ``trainer`` (pass
    :func:`private_trainer` under DP so the bank's accountant is charged); ``fedper`` combines
    the global body with the head in ``fedper`` (kept from the bank's rounds).
    """
    if pcfg.method == "none":
        return np.array(global_params, dtype=np.float32)
    if pcfg.method == "fedper":
        if fedper is None:
            raise FraudflError(f"bank '{bank_id}': FedPer needs the bank's personal head state")
        return fedper.personal_params(global_params)
    result = trainer(bank_id, model, global_params, X_train, y_train,
                     pcfg.train_config(base_cfg), rng=rng, work_fraction=1.0)
    return np.array(result.params, dtype=np.float32)


@dataclass(frozen=True)
class BankComparison:
    """Global vs personalised model on one bank's own held-out data."""

    bank_id: str
    num_val: int
    num_val_fraud: int
    global_metrics: dict[str, float]
    personal_metrics: dict[str, float]

    def gain(self, metric: str = "auprc") -> float:
        """Relative change of ``metric`` (personal / global - 1); NaN when undefined."""
        g, p = self.global_metrics.get(metric, np.nan), self.personal_metrics.get(metric, np.nan)
        return float(p / g - 1.0) if g and np.isfinite(g) and np.isfinite(p) else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "bank_id": self.bank_id,
            "num_val": self.num_val,
            "num_val_fraud": self.num_val_fraud,
            "global": self.global_metrics,
            "personal": self.personal_metrics,
        }


def compare_on_bank(
    model: nn.Module,
    bank_id: str,
    global_params: np.ndarray,
    personal_params: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    task: Task,
) -> BankComparison:
    """Evaluate both models on the bank's validation data (``model`` is scratch space)."""
    set_flat_params(model, global_params)
    global_metrics = evaluate(model, X_val, y_val, task)
    set_flat_params(model, personal_params)
    personal_metrics = evaluate(model, X_val, y_val, task)
    return BankComparison(
        bank_id=bank_id,
        num_val=len(y_val),
        num_val_fraud=int(np.count_nonzero(y_val == 1)),
        global_metrics=global_metrics,
        personal_metrics=personal_metrics,
    )


@dataclass(frozen=True)
class PersonalModel:
    """What :func:`personalize_for_bank` gives the bank node: parameters to serve and the
    evidence that they are better (or not) than the global model on the bank's data."""

    params: FloatVec
    comparison: BankComparison


def personalize_for_bank(
    pcfg: PersonalizationConfig,
    *,
    bank_id: str,
    model: nn.Module,
    global_params: np.ndarray,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    base_cfg: TrainConfig,
    trainer: LocalTrainer = plain_trainer,
    rng: np.random.Generator,
    fedper: FedPerBank | None = None,
) -> PersonalModel:
    """The bank node's entry point: personalise, then compare with the global model on the
    bank's own validation data. The node serves ``params`` (e.g. through
    :func:`fraudfl.scoring.build_artifact` with ``personalization=pcfg.method``)."""
    params = personalize(pcfg, bank_id=bank_id, model=model, global_params=global_params,
                         X_train=X_train, y_train=y_train, base_cfg=base_cfg, trainer=trainer,
                         rng=rng, fedper=fedper)
    comparison = compare_on_bank(model, bank_id, global_params, params, X_val, y_val,
                                 base_cfg.task)
    log.info("%s: %s personalisation, AUPRC %.4f (global) -> %.4f (personal)", bank_id,
             pcfg.method, comparison.global_metrics.get("auprc", np.nan),
             comparison.personal_metrics.get("auprc", np.nan))
    return PersonalModel(params=params, comparison=comparison)
