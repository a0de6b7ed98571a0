"""Local training (FedProx steps) and evaluation of models on a bank's data."""

from fraudfl.training.evaluation import evaluate
from fraudfl.training.local import (
    BatchStepper,
    LocalResult,
    SGDStepper,
    TrainConfig,
    add_proximal_gradient,
    train_local,
)

__all__ = [
    "BatchStepper",
    "LocalResult",
    "SGDStepper",
    "TrainConfig",
    "add_proximal_gradient",
    "evaluate",
    "train_local",
]
