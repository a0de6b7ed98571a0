"""Gradient-boosted trees as round kinds: every step of a boosting job is one secure sum.

``training.model = "gbdt"``: after the statistics round (which fits the feature pipeline and
publishes model v0 without an ensemble), the federation runs

1. ``tree_bins`` (once): each bank's quantile-sketch counts of every pipeline feature on the
   trees' fine grid (:func:`fraudfl.trees.feature_histograms`); the aggregator reads the cut
   points off the sum (:func:`fraudfl.trees.edges_from_histograms`), so the bins are exactly
   the pooled rows' ones;
2. ``tree`` rounds, one per step of :class:`~fraudfl.trees.TreeBuilder`: the label counts (only
   without DP and without ``base_score``), each level of a boosting round's trees, its leaf
   sums. The announcement carries what a bank needs to recompute its vector: the job's
   parameters, the published ensemble's version and hash, the boosting round, the depth, the
   splits chosen so far and the column sample. The aggregator reduces the *sum* only
   (``TreeBuilder.reduce``); an ensemble that changed (base margin, a finished round's trees)
   is published as the model of that round number, kind ``gbdt``.

The bank's half (:class:`BankTreeJob`) keeps a :class:`~fraudfl.trees.TreeBank` for the job:
its rows binned with the published edges, margins under the published ensemble, the round's
row sample. Under DP the bank calibrates its noise with its own accountant for the rounds
left (``calibrate_tree_noise``), and the handler authorises them and charges one step per
boosting round before it samples rows; a bank whose budget cannot pay declines, and label
counts are refused. Its noise share is sized for the secure-aggregation threshold.

Restarts. The aggregator's checkpoint holds the job (:meth:`TreeJob.to_state`): the ensemble
of the whole rounds and the sums reduced in the round in progress, replayed into a fresh
builder on load, so a restart resumes mid-tree. A bank that lost its round state (restarted,
or not selected for the round's first levels) joins the round part-way with a new row sample,
charged as a new step (``TreeBank.resume``): the step charged for the lost sample stays spent
(conservative), and after a restart the noise is calibrated again for the rounds left with
the history included, so the total stays within the bank's target.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from fraudfl.errors import FraudflError
from fraudfl.privacy.accountant import BudgetExhausted
from fraudfl.rounds.messages import Announcement, TreeInstructions, tree_digest
from fraudfl.rounds.policy import PolicyRefusal, Refusal
from fraudfl.rounds.tasks import TASKS, Contribution, Declined, Outcome, SumShape, Task
from fraudfl.secagg.messages import RoundSetup
from fraudfl.secagg.messages import decode as decode_secagg
from fraudfl.trees.bank import TaskRefused, TreeBank
from fraudfl.trees.binning import (
    TREE_GRID_BINS,
    BinEdges,
    edges_from_histograms,
    feature_histograms,
)
from fraudfl.trees.ensemble import TreeEnsemble, heap_size
from fraudfl.trees.params import GBDTParams
from fraudfl.trees.privacy import TreeNoise, calibrate_tree_noise
from fraudfl.trees.protocol import (
    GrowingTrees,
    LabelCountTask,
    LeafTask,
    LevelTask,
    TreeBuilder,
    column_sample,
)
from fraudfl.vocabulary import RoundKind

if TYPE_CHECKING:
    from fraudfl.rounds.orchestrator import Orchestrator, RoundRecord
    from fraudfl.rounds.participant import BankParticipant
    from fraudfl.secagg.server import SumServer

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
STATE_VERSION = 1


class TreeJob:
    """The aggregator's boosting job: its parameters, bins and builder, saveable mid-tree."""

    def __init__(self, params: GBDTParams, *, label_counts: bool, clip: float) -> None:
        self.params = params
        self.label_counts = label_counts and params.base_score is None
        self.clip = clip
        self.edges: BinEdges | None = None
        self.builder: TreeBuilder | None = None
        # Sums reduced since the last whole boosting round: replayed into a builder on load.
        self.round_sums: list[FloatArray] = []
        # A finished job restored from a checkpoint: its ensemble (no builder needed).
        self.finished: TreeEnsemble | None = None

    def start(self, edges: BinEdges) -> None:
        self.edges = edges
        self.builder = TreeBuilder(self.params, edges, estimate_base_score=self.label_counts)

    @property
    def ensemble(self) -> TreeEnsemble | None:
        """The ensemble the banks start from (None until the bins and base margin exist)."""
        if self.finished is not None:
            return self.finished
        if self.builder is None or isinstance(self.builder.task, LabelCountTask):
            return None
        return self.builder.ensemble

    @property
    def done(self) -> bool:
        return self.finished is not None or (
            self.builder is not None and self.builder.task is None)

    def reduce(self, total: FloatArray) -> bool:
        """Consume one step's sum; whether the ensemble changed (a model to publish)."""
        assert self.builder is not None
        task = self.builder.task
        rounds = self.builder.ensemble.n_rounds
        self.builder.reduce(total)
        if isinstance(task, LevelTask) and self.builder.ensemble.n_rounds == rounds:
            self.round_sums.append(np.asarray(total, dtype=np.float64))
            return False
        self.round_sums = []
        return True

    def instructions(self) -> TreeInstructions:
        """The announcement of the builder's next step."""
        params = self.params.model_dump(mode="json")
        if self.builder is None:
            return TreeInstructions(step="bins", params=params, clip=self.clip)
        task = self.builder.task
        if isinstance(task, LabelCountTask):
            return TreeInstructions(step="labels", params=params, clip=self.clip)
        if isinstance(task, LevelTask):
            return TreeInstructions(
                step="level", params=params, clip=self.clip, boosting_round=task.round,
                depth=task.depth, splits=_splits(task.trees),
                features=tuple(int(f) for f in task.features),
            )
        if isinstance(task, LeafTask):
            return TreeInstructions(
                step="leaves", params=params, clip=self.clip, boosting_round=task.round,
                depth=self.params.max_depth, splits=_splits(task.trees),
            )
        raise FraudflError(f"tree job: {type(task).__name__} is not a round kind")

    def vector_length(self, n_features: int) -> int:
        if self.builder is None:
            return n_features * TREE_GRID_BINS
        assert self.builder.task is not None
        return self.builder.task.size

    # -- state -------------------------------------------------------------------------------

    def to_state(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        ensemble = self.ensemble
        header: dict[str, Any] = {
            "version": STATE_VERSION,
            "params": self.params.model_dump(mode="json"),
            "label_counts": self.label_counts,
            "clip": self.clip,
            "edges": None if self.edges is None else self.edges.to_dict(),
            "ensemble": None if ensemble is None else ensemble.metadata(),
            "round_sums": len(self.round_sums),
        }
        blobs: dict[str, bytes] = {}
        if ensemble is not None:
            blobs["trees.nodes"] = np.ascontiguousarray(ensemble.node_array(), "<f8").tobytes()
        for i, s in enumerate(self.round_sums):
            blobs[f"trees.sum.{i}"] = np.ascontiguousarray(s, "<f8").tobytes()
        return header, blobs

    @classmethod
    def from_state(cls, header: dict[str, Any], blobs: dict[str, bytes]) -> TreeJob:
        if header.get("version") != STATE_VERSION:
            raise ValueError("tree job state of another format version")
        job = cls(GBDTParams.parse(header["params"], "tree job state"),
                  label_counts=bool(header["label_counts"]), clip=float(header["clip"]))
        if header["edges"] is None:
            return job
        edges = BinEdges.from_dict(header["edges"], "tree job state: edges")
        if header["ensemble"] is None:
            job.start(edges)
            return job
        meta = header["ensemble"]
        nodes = np.frombuffer(blobs["trees.nodes"], dtype="<f8").astype(np.float64)
        ensemble = TreeEnsemble.from_parts(
            meta, nodes.reshape(int(meta["n_trees"]), heap_size(int(meta["max_depth"])), 4),
            source="tree job state",
        )
        job.edges = edges
        remaining = job.params.n_estimators - ensemble.n_rounds
        if remaining <= 0:
            job.finished = ensemble
            return job
        # A builder continuing from the whole rounds, then the current round's sums again.
        job.builder = TreeBuilder(
            job.params.model_copy(update={"n_estimators": remaining}), edges, initial=ensemble
        )
        for i in range(int(header["round_sums"])):
            job.reduce(np.frombuffer(blobs[f"trees.sum.{i}"], dtype="<f8").astype(np.float64))
        return job


def _splits(trees: GrowingTrees) -> tuple[tuple[int, int, int, int, bool], ...]:
    tree, node = np.nonzero(trees.feature >= 0)
    return tuple(
        (int(t), int(n), int(trees.feature[t, n]), int(trees.split_bin[t, n]),
         bool(trees.default_left[t, n]))
        for t, n in zip(tree, node, strict=True)
    )


def growing_trees(params: GBDTParams, edges: BinEdges, tree: TreeInstructions) -> GrowingTrees:
    """The announced splits as growing trees; ``FraudflError`` if one cannot exist."""
    trees = GrowingTrees.new(params.n_outputs, params.max_depth)
    if not tree.splits:
        return trees
    s = np.asarray(tree.splits, dtype=np.int64).reshape(-1, 5)
    inner = heap_size(params.max_depth - 1)
    ok = ((s[:, 0] >= 0) & (s[:, 0] < params.n_outputs) & (s[:, 1] >= 0) & (s[:, 1] < inner)
          & (s[:, 2] >= 0) & (s[:, 2] < edges.n_features) & (s[:, 3] >= 0)
          & (s[:, 3] <= edges.max_bin))
    if not np.all(ok):
        raise FraudflError("a split outside the job's trees, features or bins")
    return trees.with_splits(s[:, 0], s[:, 1], s[:, 2], s[:, 3], s[:, 4].astype(np.bool_))


# -- the round kinds ------------------------------------------------------------------------

def start_tree_job(orch: Orchestrator) -> None:
    """After the statistics round of a gbdt federation: the job, and model v0 (no trees)."""
    cfg = orch.config.trees
    params = GBDTParams.parse(cfg.gbdt_params(orch.config.rounds.seed), "trees settings")
    orch.trees = TreeJob(params, label_counts=cfg.label_counts, clip=cfg.clip)
    orch.model_version = 0


def _announce(orch: Orchestrator, selected: list[str], kind: RoundKind) -> Announcement:
    assert orch.trees is not None
    ensemble = orch.trees.ensemble
    return Announcement(
        round=orch.round, kind=kind, participants=tuple(selected),
        secure=orch.config.secagg.enabled, model_version=orch.model_version,
        model_sha256=None if ensemble is None else tree_digest(ensemble.node_array()),
        planned_rounds=orch.planned_rounds, tree=orch.trees.instructions(),
    )


def _ready(bank: BankParticipant, ann: Announcement) -> bool:
    info = bank.model_info
    if info is None or info.version != ann.model_version or info.kind != "gbdt":
        return False
    return ann.model_sha256 is None or info.sha256 == ann.model_sha256


def _setup_length(setup: bytes) -> tuple[int, int]:
    """The setup's vector length and threshold (the policy checked that it decodes)."""
    payload = decode_secagg(setup).payload
    assert isinstance(payload, RoundSetup)
    return payload.params.vector_length, payload.params.threshold


class TreeBinsTask(Task):
    """Sketch counts of the pipeline's features on the trees' grid, summed once per job."""

    kind: ClassVar[RoundKind] = "tree_bins"

    def shape(self, orch: Orchestrator, selected: list[str]) -> SumShape:
        assert orch.trees is not None and orch.pipeline is not None
        length = orch.trees.vector_length(orch.pipeline.num_features)
        return SumShape(length, False, 32, orch.trees.clip)

    def announce(self, orch: Orchestrator, selected: list[str]) -> Announcement:
        return _announce(orch, selected, "tree_bins")

    def reduce(self, orch: Orchestrator, server: SumServer, rec: RoundRecord) -> str | None:
        assert orch.trees is not None and orch.pipeline is not None
        counts = server.params.quantizer().decode(server.result)
        if np.any(counts < -0.5):
            return "invalid sum: negative sketch counts"
        try:
            edges = edges_from_histograms(counts, orch.pipeline.num_features,
                                          orch.trees.params.max_bin)
        except FraudflError as exc:
            return f"invalid sum: {exc}"
        orch.trees.start(edges)
        if orch.trees.ensemble is not None:
            orch.model_version = rec.round
        log.info("tree bins from %d banks: %d cut points over %d features",
                 len(server.survivors), sum(len(e) for e in edges.edges), edges.n_features)
        return None

    def ready(self, bank: BankParticipant, ann: Announcement) -> bool:
        return _ready(bank, ann)

    def contribute(self, bank: BankParticipant, ann: Announcement, setup: bytes) -> Outcome:
        X, y = bank.training_data()
        vector = feature_histograms(X)
        length, _ = _setup_length(setup)
        if length != len(vector):
            return PolicyRefusal(Refusal.SETUP_MISMATCH,
                                 f"setup sums {length} values, the sketch has {len(vector)}")
        # Answered once (policy), as the statistics: a second sketch over another set of banks
        # would give this bank's counts away by subtraction.
        bank.bins_round = ann.round
        return Contribution(vector, None, len(y))


class TreeStepTask(Task):
    """One step of the boosting job: label counts, one level's histograms, or leaf sums."""

    kind: ClassVar[RoundKind] = "tree"

    def shape(self, orch: Orchestrator, selected: list[str]) -> SumShape:
        assert orch.trees is not None and orch.pipeline is not None
        return SumShape(orch.trees.vector_length(orch.pipeline.num_features), False, 32,
                        orch.trees.clip)

    def announce(self, orch: Orchestrator, selected: list[str]) -> Announcement:
        return _announce(orch, selected, "tree")

    def reduce(self, orch: Orchestrator, server: SumServer, rec: RoundRecord) -> str | None:
        job = orch.trees
        assert job is not None and job.builder is not None
        total = server.params.quantizer().decode(server.result)
        try:
            changed = job.reduce(total)
        except FraudflError as exc:
            # A bank can put any value into its masked vector: the builder refused the sum
            # and kept its state, so the step is asked again in the next round.
            return f"invalid sum: {exc}"
        if changed:
            orch.model_version = rec.round
            orch.completed = job.builder.ensemble.n_rounds
        return None

    def ready(self, bank: BankParticipant, ann: Announcement) -> bool:
        return _ready(bank, ann)

    def contribute(self, bank: BankParticipant, ann: Announcement, setup: bytes) -> Outcome:
        tree = ann.tree
        assert tree is not None  # the policy refuses a tree round without it
        ensemble = bank.ensemble
        if ensemble is None and tree.step != "labels":
            return PolicyRefusal(Refusal.SETUP_MISMATCH, "a tree step before any ensemble")
        params = GBDTParams.parse(tree.params)
        length, threshold = _setup_length(setup)
        privacy = bank.config.privacy
        if tree.step == "labels":
            if privacy.enabled:
                return PolicyRefusal(Refusal.OUT_OF_BOUNDS,
                                     "label counts are not released under DP")
            _, y = bank.training_data()
            counts = np.bincount(y, minlength=params.num_class).astype(np.float64)
            if length != len(counts):
                return PolicyRefusal(Refusal.SETUP_MISMATCH, "label counts of another length")
            return Contribution(counts, None, len(y))
        assert ensemble is not None
        # Noise shares are sized for the fewest banks a completed sum contains: the threshold;
        # a plain sum (simulation) models the secure round's majority threshold.
        shares = threshold if ann.secure else len(ann.participants) // 2 + 1
        try:
            job = bank_tree_job(bank, params, ensemble, shares)
        except BudgetExhausted as exc:
            return Declined("privacy_budget", str(exc))
        except FraudflError as exc:
            return PolicyRefusal(Refusal.OUT_OF_BOUNDS, f"tree job: {exc}")
        try:
            trees = growing_trees(params, ensemble.edges, tree)
            task: LevelTask | LeafTask
            if tree.step == "level":
                features = column_sample(params, ensemble.edges.n_features, tree.boosting_round)
                if (tree.depth >= params.max_depth or ensemble.n_rounds != tree.boosting_round
                        or tuple(features.tolist()) != tree.features):
                    raise FraudflError("the level is not the next step of the published model")
                task = LevelTask(round=tree.boosting_round, depth=tree.depth, ensemble=ensemble,
                                 trees=trees, features=features)
            else:
                task = LeafTask(round=tree.boosting_round, ensemble=ensemble, trees=trees)
        except FraudflError as exc:
            return PolicyRefusal(Refusal.OUT_OF_BOUNDS, f"tree step: {exc}")
        if task.size != length:
            return PolicyRefusal(Refusal.SETUP_MISMATCH,
                                 f"setup sums {length} values, the step has {task.size}")
        try:
            vector = job.answer(task)
        except BudgetExhausted as exc:
            return Declined("privacy_budget", str(exc))
        except TaskRefused as exc:
            return PolicyRefusal(Refusal.OUT_OF_BOUNDS, str(exc))
        return Contribution(vector, None, len(job.handler.y), trained=False)


@dataclass
class BankTreeJob:
    """A bank's state for one boosting job (not saved: rebuilt from the published model)."""

    params: GBDTParams
    edges: BinEdges
    handler: TreeBank
    # The boosting round whose row sample the handler holds (-1: none).
    round: int = -1

    def answer(self, task: LevelTask | LeafTask) -> FloatArray:
        # Depth 0 starts a round, as do the leaves of random splits (their only step).
        starts = (task.depth == 0 if isinstance(task, LevelTask)
                  else self.handler.params.splitter == "random")
        if not starts and task.round != self.round:
            self.handler.resume(task)
        vector = self.handler.handle(task)
        self.round = task.round
        return vector


def bank_tree_job(
    bank: BankParticipant, params: GBDTParams, ensemble: TreeEnsemble, shares: int
) -> BankTreeJob:
    """The bank's handler for this job: made at its first step (or after a restart), with its
    noise calibrated for the rounds left; ``FraudflError`` when no noise fits the budget
    (declined by the caller as a budget decline)."""
    job = bank.tree_job
    if isinstance(job, BankTreeJob) and job.params == params and job.edges == ensemble.edges:
        return job
    X, y = bank.training_data()
    remaining = params.model_copy(update={"n_estimators": params.n_estimators - ensemble.n_rounds})
    if remaining.n_estimators < 1:
        raise FraudflError("the job has no boosting rounds left")
    privacy = bank.config.privacy
    noise: TreeNoise | None = None
    if privacy.enabled:
        acc = bank.accountant
        if privacy.noise_multiplier is not None:
            noise = TreeNoise(privacy.noise_multiplier, params.steps_per_tree, params.subsample)
        else:
            assert acc.budget is not None
            try:
                noise = calibrate_tree_noise(acc, privacy.epsilon_budget, remaining,
                                             acc.budget.delta)
            except FraudflError as exc:  # no noise keeps the rounds left within the budget
                log.warning("%s: %s", bank.bank_id, exc)
                raise BudgetExhausted(acc.label, acc.epsilon() if acc.history else 0.0,
                                      math.inf, acc.budget) from exc
        log.info("%s: tree noise multiplier %.3f per sum for %d rounds left", bank.bank_id,
                 noise.step_multiplier, remaining.n_estimators)
    handler = TreeBank(
        ensemble.edges.transform(X), y, remaining, rng=bank.rng(bank.last_announced),
        noise=noise, accountant=bank.accountant if noise is not None else None,
        noise_shares=max(1, shares), label=bank.bank_id,
    )
    if isinstance(job, BankTreeJob):
        job.handler.finish()
    new = BankTreeJob(params, ensemble.edges, handler)
    bank.tree_job = new
    return new


TASKS.update({task.kind: task for task in (TreeBinsTask(), TreeStepTask())})
