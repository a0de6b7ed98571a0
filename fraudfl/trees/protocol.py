"""The boosting job as secure-sum tasks: what the aggregator asks, and how it reduces the sums.

A job is a sequence of tasks; for each, every bank returns one flat float vector
(:class:`~fraudfl.trees.bank.TreeBank`), the vectors are summed (in the clear or by secure
aggregation), and :class:`TreeBuilder` (the aggregator's reducer, sans-IO: no clocks, no I/O)
consumes the sum and announces the next task:

1. :class:`LabelCountTask` (only when ``base_score`` must be estimated and DP is off): rows per
   class, for the prior margin.
2. Per boosting round ``r``: :class:`LevelTask` for depth ``0 .. max_depth - 1`` (all open nodes
   of the round's trees in one sum; fewer levels if no node splits), then :class:`LeafTask`
   (gradient/hessian sums per leaf), after which the round's trees join the ensemble.
3. With ``early_stopping_rounds``: :class:`ValidationTask` after each round (summed validation
   log loss and row count).

The tasks carry the model and the partial trees; over the wire they will carry the model
version and the splits so far (both already published or announced), which is all a bank
needs to recompute them. This module is the seam to the round engine (issue 10): a task kind
per class, :meth:`TreeBuilder.task` as the announcement, :meth:`TreeBuilder.reduce` as the
reducer.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from fraudfl.errors import FraudflError
from fraudfl.trees.binning import BinEdges
from fraudfl.trees.ensemble import TreeEnsemble, heap_size, level_nodes
from fraudfl.trees.histogram import N_STATS, HistogramLayout, unpack
from fraudfl.trees.params import GBDTParams
from fraudfl.trees.splits import find_splits, leaf_values

log = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

# A prior probability is kept away from 0 and 1 so its log-odds stay finite.
_PRIOR_FLOOR = 1e-6


@dataclass(frozen=True)
class GrowingTrees:
    """The ``n_outputs`` trees of one boosting round while they grow (heap arrays per tree)."""

    feature: npt.NDArray[np.int32]
    split_bin: npt.NDArray[np.int32]
    default_left: npt.NDArray[np.bool_]

    @classmethod
    def new(cls, n_outputs: int, max_depth: int) -> GrowingTrees:
        shape = (n_outputs, heap_size(max_depth))
        return cls(
            feature=np.full(shape, -1, dtype=np.int32),
            split_bin=np.zeros(shape, dtype=np.int32),
            default_left=np.zeros(shape, dtype=np.bool_),
        )

    def alive(self) -> npt.NDArray[np.bool_]:
        """Nodes that exist: the roots and the children of split nodes."""
        out = np.zeros(self.feature.shape, dtype=np.bool_)
        out[:, 0] = True
        parents = (np.arange(1, self.feature.shape[1]) - 1) // 2
        out[:, 1:] = self.feature[:, parents] >= 0
        return out

    def open_nodes(self, depth: int) -> tuple[IntArray, IntArray]:
        """(tree, heap index) of the existing nodes at ``depth``, tree by tree."""
        nodes = level_nodes(depth)
        tree, j = np.nonzero(self.alive()[:, nodes])
        return tree.astype(np.int64), nodes[j]

    def leaves(self) -> tuple[IntArray, IntArray]:
        """(tree, heap index) of the existing unsplit nodes, tree by tree in heap order."""
        tree, node = np.nonzero(self.alive() & (self.feature < 0))
        return tree.astype(np.int64), node.astype(np.int64)

    def with_splits(
        self,
        tree: IntArray,
        node: IntArray,
        feature: IntArray,
        split_bin: IntArray,
        default_left: npt.NDArray[np.bool_],
    ) -> GrowingTrees:
        f, b, d = self.feature.copy(), self.split_bin.copy(), self.default_left.copy()
        f[tree, node], b[tree, node], d[tree, node] = feature, split_bin, default_left
        return replace(self, feature=f, split_bin=b, default_left=d)


def slot_map(shape: tuple[int, int], tree: IntArray, node: IntArray) -> IntArray:
    """``(trees, heap)`` array: the slot of each listed node in the sum vector, -1 elsewhere."""
    out = np.full(shape, -1, dtype=np.int64)
    out[tree, node] = np.arange(len(tree))
    return out


@dataclass(frozen=True)
class LabelCountTask:
    num_class: int

    @property
    def size(self) -> int:
        return self.num_class


@dataclass(frozen=True)
class LevelTask:
    """Histograms of the open nodes at ``depth`` of round ``round``'s trees."""

    round: int
    depth: int
    ensemble: TreeEnsemble
    trees: GrowingTrees
    features: IntArray

    def layout(self) -> HistogramLayout:
        tree, _ = self.trees.open_nodes(self.depth)
        edges = self.ensemble.edges
        return HistogramLayout.for_features(len(tree), edges, self.features.tolist())

    @property
    def size(self) -> int:
        return self.layout().size


