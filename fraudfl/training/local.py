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
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise FraudflError(f"lr must be > 0, got {self.lr}")
        # Written so that NaN fails too: it passed "< 0" and only surfaced as a NaN model.
        if not (math.isfinite(self.mu) and self.mu >= 0):
            raise FraudflError(f"mu must be a finite number >= 0, got {self.mu}")
        if self.pos_weight is not None and not (
            math.isfinite(self.pos_weight) and self.pos_weight > 0
        ):
            raise FraudflError(f"pos_weight must be a finite number > 0, got {self.pos_weight}")
        if self.focal_gamma is not None and not (
            math.isfinite(self.focal_gamma) and self.focal_gamma >= 0
        ):
            raise FraudflError(
                f"focal_gamma must be a finite number >= 0, got {self.focal_gamma}"
            )
        if not 0 <= self.momentum < 1:
            raise FraudflError(f"momentum must be in [0, 1), got {self.momentum}")

    def planned_steps(self, num_examples: int) -> int:
        """Mini-batch steps in a full round of local work on ``num_examples`` examples."""
        if self.max_steps is not None:
            return self.max_steps
        return self.local_epochs * math.ceil(num_examples / self.batch_size)

    def steps_to_do(self, num_examples: int, work_fraction: float = 1.0) -> int:
        """Steps of a round in which the bank does ``work_fraction`` of its planned work (a
        straggler, below 1): at least one."""
        planned = self.planned_steps(num_examples)
        return planned if work_fraction >= 1.0 else max(1, round(work_fraction * planned))


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
    """Plain (non-private) step: batch gradient, then proximal gradient, then SGD update.

    The update follows ``torch.optim.SGD`` (weight decay, then momentum, then ``-lr``) but is
    written out: the optimiser's per-call bookkeeping costs more than the arithmetic for the
    small models and batches of a federation, and it pulls in torch's compiler stack at the
    first step (seconds of start-up).
    """

    def __init__(
        self, model: nn.Module, global_params: Sequence[torch.Tensor], cfg: TrainConfig
    ) -> None:
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.global_params = list(global_params)
        self.cfg = cfg
        self.loss_fn = make_loss(cfg.task, cfg.pos_weight, cfg.focal_gamma, reduction="mean")
        self.momentum_buffers: list[torch.Tensor] | None = None

    def compute_gradients(self, xb: torch.Tensor, yb: torch.Tensor) -> float:
        for p in self.params:
            p.grad = None
        loss = self.loss_fn(self.model(xb), yb)
        loss.backward()
        return float(loss.detach())

    def apply_update(self) -> None:
        cfg = self.cfg
        with torch.no_grad():
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
            if cfg.weight_decay:
                grads = [g.add(p, alpha=cfg.weight_decay) for g, p in zip(grads, self.params,
                                                                           strict=True)]
            if cfg.momentum:
                if self.momentum_buffers is None:
                    self.momentum_buffers = [g.detach().clone() for g in grads]
                else:
                    for buf, g in zip(self.momentum_buffers, grads, strict=True):
                        buf.mul_(cfg.momentum).add_(g)
                grads = self.momentum_buffers
            for p, g in zip(self.params, grads, strict=True):
                p.add_(g, alpha=-cfg.lr)

    def step(self, xb: torch.Tensor, yb: torch.Tensor) -> float:
        loss = self.compute_gradients(xb, yb)
        add_proximal_gradient(self.params, self.global_params, self.cfg.mu)
        self.apply_update()
        return loss


