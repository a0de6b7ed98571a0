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
  Linear/LayerNorm/HashedEmbedding models of :mod:`fraudfl.models`, with Opacus' Poisson
  sampling (reproduced draw for draw) and Opacus' noise recipe.
  On the fraud MLP, Opacus' hook machinery costs 7-10x a non-private epoch; this costs about
  1.8x (``benchmarks/dp_overhead.py``, ``docs/privacy.md``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from opacus.grad_sample.utils import register_grad_sampler, register_norm_sampler
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fraudfl.errors import FraudflError
from fraudfl.models import (
    BinaryLoss,
    HashedEmbedding,
    get_flat_params,
    make_loss,
    set_flat_params,
)
from fraudfl.privacy.accountant import PrivacyAccountant
from fraudfl.privacy.options import DP_ENGINES, DPEngine
from fraudfl.training.local import (
    LocalResult,
    SGDStepper,
    TrainConfig,
    _as_tensors,
    add_proximal_gradient,
)

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
    sample_generator = _torch_generator(rng)
    noise_generator = _torch_generator(rng)

    def after_noise(noise_multiplier: float) -> None:
        # The bank's accountant is the one ledger (it replaces Opacus' own accounting hook).
        accountant.step(noise_multiplier, sample_rate)
        add_proximal_gradient(params, anchor, cfg.mu)

    if dp.engine == "vectorized":
        step_fn, batches, close = _vectorized_engine(
            work, params, anchor, X_t, y_t, cfg, dp, sample_rate, steps, sample_generator,
            noise_generator, after_noise,
        )
    else:
        step_fn, batches, close = _opacus_engine(
            work, params, X_t, y_t, cfg, dp, accountant, sample_rate, steps, sample_generator,
            noise_generator, after_noise,
        )
    nonempty = 0
    loss_sum = 0.0
    try:
        for xb, yb in batches:
            loss = step_fn(xb, yb)
            if len(yb):  # an empty Poisson batch still takes a (pure-noise) step
                loss_sum += loss
                nonempty += 1
    finally:
        close()
    return get_flat_params(work), loss_sum / max(1, nonempty)


# (one step on a batch -> its mean loss, exactly the round's batches, clean-up)
_Engine = tuple[
    Callable[[torch.Tensor, torch.Tensor], float],
    Iterator[tuple[torch.Tensor, torch.Tensor]],
    Callable[[], None],
]


def _opacus_engine(
    work: nn.Module,
    params: Sequence[nn.Parameter],
    X_t: torch.Tensor,
    y_t: torch.Tensor,
    cfg: TrainConfig,
    dp: DPConfig,
    accountant: PrivacyAccountant,
    sample_rate: float,
    steps: int,
    sample_generator: torch.Generator,
    noise_generator: torch.Generator,
    after_noise: Callable[[float], None],
) -> _Engine:
    """Opacus ``PrivacyEngine.make_private`` in the configured grad-sample mode."""
    criterion = make_loss(cfg.task, cfg.pos_weight, cfg.focal_gamma, reduction="mean")
    optimizer = torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    loader = DataLoader(
        _BatchedTensors(X_t, y_t),
        batch_size=cfg.batch_size,
        collate_fn=_already_batched,
        generator=sample_generator,
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

    if abs(dp_loader.sample_rate - sample_rate) > 1e-12:
        raise RuntimeError(f"Opacus samples at {dp_loader.sample_rate}, accounted {sample_rate}")
    return step, _loader_batches(dp_loader, steps), dp_model._close


def _loader_batches(
    loader: DPDataLoader, steps: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` batches from passes over ``loader``."""
    done = 0
    while True:
        for xb, yb in loader:
            yield xb, yb
            done += 1
            if done >= steps:
                return


def _embedding_slices(
    layer: HashedEmbedding, activations: torch.Tensor, backprops: torch.Tensor
) -> list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]]:
    """Per table: its input block ``a`` and the gradient ``g`` of its output columns; the
    table's per-sample gradient is ``a_i g_i^T``."""
    out = []
    offset = len(layer.dense_index)
    for (start, width), table in zip(layer.blocks, layer.tables, strict=True):
        a = activations[:, start : start + width].to(backprops.dtype)
        out.append((table, a, backprops[:, offset : offset + layer.dim]))
        offset += layer.dim
    return out


def _embedding_grad_sample(
    layer: HashedEmbedding, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Opacus' per-sample gradients of the embedding tables (hooks and functorch modes)."""
    return {
        table: torch.einsum("ni,nj->nij", a, g)
        for table, a, g in _embedding_slices(layer, activations[0], backprops)
        if table.requires_grad
    }


def _embedding_norm_sample(
    layer: HashedEmbedding, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Opacus' per-sample gradient norms (ghost mode): ``|a_i| |g_i|`` for an outer product."""
    return {
        table: a.norm(dim=1) * g.norm(dim=1)
        for table, a, g in _embedding_slices(layer, activations[0], backprops)
        if table.requires_grad
    }


register_grad_sampler(HashedEmbedding)(_embedding_grad_sample)
register_norm_sampler(HashedEmbedding)(_embedding_norm_sample)


class _PerSampleClipper:
    """Exact per-sample clipping for Sequential stacks of Linear / LayerNorm / HashedEmbedding /
    parameter-free layers (every model in :mod:`fraudfl.models`), in one forward and one
    backward pass.

    With ``g_i`` the gradient of sample i's loss w.r.t. a layer's output and ``a_i`` its input,
    a Linear layer's per-sample weight gradient is ``g_i a_i^T`` with squared norm
    ``|g_i|^2 |a_i|^2``, its bias gradient ``g_i``; a LayerNorm's are ``g_i * xhat_i`` and
    ``g_i``; an embedding table's ``a_i g_i^T`` over its input block and output columns.
    The clipped sum over the batch is then one matmul per layer: the ghost-clipping
    identity (Li et al. 2022, Bu et al. 2023) without materialising per-sample gradients and
    without the second backward pass and hook machinery that dominate a DP step on small models.

    The backward pass is written out with ATen's own backward kernels (``mm``,
    ``native_layer_norm_backward``, ``threshold_backward``): autograd's graph building and
    engine cost more than the arithmetic at these sizes, and only the loss (any of
    :func:`fraudfl.models.make_loss`'s) and parameter-free layers other than ReLU go through
    autograd, one node at a time.
    """

    def __init__(self, model: nn.Module, max_grad_norm: float) -> None:
        if not isinstance(model, nn.Sequential):
            raise FraudflError("the vectorized DP engine needs an nn.Sequential model")
        self.max_grad_norm = max_grad_norm
        # Per layer: (kind, layer, weight, bias), looked up once, not per step.
        self.plan: list[tuple[str, nn.Module, torch.Tensor | None, torch.Tensor | None]] = []
        covered: list[nn.Parameter] = []
        for layer in model:
            own = list(layer.parameters())
            if isinstance(layer, nn.Linear | nn.LayerNorm):
                covered += own
                kind = _LINEAR if isinstance(layer, nn.Linear) else _NORM
                self.plan.append((kind, layer, layer.weight, layer.bias))
            elif isinstance(layer, HashedEmbedding):
                covered += own
                self.plan.append((_EMBED, layer, None, None))
            elif own:
                raise FraudflError(
                    f"the vectorized DP engine cannot clip {type(layer).__name__} layers; "
                    "use an Opacus engine (ghost/hooks)"
                )
            else:
                self.plan.append((_RELU if isinstance(layer, nn.ReLU) else _OTHER, layer,
                                  None, None))
        if [id(p) for p in covered] != [id(p) for p in model.parameters()]:
            raise FraudflError("the vectorized DP engine needs layers in parameter order")

    def clipped_grad_sum(
        self, xb: torch.Tensor, yb: torch.Tensor, loss_fn: nn.Module,
        out: Sequence[torch.Tensor],
    ) -> float:
        """Write the sum over the batch of per-sample gradients clipped to ``max_grad_norm``
        into ``out`` (one tensor per parameter, in ``model.parameters()`` order and shapes);
        return the batch's mean loss."""
        saved: list[tuple[torch.Tensor, ...]] = []  # what each layer's backward needs
        h = xb
        with torch.no_grad():
            for kind, layer, weight, bias in self.plan:
                if kind is _LINEAR:
                    saved.append((h,))
                    h = F.linear(h, weight, bias)  # type: ignore[arg-type]
                elif kind is _NORM:
                    norm: nn.LayerNorm = layer  # type: ignore[assignment]
                    normed, mean, rstd = torch.native_layer_norm(
                        h, norm.normalized_shape, weight, bias, norm.eps
                    )
                    saved.append((h, mean, rstd))
                    h = normed
                elif kind is _RELU:
                    h = torch.relu(h)
                    saved.append((h,))
                elif kind is _EMBED:
                    saved.append((h,))
                    h = layer(h)
                else:
                    with torch.enable_grad():
                        a = h.detach().requires_grad_()
                        h = layer(a)
                    saved.append((a, h))
                    h = h.detach()
        loss, g = _loss_and_logit_gradient(loss_fn, h, yb)
        with torch.no_grad():
            n = xb.shape[0]
            sq_norms = torch.zeros(n, dtype=xb.dtype)
            # Per parameter, in reverse: (kind, has bias, output gradients, their weight
            # feature); an embedding table's "gradients" are its input block.
            parts: list[tuple[str, bool, torch.Tensor, torch.Tensor]] = []
            for i in range(len(self.plan) - 1, -1, -1):
                kind, layer, weight, bias = self.plan[i]
                if kind is _LINEAR:
                    (a,) = saved[i]
                    a_sq = torch.linalg.vecdot(a, a)
                    if bias is not None:
                        a_sq += 1.0
                    sq_norms.addcmul_(torch.linalg.vecdot(g, g), a_sq)
                    parts.append((_LINEAR, bias is not None, g, a))
                    if i:
                        g = g.mm(weight)  # type: ignore[arg-type]
                elif kind is _NORM:
                    a, mean, rstd = saved[i]
                    if weight is not None:
                        g_xhat = g * ((a - mean) * rstd)  # per-sample weight gradients
                        sq_norms += torch.linalg.vecdot(g_xhat, g_xhat)
                        if bias is not None:
                            sq_norms += torch.linalg.vecdot(g, g)
                        parts.append((_NORM, bias is not None, g, g_xhat))
                    g = torch.ops.aten.native_layer_norm_backward(
                        g, a, layer.normalized_shape, mean, rstd, weight, bias,
                        [True, False, False],
                    )[0]
                elif kind is _RELU:
                    g = torch.ops.aten.threshold_backward(g, saved[i][0], 0)
                elif kind is _EMBED:
                    embed: HashedEmbedding = layer  # type: ignore[assignment]
                    (a,) = saved[i]
                    slices = _embedding_slices(embed, a, g)
                    for _, block, g_block in reversed(slices):
                        sq_norms.addcmul_(torch.linalg.vecdot(g_block, g_block),
                                          torch.linalg.vecdot(block, block))
                        parts.append((_EMBED, False, block, g_block))
                    if i:
                        g_in = torch.zeros_like(a)
                        g_in[:, embed.dense_index] = g[:, : len(embed.dense_index)]
                        for (start, width), (table, _, g_block) in zip(
                            embed.blocks, slices, strict=True
                        ):
                            g_in[:, start : start + width] = g_block.mm(table.T)
                        g = g_in
                else:
                    a, y_out = saved[i]
                    with torch.enable_grad():
                        (g,) = torch.autograd.grad(y_out, a, g)
            # The same clip factor as Opacus' DPOptimizer.
            factor = (self.max_grad_norm / (sq_norms.sqrt_() + 1e-6)).clamp_(max=1.0)
            slots = iter(out)
            for kind, has_bias, g, feat in reversed(parts):
                if kind is _NORM:
                    torch.mv(feat.T, factor, out=next(slots))
                else:  # Linear: g^T (a * factor); embedding table: block^T (g * factor)
                    torch.mm(g.T, feat * factor.unsqueeze(1), out=next(slots))
                if has_bias:
                    torch.mv(g.T, factor, out=next(slots))
        return loss / max(1, n)


_LINEAR, _NORM, _RELU, _EMBED, _OTHER = "linear", "norm", "relu", "embed", "other"


def _loss_and_logit_gradient(
    loss_fn: nn.Module, logits: torch.Tensor, y: torch.Tensor
) -> tuple[float, torch.Tensor]:
    """The summed loss and its gradient w.r.t. ``logits`` (row i is sample i's own gradient).

    Class-weighted BCE, the fraud MLP's loss, in closed form, ``w_i (sigmoid(z_i) - y_i)``
    (what autograd computes through :class:`~fraudfl.models.BinaryLoss`, without building a
    graph for it each step); other losses through autograd."""
    if isinstance(loss_fn, BinaryLoss) and loss_fn.focal_gamma is None:
        with torch.no_grad():
            z = logits.view(-1)
            t = y.to(z.dtype)
            w = None if loss_fn.pos_weight is None else t * (loss_fn.pos_weight - 1.0) + 1.0
            loss = F.binary_cross_entropy_with_logits(z, t, weight=w, reduction="sum")
            g = torch.sigmoid(z).sub_(t)
            if w is not None:
                g.mul_(w)
            return float(loss), g.unsqueeze(1)
    with torch.enable_grad():
        z = logits.detach().requires_grad_()
        loss = loss_fn(z, y)  # reduction="sum": d loss / d z_i is sample i's own gradient
        (g,) = torch.autograd.grad(loss, z)
    return float(loss.detach()), g


def _poisson_batches(
    X: torch.Tensor, y: torch.Tensor, sample_rate: float, generator: torch.Generator,
    steps: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches Opacus' ``DPDataLoader`` over a ``DataLoader`` with ``generator`` yields,
    draw for draw: per pass of ``int(1 / q)`` batches, the DataLoader's base-seed draw, then per
    batch ``torch.rand(n) < q``. The uniforms go into one reused buffer and rows are gathered
    with index tensors: the loader's per-batch Python lists, collation and calls cost more
    than the rest of a step of the fraud MLP, and drawing the masks of many steps at once is
    slower (out of cache)."""
    per_pass = int(1 / sample_rate)
    uniforms = torch.empty(int(X.shape[0]))
    view = uniforms.numpy()
    done = 0
    while done < steps:
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        for _ in range(min(per_pass, steps - done)):
            uniforms.uniform_(generator=generator)  # the same stream as torch.rand(n)
            idx = torch.from_numpy(np.flatnonzero(view < sample_rate))
            yield X.index_select(0, idx), y.index_select(0, idx)
        done += per_pass


def _vectorized_engine(
    work: nn.Module,
    params: Sequence[nn.Parameter],
    anchor: Sequence[torch.Tensor],
    X_t: torch.Tensor,
    y_t: torch.Tensor,
    cfg: TrainConfig,
    dp: DPConfig,
    sample_rate: float,
    steps: int,
    sample_generator: torch.Generator,
    noise_generator: torch.Generator,
    after_noise: Callable[[float], None],
) -> _Engine:
    """DP-SGD with :class:`_PerSampleClipper`, Opacus' Poisson sampling
    (:func:`_poisson_batches`) and Opacus' noise recipe (``N(0, (sigma C)^2)`` per parameter,
    in parameter order, then division by the expected batch size), so that it reproduces
    Opacus' hooks mode step for step. The SGD update is :class:`SGDStepper`'s, written like
    ``torch.optim.SGD`` without its per-call bookkeeping."""
    clipper = _PerSampleClipper(work, dp.max_grad_norm)
    loss_fn = make_loss(cfg.task, cfg.pos_weight, cfg.focal_gamma, reduction="sum")
    update = SGDStepper(work, anchor, cfg).apply_update
    expected_batch_size = int(int(X_t.shape[0]) * sample_rate)
    std = dp.noise_multiplier * dp.max_grad_norm
    # Gradients and noise live in two flat buffers viewed per parameter: noise is still drawn
    # per parameter (Opacus' stream), but adding and scaling it are one operation each.
    grad_flat = torch.empty(sum(p.numel() for p in params))
    noise_flat = torch.empty_like(grad_flat)
    grads, noises = _views(grad_flat, params), _views(noise_flat, params)
    for p, g in zip(params, grads, strict=True):
        p.grad = g

    def step(xb: torch.Tensor, yb: torch.Tensor) -> float:
        loss = clipper.clipped_grad_sum(xb, yb, loss_fn, grads)
        for p, noise in zip(params, noises, strict=True):
            torch.normal(0.0, std, size=p.shape, generator=noise_generator, out=noise)
        grad_flat.add_(noise_flat).div_(expected_batch_size)
        after_noise(dp.noise_multiplier)
        update()
        return loss

    batches = _poisson_batches(X_t, y_t, sample_rate, sample_generator, steps)
    return step, batches, lambda: None


def _views(flat: torch.Tensor, params: Sequence[nn.Parameter]) -> list[torch.Tensor]:
    """``flat`` cut into tensors shaped like ``params``, sharing its memory."""
    views, offset = [], 0
    for p in params:
        views.append(flat[offset : offset + p.numel()].view(p.shape))
        offset += p.numel()
    return views
