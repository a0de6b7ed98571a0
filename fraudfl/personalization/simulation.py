"""Personalisation in the simulator: federated rounds, then each bank's personal model compared
with the global one on the bank's own validation split.

Only the simulation's public seams are used (``trainer``, ``aggregator``, ``strategy`` and
:func:`fraudfl.simulation.prepare_data`, which is deterministic in the seed), so the simulator
itself knows nothing of personalisation.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from fraudfl.data import FederatedDataset
from fraudfl.models import ModelSpec
from fraudfl.personalization.methods import (
    BankComparison,
    FedPerAggregator,
    FedPerBank,
    FedPerStrategy,
    FedPerTrainer,
    ParamPartition,
    PersonalizationConfig,
    compare_on_bank,
    personalize,
)
from fraudfl.privacy.accountant import BudgetExhausted
from fraudfl.simulation import PreparedData, SimulationConfig, SimulationResult, prepare_data
from fraudfl.simulation import run_simulation as run_federation
from fraudfl.strategy import Aggregator, PlainAggregator, Strategy, make_strategy
from fraudfl.training.local import LocalTrainer, plain_trainer

if TYPE_CHECKING:  # Opacus is imported only when DP is on
    from fraudfl.privacy.federation import FederationPrivacy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PersonalizationReport:
    """Per bank: global vs personalised metrics on the bank's validation split."""

    method: str
    banks: list[BankComparison]
    # Banks whose personal training would have exceeded their privacy budget: they keep the
    # global model (their "personal" metrics are the global ones).
    declined: list[str] = field(default_factory=list)

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
            "declined": list(self.declined),
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
    trainer: LocalTrainer = plain_trainer,
    fedper: dict[str, FedPerBank] | None = None,
    reference_params: np.ndarray | None = None,
) -> PersonalizationReport:
    """Personalise every bank from ``global_params`` and compare on its validation split.

    ``reference_params`` is the global model to compare with (default ``global_params``); for
    FedPer it is the global model of a plain run, since FedPer's own global head is untrained.
    Under DP pass the trainer of the federation's accountants; a bank whose personal training
    would exceed its budget declines it and keeps the global model.
    """
    spec = model_spec(config, data)
    model = spec.build(seed=config.seed)
    base_cfg = config.train_config(data.task, mu=0.0)
    reference = global_params if reference_params is None else reference_params
    banks = []
    declined = []
    threads_before = torch.get_num_threads()
    if config.torch_threads is not None:
        # As in the simulation: for these tiny models extra threads only cost hand-offs.
        torch.set_num_threads(config.torch_threads)
    try:
        for index, bank in enumerate(data.banks):
            try:
                params = personalize(
                    pcfg, bank_id=bank.bank_id, model=model, global_params=global_params,
                    X_train=bank.X_train, y_train=bank.y_train, base_cfg=base_cfg,
                    trainer=trainer, rng=np.random.default_rng([config.seed, 5, index]),
                    fedper=None if fedper is None else fedper.get(bank.bank_id),
                )
            except BudgetExhausted:  # the accountant logged why
                declined.append(bank.bank_id)
                params = np.array(global_params, dtype=np.float32)
            banks.append(compare_on_bank(model, bank.bank_id, reference, params, bank.X_val,
                                         bank.y_val, data.task))
    finally:
        torch.set_num_threads(threads_before)
    return PersonalizationReport(method=pcfg.method, banks=banks, declined=declined)


def federation_privacy(
    config: SimulationConfig, num_banks: int, personal_epochs: int = 0
) -> FederationPrivacy | None:
    """The run's DP (as :func:`fraudfl.simulation.run_simulation` would build it), with the
    noise calibrated for ``personal_epochs`` of personal training after the rounds."""
    if config.privacy is None or not config.privacy.enabled:
        return None
    from fraudfl.privacy.federation import FederationPrivacy

    return FederationPrivacy(config.privacy, rounds=config.rounds, num_banks=num_banks,
                             banks_per_round=config.banks_per_round, seed=config.seed,
                             personal_epochs=personal_epochs)


