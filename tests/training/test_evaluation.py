import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from torch import nn

from fraudfl.training.evaluation import binary_ranking_metrics, evaluate


@pytest.mark.parametrize("seed", range(5))
def test_ranking_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(500) < 0.1).astype(np.int64)
    # rounded scores create ties, which the threshold handling must get right
    scores = np.round(y * 0.8 + rng.normal(size=500), 1)
    m = binary_ranking_metrics(y, scores)
    assert m["auprc"] == pytest.approx(average_precision_score(y, scores), abs=1e-12)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, scores, drop_intermediate=False)
    assert m["recall_at_1pct_fpr"] == pytest.approx(tpr[fpr <= 0.01].max(), abs=1e-12)


def test_perfect_and_single_class() -> None:
    y = np.array([0, 0, 1, 1])
    m = binary_ranking_metrics(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert m == {"auprc": 1.0, "roc_auc": 1.0, "recall_at_1pct_fpr": 1.0}
    single = binary_ranking_metrics(np.zeros(4, np.int64), np.arange(4.0))
    assert all(math.isnan(v) for v in single.values())


def test_evaluate_binary_and_multiclass() -> None:
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0]]))
        lin.bias.zero_()
    X = np.array([[-2.0, 0], [-1, 0], [1, 0], [2, 0]], dtype=np.float32)
    y = np.array([0, 0, 1, 1])
    m = evaluate(lin, X, y, "binary")
    assert set(m) == {"auprc", "roc_auc", "recall_at_1pct_fpr", "loss"}
    assert m["auprc"] == 1.0
    expected_loss = float(np.mean(np.log1p(np.exp(-np.abs(X[:, 0])))))
    assert m["loss"] == pytest.approx(expected_loss, rel=1e-5)
    lone = evaluate(lin, X[:2], y[:2], "binary")
    assert math.isnan(lone["auprc"]) and not math.isnan(lone["loss"])

    mc = nn.Linear(2, 3)
    with torch.no_grad():
        mc.weight.copy_(torch.tensor([[1.0, 0], [0, 1], [-1, -1]]))
        mc.bias.zero_()
    Xm = np.array([[3.0, 0], [0, 3], [-3, -3], [3, 0]], dtype=np.float32)
    mm = evaluate(mc, Xm, np.array([0, 1, 2, 1]), "multiclass")
    assert set(mm) == {"accuracy", "loss"}
    assert mm["accuracy"] == 0.75
