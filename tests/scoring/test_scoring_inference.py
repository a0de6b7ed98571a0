"""The pandas-free encoder equals the feature pipeline, and NumPy inference equals torch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fraudfl.errors import FraudflError
from fraudfl.models import ModelSpec
from fraudfl.scoring.inference import NumpyModel
from fraudfl.scoring.records import RecordEncoder, TransactionValidator
from tests.scoring.conftest import TrainedBank, transactions


@pytest.mark.parametrize("n", [1, 5, 16, 17, 400])
def test_encoder_matches_the_pipeline(trained_bank: TrainedBank, n: int) -> None:
    records = transactions(trained_bank, n)
    records[0]["merchant_category"] = "a category never seen"  # encodes as all zeros
    expected = trained_bank.pipeline.transform_features(pd.DataFrame(records))
    got = RecordEncoder(trained_bank.pipeline).encode(records)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["logistic", "mlp", "embedding"])
def test_numpy_forward_matches_torch(kind: str) -> None:
    if kind == "embedding":  # an MLP embedding two hashed blocks
        model = ModelSpec("mlp", 24, 2, hidden=(16,), embed=((4, 8), (14, 10))).build(seed=4)
    else:
        model = ModelSpec(kind, 24, 2, hidden=(64, 32)).build(seed=4)  # type: ignore[arg-type]
    with torch.no_grad():
        for p in model.parameters():  # move LayerNorm off its identity initialisation
            p.add_(torch.randn_like(p) * 0.1)
    X = np.random.default_rng(0).normal(size=(300, 24)).astype(np.float32)
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(X)).reshape(-1)).double().numpy()
    np.testing.assert_allclose(NumpyModel(model).predict_proba(X), expected, atol=1e-6)
    np.testing.assert_allclose(NumpyModel(model).predict_proba(X[:1]), expected[:1], atol=1e-6)


def test_unknown_layers_are_refused() -> None:
    with pytest.raises(FraudflError, match="Dropout"):
        NumpyModel(nn.Sequential(nn.Linear(3, 4), nn.Dropout(), nn.Linear(4, 1)))


def test_validator_field_errors(trained_bank: TrainedBank) -> None:
    validator = TransactionValidator(trained_bank.pipeline)
    record = transactions(trained_bank, 1)[0]
    out = validator.validate_one({**record, "extra": [1, 2]})
    assert "extra" not in out and out["transaction_id"] == 0
    from fraudfl.scoring.records import InvalidTransactions

    with pytest.raises(InvalidTransactions) as info:
        validator.validate_one({**record, "amount": float("inf"), "transaction_id": 1.5})
    assert {e.field for e in info.value.errors} == {"amount", "transaction_id"}
    assert "transaction_id" in str(info.value)
