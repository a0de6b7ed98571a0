"""Tree ensembles: heap-ordered arrays, vectorised traversal, and their JSON + ``.npy`` form.

Every tree of an ensemble is a complete binary tree of depth ``max_depth`` stored in heap
order (node ``i`` has children ``2i + 1`` and ``2i + 2``). Per node:

* ``feature``: the split feature, or ``-1`` for a leaf (or a node never reached);
* ``split_bin``: rows whose bin is ``<= split_bin`` go left;
* ``default_left``: where rows whose value is missing go (learnt when the split was chosen);
* ``value``: the leaf value, already scaled by the learning rate (0 at internal nodes).

Traversal moves every (row, tree) pair one level per step with array operations, so scoring
costs ``max_depth`` vectorised gathers regardless of the number of trees, and no tree library.
A tree that stops early (a leaf above the last level) keeps its rows at the leaf: an unsplit node
never moves a row. The same :func:`traverse` routes a bank's rows through the trees being grown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from fraudfl.errors import FraudflError
from fraudfl.trees.binning import BinEdges, BinnedArray

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

ENSEMBLE_FORMAT = "fraudfl.trees.ensemble"
ENSEMBLE_VERSION = 1
# Columns of the node array written to .npy: feature, split_bin, default_left, value.
NODE_FIELDS = ("feature", "split_bin", "default_left", "value")
# Rows x trees gathered at once while scoring: bounds the temporaries to a few tens of MB.
_CHUNK_CELLS = 1 << 20


def heap_size(max_depth: int) -> int:
    """Nodes of a complete binary tree with ``max_depth`` levels of splits."""
    return (1 << (max_depth + 1)) - 1


def level_nodes(depth: int) -> IntArray:
    """Heap indices of the nodes at ``depth`` (the root is depth 0)."""
    return np.arange((1 << depth) - 1, (1 << (depth + 1)) - 1, dtype=np.int64)


def traverse(
    feature: npt.NDArray[np.int32],
    split_bin: npt.NDArray[np.int32],
    default_left: BoolArray,
    X_binned: BinnedArray,
    steps: int,
    missing_bin: int,
    start: IntArray | None = None,
) -> IntArray:
    """The heap node each row reaches in each tree after ``steps`` levels: ``(rows, trees)``.

    ``start`` (rows x trees) resumes from nodes already reached instead of the roots.
    """
    n, n_trees = X_binned.shape[0], feature.shape[0]
    out = np.zeros((n, n_trees), dtype=np.int64) if start is None else start.copy()
    chunk = max(1, _CHUNK_CELLS // max(1, n_trees))
    trees = np.arange(n_trees)[None, :]
    for lo in range(0, n, chunk):
        xb = X_binned[lo : lo + chunk]
        rows = np.arange(len(xb))[:, None]
        node = out[lo : lo + chunk]
        for _ in range(steps):
            f = feature[trees, node]
            internal = f >= 0
            codes = xb[rows, np.where(internal, f, 0)]
            left = np.where(
                codes == missing_bin, default_left[trees, node], codes <= split_bin[trees, node]
            )
            node = np.where(internal, 2 * node + 2 - left, node)
        out[lo : lo + chunk] = node
    return out


@dataclass(frozen=True, eq=False)
class TreeEnsemble:
    """A trained (or growing) ensemble: ``n_outputs`` trees per boosting round.

    ``tree_output[t]`` is the margin column tree ``t`` adds to (``t % n_outputs``); binary
    models have one margin (the log-odds), softmax models one per class.
    """

    edges: BinEdges
    num_class: int
    max_depth: int
    base_margin: FloatArray
    feature: npt.NDArray[np.int32]
    split_bin: npt.NDArray[np.int32]
    default_left: BoolArray
    value: FloatArray

    @classmethod
    def empty(
        cls, edges: BinEdges, num_class: int, max_depth: int, base_margin: npt.ArrayLike
    ) -> TreeEnsemble:
        h = heap_size(max_depth)
        return cls(
            edges=edges,
            num_class=num_class,
            max_depth=max_depth,
            base_margin=np.asarray(base_margin, dtype=np.float64).reshape(-1),
            feature=np.zeros((0, h), dtype=np.int32),
            split_bin=np.zeros((0, h), dtype=np.int32),
            default_left=np.zeros((0, h), dtype=np.bool_),
            value=np.zeros((0, h), dtype=np.float64),
        )

    @property
    def n_outputs(self) -> int:
        return 1 if self.num_class == 2 else self.num_class

    @property
    def n_trees(self) -> int:
        return int(self.feature.shape[0])

    @property
    def n_rounds(self) -> int:
        return self.n_trees // self.n_outputs

    @property
    def tree_output(self) -> IntArray:
        return np.arange(self.n_trees, dtype=np.int64) % self.n_outputs

    def appended(
        self,
        feature: npt.NDArray[np.int32],
        split_bin: npt.NDArray[np.int32],
        default_left: BoolArray,
        value: FloatArray,
    ) -> TreeEnsemble:
        """This ensemble with one boosting round (``n_outputs`` trees) added."""
        return replace(
            self,
            feature=np.concatenate([self.feature, feature]),
            split_bin=np.concatenate([self.split_bin, split_bin]),
            default_left=np.concatenate([self.default_left, default_left]),
            value=np.concatenate([self.value, value]),
        )

    def truncated(self, n_rounds: int) -> TreeEnsemble:
        """The first ``n_rounds`` boosting rounds (what early stopping keeps)."""
        t = n_rounds * self.n_outputs
        return replace(
            self,
            feature=self.feature[:t],
            split_bin=self.split_bin[:t],
            default_left=self.default_left[:t],
            value=self.value[:t],
        )

    def rounds(self, start: int, stop: int) -> TreeEnsemble:
        """Only the trees of rounds ``start .. stop - 1``, with a zero base margin."""
        a, b = start * self.n_outputs, stop * self.n_outputs
        return replace(
            self,
            base_margin=np.zeros_like(self.base_margin),
            feature=self.feature[a:b],
            split_bin=self.split_bin[a:b],
            default_left=self.default_left[a:b],
            value=self.value[a:b],
        )

    # ---- prediction -------------------------------------------------------------------------
    def margin_binned(self, X_binned: BinnedArray) -> FloatArray:
        """Raw margins ``(rows, n_outputs)`` of already binned rows."""
        n = X_binned.shape[0]
        out = np.tile(self.base_margin, (n, 1))
        if self.n_trees == 0 or n == 0:
            return out
        leaves = traverse(
            self.feature, self.split_bin, self.default_left, X_binned, self.max_depth,
            self.edges.missing_bin,
        )
        values = self.value[np.arange(self.n_trees)[None, :], leaves]
        if self.n_outputs == 1:
            out[:, 0] += values.sum(axis=1)
        else:
            out += values.reshape(n, self.n_rounds, self.n_outputs).sum(axis=1)
        return out

    def predict_proba_binned(self, X_binned: BinnedArray) -> FloatArray:
        """Binary: fraud probability per row ``(rows,)``; softmax: ``(rows, classes)``."""
        return probabilities(self.margin_binned(X_binned))

    def predict_proba(self, X: npt.ArrayLike) -> FloatArray:
        """Probabilities of rows of float features (NaN = missing), binned with the edges."""
        return self.predict_proba_binned(self.edges.transform(X))

    # ---- serialisation ----------------------------------------------------------------------
    def node_array(self) -> FloatArray:
        """``(trees, heap nodes, 4)`` float64 of :data:`NODE_FIELDS` (integers are exact)."""
        return np.stack(
            [
                self.feature.astype(np.float64),
                self.split_bin.astype(np.float64),
                self.default_left.astype(np.float64),
                self.value,
            ],
            axis=-1,
        )

    def metadata(self) -> dict[str, Any]:
        return {
            "format": ENSEMBLE_FORMAT,
            "version": ENSEMBLE_VERSION,
            "num_class": self.num_class,
            "max_depth": self.max_depth,
            "n_trees": self.n_trees,
            "base_margin": self.base_margin.tolist(),
            "node_fields": list(NODE_FIELDS),
            "bin_edges": self.edges.to_dict(),
        }

    @classmethod
    def from_parts(
        cls, meta: Any, nodes: npt.NDArray[Any], source: str = "tree ensemble"
    ) -> TreeEnsemble:
        """The ensemble from :meth:`metadata` and :meth:`node_array`, strictly checked."""

        def fail(what: str) -> FraudflError:
            return FraudflError(f"{source}: {what}")

        if not isinstance(meta, dict) or meta.get("format") != ENSEMBLE_FORMAT:
            raise fail(f"expected a {ENSEMBLE_FORMAT} object")
        if meta.get("version") != ENSEMBLE_VERSION:
            raise fail(f"field 'version': expected {ENSEMBLE_VERSION}")
        if meta.get("node_fields") != list(NODE_FIELDS):
            raise fail(f"field 'node_fields': expected {list(NODE_FIELDS)}")
        ints = {}
        for key in ("num_class", "max_depth", "n_trees"):
            v = meta.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise fail(f"field {key!r}: expected a non-negative integer")
            ints[key] = v
        if ints["num_class"] < 2 or not 1 <= ints["max_depth"] <= 16:
            raise fail("fields 'num_class' (>= 2) and 'max_depth' (1..16) out of range")
        edges = BinEdges.from_dict(meta.get("bin_edges"), source=f"{source}: bin_edges")
        n_outputs = 1 if ints["num_class"] == 2 else ints["num_class"]
        base = meta.get("base_margin")
        if (
            not isinstance(base, list)
            or len(base) != n_outputs
            or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in base)
            or not all(math.isfinite(b) for b in base)
        ):
            raise fail(f"field 'base_margin': expected {n_outputs} finite numbers")
        h = heap_size(ints["max_depth"])
        shape = (ints["n_trees"], h, len(NODE_FIELDS))
        if nodes.dtype != np.float64 or nodes.shape != shape:
            raise fail(f"node array is {nodes.dtype}{nodes.shape}, expected float64{shape}")
        if ints["n_trees"] % n_outputs:
            raise fail(f"{ints['n_trees']} trees is not a whole number of rounds of {n_outputs}")
        if not np.all(np.isfinite(nodes)):
            raise fail("node array contains NaN or infinite values")
        feature, split_bin, default_left, value = (nodes[..., i] for i in range(4))
        if np.any(feature != np.rint(feature)) or np.any(split_bin != np.rint(split_bin)):
            raise fail("feature and split_bin must be integers")
        if np.any((feature < -1) | (feature >= edges.n_features)):
            raise fail(f"a split feature outside -1 .. {edges.n_features - 1}")
        if np.any((split_bin < 0) | (split_bin > edges.max_bin)):
            raise fail(f"a split bin outside 0 .. {edges.max_bin}")
        if not np.all((default_left == 0) | (default_left == 1)):
            raise fail("default_left must be 0 or 1")
        # Children of the last level do not exist: a split there would index past the heap.
        last = level_nodes(ints["max_depth"])
        if np.any(feature[:, last] >= 0):
            raise fail(f"a split below max_depth {ints['max_depth']}")
        return cls(
            edges=edges,
            num_class=ints["num_class"],
            max_depth=ints["max_depth"],
            base_margin=np.asarray(base, dtype=np.float64),
            feature=feature.astype(np.int32),
            split_bin=split_bin.astype(np.int32),
            default_left=default_left.astype(np.bool_),
            value=np.ascontiguousarray(value),
        )


def probabilities(margin: FloatArray) -> FloatArray:
    """Sigmoid of a single margin column ``(rows,)``, softmax of several ``(rows, classes)``."""
    with np.errstate(over="ignore"):
        if margin.shape[1] == 1:
            p: FloatArray = 1.0 / (1.0 + np.exp(-margin[:, 0]))
            return p
        z = np.exp(margin - margin.max(axis=1, keepdims=True))
        out: FloatArray = z / z.sum(axis=1, keepdims=True)
        return out
