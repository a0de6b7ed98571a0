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


def find_splits(hist: FloatArray, features: IntArray, params: GBDTParams) -> Splits:
    """Best split of each node of a summed ``(nodes, features, bins, 3)`` histogram.

    ``features[j]`` is the model's feature index of histogram column ``j``.
    """
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
    # (nodes, features, value bins, direction): the candidate order of the module docstring.
    gain = np.stack(gains, axis=3)
    n_nodes = hist.shape[0]
    flat = gain.reshape(n_nodes, -1)
    best = flat.max(axis=1)
    tol = TIE_TOLERANCE * np.maximum(np.abs(best), 1e-300)
    # The first candidate within the tolerance of the best (argmax of a boolean is the first).
    choice = np.argmax(flat >= (best - tol)[:, None], axis=1)
    f_idx, t_idx, d_idx = np.unravel_index(choice, gain.shape[1:])
    splits = best > 0
    return Splits(
        feature=np.where(splits, features[f_idx], -1).astype(np.int64),
        split_bin=np.where(splits, t_idx, 0).astype(np.int64),
        default_left=(splits & (d_idx == 1)),
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
