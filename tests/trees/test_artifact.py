"""A tree ensemble as a scoring artifact: saved, loaded, served over HTTP and batch-scored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from fraudfl.cli import main
from fraudfl.data import FeaturePipeline, compute_stats, load_dataset, train_val_split
from fraudfl.data.generators import generate_bank_data
from fraudfl.errors import FraudflError
from fraudfl.monitoring import ScoringMetrics, new_registry
from fraudfl.scoring import ModelHolder, load_artifact, save_artifact
from fraudfl.scoring.api import create_app
from fraudfl.scoring.artifact import METADATA_FILE, ModelArtifact, build_tree_artifact
from fraudfl.scoring.scorer import Scorer
from fraudfl.trees import (
    BankData,
    GBDTParams,
    edges_from_histograms,
    feature_histograms,
    train_federated,
)


@pytest.fixture(scope="module")
def tree_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelArtifact, pd.DataFrame]:
    root = tmp_path_factory.mktemp("banks")
    generate_bank_data(root, n_banks=2, total_transactions=12_000, fraud_rate=0.015, seed=0)
    data = load_dataset(root)
    train, val = train_val_split(data.banks[data.bank_ids[0]], data.schema, 0.3, 0)
    pipeline = FeaturePipeline.fit(compute_stats(train, data.schema))
    X, y = pipeline.transform(train)
    edges = edges_from_histograms(feature_histograms(X), pipeline.num_features, 63)
    params = GBDTParams(n_estimators=15, max_depth=4, learning_rate=0.2, max_bin=63)
    model = train_federated([BankData(edges.transform(X), y)], params, edges).ensemble
    X_val, y_val = pipeline.transform(val)
    artifact = build_tree_artifact(model, pipeline, X_val, y_val, target_fpr=0.01, version=4,
                                   round=15, bank_id="bank_00")
    return artifact, val


def test_tree_artifact_round_trip_scores_identically(
    tmp_path: Path, tree_model: tuple[ModelArtifact, pd.DataFrame]
) -> None:
    artifact, val = tree_model
    save_artifact(artifact, tmp_path)
    meta = json.loads((tmp_path / METADATA_FILE).read_text())
    assert meta["kind"] == "gbdt" and "model_spec" not in meta
    loaded = load_artifact(tmp_path)
    assert loaded.kind == "gbdt" and loaded.trees is not None and artifact.trees is not None
    assert loaded.trees.edges == artifact.trees.edges
    X = artifact.pipeline.transform_features(val)
    expected = artifact.trees.predict_proba(X)
    assert expected.std() > 0
    np.testing.assert_array_equal(Scorer(loaded).score_frame(val).probabilities, expected)
    assert loaded.threshold == artifact.threshold
    assert loaded.describe()["model"] == {"kind": "gbdt", "num_class": 2, "trees": 15,
                                          "max_depth": 4}


def test_tree_artifact_served_over_http_and_batch(
    tmp_path: Path, tree_model: tuple[ModelArtifact, pd.DataFrame]
) -> None:
    artifact, val = tree_model
    model_dir = tmp_path / "model"
    save_artifact(artifact, model_dir)
    registry = new_registry()
    client = TestClient(create_app(
        ModelHolder(model_dir),
        metrics=ScoringMetrics(registry, federation="t", bank="bank_00"), registry=registry,
    ))
    row = val.iloc[0]
    tx = {c: float(row[c]) for c in artifact.pipeline.numeric}
    tx.update({c: str(row[c]) for c in artifact.pipeline.categorical})
    tx["transaction_id"] = 7
    r = client.post("/score", json=tx)
    assert r.status_code == 200, r.text
    assert artifact.trees is not None
    p = float(artifact.trees.predict_proba(artifact.pipeline.transform_features(val.iloc[:1]))[0])
    assert r.json()["probability"] == pytest.approx(p, rel=1e-12)

    source, out = tmp_path / "tx.csv", tmp_path / "scores.csv"
    val.drop(columns=[artifact.pipeline.label]).to_csv(source, index=False)
    assert main(["score", "--model", str(model_dir), "--input", str(source),
                 "--output", str(out)]) == 0
    scores = pd.read_csv(out)
    X = artifact.pipeline.transform_features(val)
    # CSV text round-trips floats to ~1e-15, so the probabilities agree to far below any cut.
    np.testing.assert_allclose(scores["fraud_probability"], artifact.trees.predict_proba(X),
                               rtol=1e-9)


def test_tampered_tree_file_is_refused(
    tmp_path: Path, tree_model: tuple[ModelArtifact, pd.DataFrame]
) -> None:
    artifact, _ = tree_model
    save_artifact(artifact, tmp_path)
    meta = json.loads((tmp_path / METADATA_FILE).read_text())
    meta["trees"]["max_depth"] = 3
    (tmp_path / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(FraudflError, match=r"params\.count"):
        load_artifact(tmp_path)
