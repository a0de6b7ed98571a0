"""Models for tabular fraud data, flat parameter vectors, and imbalance-aware losses.

Every model here is built only from layers Opacus computes per-sample gradients for (Linear,
ReLU, LayerNorm, and :class:`HashedEmbedding`, whose per-sample gradients are registered with
Opacus by :mod:`fraudfl.training.private`): no BatchNorm, whose statistics would mix samples and
break DP-SGD.

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
# Measured on `generate-data banks --messy` (5 banks, 30k rows, 8 FedProx rounds): dimension 8
# reached AUPRC 0.41, 16 0.47, 32 0.48 (one-hot straight into the first layer: 0.47); initial
# rows of std 1.0 0.25, 0.3 0.38, 0.1 0.41, 0.01 0.42 (dimension 8).
DEFAULT_EMBED_DIM = 16
EMBED_INIT_STD = 0.1
Block = tuple[int, int]  # (first feature, number of features)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model on another machine (before loading its parameters)."""

    kind: ModelKind
    num_features: int
    num_classes: int
    hidden: tuple[int, ...] = field(default=(64, 32))
    # Hashed-bucket blocks of the feature vector (FeaturePipeline.hashed_blocks()) that an MLP
    # embeds in ``embed_dim`` dimensions each; a logistic model has no use for them.
    embed: tuple[Block, ...] = ()
    embed_dim: int = DEFAULT_EMBED_DIM

    def __post_init__(self) -> None:
        if self.kind != "mlp" and self.embed:
            object.__setattr__(self, "embed", ())
        object.__setattr__(self, "embed", tuple((int(s), int(w)) for s, w in self.embed))
        _check_blocks(self.embed, self.num_features, self.embed_dim)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "num_features": self.num_features,
            "num_classes": self.num_classes,
            "hidden": list(self.hidden),
        }
        if self.embed:
            out["embed"] = [list(b) for b in self.embed]
            out["embed_dim"] = self.embed_dim
        return out

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
        embed = data.get("embed", [])
        embed_dim = data.get("embed_dim", DEFAULT_EMBED_DIM)
        if not isinstance(embed, list) or not all(
            isinstance(b, list) and len(b) == 2 and all(isinstance(v, int) for v in b)
            for b in embed
        ):
            raise FraudflError("model spec: 'embed' must be a list of [start, width] pairs")
        if not isinstance(embed_dim, int) or isinstance(embed_dim, bool):
            raise FraudflError("model spec: 'embed_dim' must be an integer")
        return cls(kind=kind, num_features=num_features, num_classes=num_classes,
                   hidden=tuple(hidden), embed=tuple((b[0], b[1]) for b in embed),
                   embed_dim=embed_dim)

    @property
    def num_outputs(self) -> int:
        return output_size(self.num_classes)

    @property
    def num_params(self) -> int:
        width = _embedded_width(self.num_features, self.embed, self.embed_dim)
        sizes = [width, *self.hidden] if self.kind == "mlp" else [self.num_features]
        sizes.append(self.num_outputs)
        total = sum(a * b + b for a, b in itertools.pairwise(sizes))
        if self.kind == "mlp":
            total += sum(2 * h for h in self.hidden)  # LayerNorm weight and bias
            total += sum(w * self.embed_dim for _, w in self.embed)
        return total

    def build(self, seed: int = 0) -> nn.Module:
        return build_model(self.kind, self.num_features, self.num_classes, self.hidden,
                           seed=seed, embed=self.embed, embed_dim=self.embed_dim)


def _check_blocks(blocks: Sequence[Block], num_features: int, dim: int) -> None:
    if blocks and (not isinstance(dim, int) or dim < 1):
        raise FraudflError(f"embedding dimension must be a positive integer, got {dim!r}")
    end = 0
    for start, width in blocks:
        if start < end or width < 1 or start + width > num_features:
            raise FraudflError(
                f"embedding blocks must be ascending, disjoint and within the {num_features} "
                f"features; got {list(blocks)}"
            )
        end = start + width


def _embedded_width(num_features: int, blocks: Sequence[Block], dim: int) -> int:
    return num_features - sum(w for _, w in blocks) + len(blocks) * dim


class HashedEmbedding(nn.Module):
    """Dense features pass through; each hashed block becomes a ``dim``-dimensional embedding.

    A hashed block is a signed one-hot over its buckets (:mod:`fraudfl.data.hashing`), so
    ``x_block @ table`` is the bucket's embedding row times the hash sign (all zeros for a
    missing value): a lookup, written as a product so that it takes the same float matrix as
    every other model and its per-sample gradient is the outer product ``x_block g^T``.
    Output: ``[dense features, embedding 1, embedding 2, ...]``.
    """

    dense_index: torch.Tensor

    def __init__(self, num_features: int, blocks: Sequence[Block], dim: int) -> None:
        super().__init__()
        _check_blocks(blocks, num_features, dim)
        self.blocks = tuple(blocks)
        self.dim = dim
        dense = np.ones(num_features, dtype=bool)
        for start, width in blocks:
            dense[start : start + width] = False
        # A plain attribute, not a buffer: Opacus refuses trainable layers with buffers.
        self.dense_index = torch.from_numpy(np.flatnonzero(dense))
        # Direct parameters (not a ParameterList child): Opacus hooks the module that owns them.
        for i, (_, width) in enumerate(blocks):
            self.register_parameter(f"table{i}", nn.Parameter(torch.zeros(width, dim)))
        self.out_features = _embedded_width(num_features, blocks, dim)

    @property
    def tables(self) -> list[nn.Parameter]:
        return [getattr(self, f"table{i}") for i in range(len(self.blocks))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x.index_select(1, self.dense_index)]
        for (start, width), table in zip(self.blocks, self.tables, strict=True):
            parts.append(x[:, start : start + width] @ table)
        return torch.cat(parts, dim=1)


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
    embed: Sequence[Block] = (),
    embed_dim: int = DEFAULT_EMBED_DIM,
) -> nn.Module:
    """Build a logistic-regression or MLP model with a seeded initialisation.

    Binary tasks (``num_classes == 2``) get one output logit, multi-class tasks one per class.
    The MLP is Linear -> LayerNorm -> ReLU per hidden layer; LayerNorm (per-sample) keeps
    training stable without BatchNorm, which Opacus cannot use. With ``embed`` blocks the MLP
    starts with a :class:`HashedEmbedding` of those features.
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
        if embed:
            embedding = HashedEmbedding(num_features, embed, embed_dim)
            layers.append(embedding)
            width = embedding.out_features
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
        if isinstance(module, HashedEmbedding):
            # Small rows: large random embeddings of rare buckets swamp the dense features
            # while the federation is still learning them.
            for table in module.tables:
                nn.init.normal_(table, 0.0, EMBED_INIT_STD, generator=gen)
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