@dataclass(frozen=True)
class LeafTask:
    """Gradient, hessian and row sums per leaf of round ``round``'s finished trees."""

    round: int
    ensemble: TreeEnsemble
    trees: GrowingTrees

    def layout(self) -> HistogramLayout:
        tree, _ = self.trees.leaves()
        return HistogramLayout(len(tree), (1,))

    @property
    def size(self) -> int:
        return self.layout().size


@dataclass(frozen=True)
class ValidationTask:
    """Summed log loss and row count of the banks' validation rows under ``ensemble``."""

    ensemble: TreeEnsemble

    @property
    def size(self) -> int:
        return 2


Task = LabelCountTask | LevelTask | LeafTask | ValidationTask


def column_sample(params: GBDTParams, n_features: int, round_: int) -> IntArray:
    """The features of round ``round_``: public randomness from the job's seed, sorted.

    With ``feature_weights`` the draw is weighted (features of weight 0 never drawn), as
    XGBoost does; with ``colsample_bytree = 1`` every feature is used either way.
    """
    if params.colsample_bytree >= 1.0:
        return np.arange(n_features, dtype=np.int64)
    k = max(1, round(params.colsample_bytree * n_features))
    rng = np.random.default_rng([params.seed, round_])
    if params.feature_weights is None:
        return np.sort(rng.choice(n_features, size=k, replace=False)).astype(np.int64)
    w = np.asarray(params.feature_weights, dtype=np.float64)
    k = min(k, int(np.count_nonzero(w)))
    return np.sort(rng.choice(n_features, size=k, replace=False, p=w / w.sum())).astype(np.int64)


def random_trees(
    trees: GrowingTrees, features: IntArray, edges: BinEdges, params: GBDTParams, round_: int
) -> GrowingTrees:
    """Complete trees of random splits (Geurts et al.'s extremely randomised trees, as used for
    DP boosting by Maddock et al. 2022): at every node above the last level a random sampled
    feature with at least one cut point (drawn by ``feature_weights``), a random cut
    (equal-count bins make it a random quantile) and a random missing direction. Drawn from
    the job's public seed: no data is looked at, so no privacy is spent on structure."""
    weights = (np.ones(edges.n_features) if params.feature_weights is None
               else np.asarray(params.feature_weights, dtype=np.float64))
    usable = np.array(
        [f for f in features if len(edges.edges[f]) > 0 and weights[f] > 0], dtype=np.int64
    )
    if len(usable) == 0:
        return trees
    rng = np.random.default_rng([params.seed, round_, 1])
    n_split = heap_size(params.max_depth - 1)
    shape = (trees.feature.shape[0], n_split)
    if params.feature_weights is None:
        f = usable[rng.integers(0, len(usable), shape)]
    else:
        f = usable[rng.choice(len(usable), size=shape, p=weights[usable] / weights[usable].sum())]
    n_cuts = np.array([len(e) for e in edges.edges], dtype=np.int64)[f]
    t = np.floor(rng.random(shape) * n_cuts).astype(np.int64)
    tree, node = np.nonzero(np.ones(shape, dtype=np.bool_))
    return trees.with_splits(
        tree.astype(np.int64), node.astype(np.int64), f.reshape(-1), t.reshape(-1),
        (rng.random(shape) < 0.5).reshape(-1),
    )


