"""Personalisation per bank (fine-tuning, FedPer, Ditto); see ``docs/personalization.md``.

The simulator driver lives in :mod:`fraudfl.personalization.simulation` (imported on demand).
"""

from fraudfl.personalization.methods import (
    METHODS,
    BankComparison,
    FedPerAggregator,
    FedPerBank,
    FedPerStrategy,
    FedPerTrainer,
    Method,
    ParamPartition,
    PersonalizationConfig,
    PersonalModel,
    compare_on_bank,
    personalize,
    personalize_for_bank,
    private_trainer,
)
from fraudfl.training.local import LocalTrainer, plain_trainer

__all__ = [
    "METHODS",
    "BankComparison",
    "FedPerAggregator",
    "FedPerBank",
    "FedPerStrategy",
    "FedPerTrainer",
    "LocalTrainer",
    "Method",
    "ParamPartition",
    "PersonalModel",
    "PersonalizationConfig",
    "compare_on_bank",
    "personalize",
    "personalize_for_bank",
    "plain_trainer",
    "private_trainer",
]
