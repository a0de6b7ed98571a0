"""Shared set-up of the scoring benchmarks: a trained model artifact and raw transactions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fraudfl.data import FeaturePipeline, compute_stats, load_dataset
from fraudfl.data.generators import generate_bank_data
from fraudfl.models import ModelSpec, get_flat_params, set_flat_params
from fraudfl.scoring import build_artifact, save_artifact
from fraudfl.training import TrainConfig, train_local


def build_bench_artifact(workdir: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The default MLP (64, 32) trained one epoch on one synthetic bank, saved as an artifact,
    and that bank's transactions as JSON-ready records."""
    torch.set_num_threads(1)
    data_dir = workdir / "data"
    generate_bank_data(data_dir, n_banks=2, total_transactions=30_000, fraud_rate=0.01, seed=0)
    data = load_dataset(data_dir)
    frame = data.banks[data.bank_ids[0]]
    pipeline = FeaturePipeline.fit(compute_stats(frame, data.schema))
    X, y = pipeline.transform(frame)
    spec = ModelSpec("mlp", pipeline.num_features, 2)
    model = spec.build(seed=0)
    result = train_local(model, get_flat_params(model), X, y,
                         TrainConfig(local_epochs=1, batch_size=128, lr=0.05, pos_weight=10.0),
                         rng=np.random.default_rng(0))
    set_flat_params(model, result.params)
    artifact = build_artifact(model, spec, pipeline, X, y, target_fpr=0.01, version=1, round=1,
                              bank_id=data.bank_ids[0])
    save_artifact(artifact, workdir / "model")
    records = []
    for i, row in enumerate(frame.to_dict(orient="records")):
        rec: dict[str, Any] = {c: float(row[c]) for c in pipeline.numeric}
        rec.update({c: str(row[c]) for c in pipeline.categorical})
        rec["transaction_id"] = f"tx-{i}"
        records.append(rec)
    return workdir / "model", records
