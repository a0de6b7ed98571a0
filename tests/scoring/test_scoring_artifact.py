"""The model artifact format: round trip, atomic publication, strict loading, threshold choice."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fraudfl.errors import FraudflError
from fraudfl.scoring import choose_threshold, load_artifact, save_artifact
from fraudfl.scoring.artifact import METADATA_FILE, predict_proba
from tests.scoring.conftest import TrainedBank


def test_round_trip_keeps_everything(artifact_dir: Path, trained_bank: TrainedBank) -> None:
    original = trained_bank.artifact
    loaded = load_artifact(artifact_dir)
    np.testing.assert_array_equal(loaded.params, original.params)
    assert loaded.spec == original.spec
    assert loaded.pipeline.to_dict() == original.pipeline.to_dict()
    assert loaded.threshold == original.threshold
    assert (loaded.version, loaded.round, loaded.bank_id) == (1, 3, "bank_00")
    assert loaded.metrics["auprc"] == 0.5
    # The file path works as well as the directory.
    assert load_artifact(artifact_dir / METADATA_FILE).version == 1
    files = sorted(p.name for p in artifact_dir.iterdir())
    assert files[0] == METADATA_FILE and files[1].startswith("params-") and len(files) == 2
    # No pickle: the parameter file loads with allow_pickle=False.
    assert np.load(artifact_dir / files[1], allow_pickle=False).dtype == np.float32


def test_threshold_stored_meets_target_fpr_on_validation(trained_bank: TrainedBank) -> None:
    art = trained_bank.artifact
    X_val, y_val = art.pipeline.transform(trained_bank.val)
    p = predict_proba(art.build_model(), X_val)
    fpr = np.mean(p[y_val == 0] >= art.threshold.value)
    assert fpr <= 0.01
    assert fpr == pytest.approx(art.threshold.validation_fpr)
    assert np.mean(p[y_val == 1] >= art.threshold.value) == pytest.approx(
        art.threshold.validation_recall
    )


def test_choose_threshold_is_the_lowest_cut_within_budget() -> None:
    negatives = np.linspace(0.0, 0.99, 100)
    positives = np.array([0.5, 0.95, 0.999])
    p = np.r_[negatives, positives]
    y = np.r_[np.zeros(100), np.ones(3)]
    t = choose_threshold(p, y, 0.05)
    assert np.sum(negatives >= t.value) == 5
    # Any lower cut would flag a sixth negative.
    assert np.sum(negatives >= np.nextafter(t.value, -np.inf)) == 6
    assert t.validation_recall == pytest.approx(2 / 3)
    assert choose_threshold(p, y, 0.0).validation_fpr == 0.0
    # Ties: three negatives at the same score cannot be split by a cut.
    tied = choose_threshold(np.array([0.1, 0.9, 0.9, 0.9]), np.zeros(4), 0.5)
    assert tied.validation_fpr == 0.0
    with pytest.raises(FraudflError, match="no negatives"):
        choose_threshold(np.array([0.3]), np.array([1]), 0.01)


def test_republishing_keeps_previous_params_and_prunes_older(
    artifact_dir: Path, trained_bank: TrainedBank
) -> None:
    art = trained_bank.artifact
    for version in (2, 3, 4):
        save_artifact(replace(art, version=version, params=art.params + version), artifact_dir)
    params_files = sorted(artifact_dir.glob("params-*.npy"))
    assert len(params_files) == 2
    loaded = load_artifact(artifact_dir)
    assert loaded.version == 4
    np.testing.assert_allclose(loaded.params, art.params + 4)


def test_corrupt_or_foreign_artifacts_are_refused(artifact_dir: Path) -> None:
    meta = artifact_dir / METADATA_FILE
    data = json.loads(meta.read_text())
    params_file = artifact_dir / data["params"]["file"]
    blob = bytearray(params_file.read_bytes())
    blob[-1] ^= 0xFF
    params_file.write_bytes(bytes(blob))
    with pytest.raises(FraudflError, match="SHA-256"):
        load_artifact(artifact_dir)
    for mutate, message in [
        (lambda d: d.update(format="something-else"), "not a fraudfl.model_artifact"),
        (lambda d: d.update(version="7"), "'version' must be an integer"),
        (lambda d: d["threshold"].pop("value"), "threshold.value"),
        (lambda d: d["params"].update(file="../../etc/passwd"), "params"),
        (lambda d: d["model_spec"].update(num_features=3), "features"),
    ]:
        broken = json.loads(json.dumps(data))
        mutate(broken)
        meta.write_text(json.dumps(broken))
        with pytest.raises(FraudflError, match=message):
            load_artifact(artifact_dir)
    meta.write_text("{not json")
    with pytest.raises(FraudflError, match="not valid JSON"):
        load_artifact(artifact_dir)
    with pytest.raises(FraudflError, match="no model artifact"):
        load_artifact(artifact_dir / "nowhere")
