"""Record-level DP-SGD local training with Opacus, charged to the bank's accountant.

Same shape as :func:`fraudfl.training.local.train_local` (plus the bank's accountant and the
DP settings), returning the same :class:`LocalResult` extended with the epsilon spent so far, so
the simulation and the bank node swap it in.

How a round goes:

1. The planned number of steps at sample rate ``q = 1 / ceil(n / batch_size)`` (what Opacus'
   Poisson loader uses) is *authorised* by the accountant first; over budget, it raises
   :class:`~fraudfl.privacy.accountant.BudgetExhausted` and nothing is trained.
2. DP-SGD on a private copy of the model: Opacus' Poisson-sampling loader, per-sample clipping
   to ``max_grad_norm``, Gaussian noise ``noise_multiplier * max_grad_norm``, division by the
   expected batch size, then the SGD step.
3. After the noise and before the SGD step, the step is charged to the bank's accountant and the
   FedProx gradient ``mu * (w - w_global)`` is added. FedProx as a loss term would be silently
   dropped: Opacus replaces ``p.grad`` by the noised sum of clipped per-sample gradients, and
   the proximal term has no per-sample gradient. It is data-independent, so adding it after
   the noise costs no privacy.

Engines (``DPConfig.engine``), all giving the same model for the same seeds (tested):

- ``ghost``, ``hooks``, ``functorch``: Opacus ``PrivacyEngine.make_private`` in that
  grad-sample mode; the optimiser's step hook does step 3.
- ``vectorized`` (default): the ghost-clipping identity computed directly for the Sequential
  Linear/LayerNorm models of :mod:`fraudfl.models`, with Opacus' loader and Opacus' noise recipe.
  On the fraud MLP, Opacus' hook machinery costs 7-8x a non-private epoch; this costs about
  2.8x (``benchmarks/dp_overhead.py``, ``docs/privacy.md``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fraudfl.errors import FraudflError
from fraudfl.models import get_flat_params, make_loss, set_flat_params
from fraudfl.privacy.accountant import PrivacyAccountant
from fraudfl.privacy.options import DP_ENGINES, DPEngine
from fraudfl.training.local import LocalResult, TrainConfig, _as_tensors, add_proximal_gradient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DPConfig:
    """Record-level DP-SGD settings of one bank."""

    noise_multiplier: float
    max_grad_norm: float = 1.0
    engine: DPEngine = "vectorized"

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise FraudflError(f"noise_multiplier must be > 0, got {self.noise_multiplier}")
        if not self.max_grad_norm > 0:
            raise FraudflError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if self.engine not in DP_ENGINES:
            raise FraudflError(f"DP engine must be one of {DP_ENGINES}, got {self.engine!r}")


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
    return cfg.steps_to_do(num_examples, work_fraction)


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
    loader = DataLoader(
        _BatchedTensors(X_t, y_t),
        batch_size=cfg.batch_size,
        collate_fn=_already_batched,
        generator=_torch_generator(rng),
    )
    noise_generator = _torch_generator(rng)

    def after_noise(noise_multiplier: float) -> None:
        # The bank's accountant is the one ledger (it replaces Opacus' own accounting hook).
        accountant.step(noise_multiplier, sample_rate)
        add_proximal_gradient(params, anchor, cfg.mu)

    if dp.engine == "vectorized":
        step_fn, dp_loader, close = _vectorized_engine(
            work, params, optimizer, cfg, dp, loader, noise_generator, after_noise
        )
    else:
        step_fn, dp_loader, close = _opacus_engine(
            work, optimizer, cfg, dp, accountant, loader, noise_generator, after_noise
        )
    if abs(dp_loader.sample_rate - sample_rate) > 1e-12:
        raise RuntimeError(f"Opacus samples at {dp_loader.sample_rate}, accounted {sample_rate}")
    done = 0
    nonempty = 0
    loss_sum = 0.0
    try:
        while done < steps:
            for xb, yb in dp_loader:
                loss = step_fn(xb, yb)
                if len(yb):  # an empty Poisson batch still takes a (pure-noise) step
                    loss_sum += loss
                    nonempty += 1
                done += 1
                if done >= steps:
                    break
    finally:
        close()
    return get_flat_params(work), loss_sum / max(1, nonempty)


_Engine = tuple[Callable[[torch.Tensor, torch.Tensor], float], DPDataLoader, Callable[[], None]]


def _opacus_engine(
    work: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    dp: DPConfig,
    accountant: PrivacyAccountant,
    loader: DataLoader[Any],
    noise_generator: torch.Generator,
    after_noise: Callable[[float], None],
) -> _Engine:
    """Opacus ``PrivacyEngine.make_private`` in the configured grad-sample mode."""
    criterion = make_loss(cfg.task, cfg.pos_weight, cfg.focal_gamma, reduction="mean")
    engine = PrivacyEngine(accountant=accountant.mechanism)
    private: tuple[Any, ...] = engine.make_private(
        module=work,
        optimizer=optimizer,
        criterion=criterion,
        data_loader=loader,
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        poisson_sampling=True,
        grad_sample_mode=dp.engine,
        noise_generator=noise_generator,
    )
    if dp.engine == "ghost":
        # Ghost clipping needs the wrapped criterion: its backward runs the two passes.
        dp_model, dp_optimizer, dp_criterion, dp_loader = private
    else:
        dp_model, dp_optimizer, dp_loader = private
        dp_criterion = criterion
    # Opacus runs the step hook after clipping, noising and averaging, before the SGD step.
    dp_optimizer.attach_step_hook(lambda optim: after_noise(optim.noise_multiplier))

    def step(xb: torch.Tensor, yb: torch.Tensor) -> float:
        dp_optimizer.zero_grad(set_to_none=True)
        loss = dp_criterion(dp_model(xb), yb)
        loss.backward()
        dp_optimizer.step()
        return float(loss.item()) if len(yb) else 0.0

    return step, dp_loader, dp_model._close


class _PerSampleClipper:
    """Exact per-sample clipping for Sequential stacks of Linear / LayerNorm / parameter-free
    layers (every model in :mod:`fraudfl.models`), in one forward and one backward pass.

    With ``g_i`` the gradient of sample i's loss w.r.t. a layer's output and ``a_i`` its input,
    a Linear layer's per-sample weight gradient is ``g_i a_i^T`` with squared norm
    ``|g_i|^2 |a_i|^2``, its bias gradient ``g_i``; a LayerNorm's are ``g_i * xhat_i`` and
    ``g_i``. The clipped sum over the batch is then one matmul per layer: the ghost-clipping
    identity (Li et al. 2022, Bu et al. 2023) without materialising per-sample gradients and
    without the second backward pass and hook machinery that dominate a DP step on small models.
    """

    def __init__(self, model: nn.Module, max_grad_norm: float) -> None:
        if not isinstance(model, nn.Sequential):
            raise FraudflError("the vectorized DP engine needs an nn.Sequential model")
        self.layers = list(model)
        self.max_grad_norm = max_grad_norm
        self.param_layers: list[nn.Linear | nn.LayerNorm] = []
        covered: list[nn.Parameter] = []
        for layer in self.layers:
            own = list(layer.parameters())
            if isinstance(layer, nn.Linear) or (
                isinstance(layer, nn.LayerNorm) and layer.elementwise_affine
            ):
                self.param_layers.append(layer)
                covered += own
            elif own:
                raise FraudflError(
                    f"the vectorized DP engine cannot clip {type(layer).__name__} layers; "
                    "use an Opacus engine (ghost/hooks)"
                )
        if [id(p) for p in covered] != [id(p) for p in model.parameters()]:
            raise FraudflError("the vectorized DP engine needs layers in parameter order")

    def clipped_grad_sum(
        self, xb: torch.Tensor, yb: torch.Tensor, loss_fn: nn.Module
    ) -> tuple[list[torch.Tensor], float]:
        """Sum over the batch of per-sample gradients clipped to ``max_grad_norm`` (flat), in
        ``model.parameters()`` order, and the batch's mean loss."""
        inputs: list[torch.Tensor] = []
        outputs: list[torch.Tensor] = []
        h = xb
        for layer in self.layers:
            out = layer(h)
            if any(layer is p for p in self.param_layers):
                inputs.append(h.detach())
                outputs.append(out)
            h = out
        loss = loss_fn(h, yb)  # reduction="sum": d loss / d out_i is sample i's own gradient
        backprops = torch.autograd.grad(loss, outputs)
        with torch.no_grad():
            sq_norms = torch.zeros(xb.shape[0], dtype=xb.dtype)
            features: list[torch.Tensor] = []
            for layer, a, g in zip(self.param_layers, inputs, backprops, strict=True):
                g_sq = g.pow(2).sum(1)
                if isinstance(layer, nn.Linear):
                    feat = a
                    sq_norms += g_sq * a.pow(2).sum(1)
                else:
                    feat = F.layer_norm(a, layer.normalized_shape, eps=layer.eps)
                    sq_norms += (g * feat).pow(2).sum(1)
                if layer.bias is not None:
                    sq_norms += g_sq
                features.append(feat)
            # The same clip factor as Opacus' DPOptimizer.
            factor = (self.max_grad_norm / (sq_norms.sqrt() + 1e-6)).clamp(max=1.0)
            sums: list[torch.Tensor] = []
            for layer, feat, g in zip(self.param_layers, features, backprops, strict=True):
                gf = g * factor.unsqueeze(1)
                sums.append(gf.T @ feat if isinstance(layer, nn.Linear) else (gf * feat).sum(0))
                if layer.bias is not None:
                    sums.append(gf.sum(0))
        n = max(1, int(xb.shape[0]))
        return sums, float(loss.detach()) / n


