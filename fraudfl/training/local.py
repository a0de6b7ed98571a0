"""A bank's local training for one round: mini-batch SGD with the FedProx proximal term.

The local objective is ``F_k(w) + (mu/2) * ||w - w_global||^2`` (Li et al., "Federated
Optimization in Heterogeneous Networks", 2020). The proximal term is applied as an explicit
gradient ``mu * (w - w_global)`` added after the batch gradient is computed rather than as a
loss term: the two are mathematically identical, but only the explicit form survives DP-SGD,
where the optimiser replaces ``p.grad`` with the clipped, noised per-sample gradient sum and the
(data-independent) proximal gradient has to be added afterwards. A DP trainer therefore supplies
its own :class:`BatchStepper` and reuses :func:`add_proximal_gradient`.

Local work is ``local_epochs`` passes over the data, or exactly ``max_steps`` mini-batch steps;
a straggler is given ``work_fraction < 1`` and does that fraction of the planned steps.
Batches come from a permutation drawn from the caller's ``numpy.random.Generator``, so a run
is reproducible from its seed and never touches torch's global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from fraudfl.errors import FraudflError
from fraudfl.models import Task, get_flat_params, make_loss, set_flat_params


@dataclass(frozen=True)
class TrainConfig:
    """Local training hyper-parameters for one round (sent, in part, by the strategy)."""

    task: Task = "binary"
    local_epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 0.01
    mu: float = 0.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    pos_weight: float | None = None
    focal_gamma: float | None = None

    def __post_init__(self) -> None:
        if self.local_epochs < 1:
            raise FraudflError(f"local_epochs must be >= 1, got {self.local_epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise FraudflError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.batch_size < 1:
            raise FraudflError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise FraudflError(f"lr must be > 0, got {self.lr}")
        if self.mu < 0:
            raise FraudflError(f"mu must be >= 0, got {self.mu}")
        if not 0 <= self.momentum < 1:
            raise FraudflError(f"momentum must be in [0, 1), got {self.momentum}")

    def planned_steps(self, num_examples: int) -> int:
        """Mini-batch steps in a full round of local work on ``num_examples`` examples."""
        if self.max_steps is not None:
            return self.max_steps
        return self.local_epochs * math.ceil(num_examples / self.batch_size)


@dataclass
class LocalResult:
    """What a bank reports after local training (its parameters never leave in the clear in
    production: the update ``params - global_params`` goes through secure aggregation)."""

    params: np.ndarray
    num_examples: int
    steps_done: int
    steps_planned: int
    loss: float
    work_fraction: float

    @property
    def completed(self) -> bool:
        return self.steps_done >= self.steps_planned


class BatchStepper(Protocol):
    """Takes one optimisation step on a batch and returns the batch's mean training loss."""

    def step(self, xb: torch.Tensor, yb: torch.Tensor) -> float: ...


StepperFactory = Callable[[nn.Module, Sequence[torch.Tensor], TrainConfig], BatchStepper]


def add_proximal_gradient(
    params: Sequence[torch.Tensor], global_params: Sequence[torch.Tensor], mu: float
) -> None:
    """``p.grad += mu * (p - p_global)``: the gradient of ``(mu/2) * ||w - w_global||^2``."""
    if mu == 0.0:
        return
    with torch.no_grad():
        for p, g in zip(params, global_params, strict=True):
            if p.grad is None:
                p.grad = mu * (p - g)
            else:
                p.grad.add_(p - g, alpha=mu)


class SGDStepper:
    """Plain (non-private) step: batch gradient, then proximal gradient, then SGD update."""

    def __init__(
        self, model: nn.Module, global_params: Sequence[torch.Tensor], cfg: TrainConfig
    ) -> None:
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.global_params = list(global_params)
        self.mu = cfg.mu
        self.loss_fn = make_loss(cfg.task, cfg.pos_weight, cfg.focal_gamma, reduction="mean")
        self.optimizer = torch.optim.SGD(
            self.params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )

    def compute_gradients(self, xb: torch.Tensor, yb: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(xb), yb)
        loss.backward()
        return float(loss.detach())

    def step(self, xb: torch.Tensor, yb: torch.Tensor) -> float:
        loss = self.compute_gradients(xb, yb)
        add_proximal_gradient(self.params, self.global_params, self.mu)
        self.optimizer.step()
        return loss


def _as_tensors(X: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise FraudflError(f"training data shapes do not match: X {X.shape}, y {y.shape}")
    if X.shape[0] == 0:
        raise FraudflError("cannot train on zero examples")
    return (
        torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
    )


def train_local(
    model: nn.Module,
    global_params: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    *,
    rng: np.random.Generator,
    work_fraction: float = 1.0,
    stepper_factory: StepperFactory = SGDStepper,
) -> LocalResult:
    """Train ``model`` from ``global_params`` on ``(X, y)`` and return the local parameters.

    ``work_fraction`` in (0, 1] scales the planned number of steps (at least one step is
    taken); the simulation gives stragglers a fraction below one. ``model`` is used as
    scratch space: its parameters are overwritten with ``global_params`` first.
    """
    if not 0.0 < work_fraction <= 1.0:
        raise FraudflError(f"work_fraction must be in (0, 1], got {work_fraction}")
    X_t, y_t = _as_tensors(X, y)
    n = X_t.shape[0]
    set_flat_params(model, global_params)
    model.train()
    anchor = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    stepper = stepper_factory(model, anchor, cfg)

    planned = cfg.planned_steps(n)
    todo = planned if work_fraction >= 1.0 else max(1, round(work_fraction * planned))
    bs = cfg.batch_size
    done = 0
    loss_sum = 0.0
    while done < todo:
        # One gather per epoch, then contiguous slices: much cheaper than indexing per batch.
        perm = torch.from_numpy(rng.permutation(n))
        X_epoch, y_epoch = X_t[perm], y_t[perm]
        for start in range(0, n, bs):
            loss_sum += stepper.step(X_epoch[start : start + bs], y_epoch[start : start + bs])
            done += 1
            if done >= todo:
                break
    return LocalResult(
        params=get_flat_params(model),
        num_examples=n,
        steps_done=done,
        steps_planned=planned,
        loss=loss_sum / done,
        work_fraction=work_fraction,
    )
