"""Personalisation in the simulator: federated rounds, then each bank's personal model compared
with the global one on the bank's own validation split.

Only the simulation's public seams are used (``trainer``, ``aggregator``, ``strategy`` and
:func:`fraudfl.simulation.prepare_data`, which is deterministic in the seed), so the simulator
itself knows nothing of personalisation.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from fraudfl.data import FederatedDataset
from fraudfl.models import ModelSpec
from fraudfl.personalization.methods import (
    BankComparison,
    BankTrainer,
    FedPerAggregator,
    FedPerBank,
    FedPerStrategy,
    FedPerTrainer,
    ParamPartition,
    PersonalizationConfig,
    compare_on_bank,
    personalize,
    plain_bank_trainer,
)
from fraudfl.simulation import PreparedData, SimulationConfig, SimulationResult, prepare_data
from fraudfl.simulation import run_simulation as run_federation
from fraudfl.strategy import Aggregator, PlainAggregator, Strategy, make_strategy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PersonalizationReport:
    """Per bank: global vs personalised metrics on the bank's validation split."""

    method: str
    banks: list[BankComparison]

    def mean(self, which: str, metric: str = "auprc") -> float:
        values = [getattr(b, f"{which}_metrics").get(metric, math.nan) for b in self.banks]
        finite = [v for v in values if math.isfinite(v)]
        return float(np.mean(finite)) if finite else math.nan

    def mean_gain(self, metric: str = "auprc") -> float:
        """Mean over banks of the relative gain (personal / global - 1)."""
        gains = [b.gain(metric) for b in self.banks]
        finite = [g for g in gains if math.isfinite(g)]
        return float(np.mean(finite)) if finite else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "mean_global_auprc": self.mean("global"),
            "mean_personal_auprc": self.mean("personal"),
            "mean_relative_gain": self.mean_gain(),
            "banks": [b.to_dict() for b in self.banks],
        }


def prepare(dataset: FederatedDataset, config: SimulationConfig) -> PreparedData:
    """The simulation's data preparation, exactly as :func:`run_simulation` does it."""
    return prepare_data(dataset, config.val_fraction, config.seed,
                        standardize=config.standardize)


def model_spec(config: SimulationConfig, data: PreparedData) -> ModelSpec:
    """The simulation's model spec (as :func:`fraudfl.simulation.run_simulation` builds it)."""
    return ModelSpec(config.model, data.num_features, data.num_classes,  # type: ignore[arg-type]
                     config.hidden)


def configured_strategy(config: SimulationConfig) -> Strategy:
    return make_strategy(
        config.strategy, mu=config.mu, server_lr=config.server_lr,
        server_momentum=config.server_momentum, eta=config.eta, beta1=config.beta1,
        beta2=config.beta2, tau=config.tau,
        fit_config={"local_epochs": config.local_epochs},
    )


def personalize_banks(
    data: PreparedData,
    config: SimulationConfig,
    pcfg: PersonalizationConfig,
    global_params: np.ndarray,
    *,
    trainer: BankTrainer = plain_bank_trainer,
    fedper: dict[str, FedPerBank] | None = None,
    reference_params: np.ndarray | None = None,
) -> PersonalizationReport:
    """Personalise every bank from ``global_params`` and compare on its validation split.

    ``reference_params`` is the global model to compare with (default ``global_params``); for
    FedPer it is the global model of a plain run, since FedPer's own global head is untrained.
    """
    spec = model_spec(config, data)
    model = spec.build(seed=config.seed)
    base_cfg = config.train_config(data.task, mu=0.0)
    reference = global_params if reference_params is None else reference_params
    banks = []
    threads_before = torch.get_num_threads()
    if config.torch_threads is not None:
        # As in the simulation: for these tiny models extra threads only cost hand-offs.
        torch.set_num_threads(config.torch_threads)
    try:
        for index, bank in enumerate(data.banks):
            params = personalize(
                pcfg, bank_id=bank.bank_id, model=model, global_params=global_params,
                X_train=bank.X_train, y_train=bank.y_train, base_cfg=base_cfg,
                trainer=trainer, rng=np.random.default_rng([config.seed, 5, index]),
                fedper=None if fedper is None else fedper.get(bank.bank_id),
            )
            banks.append(compare_on_bank(model, bank.bank_id, reference, params, bank.X_val,
                                         bank.y_val, data.task))
    finally:
        torch.set_num_threads(threads_before)
    return PersonalizationReport(method=pcfg.method, banks=banks)


def run_fedper(
    dataset: FederatedDataset,
    config: SimulationConfig,
    pcfg: PersonalizationConfig,
    *,
    trainer: BankTrainer = plain_bank_trainer,
    aggregator: Aggregator | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> tuple[SimulationResult, dict[str, FedPerBank], ParamPartition]:
    """A federation where only the body is aggregated; returns each bank's FedPer state."""
    data = prepare(dataset, config)
    partition = ParamPartition.for_model(model_spec(config, data).build(seed=config.seed),
                                         pcfg.personal_layers)
    fedper_trainer = FedPerTrainer(trainer, partition)
    result = run_federation(
        dataset, config, progress=progress, console=console,
        strategy=FedPerStrategy(configured_strategy(config), partition),
        aggregator=FedPerAggregator(aggregator or PlainAggregator(), partition),
        trainer=fedper_trainer,
    )
    return result, fedper_trainer.banks, partition


def run_personalized(
    dataset: FederatedDataset,
    config: SimulationConfig,
    pcfg: PersonalizationConfig,
    *,
    trainer: BankTrainer = plain_bank_trainer,
    aggregator: Aggregator | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> tuple[SimulationResult, PersonalizationReport]:
    """``fraudfl simulate --personalization``: federate, personalise, compare per bank.

    The report is also stored in ``result.final["personalization"]``. FedPer runs a plain
    federation too, to have a trained global model to compare with.
    """
    data = prepare(dataset, config)
    plain = run_federation(dataset, config, progress=progress, console=console,
                           trainer=trainer, aggregator=aggregator)
    if pcfg.method == "fedper":
        result, banks, _ = run_fedper(dataset, config, pcfg, trainer=trainer,
                                      aggregator=aggregator, progress=progress, console=console)
        report = personalize_banks(data, config, pcfg, result.final_params, trainer=trainer,
                                   fedper=banks, reference_params=plain.final_params)
    else:
        result = plain
        report = personalize_banks(data, config, pcfg, plain.final_params, trainer=trainer)
    result.final["personalization"] = report.to_dict()
    return result, report


def report_table(report: PersonalizationReport) -> Table:
    """Per-bank AUPRC of the global and the personalised model on each bank's validation."""
    table = Table(title=f"personalisation ({report.method}): AUPRC on each bank's validation")
    for name in ("bank", "val rows", "val frauds", "global", "personal", "change"):
        table.add_column(name, justify="left" if name == "bank" else "right")
    for b in report.banks:
        g = b.global_metrics.get("auprc", math.nan)
        p = b.personal_metrics.get("auprc", math.nan)
        table.add_row(b.bank_id, str(b.num_val), str(b.num_val_fraud), f"{g:.4f}", f"{p:.4f}",
                      f"{b.gain():+.1%}")
    table.add_row("mean", "", "", f"{report.mean('global'):.4f}",
                  f"{report.mean('personal'):.4f}", f"{report.mean_gain():+.1%}")
    return table
