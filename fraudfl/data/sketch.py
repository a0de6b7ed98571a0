"""A mergeable quantile sketch: counts on one fixed, data-independent grid.

Every bank counts its values of each numeric column into the same bins, so the federation's
histogram is the exact sum of the banks' histograms (a secure sum of integers) and every quantile
derived from it is what the pooled rows would give on that grid. The grid is logarithmic in
``|x|`` (``GRID_SUBBINS`` bins per power of two from ``2^GRID_MIN_EXP`` to ``2^GRID_MAX_EXP``,
mirrored for negative values, plus one bin around zero and an overflow bin at each end), so a
heavy-tailed amount and a 0/1 flag are resolved alike, to about 19% of the value, without
knowing any column's range in advance.

:func:`bin_edges` turns summed histograms into per-column quantile bin edges and
:class:`BinMapper` maps rows to ``uint8`` bin indices (missing values in their own bin,
:data:`MISSING_BIN`); both are the public binning API for histogram-based tree models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from fraudfl.errors import FraudflError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

GRID_MIN_EXP = -12
GRID_MAX_EXP = 36
GRID_SUBBINS = 4


def grid_edges(subbins: int = GRID_SUBBINS) -> FloatArray:
    """The grid with ``subbins`` bins per power of two (a finer grid for tree bins)."""
    steps = (GRID_MAX_EXP - GRID_MIN_EXP) * subbins
    positive = np.exp2(GRID_MIN_EXP + np.arange(steps + 1) / subbins)
    return np.concatenate([-positive[::-1], positive])


# Ascending; bin i holds x with GRID_EDGES[i-1] <= x < GRID_EDGES[i] (bin 0 everything below
# the first edge, the last bin everything from the last edge up).
GRID_EDGES: FloatArray = grid_edges()
GRID_BINS = len(GRID_EDGES) + 1
# Room for 254 value bins (at most 253 edges) and the missing bin, as scikit-learn's
# HistGradientBoosting does.
MAX_BINS = 255
MISSING_BIN = 255


def grid_histogram(values: FloatArray, grid: FloatArray = GRID_EDGES) -> IntArray:
    """Counts of the present (non-NaN) ``values`` in the ``len(grid) + 1`` grid bins."""
    present = values[~np.isnan(values)]
    index = np.searchsorted(grid, present, side="right")
    return np.bincount(index, minlength=len(grid) + 1).astype(np.int64)


def _upper_cdf(counts: IntArray) -> FloatArray:
    """Share of values below each grid edge (edge i closes bin i)."""
    total = counts.sum()
    return np.asarray(np.cumsum(counts)[:-1] / total, dtype=np.float64)


def quantile(counts: IntArray, q: float) -> float:
    """The ``q``-quantile of a grid histogram, linearly interpolated within its bin."""
    knots, cdf = quantile_knots(counts)
    return float(np.interp(q, cdf, knots))


def quantile_knots(counts: IntArray) -> tuple[FloatArray, FloatArray]:
    """The histogram's cumulative distribution as knots ``(x, F(x))`` for linear interpolation.

    ``F`` rises linearly across each occupied bin (the overflow bins are points at their finite
    edge); knots inside flat stretches are left out, so the list is short for a column that
    occupies few bins.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.shape != (GRID_BINS,) or counts.sum() <= 0:
        raise FraudflError("a quantile needs a non-empty grid histogram")
    cdf = _upper_cdf(counts)
    # Edges where F changes on at least one side; the first and last occupied edges bracket it.
    before = np.concatenate([[0.0], cdf[:-1]])
    after = np.concatenate([cdf[1:], [1.0]])
    keep = (cdf != before) | (cdf != after)
    x, f = GRID_EDGES[keep], cdf[keep]
    if counts[0]:  # values below the first edge sit at it
        x, f = np.concatenate([[GRID_EDGES[0]], x]), np.concatenate([[0.0], f])
    if counts[-1]:
        x, f = np.concatenate([x, [GRID_EDGES[-1]]]), np.concatenate([f, [1.0]])
    if len(x) == 1:  # all values at one overflow end
        x, f = np.concatenate([x, x]), np.array([0.0, 1.0])
    return x.astype(np.float64), f.astype(np.float64)


