"""Models for tabular fraud data, flat parameter vectors, and imbalance-aware losses.

Every model here is built only from layers Opacus computes per-sample gradients for (Linear,
ReLU, LayerNorm): no BatchNorm, whose statistics would mix samples and break DP-SGD.

Parameters travel between banks and the aggregator as one flat float32 vector in
``model.parameters()`` order (see ``docs/architecture.md``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fraudfl.errors import FraudflError

ModelKind = Literal["logistic", "mlp"]
Task = Literal["binary", "multiclass"]
Reduction = Literal["mean", "sum", "none"]

MODEL_KINDS: tuple[ModelKind, ...] = ("logistic", "mlp")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model on another machine (before loading its parameters)."""

    kind: ModelKind
    num_features: int
    num_classes: int
    hidden: tuple[int, ...] = field(default=(64, 32))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "num_features": self.num_features,
            "num_classes": self.num_classes,
            "hidden": list(self.hidden),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        try:
            kind = data["kind"]
            num_features = data["num_features"]
            num_classes = data["num_classes"]
            hidden = data.get("hidden", [64, 32])
        except KeyError as exc:
            raise FraudflError(f"model spec: missing field {exc.args[0]!r}") from exc
        if kind not in MODEL_KINDS:
            raise FraudflError(
                f"model spec: field 'kind' must be one of {MODEL_KINDS}, got {kind!r}"
            )
        if not isinstance(num_features, int) or not isinstance(num_classes, int):
            raise FraudflError("model spec: 'num_features' and 'num_classes' must be integers")
        if not isinstance(hidden, list | tuple) or not all(isinstance(h, int) for h in hidden):
            raise FraudflError("model spec: 'hidden' must be a list of integers")
        return cls(kind=kind, num_features=num_features, num_classes=num_classes,
                   hidden=tuple(hidden))

    @property
    def num_outputs(self) -> int:
        return output_size(self.num_classes)

    @property
    def num_params(self) -> int:
        sizes = [self.num_features, *self.hidden] if self.kind == "mlp" else [self.num_features]
        sizes.append(self.num_outputs)
        total = sum(a * b + b for a, b in itertools.pairwise(sizes))
        if self.kind == "mlp":
            total += sum(2 * h for h in self.hidden)  # LayerNorm weight and bias
        return total

    def build(self, seed: int = 0) -> nn.Module:
        return build_model(self.kind, self.num_features, self.num_classes, self.hidden, seed=seed)


def output_size(num_classes: int) -> int:
    """Binary tasks use one logit (sigmoid); multi-class tasks one logit per class."""
    if num_classes < 2:
        raise FraudflError(f"a model needs at least 2 classes, got num_classes={num_classes}")
    return 1 if num_classes == 2 else num_classes


def build_model(
    kind: ModelKind,
    num_features: int,
    num_classes: int,
    hidden: Sequence[int] = (64, 32),
    *,
    seed: int = 0,
) -> nn.Module:
    """Build a logistic-regression or MLP model with a seeded initialisation.

    Binary tasks (``num_classes == 2``) get one output logit, multi-class tasks one per class.
    The MLP is Linear -> LayerNorm -> ReLU per hidden layer; LayerNorm (per-sample) keeps
    training stable without BatchNorm, which Opacus cannot use.
    """
    if num_features < 1:
        raise FraudflError(f"a model needs at least one input feature, got {num_features}")
    out = output_size(num_classes)
    layers: list[nn.Module] = []
    if kind == "logistic":
        layers.append(nn.Linear(num_features, out))
    elif kind == "mlp":
        if not hidden or any(h < 1 for h in hidden):
            raise FraudflError(f"MLP hidden sizes must be positive integers, got {list(hidden)}")
        width = num_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, out))
    else:
        raise FraudflError(f"unknown model kind {kind!r}; expected one of {MODEL_KINDS}")
    model = nn.Sequential(*layers)
    _init_linear(model, seed)
    return model


