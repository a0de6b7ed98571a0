"""NumPy inference for the fraud models: the forward pass without torch's per-call overhead.

For one transaction torch spends far longer dispatching the eight modules of the MLP than
computing them; the same Linear / LayerNorm / ReLU stack in NumPy takes a few microseconds.
Every probability the scoring service produces, and the threshold chosen when an artifact is
built, come from this one function, so decisions at the threshold are consistent. A test pins it
to torch's forward pass; a model with any other layer type is refused.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from torch import nn

from fraudfl.errors import FraudflError
from fraudfl.models import HashedEmbedding

Layer = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


def _linear(module: nn.Linear) -> Layer:
    weight_t = np.ascontiguousarray(module.weight.detach().numpy().T, dtype=np.float32)
    bias = (np.zeros(module.out_features, np.float32) if module.bias is None
            else module.bias.detach().numpy().astype(np.float32))

    def forward(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out: npt.NDArray[np.float32] = x @ weight_t + bias
        return out

    return forward


def _layer_norm(module: nn.LayerNorm) -> Layer:
    if len(module.normalized_shape) != 1:
        raise FraudflError("only 1-d LayerNorm is supported for scoring")
    eps = np.float32(module.eps)
    weight = None if module.weight is None else module.weight.detach().numpy().astype(np.float32)
    bias = None if module.bias is None else module.bias.detach().numpy().astype(np.float32)

    def forward(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        mean = x.mean(axis=1, keepdims=True)
        centred = x - mean
        var = np.mean(centred * centred, axis=1, keepdims=True)
        out: npt.NDArray[np.float32] = centred / np.sqrt(var + eps)
        if weight is not None:
            out = out * weight
        if bias is not None:
            out = out + bias
        return out

    return forward


def _embedding(module: HashedEmbedding) -> Layer:
    dense = module.dense_index.numpy()
    tables = [(start, width, t.detach().numpy().astype(np.float32))
              for (start, width), t in zip(module.blocks, module.tables, strict=True)]

    def forward(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        parts = [x[:, dense]] + [x[:, s : s + w] @ t for s, w, t in tables]
        out: npt.NDArray[np.float32] = np.concatenate(parts, axis=1)
        return out

    return forward


def _relu(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    out: npt.NDArray[np.float32] = np.maximum(x, np.float32(0.0))
    return out


class NumpyModel:
    """A frozen copy of a binary fraud model (one output logit) as NumPy layers."""

    def __init__(self, model: nn.Module) -> None:
        modules = list(model.children()) if isinstance(model, nn.Sequential) else [model]
        self._layers: list[Layer] = []
        for module in modules:
            if isinstance(module, nn.Linear):
                self._layers.append(_linear(module))
            elif isinstance(module, nn.LayerNorm):
                self._layers.append(_layer_norm(module))
            elif isinstance(module, nn.ReLU):
                self._layers.append(_relu)
            elif isinstance(module, HashedEmbedding):
                self._layers.append(_embedding(module))
            else:
                raise FraudflError(
                    f"cannot score with layer type {type(module).__name__}; expected "
                    "Linear, LayerNorm, ReLU and HashedEmbedding (the fraudfl logistic and mlp "
                    "models)"
                )

    def logits(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        x = np.ascontiguousarray(X, dtype=np.float32)
        for layer in self._layers:
            x = layer(x)
        if x.ndim != 2 or x.shape[1] != 1:
            raise FraudflError(f"expected one output logit per row, got shape {x.shape}")
        out: npt.NDArray[np.float32] = x[:, 0]
        return out

    def predict_proba(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Fraud probabilities (sigmoid of the logit, computed in float64)."""
        z = self.logits(X).astype(np.float64)
        # exp of a large positive argument overflows to inf and gives 0, as it should.
        with np.errstate(over="ignore"):
            out: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-z))
        return out