def quantile_edges(
    counts: IntArray, max_bins: int = MAX_BINS - 1, grid: FloatArray = GRID_EDGES
) -> FloatArray:
    """Up to ``max_bins - 1`` ascending grid edges splitting the values into near-equal shares.

    Each edge is the first grid edge below which at least ``j / max_bins`` of the values lie;
    edges that coincide (a point mass) are merged. The edges are grid edges, so the same counts
    (from pooled rows or from summed bank histograms) give the very same edges.
    """
    if not 2 <= max_bins <= MAX_BINS - 1:
        raise FraudflError(f"max_bins must be in [2, {MAX_BINS - 1}], got {max_bins}")
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.float64)
    below = np.cumsum(counts)[:-1]  # values below each edge
    targets = np.arange(1, max_bins) * total / max_bins
    positions = np.searchsorted(below, targets, side="left")
    positions = positions[positions < len(grid)]
    chosen = np.unique(positions)
    # An edge with nothing below it or everything below it splits nothing.
    chosen = chosen[(below[chosen] > 0) & (below[chosen] < total)]
    return grid[chosen].astype(np.float64)


def bin_edges(
    histograms: Mapping[str, IntArray], max_bins: int = MAX_BINS - 1
) -> dict[str, FloatArray]:
    """Per-column quantile bin edges from (summed) grid histograms (see :func:`quantile_edges`).

    With a fitted pipeline: ``bin_edges(stats.histograms)`` where ``stats`` is the federation's
    summed :class:`~fraudfl.data.stats.FeatureStats`.
    """
    return {col: quantile_edges(counts, max_bins) for col, counts in histograms.items()}


@dataclass(frozen=True, eq=False)
class BinMapper:
    """Maps numeric columns to ``uint8`` bin indices: bin ``k`` holds ``edges[k-1] <= x <
    edges[k]``, so a column with ``e`` edges uses bins ``0..e``; a missing value goes to
    :data:`MISSING_BIN`. Columns are read with the schema's missing markers."""

    edges: dict[str, FloatArray]
    missing_values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for col, e in self.edges.items():
            if len(e) > MAX_BINS - 1 or (len(e) > 1 and not np.all(np.diff(e) > 0)):
                raise FraudflError(
                    f"bin edges of '{col}' must be at most {MAX_BINS - 1} ascending values"
                )

    @property
    def columns(self) -> list[str]:
        return list(self.edges)

    def num_bins(self, column: str) -> int:
        """Value bins of ``column`` (the missing bin not counted)."""
        return len(self.edges[column]) + 1

    def transform(self, frame: pd.DataFrame, *, source: str = "input") -> npt.NDArray[np.uint8]:
        """``(rows, columns)`` bin indices in :attr:`columns` order."""
        from fraudfl.data.validation import numeric_column

        out = np.empty((len(frame), len(self.edges)), dtype=np.uint8)
        for j, (col, e) in enumerate(self.edges.items()):
            if col not in frame.columns:
                raise FraudflError(f"{source}: missing feature column '{col}'")
            values = numeric_column(
                frame[col], col, source, markers=self.missing_values, allow_missing=True
            )
            index = np.searchsorted(e, values, side="right")
            index[np.isnan(values)] = MISSING_BIN
            out[:, j] = index
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges": {col: [float(v) for v in e] for col, e in self.edges.items()},
            "missing_values": list(self.missing_values),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BinMapper:
        edges = data.get("edges")
        markers = data.get("missing_values", [])
        if not isinstance(edges, dict) or not isinstance(markers, list):
            raise FraudflError("bin mapper: expected 'edges' (object) and 'missing_values' (list)")
        parsed: dict[str, FloatArray] = {}
        for col, values in edges.items():
            if not isinstance(values, list) or not all(
                isinstance(v, int | float) and np.isfinite(v) for v in values
            ):
                raise FraudflError(f"bin mapper: edges of '{col}' must be finite numbers")
            parsed[str(col)] = np.asarray(values, dtype=np.float64)
        return cls(parsed, tuple(str(m) for m in markers))

