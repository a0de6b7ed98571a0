"""Evaluation metrics for the global model, per bank and on the held-out test set.

Binary (fraud) tasks: ``auprc`` (average precision, the step-wise area under the
precision-recall curve, as scikit-learn computes it), ``roc_auc``, ``recall_at_1pct_fpr``
(the best recall among thresholds whose false-positive rate is at most 1%: the operating
point a fraud team can afford to review) and ``loss`` (unweighted BCE).
Multi-class tasks: ``accuracy`` and ``loss`` (cross-entropy).

When the labels hold a single class the ranking metrics are undefined and reported as NaN
(written as ``null`` in JSON results); ``loss`` is always defined.

The ranking metrics are computed in NumPy (no scikit-learn import at start-up); tests check
them against scikit-learn.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from fraudfl.models import Task, make_loss
from fraudfl.trees.ensemble import TreeEnsemble

BINARY_METRICS = ("auprc", "roc_auc", "recall_at_1pct_fpr", "loss")
MULTICLASS_METRICS = ("accuracy", "loss")
_EVAL_BATCH = 65_536
# A tree ensemble's probabilities are kept this far from 0 and 1 in its log loss.
_PROB_FLOOR = 1e-12


def metric_names(task: Task) -> tuple[str, ...]:
    return BINARY_METRICS if task == "binary" else MULTICLASS_METRICS


def predict_logits(model: nn.Module, X: np.ndarray) -> torch.Tensor:
    """The model's logits on ``X``, in eval mode and in batches (bounded memory)."""
    was_training = model.training
    model.eval()
    X_t = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    with torch.no_grad():
        out = torch.cat([model(X_t[i : i + _EVAL_BATCH]) for i in range(0, len(X_t), _EVAL_BATCH)])
    model.train(was_training)
    return out


def evaluate(model: nn.Module, X: np.ndarray, y: np.ndarray, task: Task) -> dict[str, float]:
    """Metrics of ``model`` on ``(X, y)``; see the module docstring for their definitions."""
    if len(y) == 0:
        return {name: math.nan for name in metric_names(task)}
    logits = predict_logits(model, X)
    y_t = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    loss = float(make_loss(task)(logits, y_t))
    if task == "multiclass":
        accuracy = float((logits.argmax(dim=1) == y_t).double().mean())
        return {"accuracy": accuracy, "loss": loss}
    scores = logits.reshape(-1).double().numpy()
    return {**binary_ranking_metrics(np.asarray(y), scores), "loss": loss}


def evaluate_ensemble(
    ensemble: TreeEnsemble, X: np.ndarray, y: np.ndarray, task: Task
) -> dict[str, float]:
    """:func:`evaluate`'s metrics for a tree ensemble (scored in NumPy)."""
    if len(y) == 0:
        return {name: math.nan for name in metric_names(task)}
    p = ensemble.predict_proba(X)
    y = np.asarray(y, dtype=np.int64)
    if task == "multiclass":
        picked = np.clip(p[np.arange(len(y)), y], _PROB_FLOOR, 1.0)
        return {"accuracy": float(np.mean(p.argmax(axis=1) == y)),
                "loss": float(-np.mean(np.log(picked)))}
    p1 = np.clip(p, _PROB_FLOOR, 1 - _PROB_FLOOR)
    loss = float(-np.mean(y * np.log(p1) + (1 - y) * np.log(1 - p1)))
    return {**binary_ranking_metrics(y, p), "loss": loss}


def loss_only(model: nn.Module, X: np.ndarray, y: np.ndarray, task: Task) -> float:
    """Mean (unweighted) training-objective loss of ``model`` on ``(X, y)``."""
    if len(y) == 0:
        return math.nan
    y_t = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    return float(make_loss(task)(predict_logits(model, X), y_t))


def _roc_points(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true and false positives at each distinct score threshold, descending."""
    order = np.argsort(-scores, kind="mergesort")
    s = scores[order]
    t = y[order].astype(np.float64)
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(t)[last_of_run]
    fps = (last_of_run + 1) - tps
    return tps, fps


def binary_ranking_metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """``auprc``, ``roc_auc`` and ``recall_at_1pct_fpr`` (NaN if ``y`` has a single class)."""
    y = np.asarray(y).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    positives = int(np.count_nonzero(y == 1))
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return {"auprc": math.nan, "roc_auc": math.nan, "recall_at_1pct_fpr": math.nan}
    tps, fps = _roc_points(y, scores)
    precision = tps / (tps + fps)
    recall = tps / positives
    auprc = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    tpr = np.r_[0.0, recall]
    fpr = np.r_[0.0, fps / negatives]
    roc_auc = float(np.trapezoid(tpr, fpr))
    recall_at_1pct = float(tpr[fpr <= 0.01].max())
    return {"auprc": auprc, "roc_auc": roc_auc, "recall_at_1pct_fpr": recall_at_1pct}
