"""A small trained fraud model and its artifact, shared by the scoring tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fraudfl.data import FeaturePipeline, compute_stats, load_dataset, train_val_split
from fraudfl.data.generators import generate_bank_data
from fraudfl.models import ModelSpec, get_flat_params, set_flat_params
from fraudfl.scoring import ModelArtifact, build_artifact, save_artifact
from fraudfl.training import TrainConfig, train_local


@dataclass
class TrainedBank:
    root: Path
    frame: pd.DataFrame
    val: pd.DataFrame
    pipeline: FeaturePipeline
    spec: ModelSpec
    artifact: ModelArtifact


def train_bank(root: Path, seed: int = 0) -> TrainedBank:
    generate_bank_data(root, n_banks=2, total_transactions=12_000, fraud_rate=0.015, seed=seed)
    data = load_dataset(root)
    frame = data.banks[data.bank_ids[0]]
    train, val = train_val_split(frame, data.schema, 0.3, seed)
    pipeline = FeaturePipeline.fit(compute_stats(train, data.schema))
    X, y = pipeline.transform(train)
    spec = ModelSpec("mlp", pipeline.num_features, 2, hidden=(16, 8))
    model = spec.build(seed=seed)
    cfg = TrainConfig(local_epochs=1, batch_size=128, lr=0.1, pos_weight=10.0)
    result = train_local(model, get_flat_params(model), X, y, cfg,
                         rng=np.random.default_rng(seed))
    set_flat_params(model, result.params)
    X_val, y_val = pipeline.transform(val)
    artifact = build_artifact(model, spec, pipeline, X_val, y_val, target_fpr=0.01, version=1,
                              round=3, bank_id="bank_00", metrics={"auprc": 0.5})
    return TrainedBank(root=root, frame=frame, val=val, pipeline=pipeline, spec=spec,
                       artifact=artifact)


def transactions(bank: TrainedBank, n: int, start: int = 0) -> list[dict[str, Any]]:
    rows = bank.val.iloc[start : start + n]
    records = []
    for i, row in enumerate(rows.to_dict(orient="records")):
        rec = {c: float(row[c]) for c in bank.pipeline.numeric}
        rec.update({c: str(row[c]) for c in bank.pipeline.categorical})
        rec["transaction_id"] = start + i
        rec["timestamp"] = "2026-01-01T00:00:00"  # not a feature: ignored
        records.append(rec)
    return records


@pytest.fixture(scope="session")
def trained_bank(tmp_path_factory: pytest.TempPathFactory) -> TrainedBank:
    return train_bank(tmp_path_factory.mktemp("bankdata"))


@pytest.fixture
def artifact_dir(tmp_path: Path, trained_bank: TrainedBank) -> Path:
    directory = tmp_path / "model"
    save_artifact(trained_bank.artifact, directory)
    return directory
