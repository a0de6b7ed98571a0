"""A loaded model artifact, ready to score transactions.

A :class:`Scorer` is immutable once built, so request threads can share it without locks and a
hot swap is the replacement of one reference (see :mod:`fraudfl.scoring.holder`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from fraudfl.scoring.artifact import ModelArtifact
from fraudfl.scoring.records import DEFAULT_ID_FIELD, RecordEncoder, TransactionValidator


@dataclass(frozen=True)
class Scores:
    """Fraud probabilities of some transactions and the decisions at the model's threshold."""

    probabilities: npt.NDArray[np.float64]
    decisions: npt.NDArray[np.bool_]
    model_version: int

    @property
    def alerts(self) -> int:
        return int(np.count_nonzero(self.decisions))


class Scorer:
    """Artifact + NumPy model + validator + encoder; thread-safe for scoring."""

    def __init__(self, artifact: ModelArtifact, id_field: str = DEFAULT_ID_FIELD) -> None:
        self.artifact = artifact
        self.version = artifact.version
        self.threshold = artifact.threshold.value
        self.id_field = id_field
        self._model = artifact.predictor()
        self.validator = TransactionValidator(artifact.pipeline, id_field)
        self.encoder = RecordEncoder(artifact.pipeline)

    def score_features(self, X: npt.NDArray[np.float32]) -> Scores:
        p = self._model.predict_proba(X) if len(X) else np.zeros(0, dtype=np.float64)
        return Scores(probabilities=p, decisions=p >= self.threshold, model_version=self.version)

    def score_records(self, records: Sequence[Mapping[str, Any]]) -> Scores:
        """Score records already checked by :attr:`validator`."""
        return self.score_features(self.encoder.encode(records))

    def score_frame(self, frame: pd.DataFrame, *, source: str = "input") -> Scores:
        """Score a DataFrame in the bank's schema (errors name the row and column)."""
        return self.score_features(
            self.artifact.pipeline.transform_features(frame, source=source)
        )