class LinearStepper:
    """The same step as :class:`SGDStepper` for a single-``Linear`` model, in closed form.

    For logistic regression the gradient of the (pos-weighted) cross-entropy is
    ``(p - onehot(y))^T x / B``; computing it with NumPy on views of the model's parameters
    avoids autograd and torch dispatch, which dominate the cost of the FedProx paper's
    setting (batch 10, thousands of steps per round). Tests check it against autograd.
    Focal loss is not covered: :func:`default_stepper` uses :class:`SGDStepper` for it.
    """

    def __init__(
        self, model: nn.Module, global_params: Sequence[torch.Tensor], cfg: TrainConfig
    ) -> None:
        linear = _single_linear(model)
        if linear is None or cfg.focal_gamma is not None:
            raise ValueError("LinearStepper needs a single nn.Linear model and no focal loss")
        # Views sharing memory with the model's parameters: updates land in the model.
        self.W = linear.weight.detach().numpy()
        self.b = linear.bias.detach().numpy()
        self.W0, self.b0 = (g.detach().numpy() for g in global_params)
        self.cfg = cfg
        self.binary = cfg.task == "binary"
        self.momentum: tuple[np.ndarray, np.ndarray] | None = None
        self._rows = np.arange(cfg.batch_size)

    def _logit_gradient(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        z = x @ self.W.T + self.b
        n = len(y)
        if self.binary:
            z1 = z[:, 0]
            t = y.astype(np.float32)
            per_sample = np.logaddexp(np.float32(0.0), z1) - t * z1
            p = 0.5 * (1.0 + np.tanh(0.5 * z1))  # sigmoid without overflow
            dz = p - t
            if self.cfg.pos_weight is not None:
                w = 1.0 + (self.cfg.pos_weight - 1.0) * t
                per_sample *= w
                dz *= w
            return (dz / n)[:, None].astype(np.float32), float(per_sample.sum()) / n
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        total = e.sum(axis=1, keepdims=True)
        rows = self._rows[:n]
        loss = (float(np.log(total).sum()) - float(z[rows, y].sum())) / n
        e /= total
        e[rows, y] -= 1.0
        e /= np.float32(n)
        return e, loss

    def step(self, xb: torch.Tensor, yb: torch.Tensor) -> float:
        x, y = xb.numpy(), yb.numpy()
        dz, loss = self._logit_gradient(x, y)
        cfg = self.cfg
        gW = dz.T @ x
        gb = dz.sum(axis=0)
        if cfg.mu:
            gW += cfg.mu * (self.W - self.W0)
            gb += cfg.mu * (self.b - self.b0)
        if cfg.weight_decay:
            gW += cfg.weight_decay * self.W
            gb += cfg.weight_decay * self.b
        if cfg.momentum:
            if self.momentum is None:
                self.momentum = (gW.copy(), gb.copy())
            else:
                mW, mb = self.momentum
                mW *= cfg.momentum
                mW += gW
                mb *= cfg.momentum
                mb += gb
            gW, gb = self.momentum
        self.W -= cfg.lr * gW
        self.b -= cfg.lr * gb
        return loss


def _single_linear(model: nn.Module) -> nn.Linear | None:
    layers = list(model.children()) if isinstance(model, nn.Sequential) else [model]
    if len(layers) == 1 and type(layers[0]) is nn.Linear and layers[0].bias is not None:
        linear: nn.Linear = layers[0]
        return linear
    return None


def default_stepper(
    model: nn.Module, global_params: Sequence[torch.Tensor], cfg: TrainConfig
) -> BatchStepper:
    """:class:`LinearStepper` where it applies (logistic models), else :class:`SGDStepper`."""
    if _single_linear(model) is not None and cfg.focal_gamma is None:
        return LinearStepper(model, global_params, cfg)
    return SGDStepper(model, global_params, cfg)


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
    stepper_factory: StepperFactory = default_stepper,
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
    todo = cfg.steps_to_do(n, work_fraction)
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


class LocalTrainer(Protocol):
    """How personal training runs (fine-tuning, Ditto): plain, or DP-SGD through the bank's
    accountant (:func:`fraudfl.personalization.private_trainer`)."""

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
    ) -> LocalResult: ...


def plain_trainer(
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
    """The default, non-private local training."""
    return train_local(model, global_params, X, y, cfg, rng=rng, work_fraction=work_fraction)
