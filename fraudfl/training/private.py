"""Record-level DP-SGD local training with Opacus, charged to the bank's accountant.

Same shape as :func:`fraudfl.training.local.train_local` (plus the bank's accountant and the
DP settings), returning the same :class:`LocalResult` extended with the epsilon spent so far, so
the simulation and the bank node swap it in.

How a round goes:

1. The planned number of steps at sample rate ``q = 1 / ceil(n / batch_size)`` (what Opacus'
   Poisson loader uses) is *authorised* by the accountant first; over budget, it raises
   :class:`~fraudfl.privacy.accountant.BudgetExhausted` and nothing is trained.
2. Opacus' ``PrivacyEngine.make_private`` wraps a private copy of the model: Poisson sampling,
   per-sample clipping to ``max_grad_norm``, Gaussian noise ``noise_multiplier * max_grad_norm``.
   Ghost clipping (``grad_sample_mode="ghost"``) computes per-sample gradient *norms* without
   materialising per-sample gradients for Linear layers; it is the default because it is several
   times cheaper than hooks mode on the fraud MLP.
3. The optimiser's step hook (which Opacus runs after noising and averaging, right before the
   underlying SGD step) charges the step to the bank's accountant and adds the FedProx gradient
   ``mu * (w - w_global)``. FedProx as a loss term would be silently dropped: Opacus replaces
   ``p.grad`` by the noised sum of clipped per-sample gradients, and the proximal term has no
   per-sample gradient. It is data-independent, so adding it after the noise costs no privacy.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fraudfl.errors import FraudflError
from fraudfl.models import get_flat_params, make_loss, set_flat_params
from fraudfl.privacy.accountant import PrivacyAccountant
from fraudfl.training.local import LocalResult, TrainConfig, _as_tensors, add_proximal_gradient

log = logging.getLogger(__name__)

GradSampleMode = Literal["ghost", "hooks", "functorch"]
GRAD_SAMPLE_MODES: tuple[GradSampleMode, ...] = ("ghost", "hooks", "functorch")


@dataclass(frozen=True)
class DPConfig:
    """Record-level DP-SGD settings of one bank."""

    noise_multiplier: float
    max_grad_norm: float = 1.0
    grad_sample_mode: GradSampleMode = "ghost"

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise FraudflError(f"noise_multiplier must be > 0, got {self.noise_multiplier}")
        if not self.max_grad_norm > 0:
            raise FraudflError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if self.grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise FraudflError(
                f"grad_sample_mode must be one of {GRAD_SAMPLE_MODES}, "
                f"got {self.grad_sample_mode!r}"
            )


@dataclass
class PrivateLocalResult(LocalResult):
    """A :class:`LocalResult` plus the bank's record-level privacy after this round."""

    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float


def dp_sample_rate(num_examples: int, batch_size: int) -> float:
    """The Poisson sampling rate Opacus derives from a loader of ``batch_size`` batches."""
    return 1.0 / -(-num_examples // batch_size)


def dp_planned_steps(cfg: TrainConfig, num_examples: int, work_fraction: float = 1.0) -> int:
    """Steps of a round: ``train_local``'s plan (epochs x ceil(n/B), or ``max_steps``)."""
    planned = cfg.planned_steps(num_examples)
    return planned if work_fraction >= 1.0 else max(1, round(work_fraction * planned))


class _BatchedTensors(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Tensor dataset whose batches are one gather each (``__getitems__``), not n item fetches.

    The Poisson sampler of Opacus' loader yields index lists; fetching items one by one and
    collating them dominated a DP step on small models.
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor) -> None:
        self.X, self.y = X, y

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.X[i], self.y[i]

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        idx = torch.tensor(indices, dtype=torch.int64)
        return [self.X[idx], self.y[idx]]


def _already_batched(batch: list[torch.Tensor]) -> list[torch.Tensor]:
    return batch


def _torch_generator(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))