def _bank_trainer(trainer: LocalTrainer | None, privacy: FederationPrivacy | None) -> LocalTrainer:
    """The caller's trainer, else the federation's private trainer, else plain training."""
    if privacy is not None and privacy.trainer is not None:
        if trainer is not None:
            raise ValueError("record-level DP options and a caller's trainer: personal "
                             "training would bypass the banks' accountants")
        return privacy.trainer
    return trainer or plain_trainer


def run_fedper(
    dataset: FederatedDataset,
    config: SimulationConfig,
    pcfg: PersonalizationConfig,
    *,
    trainer: LocalTrainer | None = None,
    aggregator: Aggregator | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> tuple[SimulationResult, dict[str, FedPerBank], ParamPartition]:
    """A federation where only the body is aggregated; returns each bank's FedPer state.

    ``trainer`` defaults to plain training, or with record-level DP in ``config`` to DP-SGD
    charged to each bank's accountant (the FedPer wrapper keeps the heads around it).
    """
    data = prepare(dataset, config)
    partition = ParamPartition.for_model(model_spec(config, data).build(seed=config.seed),
                                         pcfg.personal_layers)
    privacy = federation_privacy(config, len(data.banks))
    fedper_trainer = FedPerTrainer(_bank_trainer(trainer, privacy), partition)
    result = run_federation(
        dataset, config, progress=progress, console=console,
        strategy=FedPerStrategy(configured_strategy(config), partition),
        aggregator=FedPerAggregator(aggregator or PlainAggregator(), partition),
        trainer=fedper_trainer, privacy=privacy,
    )
    return result, fedper_trainer.banks, partition


def run_personalized(
    dataset: FederatedDataset,
    config: SimulationConfig,
    pcfg: PersonalizationConfig,
    *,
    trainer: LocalTrainer | None = None,
    aggregator: Aggregator | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> tuple[SimulationResult, PersonalizationReport]:
    """``fraudfl simulate --personalization``: federate, personalise, compare per bank.

    The report is also stored in ``result.final["personalization"]``. FedPer runs a plain
    federation too, to have a trained global model to compare with; under DP that reference
    run has accountants of its own and saves no state (no bank runs it). With record-level DP
    every personal step goes through the federation's accountants, and the report carries each
    bank's epsilon after personalisation.
    """
    data = prepare(dataset, config)
    if pcfg.method == "fedper":
        reference_config = config
        if config.privacy is not None:
            reference_config = replace(config, privacy=replace(config.privacy, state_dir=None))
        plain = run_federation(dataset, reference_config, progress=progress, console=console,
                               trainer=trainer, aggregator=aggregator)
        result, banks, partition = run_fedper(dataset, config, pcfg, trainer=trainer,
                                              aggregator=aggregator, progress=progress,
                                              console=console)
        # A bank never sampled has no head of its own: it has the global body and head.
        untrained = [b.bank_id for b in data.banks if b.bank_id not in banks]
        if untrained:
            log.info("FedPer: %s never took part; their model is the global one",
                     ", ".join(untrained))
        heads = {b: banks.get(b) or FedPerBank(partition) for b in (x.bank_id for x in data.banks)}
        report = personalize_banks(data, config, pcfg, result.final_params, fedper=heads,
                                   reference_params=plain.final_params)
        privacy = None
    else:
        privacy = federation_privacy(config, len(data.banks), personal_epochs=pcfg.epochs)
        bank_trainer = _bank_trainer(trainer, privacy)
        result = run_federation(dataset, config, progress=progress, console=console,
                                trainer=bank_trainer, aggregator=aggregator, privacy=privacy)
        report = personalize_banks(data, config, pcfg, result.final_params,
                                   trainer=bank_trainer)
    result.final["personalization"] = report.to_dict()
    if privacy is not None and privacy.trainer is not None:
        result.final["personalization"]["epsilon"] = privacy.trainer.epsilons()
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
    if report.declined:
        table.caption = ("over their privacy budget, kept the global model: "
                         + ", ".join(report.declined))
    return table
