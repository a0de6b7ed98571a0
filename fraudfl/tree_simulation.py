"""``fraudfl simulate --model gbdt``: a gradient-boosted trees job over the in-memory grid.

The same engine as every simulation (:class:`~fraudfl.simulation.Simulation`: the real
Orchestrator and BankParticipants, the statistics round, secure aggregation or its plain twin,
each bank's accountant); the tree kinds of :mod:`fraudfl.rounds.tree_tasks` run the job. What
differs is the observation: a published ensemble is scored in NumPy (no torch) on the global
evaluation set and each bank's validation split, and one record is kept per boosting round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fraudfl.data import FederatedDataset
from fraudfl.data.pipeline import FeaturePipeline
from fraudfl.errors import FraudflError
from fraudfl.rounds.messages import ModelInfo
from fraudfl.simulation import (
    RoundRecord,
    Simulation,
    SimulationConfig,
    SimulationResult,
    split_banks,
    transform_data,
)
from fraudfl.training.evaluation import evaluate_ensemble
from fraudfl.trees.ensemble import TreeEnsemble

log = logging.getLogger(__name__)

class TreeSimulation(Simulation):
    """A tree job on the grid, one record per published boosting round."""

    def __init__(
        self, dataset: FederatedDataset, config: SimulationConfig, *,
        on_round: Callable[[RoundRecord], None] | None = None,
    ) -> None:
        super().__init__(dataset, config, on_round=on_round)
        self.ensemble: TreeEnsemble | None = None
        self._last_model_round = 0

    def _on_model(self, info: ModelInfo, params: npt.NDArray[np.float32]) -> None:
        if info.version == 0:
            pipeline = FeaturePipeline.from_dict(info.pipeline)
            self.data = transform_data(self.dataset, self.splits, pipeline)
            self._round_started = self._model_zero_at = time.perf_counter()
            self._last_model_round = info.round
            return
        # The banks have it decoded already (the grid calls this after delivering it).
        ensemble = next((p.ensemble for p in self.participants.values()
                         if p.model_info is not None and p.model_info.version == info.version),
                        None)
        steps = [r for r in self.orchestrator.history
                 if self._last_model_round < r.round <= info.round]
        self._last_model_round = info.round
        if ensemble is None or ensemble.n_rounds == 0 or self.data is None:
            return  # the bins and base margin: no trees yet
        self.ensemble = ensemble
        data = self.data
        metrics = evaluate_ensemble(ensemble, data.X_test, data.y_test, data.task)
        train_X = np.concatenate([b.X_train for b in data.banks])
        train_y = np.concatenate([b.y_train for b in data.banks])
        metrics["train_loss"] = evaluate_ensemble(ensemble, train_X, train_y, data.task)["loss"]
        record = RoundRecord(
            round=ensemble.n_rounds,
            global_metrics=metrics,
            banks={b.bank_id: evaluate_ensemble(ensemble, b.X_val, b.y_val, data.task)
                   for b in data.banks if len(b.y_val)},
            seconds=time.perf_counter() - self._round_started,
            participants=sorted({b for r in steps for b in r.selected}),
            stragglers=[],
            dropped=sorted({b for r in steps for b in r.dropouts}),
            declined=sorted({b for r in steps for b in r.declined}),
        )
        record.privacy = self._privacy_report(info)
        self._save_accountants()
        self.records.append(record)
        self._round_started = time.perf_counter()
        if self.on_round is not None:
            self.on_round(record)

    def run(self) -> None:
        self.grid.run()
        history = self.orchestrator.history
        if history and history[0].status != "completed":
            raise FraudflError(f"the statistics round failed: {history[0].reason}")
        trees = self.config.trees.n_estimators
        done = 0 if self.ensemble is None else self.ensemble.n_rounds
        if done < trees:
            last = history[-1] if history else None
            log.warning("the tree job stopped after %d of %d trees: %s", done, trees,
                        (last.reason if last else "") or "no banks left")


def run_tree_simulation(
    dataset: FederatedDataset,
    config: SimulationConfig,
    *,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> SimulationResult:
    """A federated tree job; the result has ``ensemble`` instead of neural parameters."""
    started = time.perf_counter()
    sim = TreeSimulation(dataset, config, on_round=on_round)
    sim.run()
    if sim.data is None or sim.ensemble is None or not sim.records:
        last = sim.orchestrator.history[-1] if sim.orchestrator.history else None
        raise FraudflError("no boosting round completed: "
                           + ((last.reason if last else "") or "no banks left"))
    config_dict: dict[str, Any] = {
        **config.to_dict(),
        "data": str(dataset.root),
        "task": sim.data.task,
        "num_banks": len(sim.data.banks),
        "num_features": sim.data.num_features,
        "eval_set": sim.data.test_source,
        "engine_rounds": len(sim.orchestrator.history),
    }
    return SimulationResult(
        config_dict, sim.data.task, sim.records, dict(sim.records[-1].global_metrics),
        sim.startup_seconds(started), np.zeros(0, dtype=np.float32), None,
        sim.data.pipeline, {}, sim.ensemble,
    )


def save_tree_model(result: SimulationResult, directory: Path, dataset: FederatedDataset,
                    config: SimulationConfig) -> Path:
    """The final ensemble as the scoring artifact (kind ``gbdt``) a bank node writes; the
    threshold is chosen on the banks' validation splits."""
    from fraudfl.scoring.artifact import TARGET_FPR, build_tree_artifact, save_artifact

    if result.ensemble is None or result.pipeline is None:
        raise FraudflError("no tree model to save")
    if result.ensemble.num_class != 2:
        raise FraudflError("--save-model: scoring artifacts are for binary fraud models")
    data = transform_data(dataset, split_banks(dataset, config.val_fraction, config.seed),
                          result.pipeline)
    X_val = np.concatenate([b.X_val for b in data.banks])
    y_val = np.concatenate([b.y_val for b in data.banks])
    if len(y_val) == 0:
        raise FraudflError("--save-model needs validation rows (--val-fraction > 0) to choose "
                           "the decision threshold")
    version = len(result.rounds)
    artifact = build_tree_artifact(
        result.ensemble, result.pipeline, X_val, y_val, target_fpr=TARGET_FPR,
        version=version, round=version, metrics=result.rounds[-1].global_metrics,
    )
    return save_artifact(artifact, directory)
