"""The aggregator's side: best splits of every open node from the summed histograms, leaf values.

For a node with totals ``(G, H)`` and a candidate left child ``(G_L, H_L)`` (right = total -
left), the gain is XGBoost's::

    gain = 1/2 [G_L^2 / (H_L + lambda) + G_R^2 / (H_R + lambda) - G^2 / (H + lambda)] - gamma

Candidates are every (feature, value bin ``t``, missing direction): value bins ``<= t`` go left,
the missing bin goes right (``default_left = False``) or left. A candidate is valid when both
children have hessian sums ``>= min_child_weight`` and row counts ``>= min_child_samples``; the
node splits when the best valid gain is ``> 0``. Ties (gains within a relative 1e-9, which float
addition order can produce between equal partitions, e.g. complementary one-hot columns) go to
the first candidate in (feature, bin, missing-right-first) order, so the choice does not depend
on how the sum was added up.

Leaf values are ``-G / (H + lambda)`` times the learning rate. Under DP the summed hessians are
noisy; they are floored at 0 so a leaf value cannot explode through a near-zero denominator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fraudfl.trees.histogram import HistogramLayout
from fraudfl.trees.params import GBDTParams

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

TIE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Splits:
    """Per open node: split feature (-1 = becomes a leaf), bin, missing direction, gain."""

    feature: IntArray
    split_bin: IntArray
    default_left: npt.NDArray[np.bool_]
    gain: FloatArray


def _group_gains(hist: FloatArray, params: GBDTParams) -> FloatArray:
    """Gains ``(nodes, features, value bins, direction)`` of features with equal cell counts,
    ``hist`` being ``(nodes, features, cells, 3)`` with the missing bin last."""
    lam = params.reg_lambda
    values = hist[:, :, :-1, :]
    missing = hist[:, :, -1, :]
    cum = np.cumsum(values, axis=2)
    total = cum[:, :, -1, :] + missing
    g, h = total[..., 0:1], np.maximum(total[..., 1:2], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        parent = g * g / (h + lam)
    gains = []
    # Direction 0 sends the missing bin right, direction 1 left.
    for left in (cum, cum + missing[:, :, None, :]):
        gl, hl, cl = left[..., 0], np.maximum(left[..., 1], 0.0), left[..., 2]
        gr = total[:, :, None, 0] - gl
        hr = np.maximum(total[:, :, None, 1] - left[..., 1], 0.0)
        cr = total[:, :, None, 2] - cl
        valid = (
            (hl >= params.min_child_weight)
            & (hr >= params.min_child_weight)
            & (cl >= params.min_child_samples)
            & (cr >= params.min_child_samples)
            & (hl + lam > 0)
            & (hr + lam > 0)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = 0.5 * (gl * gl / (hl + lam) + gr * gr / (hr + lam) - parent) - params.gamma
        gains.append(np.where(valid & np.isfinite(gain), gain, -np.inf))
    return np.stack(gains, axis=3)


def find_splits(
    hist: FloatArray, layout: HistogramLayout, features: IntArray, params: GBDTParams
) -> Splits:
    """Best split of each node of a summed ``(nodes, cells, 3)`` histogram (``layout``).

    ``features[j]`` is the model's feature index of the layout's feature ``j``. Features with
    the same number of cells are searched together (vectorised); the winner over the groups is
    the first candidate, in (feature, bin, direction) order, within the tie tolerance of the
    best gain of all.
    """
    n_nodes = hist.shape[0]
    cells = np.asarray(layout.feature_cells)
    offsets = layout.offsets
    groups = []
    for n in np.unique(cells):
        js = np.flatnonzero(cells == n)
        index = offsets[js][:, None] + np.arange(n)[None, :]
        groups.append((js, _group_gains(hist[:, index, :], params)))
    best = np.max([gain.reshape(n_nodes, -1).max(axis=1) for _, gain in groups], axis=0)
    tol = TIE_TOLERANCE * np.maximum(np.abs(best), 1e-300)
    n_features = len(cells)
    pick_j = np.full(n_nodes, n_features, dtype=np.int64)
    pick_t = np.zeros(n_nodes, dtype=np.int64)
    pick_d = np.zeros(n_nodes, dtype=np.int64)
    for js, gain in groups:
        flat = gain.reshape(n_nodes, -1)
        near = flat >= (best - tol)[:, None]
        # The first near-best candidate of the group (argmax of a boolean is the first True).
        first = np.argmax(near, axis=1)
        has = near[np.arange(n_nodes), first]
        g_idx, t_idx, d_idx = np.unravel_index(first, gain.shape[1:])
        better = has & (js[g_idx] < pick_j)
        pick_j = np.where(better, js[g_idx], pick_j)
        pick_t = np.where(better, t_idx, pick_t)
        pick_d = np.where(better, d_idx, pick_d)
    splits = (best > 0) & (pick_j < n_features)
    safe_j = np.minimum(pick_j, n_features - 1)
    return Splits(
        feature=np.where(splits, features[safe_j], -1).astype(np.int64),
        split_bin=np.where(splits, pick_t, 0).astype(np.int64),
        default_left=(splits & (pick_d == 1)),
        gain=np.where(splits, best, 0.0),
    )


def leaf_values(sums: FloatArray, params: GBDTParams) -> FloatArray:
    """``-learning_rate * G / (H + lambda)`` per leaf from summed ``(leaves, 3)`` statistics."""
    g, h = sums[:, 0], np.maximum(sums[:, 1], 0.0)
    denom = h + params.reg_lambda
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.where(denom > 0, -g / denom, 0.0)
    out: FloatArray = params.learning_rate * raw
    return out
