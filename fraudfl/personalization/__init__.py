"""Personalisation per bank (fine-tuning, FedPer, Ditto); see ``docs/personalization.md``.

The simulator personalises through each bank's own participant (``fraudfl.simulation``).
"""

from fraudfl.personalization.methods import (
    METHODS,
    BankComparison,
    FedPerBank,
    FedPerStrategy,
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
    "FedPerBank",
    "FedPerStrategy",
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