def _vectorized_engine(
    work: nn.Module,
    params: Sequence[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    dp: DPConfig,
    loader: DataLoader[Any],
    noise_generator: torch.Generator,
    after_noise: Callable[[float], None],
) -> _Engine:
    """DP-SGD with :class:`_PerSampleClipper`, Opacus' Poisson loader and Opacus' noise recipe
    (``N(0, (sigma C)^2)`` per parameter, in parameter order, then division by the expected
    batch size), so that it reproduces Opacus' hooks mode step for step."""
    clipper = _PerSampleClipper(work, dp.max_grad_norm)
    loss_fn = make_loss(cfg.task, cfg.pos_weight, cfg.focal_gamma, reduction="sum")
    dp_loader = DPDataLoader.from_data_loader(loader)
    expected_batch_size = int(len(loader.dataset) * dp_loader.sample_rate)  # type: ignore[arg-type]
    std = dp.noise_multiplier * dp.max_grad_norm

    def step(xb: torch.Tensor, yb: torch.Tensor) -> float:
        sums, loss = clipper.clipped_grad_sum(xb, yb, loss_fn)
        with torch.no_grad():
            for p, s in zip(params, sums, strict=True):
                noise = torch.normal(0.0, std, size=p.shape, generator=noise_generator,
                                     dtype=p.dtype)
                p.grad = (s.reshape(p.shape) + noise) / expected_batch_size
        after_noise(dp.noise_multiplier)
        optimizer.step()
        return loss

    return step, dp_loader, lambda: None
