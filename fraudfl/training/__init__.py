"""Local training (FedProx steps) and evaluation of models on a bank's data."""

from fraudfl.training.evaluation import evaluate
from fraudfl.training.local import (
    BatchStepper,
    LinearStepper,
    LocalResult,
    SGDStepper,
    TrainConfig,
    add_proximal_gradient,
    default_stepper,
    train_local,
)

__all__ = [
    "BatchStepper",
    "LinearStepper",
    "LocalResult",
    "SGDStepper",
    "TrainConfig",
    "add_proximal_gradient",
    "default_stepper",
    "evaluate",
    "train_local",
]
