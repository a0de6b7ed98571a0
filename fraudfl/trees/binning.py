"""Bins for the histogram GBDT: per-feature cut points, binned matrices, a missing-value bin.

A feature ``f`` with cut points ``edges[f]`` (strictly increasing, at most ``max_bin - 1`` of
them) puts a value ``x`` in bin ``searchsorted(edges[f], x, side="left")``, i.e. bin ``t`` holds
``edges[f][t-1] < x <= edges[f][t]``; a split "bin <= t" is therefore "x <= edges[f][t]".
Missing values (NaN) get code ``max_bin``, the same for every feature, so a binned matrix is one
``uint8`` array (``uint16`` above 255 value bins) and the histogram layout is rectangular.

The cut points are *given*: in the federation they come from the federated quantile sketch of
the data layer (issue 11). Until that lands, :func:`grid_counts` and
:func:`edges_from_grid_counts` are the stand-in: each bank counts its values on a fixed public
grid, the counts are summed (a secure sum like any other), and the cut points are read off the
summed counts at equal-count quantiles. **This is the seam**: replace those two functions by the
data layer's sketch and keep :class:`BinEdges` as the hand-over type.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fraudfl.errors import FraudflError

FloatArray = npt.NDArray[np.float64]
BinnedArray = npt.NDArray[np.unsignedinteger[Any]]

EDGES_FORMAT = "fraudfl.trees.bin_edges"
EDGES_VERSION = 1


@dataclass(frozen=True, eq=False)
class BinEdges:
    """Cut points per feature and the number of value bins (the missing bin is ``max_bin``)."""

    edges: tuple[FloatArray, ...]
    max_bin: int

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, BinEdges)
            and self.max_bin == other.max_bin
            and len(self.edges) == len(other.edges)
            and all(np.array_equal(a, b) for a, b in zip(self.edges, other.edges, strict=True))
        )

    __hash__ = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.max_bin < 2:
            raise FraudflError(f"bin edges: max_bin must be >= 2, got {self.max_bin}")
        for f, e in enumerate(self.edges):
            if e.ndim != 1 or len(e) > self.max_bin - 1:
                raise FraudflError(
                    f"bin edges: feature {f} has {len(e)} cut points, at most "
                    f"{self.max_bin - 1} allowed"
                )
            if not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
                raise FraudflError(
                    f"bin edges: feature {f}: cut points must be finite and strictly increasing"
                )

    @classmethod
    def of(cls, edges: Sequence[npt.ArrayLike], max_bin: int) -> BinEdges:
        return cls(tuple(np.asarray(e, dtype=np.float64).reshape(-1) for e in edges), max_bin)

    @property
    def n_features(self) -> int:
        return len(self.edges)

    @property
    def missing_bin(self) -> int:
        return self.max_bin

    @property
    def n_bins(self) -> int:
        """Slots per feature in a histogram: the value bins and the missing bin."""
        return self.max_bin + 1

    @property
    def dtype(self) -> type[np.unsignedinteger[Any]]:
        return np.uint8 if self.n_bins <= 256 else np.uint16

    def transform(self, X: npt.ArrayLike) -> BinnedArray:
        """Bin a float matrix (rows x features); NaN goes to the missing bin."""
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise FraudflError(
                f"binning: expected a matrix with {self.n_features} feature columns, got shape "
                f"{x.shape}"
            )
        out = np.empty(x.shape, dtype=self.dtype)
        for f, e in enumerate(self.edges):
            col = x[:, f]
            codes = np.searchsorted(e, col, side="left")
            codes[np.isnan(col)] = self.missing_bin
            out[:, f] = codes
        return out

    def threshold_value(self, feature: int, bin_: int) -> float:
        """The value of the split "bin <= ``bin_``" as "x <= value" (inf: all values left)."""
        e = self.edges[feature]
        return float(e[bin_]) if bin_ < len(e) else math.inf

    def to_dict(self) -> dict[str, Any]:
        # repr-exact: json writes float64 with 17 significant digits, so edges round-trip.
        return {
            "format": EDGES_FORMAT,
            "version": EDGES_VERSION,
            "max_bin": self.max_bin,
            "edges": [e.tolist() for e in self.edges],
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "bin edges") -> BinEdges:
        if not isinstance(data, dict) or data.get("format") != EDGES_FORMAT:
            raise FraudflError(f"{source}: expected a {EDGES_FORMAT} object")
        if data.get("version") != EDGES_VERSION:
            raise FraudflError(f"{source}: field 'version': expected {EDGES_VERSION}")
        max_bin, edges = data.get("max_bin"), data.get("edges")
        if not isinstance(max_bin, int) or isinstance(max_bin, bool):
            raise FraudflError(f"{source}: field 'max_bin': expected an integer")
        if not isinstance(edges, list) or not all(
            isinstance(e, list)
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in e)
            for e in edges
        ):
            raise FraudflError(f"{source}: field 'edges': expected lists of numbers")
        return cls.of(edges, max_bin)


# ---- the seam: quantile cut points from summed grid counts (until issue 11's sketch) ---------

def default_grid(points: int = 2048, bound: float = 1e4) -> FloatArray:
    """A public grid for standardised features: fine near 0, coarse in the tails (sinh-spaced).

    With the defaults neighbouring points are 0.017 apart around 0 and 1.7 % apart in the tails.
    """
    top = math.asinh(bound)
    grid: FloatArray = np.unique(np.sinh(np.linspace(-top, top, points)))
    return grid


def grid_counts(X: npt.ArrayLike, grid: FloatArray) -> FloatArray:
    """One bank's counts of each feature's values in the grid's cells, flattened (a sum task).

    Cell ``j`` holds ``grid[j-1] < x <= grid[j]`` (cell ``len(grid)``: above the grid); missing
    values are not counted. Layout: ``features x (len(grid) + 1)``, row-major.
    """
    x = np.asarray(X, dtype=np.float64)
    cells = len(grid) + 1
    idx = np.searchsorted(grid, x, side="left") + cells * np.arange(x.shape[1])
    counts: FloatArray = np.bincount(
        idx[~np.isnan(x)], minlength=cells * x.shape[1]
    ).astype(np.float64)
    return counts


def edges_from_grid_counts(
    grid: FloatArray, counts: FloatArray, n_features: int, max_bin: int
) -> BinEdges:
    """Cut points at equal-count quantiles of the summed grid counts (at most ``max_bin`` bins).

    A cut is placed at the grid point where the cumulative count crosses each ``k / max_bin``
    of the feature's total; duplicates collapse, so a feature with few distinct values (a 0/1
    indicator) gets as many bins as it has occupied cells.
    """
    cells = len(grid) + 1
    c = np.asarray(counts, dtype=np.float64).reshape(n_features, cells)
    edges = []
    for f in range(n_features):
        cum = np.cumsum(c[f])
        total = cum[-1]
        if total <= 0:
            edges.append(np.zeros(0))
            continue
        targets = total * np.arange(1, max_bin) / max_bin
        # The first cell whose cumulative count reaches each target; cutting at its upper grid
        # point puts that cell below the cut.
        j = np.unique(np.searchsorted(cum, targets, side="left"))
        # A cut above the last occupied cell would leave an empty top bin; the top cell has no
        # upper grid point.
        last = int(np.flatnonzero(c[f])[-1])
        j = j[(j < last) & (j < len(grid))]
        edges.append(grid[j])
    return BinEdges.of(edges, max_bin)