def prior_margin(counts: FloatArray, num_class: int) -> FloatArray:
    """Base margin from class counts: log-odds (binary) or log priors (softmax)."""
    c = np.maximum(np.asarray(counts, dtype=np.float64), 0.0)
    total = c.sum()
    if total <= 0:
        return np.zeros(1 if num_class == 2 else num_class)
    p = np.clip(c / total, _PRIOR_FLOOR, 1 - _PRIOR_FLOOR)
    if num_class == 2:
        return np.array([math.log(p[1] / p[0])])
    out: FloatArray = np.log(p)
    return out


def fixed_margin(params: GBDTParams) -> FloatArray:
    """Base margin without label counts: ``base_score``'s log-odds, else probability 1/2
    (binary) or uniform classes (softmax; a common margin shift cancels in the softmax)."""
    if params.num_class == 2 and params.base_score is not None:
        p = params.base_score
        return np.array([math.log(p / (1 - p))])
    return np.zeros(params.n_outputs)


@dataclass(frozen=True)
class RoundRecord:
    round: int
    levels: int
    leaves: int
    validation_loss: float | None


class TreeBuilder:
    """The aggregator's reducer for one boosting job (see the module docstring).

    ``estimate_base_score``: ask for label counts when ``params.base_score`` is None (plain
    jobs); a DP job passes False and starts from ``base_score`` or probability 1/2 (uniform
    for softmax), because released label counts would need their own budget.

    ``initial``: continue boosting from this ensemble for ``n_estimators`` more rounds (a bank
    adding local trees to the federated model, or a job resumed from its last whole round).
    """

    def __init__(
        self,
        params: GBDTParams,
        edges: BinEdges,
        *,
        estimate_base_score: bool = True,
        initial: TreeEnsemble | None = None,
    ) -> None:
        self.params = params
        self.edges = edges
        self.records: list[RoundRecord] = []
        self._best: tuple[float, int] | None = None
        self._levels = 0
        self._task: Task | None
        if params.feature_weights is not None and len(params.feature_weights) != edges.n_features:
            raise FraudflError(
                f"feature_weights: {len(params.feature_weights)} weights for "
                f"{edges.n_features} features"
            )
        if initial is not None:
            if (initial.edges != edges or initial.num_class != params.num_class
                    or initial.max_depth != params.max_depth):
                raise FraudflError(
                    "tree job: the initial ensemble needs the job's bin edges, num_class and "
                    f"max_depth (it has {initial.num_class} classes, depth {initial.max_depth})"
                )
            self.ensemble = initial
            self._target = initial.n_rounds + params.n_estimators
            self._task = self._start_round()
            return
        self._target = params.n_estimators
        if params.base_score is None and estimate_base_score:
            self.ensemble = TreeEnsemble.empty(
                edges, params.num_class, params.max_depth, np.zeros(params.n_outputs)
            )
            self._task = LabelCountTask(params.num_class)
        else:
            self.ensemble = TreeEnsemble.empty(
                edges, params.num_class, params.max_depth, fixed_margin(params)
            )
            self._task = self._start_round()

    @property
    def task(self) -> Task | None:
        """The task the banks answer next; None when the job is done."""
        return self._task

    def _start_round(self) -> LevelTask | LeafTask:
        self._levels = 0
        r = self.ensemble.n_rounds
        features = column_sample(self.params, self.edges.n_features, r)
        trees = GrowingTrees.new(self.params.n_outputs, self.params.max_depth)
        if self.params.splitter == "random":
            self._levels = self.params.max_depth
            trees = random_trees(trees, features, self.edges, self.params, r)
            return LeafTask(round=r, ensemble=self.ensemble, trees=trees)
        return LevelTask(round=r, depth=0, ensemble=self.ensemble, trees=trees, features=features)

    def _after_round(self) -> Task | None:
        if self.params.early_stopping_rounds is not None:
            return ValidationTask(self.ensemble)
        if self.ensemble.n_rounds >= self._target:
            return None
        return self._start_round()

    def reduce(self, total: npt.ArrayLike) -> None:
        """Consume the summed vector of the current task and move to the next one."""
        task = self._task
        if task is None:
            raise FraudflError("tree job: a sum arrived after the job finished")
        vec = np.asarray(total, dtype=np.float64).reshape(-1)
        if vec.shape != (task.size,):
            raise FraudflError(
                f"tree job: expected a sum of {task.size} values for {type(task).__name__}, "
                f"got {vec.shape[0]}"
            )
        if not np.all(np.isfinite(vec)):
            raise FraudflError(f"tree job: the sum for {type(task).__name__} is not finite")
        if isinstance(task, LabelCountTask):
            self.ensemble = replace(
                self.ensemble, base_margin=prior_margin(vec, self.params.num_class)
            )
            self._task = self._start_round()
        elif isinstance(task, LevelTask):
            self._task = self._reduce_level(task, vec)
        elif isinstance(task, LeafTask):
            self._task = self._reduce_leaves(task, vec)
        else:
            self._task = self._reduce_validation(vec)

    def _reduce_level(self, task: LevelTask, vec: FloatArray) -> Task:
        layout = task.layout()
        splits = find_splits(unpack(vec, layout), layout, task.features, self.params)
        tree, node = task.trees.open_nodes(task.depth)
        trees = task.trees.with_splits(
            tree, node, splits.feature, splits.split_bin, splits.default_left
        )
        self._levels = task.depth + 1
        if task.depth + 1 < self.params.max_depth and np.any(splits.feature >= 0):
            return replace(task, depth=task.depth + 1, trees=trees)
        return LeafTask(round=task.round, ensemble=task.ensemble, trees=trees)

    def _reduce_leaves(self, task: LeafTask, vec: FloatArray) -> Task | None:
        sums = unpack(vec, task.layout()).reshape(-1, N_STATS)
        tree, node = task.trees.leaves()
        value = np.zeros(task.trees.feature.shape, dtype=np.float64)
        value[tree, node] = leaf_values(sums, self.params)
        self.ensemble = self.ensemble.appended(
            task.trees.feature, task.trees.split_bin, task.trees.default_left, value
        )
        self.records.append(RoundRecord(task.round, self._levels, len(tree), None))
        return self._after_round()

    def _reduce_validation(self, vec: FloatArray) -> Task | None:
        loss_sum, count = float(vec[0]), float(vec[1])
        if count <= 0:
            raise FraudflError("early stopping: the banks have no validation rows")
        loss = loss_sum / count
        self.records[-1] = replace(self.records[-1], validation_loss=loss)
        rounds = self.ensemble.n_rounds
        if self._best is None or loss < self._best[0]:
            self._best = (loss, rounds)
        patience = self.params.early_stopping_rounds
        assert patience is not None
        if rounds - self._best[1] >= patience or rounds >= self._target:
            if self._best[1] < rounds:
                log.info("early stopping: keeping %d of %d rounds (validation log loss %.5f)",
                         self._best[1], rounds, self._best[0])
                self.ensemble = self.ensemble.truncated(self._best[1])
            return None
        return self._start_round()

    @property
    def best_round(self) -> int | None:
        """Rounds kept by early stopping (None without it)."""
        return None if self._best is None else self._best[1]
