"""Gradients and the per-node histogram vector a bank contributes to a secure sum.

The vector of one tree level is the flat, row-major form of an array of shape
``(nodes, features, bins, 3)``:

* ``nodes``: the open nodes of the level in the order of :meth:`GrowingTrees.open_nodes`
  (tree by tree, then heap order; with softmax the level holds one tree per class);
* ``features``: the features sampled for this boosting round, in increasing order;
* ``bins``: ``max_bin`` value bins, then the missing bin;
* the last axis: :data:`STATS` = sum of gradients, sum of hessians, number of rows.

So coordinate ``((node * F + feature) * B + bin) * 3 + stat``. The leaf step uses the same
layout with one feature and one bin (every row of a leaf in the same cell), so one pair of
functions, :func:`pack` and :func:`unpack`, covers both. All sums are float64: the plain sum of
the banks' vectors equals the pooled histogram up to float addition order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fraudfl.errors import FraudflError
from fraudfl.trees.binning import BinnedArray

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

STATS = ("grad", "hess", "count")
N_STATS = len(STATS)


@dataclass(frozen=True)
class HistogramLayout:
    """Shape of one summed vector: open nodes x features x bins x :data:`STATS`."""

    n_nodes: int
    n_features: int
    n_bins: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.n_nodes, self.n_features, self.n_bins, N_STATS)

    @property
    def size(self) -> int:
        return self.n_nodes * self.n_features * self.n_bins * N_STATS


def pack(hist: FloatArray) -> FloatArray:
    """The flat vector of a ``(nodes, features, bins, 3)`` histogram array."""
    if hist.ndim != 4 or hist.shape[-1] != N_STATS:
        raise ValueError(f"expected a (nodes, features, bins, {N_STATS}) array, got {hist.shape}")
    flat: FloatArray = np.ascontiguousarray(hist, dtype=np.float64).reshape(-1)
    return flat


def unpack(vector: npt.ArrayLike, layout: HistogramLayout) -> FloatArray:
    """The ``(nodes, features, bins, 3)`` array of a (summed) flat vector."""
    v = np.asarray(vector, dtype=np.float64)
    if v.shape != (layout.size,):
        raise FraudflError(
            f"histogram vector: expected {layout.size} values for {layout}, got shape {v.shape}"
        )
    hist: FloatArray = v.reshape(layout.shape)
    return hist


def gradients(
    margin: FloatArray, y: npt.NDArray[np.int64], num_class: int
) -> tuple[FloatArray, FloatArray]:
    """Per-row gradient and hessian ``(rows, outputs)`` of the loss at ``margin``.

    Binary: logistic loss, ``g = p - y``, ``h = p (1 - p)``. Softmax: per class ``g_k = p_k -
    [y = k]``, ``h_k = p_k (1 - p_k)`` (the diagonal of the Hessian, as LightGBM; XGBoost
    doubles it). Either way ``|g| <= 1`` and ``0 <= h <= 1/4``, the bounds DP relies on.
    """
    with np.errstate(over="ignore"):
        if num_class == 2:
            p = 1.0 / (1.0 + np.exp(-margin[:, :1]))
            target = y.reshape(-1, 1).astype(np.float64)
        else:
            z = np.exp(margin - margin.max(axis=1, keepdims=True))
            p = z / z.sum(axis=1, keepdims=True)
            target = np.zeros_like(p)
            target[np.arange(len(y)), y] = 1.0
    g: FloatArray = p - target
    h: FloatArray = p * (1.0 - p)
    return g, h


def node_histograms(
    slots: IntArray,
    codes: BinnedArray,
    g: FloatArray,
    h: FloatArray,
    layout: HistogramLayout,
) -> FloatArray:
    """Sum gradient, hessian and count per (node slot, feature, bin): the bank's contribution.

    ``slots[i, k]`` is the open-node slot row ``i`` occupies in the tree of output ``k`` (-1: in
    none, e.g. not sampled or already at a leaf); ``codes`` the row's bins of the layout's
    features; ``g``/``h`` its ``(rows, outputs)`` gradients. Three ``bincount`` calls per output
    and feature, nothing per row: one feature's (nodes x bins) output stays in cache, which
    made this 2.4x faster than one ``bincount`` over all features at once.
    """
    # Stats outermost while summing (contiguous writes), transposed to the layout at the end.
    out = np.zeros((N_STATS, layout.n_features, layout.n_nodes * layout.n_bins))
    n_cells = layout.n_nodes * layout.n_bins
    for k in range(slots.shape[1]):
        rows = np.flatnonzero(slots[:, k] >= 0)
        if len(rows) == 0:
            continue
        base = slots[rows, k] * layout.n_bins
        gk, hk, ck = g[rows, k], h[rows, k], codes[rows]
        for f in range(layout.n_features):
            idx = base + ck[:, f]
            out[0, f] += np.bincount(idx, weights=gk, minlength=n_cells)
            out[1, f] += np.bincount(idx, weights=hk, minlength=n_cells)
            out[2, f] += np.bincount(idx, minlength=n_cells)
    hist = out.reshape(N_STATS, layout.n_features, layout.n_nodes, layout.n_bins)
    return pack(hist.transpose(2, 1, 3, 0))