def _init_linear(model: nn.Module, seed: int) -> None:
    # torch's default Linear init draws from the global RNG; redraw it from a private generator
    # so that a model is a pure function of its seed.
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            bound = 1.0 / math.sqrt(module.in_features)
            nn.init.uniform_(module.weight, -bound, bound, generator=gen)
            if module.bias is not None:
                nn.init.uniform_(module.bias, -bound, bound, generator=gen)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def get_flat_params(model: nn.Module) -> np.ndarray:
    """All parameters as one float32 vector, in ``model.parameters()`` order (a copy)."""
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return flat.to(torch.float32).numpy().copy()


def set_flat_params(model: nn.Module, vec: np.ndarray) -> None:
    """Load a flat vector produced by :func:`get_flat_params` into ``model`` in place."""
    flat = np.asarray(vec)
    expected = num_params(model)
    if flat.ndim != 1 or flat.shape[0] != expected:
        raise FraudflError(
            f"parameter vector has shape {flat.shape}, the model expects ({expected},)"
        )
    if not np.all(np.isfinite(flat)):
        raise FraudflError("parameter vector contains NaN or infinite values")
    source = torch.from_numpy(flat.astype(np.float32, copy=False))
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            n = p.numel()
            p.copy_(source[offset : offset + n].view_as(p))
            offset += n


class BinaryLoss(nn.Module):
    """Binary cross-entropy on one logit, optionally class-weighted and/or focal.

    ``pos_weight`` multiplies the loss of positive (fraud) examples; ``focal_gamma`` down-weights
    easy examples by ``(1 - p_t) ** gamma`` (Lin et al. 2017). Per-sample losses
    (``reduction="none"``) are what DP-SGD needs.
    """

    def __init__(
        self, pos_weight: float | None, focal_gamma: float | None, reduction: Reduction
    ) -> None:
        super().__init__()
        self.pos_weight = pos_weight
        self.focal_gamma = focal_gamma
        self.reduction: Reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z = logits.reshape(-1)
        t = target.reshape(-1).to(z.dtype)
        per_sample = F.binary_cross_entropy_with_logits(z, t, reduction="none")
        if self.focal_gamma is not None:
            p = torch.sigmoid(z)
            p_t = p * t + (1.0 - p) * (1.0 - t)
            per_sample = per_sample * (1.0 - p_t).pow(self.focal_gamma)
        if self.pos_weight is not None:
            per_sample = per_sample * (1.0 + (self.pos_weight - 1.0) * t)
        return _reduce(per_sample, self.reduction)


class MulticlassLoss(nn.Module):
    """Cross-entropy over class logits, optionally focal."""

    def __init__(self, focal_gamma: float | None, reduction: Reduction) -> None:
        super().__init__()
        self.focal_gamma = focal_gamma
        self.reduction: Reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per_sample = F.cross_entropy(logits, target.reshape(-1).long(), reduction="none")
        if self.focal_gamma is not None:
            p_t = torch.exp(-per_sample)
            per_sample = per_sample * (1.0 - p_t).pow(self.focal_gamma)
        return _reduce(per_sample, self.reduction)


def _reduce(per_sample: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def make_loss(
    task: Task,
    pos_weight: float | None = None,
    focal_gamma: float | None = None,
    *,
    reduction: Reduction = "mean",
) -> nn.Module:
    """The training loss for ``task``: ``loss(logits, y_int64) -> tensor``.

    With no options this is plain BCE-with-logits (binary) or cross-entropy (multi-class);
    ``pos_weight`` (binary only) and ``focal_gamma`` handle class imbalance.
    """
    if pos_weight is not None and pos_weight <= 0:
        raise FraudflError(f"pos_weight must be positive, got {pos_weight}")
    if focal_gamma is not None and focal_gamma < 0:
        raise FraudflError(f"focal_gamma must be >= 0, got {focal_gamma}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"unknown reduction {reduction!r}")
    if task == "binary":
        return BinaryLoss(pos_weight, focal_gamma, reduction)
    if task == "multiclass":
        if pos_weight is not None:
            raise FraudflError("pos_weight applies to binary tasks only")
        return MulticlassLoss(focal_gamma, reduction)
    raise FraudflError(f"unknown task {task!r}; expected 'binary' or 'multiclass'")
