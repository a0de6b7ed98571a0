"""Serving the bank's fraud model: artifact format, scorer, hot-swapping holder, HTTP API,
streaming and batch scoring. See ``docs/scoring.md``."""

from fraudfl.scoring.artifact import (
    ModelArtifact,
    Threshold,
    build_artifact,
    choose_threshold,
    load_artifact,
    save_artifact,
)
from fraudfl.scoring.holder import ModelHolder
from fraudfl.scoring.scorer import Scorer, Scores

__all__ = [
    "ModelArtifact",
    "ModelHolder",
    "Scorer",
    "Scores",
    "Threshold",
    "build_artifact",
    "choose_threshold",
    "load_artifact",
    "save_artifact",
]
