"""A bank's side of a boosting job: answer each task with one flat vector from its own rows.

:class:`TreeBank` keeps what makes a level cheap to answer: the margins of its rows under the
published ensemble (updated by the rounds added since, not recomputed), the round's Poisson row
sample and gradients, and the node each sampled row has reached. Under DP it clips gradients,
adds its share of the noise to every vector, and charges its accountant one step per boosting
round before touching the round's rows; a job its budget cannot pay for is declined up front
(:class:`~fraudfl.privacy.accountant.BudgetExhausted`), never half-way.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from fraudfl.errors import FraudflError
from fraudfl.privacy.accountant import PrivacyAccountant
from fraudfl.trees.binning import BinnedArray
from fraudfl.trees.ensemble import TreeEnsemble, traverse
from fraudfl.trees.histogram import cell_codes, gradients, node_histograms
from fraudfl.trees.params import GBDTParams
from fraudfl.trees.privacy import TreeNoise, add_noise_share, clip_gradients
from fraudfl.trees.protocol import (
    GrowingTrees,
    LabelCountTask,
    LeafTask,
    LevelTask,
    Task,
    ValidationTask,
    slot_map,
)

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class TaskRefused(FraudflError):
    """A bank will not answer a task (out of order, or a release its DP setting forbids)."""


class _Margins:
    """Margins of a fixed set of rows under a growing ensemble, updated incrementally."""

    def __init__(self, X: BinnedArray) -> None:
        self._X = X
        self._rounds = -1
        self._base: FloatArray | None = None
        self._margin: FloatArray | None = None

    def of(self, ensemble: TreeEnsemble) -> FloatArray:
        same_base = self._base is not None and np.array_equal(self._base, ensemble.base_margin)
        if self._margin is None or not same_base or self._rounds > ensemble.n_rounds:
            self._margin = ensemble.margin_binned(self._X)
        elif self._rounds < ensemble.n_rounds:
            self._margin = self._margin + ensemble.rounds(
                self._rounds, ensemble.n_rounds
            ).margin_binned(self._X)
        self._rounds, self._base = ensemble.n_rounds, ensemble.base_margin.copy()
        return self._margin


class TreeBank:
    """One bank's handler for every task kind of :mod:`fraudfl.trees.protocol`.

    ``X_binned`` are the bank's training rows binned with the federation's edges, ``y`` their
    labels; the optional validation rows answer :class:`ValidationTask`. ``rng`` draws the row
    samples and the noise (seed it from ``os.urandom`` outside a simulation). With ``noise``,
    ``accountant`` is required and ``noise_shares`` is the number of banks whose shares the sum
    is guaranteed to contain.
    """

    def __init__(
        self,
        X_binned: BinnedArray,
        y: npt.ArrayLike,
        params: GBDTParams,
        *,
        rng: np.random.Generator,
        noise: TreeNoise | None = None,
        accountant: PrivacyAccountant | None = None,
        noise_shares: int = 1,
        X_val: BinnedArray | None = None,
        y_val: npt.ArrayLike | None = None,
        label: str = "bank",
    ) -> None:
        self.X = X_binned
        self.y = np.asarray(y, dtype=np.int64)
        if self.X.ndim != 2 or self.y.shape != (self.X.shape[0],):
            raise FraudflError(f"{label}: {self.X.shape} binned rows and {self.y.shape} labels")
        if self.y.size and (self.y.min() < 0 or self.y.max() >= params.num_class):
            raise FraudflError(f"{label}: labels outside 0 .. {params.num_class - 1}")
        if noise is not None and accountant is None:
            raise FraudflError(f"{label}: DP trees need the bank's privacy accountant")
        self.params = params
        self.rng = rng
        self.noise = noise
        self.accountant = accountant
        self.noise_shares = noise_shares
        self.label = label
        self.X_val = X_val
        self.y_val = None if y_val is None else np.asarray(y_val, dtype=np.int64)
        self._margins = _Margins(X_binned)
        self._val_margins = None if X_val is None else _Margins(X_val)
        self._authorised = False
        self._round = -1
        self._rows: IntArray = np.zeros(0, dtype=np.int64)
        self._g: FloatArray = np.zeros((0, 1))
        self._h: FloatArray = np.zeros((0, 1))
        self._nodes: IntArray = np.zeros((0, 1), dtype=np.int64)
        self._X_round: BinnedArray = X_binned[:0]
        self._cells: npt.NDArray[np.unsignedinteger] | None = None
        self._depth = 0

    def handle(self, task: Task) -> FloatArray:
        """This bank's vector for ``task`` (noised under DP)."""
        if isinstance(task, LabelCountTask):
            return self._label_counts(task)
        if isinstance(task, LevelTask):
            return self._level(task)
        if isinstance(task, LeafTask):
            return self._leaves(task)
        return self._validation(task)

    def resume(self, task: LevelTask | LeafTask) -> None:
        """Join round ``task.round`` part-way (a bank that lost its round state, or sat out
        its first levels): a new Poisson sample, charged as a new step under DP exactly as
        depth 0 is, and its rows are routed through the splits chosen so far by the next
        :meth:`handle`. Conservative: the step charged for the lost sample stays spent."""
        self._start_round(task)

    def finish(self) -> int:
        """End of the job: close the accountant's authorisation; returns unused steps."""
        self._authorised = False
        return 0 if self.accountant is None else self.accountant.end_round()

    # ---- task handlers ----------------------------------------------------------------------
    def _label_counts(self, task: LabelCountTask) -> FloatArray:
        if self.noise is not None:
            raise TaskRefused(
                f"{self.label}: label counts are not released under DP; set base_score"
            )
        counts: FloatArray = np.bincount(self.y, minlength=task.num_class).astype(np.float64)
        return counts

    def _start_round(self, task: LevelTask | LeafTask) -> None:
        """Sample the round's rows and compute their gradients; charge the accountant first."""
        if self.noise is not None:
            assert self.accountant is not None
            if not self._authorised:
                # The whole job, before any row is touched: a bank that cannot afford it
                # declines now rather than after spending part of its budget.
                self.accountant.authorize(
                    self.noise.tree_multiplier, self.noise.sample_rate, self.params.n_estimators
                )
                self._authorised = True
            self.accountant.step(self.noise.tree_multiplier, self.noise.sample_rate)
        n = len(self.y)
        if self.params.subsample < 1.0:
            # Poisson sampling (each row independently): what the amplification assumes.
            self._rows = np.flatnonzero(self.rng.random(n) < self.params.subsample)
        else:
            self._rows = np.arange(n, dtype=np.int64)
        self._X_round = self.X[self._rows]
        self._cells = None
        margin = self._margins.of(task.ensemble)[self._rows]
        g, h = gradients(margin, self.y[self._rows], self.params.num_class)
        self._g, self._h = clip_gradients(g, h) if self.noise is not None else (g, h)
        self._nodes = np.zeros((len(self._rows), self.params.n_outputs), dtype=np.int64)
        self._depth = 0
        self._round = task.round

    def _advance(self, trees: GrowingTrees, depth: int, missing_bin: int) -> None:
        """Move the sampled rows down the growing trees to ``depth`` (from where they are)."""
        if depth < self._depth:
            raise TaskRefused(f"{self.label}: asked for depth {depth} after {self._depth}")
        self._nodes = traverse(
            trees.feature, trees.split_bin, trees.default_left, self._X_round,
            depth - self._depth, missing_bin, start=self._nodes,
        )
        self._depth = depth

    def _level(self, task: LevelTask) -> FloatArray:
        if task.depth == 0:
            self._start_round(task)
        elif task.round != self._round:
            # Resuming mid-tree would draw a new, uncharged sample: refuse instead.
            raise TaskRefused(
                f"{self.label}: level {task.depth} of round {task.round}, but this bank's "
                f"current round is {self._round}"
            )
        t = task.trees
        self._advance(t, task.depth, task.ensemble.edges.missing_bin)
        tree, node = t.open_nodes(task.depth)
        slots = slot_map(t.feature.shape, tree, node)[
            np.arange(t.feature.shape[0])[None, :], self._nodes
        ]
        layout = task.layout()
        if self._cells is None:
            # The round's features and sample are fixed: map its codes to cells once.
            missing = task.ensemble.edges.missing_bin
            self._cells = cell_codes(self._X_round[:, task.features], layout, missing)
        vec = node_histograms(slots, self._cells, self._g, self._h, layout)
        if self.noise is not None:
            std = self.noise.level_std(len(task.features), self.params.n_outputs)
            vec = add_noise_share(vec, std, self.noise_shares, self.rng)
        return vec

    def _leaves(self, task: LeafTask) -> FloatArray:
        if task.round != self._round:
            if self.params.splitter != "random":
                raise TaskRefused(
                    f"{self.label}: leaves of round {task.round}, current {self._round}"
                )
            # Random splits: the leaf sums are the round's only task.
            self._start_round(task)
        t = task.trees
        self._advance(t, self.params.max_depth, task.ensemble.edges.missing_bin)
        tree, node = t.leaves()
        slots = slot_map(t.feature.shape, tree, node)[
            np.arange(t.feature.shape[0])[None, :], self._nodes
        ]
        layout = task.layout()
        cells = np.zeros((1, len(self._rows)), dtype=np.uint8)
        vec = node_histograms(slots, cells, self._g, self._h, layout)
        if self.noise is not None:
            std = self.noise.leaf_std(self.params.n_outputs)
            vec = add_noise_share(vec, std, self.noise_shares, self.rng)
        return vec

    def _validation(self, task: ValidationTask) -> FloatArray:
        if self._val_margins is None or self.y_val is None:
            return np.zeros(2)
        margin = self._val_margins.of(task.ensemble)
        return np.array([log_loss_sum(margin, self.y_val), float(len(self.y_val))])


def log_loss_sum(margin: FloatArray, y: IntArray) -> float:
    """Summed log loss (logistic or softmax cross-entropy) of margins ``(rows, outputs)``."""
    if margin.shape[1] == 1:
        m = margin[:, 0]
        # log(1 + e^m) - y m, stable for large |m|.
        return float(np.sum(np.logaddexp(0.0, m) - y * m))
    top = margin.max(axis=1)
    lse = top + np.log(np.exp(margin - top[:, None]).sum(axis=1))
    return float(np.sum(lse - margin[np.arange(len(y)), y]))