def train_private(
    model: nn.Module,
    global_params: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    *,
    rng: np.random.Generator,
    work_fraction: float = 1.0,
    accountant: PrivacyAccountant,
    dp: DPConfig,
) -> PrivateLocalResult:
    """DP-SGD from ``global_params`` on ``(X, y)``; every step is charged to ``accountant``.

    Raises ``BudgetExhausted`` (before touching the data) if the round would exceed the bank's
    budget. ``rng`` seeds Poisson sampling and noise; a bank in production passes a generator
    seeded from ``os.urandom`` (Opacus' ``secure_mode`` needs torchcsprng, not installed).
    ``model`` ends holding the local parameters, as with ``train_local``.
    """
    if not 0.0 < work_fraction <= 1.0:
        raise FraudflError(f"work_fraction must be in (0, 1], got {work_fraction}")
    if accountant.budget is None:
        raise FraudflError(f"{accountant.label}: private training needs a privacy budget")
    X_t, y_t = _as_tensors(X, y)
    n = int(X_t.shape[0])
    planned = cfg.planned_steps(n)
    todo = dp_planned_steps(cfg, n, work_fraction)
    sample_rate = dp_sample_rate(n, cfg.batch_size)
    accountant.authorize(dp.noise_multiplier, sample_rate, todo)
    try:
        params, loss = _run_dp_sgd(
            model, global_params, X_t, y_t, cfg, dp, accountant, sample_rate, todo, rng
        )
    finally:
        unused = accountant.end_round()
    if unused:
        raise RuntimeError(f"{accountant.label}: {unused} authorised DP steps were not taken")
    set_flat_params(model, params)
    epsilon = accountant.epsilon()
    log.info(
        "%s: DP round of %d steps (noise %.3f, q %.4f): epsilon %.4f of %.4g",
        accountant.label, todo, dp.noise_multiplier, sample_rate, epsilon,
        accountant.budget.epsilon,
    )
    return PrivateLocalResult(
        params=params,
        num_examples=n,
        steps_done=todo,
        steps_planned=planned,
        loss=loss,
        work_fraction=work_fraction,
        epsilon=epsilon,
        delta=accountant.budget.delta,
        noise_multiplier=dp.noise_multiplier,
        sample_rate=sample_rate,
    )


def _run_dp_sgd(
    model: nn.Module,
    global_params: np.ndarray,
    X_t: torch.Tensor,
    y_t: torch.Tensor,
    cfg: TrainConfig,
    dp: DPConfig,
    accountant: PrivacyAccountant,
    sample_rate: float,
    steps: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, float]:
    # A private copy: Opacus attaches hooks and attributes to the module it wraps, and the
    # caller's model is reused across banks and rounds.
    work = copy.deepcopy(model)
    set_flat_params(work, global_params)
    work.train()
    params = [p for p in work.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params]
    optimizer = torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    criterion = make_loss(cfg.task, cfg.pos_weight, cfg.focal_gamma, reduction="mean")
    loader = DataLoader(
        _BatchedTensors(X_t, y_t),
        batch_size=cfg.batch_size,
        collate_fn=_already_batched,
        generator=_torch_generator(rng),
    )
    engine = PrivacyEngine(accountant=accountant.mechanism)
    private: tuple[Any, ...] = engine.make_private(
        module=work,
        optimizer=optimizer,
        criterion=criterion,
        data_loader=loader,
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        poisson_sampling=True,
        grad_sample_mode=dp.grad_sample_mode,
        noise_generator=_torch_generator(rng),
    )
    if dp.grad_sample_mode == "ghost":
        dp_model, dp_optimizer, dp_criterion, dp_loader = private
    else:
        dp_model, dp_optimizer, dp_loader = private
        dp_criterion = criterion
    if abs(dp_loader.sample_rate - sample_rate) > 1e-12:
        raise RuntimeError(f"Opacus samples at {dp_loader.sample_rate}, accounted {sample_rate}")

    def after_noise(optim: DPOptimizer) -> None:
        # Replaces Opacus' own accounting hook: the bank's accountant is the one ledger.
        accountant.step(optim.noise_multiplier, sample_rate)
        add_proximal_gradient(params, anchor, cfg.mu)

    dp_optimizer.attach_step_hook(after_noise)
    done = 0
    nonempty = 0
    loss_sum = 0.0
    try:
        while done < steps:
            for xb, yb in dp_loader:
                dp_optimizer.zero_grad(set_to_none=True)
                loss = dp_criterion(dp_model(xb), yb)
                loss.backward()
                dp_optimizer.step()
                if len(yb):  # an empty Poisson batch still takes a (pure-noise) step
                    loss_sum += float(loss.item())
                    nonempty += 1
                done += 1
                if done >= steps:
                    break
    finally:
        dp_model._close()
    return get_flat_params(work), loss_sum / max(1, nonempty)
