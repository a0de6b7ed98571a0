"""The model artifact: what a bank node writes for the scoring service to serve.

An artifact is a directory::

    model/
      artifact.json                 # metadata, the commit point
      params-<sha256[:16]>.npy      # flat float32 parameter vector (numpy .npy, no pickle)

``kind`` says what the parameters are: ``"neural"`` (the default when absent) is a
:class:`~fraudfl.models.ModelSpec` (``model_spec``) and its flat float32 parameters; ``"gbdt"``
is a :class:`~fraudfl.trees.TreeEnsemble`: its metadata (bin edges, depth, base margin) under
``trees`` and its float64 node array (trees x heap nodes x 4) as the parameter file.

``artifact.json`` holds the :class:`~fraudfl.models.ModelSpec`, the fitted
:class:`~fraudfl.data.FeaturePipeline`, the decision threshold (chosen on the bank's validation
data for a target false-positive rate), the model's version and round, its validation metrics,
and the name and SHA-256 of the parameter file.

Publishing is atomic without locking readers out: the parameter file is content-addressed and
written first (temp file, fsync, rename), then ``artifact.json`` is replaced the same way. A
reader therefore sees either the old metadata (whose parameter file is kept until the next
save) or the new one, and the SHA-256 check catches anything else. :func:`save_artifact` and
:func:`load_artifact` are the only code that knows this layout.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch

from fraudfl.checkpoint import atomic_write_bytes
from fraudfl.data import FeaturePipeline
from fraudfl.errors import FraudflError
from fraudfl.models import ModelSpec, get_flat_params, set_flat_params
from fraudfl.scoring.inference import NumpyModel
from fraudfl.trees.ensemble import NODE_FIELDS, TreeEnsemble, heap_size

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = "fraudfl.model_artifact"
ARTIFACT_VERSION = 1
KINDS = ("neural", "gbdt")
METADATA_FILE = "artifact.json"
_PARAMS_PREFIX = "params-"
# Refuse absurd files before reading them: the largest model here is a few MB.
_MAX_METADATA_BYTES = 16 * 1024 * 1024
_MAX_PARAMS_BYTES = 1024 * 1024 * 1024


@dataclass(frozen=True)
class Threshold:
    """A decision threshold on the fraud probability and how it was chosen.

    ``value`` is the smallest probability cut whose false-positive rate on the validation
    negatives is at most ``target_fpr``; a transaction is flagged when ``p >= value``.
    """

    value: float
    target_fpr: float
    validation_fpr: float
    validation_recall: float

    def to_dict(self) -> dict[str, float]:
        return {
            "value": self.value,
            "target_fpr": self.target_fpr,
            "validation_fpr": self.validation_fpr,
            "validation_recall": self.validation_recall,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Threshold:
        if not isinstance(data, dict):
            raise FraudflError("model artifact: 'threshold' must be an object")
        values = {}
        for key in ("value", "target_fpr", "validation_fpr", "validation_recall"):
            v = data.get(key)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise FraudflError(f"model artifact: 'threshold.{key}' must be a finite number")
            values[key] = float(v)
        return cls(**values)


class Predictor(Protocol):
    def predict_proba(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]: ...


@dataclass(frozen=True)
class ModelArtifact:
    """A servable model: architecture, parameters, features, threshold and provenance.

    A tree ensemble has ``spec = None``, ``trees`` set and ``params`` its node array.
    """

    spec: ModelSpec | None
    params: npt.NDArray[np.floating[Any]]
    pipeline: FeaturePipeline
    threshold: Threshold
    version: int
    round: int
    metrics: dict[str, float] = field(default_factory=dict)
    bank_id: str = ""
    personalization: str = "none"
    created_at: float = field(default_factory=time.time)
    trees: TreeEnsemble | None = None

    @property
    def kind(self) -> str:
        return "neural" if self.trees is None else "gbdt"

    def predictor(self) -> Predictor:
        """What scores: the NumPy copy of the network, or the tree ensemble itself."""
        if self.trees is not None:
            return self.trees
        return NumpyModel(self.build_model())

    def build_model(self) -> torch.nn.Module:
        """The torch model with this artifact's parameters, in eval mode."""
        if self.spec is None:
            raise FraudflError("a tree-ensemble artifact has no torch model")
        model = self.spec.build()
        set_flat_params(model, self.params)
        model.eval()
        return model

    def _model_summary(self) -> dict[str, Any]:
        if self.trees is not None:
            return {"kind": "gbdt", "num_class": self.trees.num_class,
                    "trees": self.trees.n_trees, "max_depth": self.trees.max_depth}
        assert self.spec is not None
        return self.spec.to_dict()

    def describe(self) -> dict[str, Any]:
        """Provenance for ``GET /model`` and logs (no parameters)."""
        return {
            "version": self.version,
            "round": self.round,
            "bank_id": self.bank_id,
            "personalization": self.personalization,
            "created_at": self.created_at,
            "kind": self.kind,
            "model": self._model_summary(),
            "num_features": self.pipeline.num_features,
            # JSON has no NaN: an undefined metric (one class in the validation data) is null.
            "metrics": {k: (v if math.isfinite(v) else None) for k, v in self.metrics.items()},
            "threshold": self.threshold.to_dict(),
        }


def choose_threshold(
    probabilities: npt.ArrayLike, labels: npt.ArrayLike, target_fpr: float
) -> Threshold:
    """The lowest cut ``t`` such that the share of negatives with ``p >= t`` is <= ``target_fpr``.

    The lowest such cut catches the most fraud within the false-positive budget. With no
    negatives in ``labels`` there is nothing to calibrate against, which is an error.
    """
    if not 0.0 <= target_fpr < 1.0:
        raise FraudflError(f"target false-positive rate must be in [0, 1), got {target_fpr}")
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"probabilities {p.shape} and labels {y.shape} differ in length")
    negatives = np.sort(p[y == 0])[::-1]
    if len(negatives) == 0:
        raise FraudflError("cannot choose a threshold: the validation data has no negatives")
    allowed = math.floor(target_fpr * len(negatives) + 1e-9)
    if allowed >= len(negatives):
        value = float(negatives[-1])
    else:
        # Every negative scoring strictly above negatives[allowed] may be flagged; ties with
        # it may not (they would all cross together), so cut just above it.
        value = float(np.nextafter(negatives[allowed], np.inf))
    fpr = float(np.mean(negatives >= value))
    positives = p[y == 1]
    recall = float(np.mean(positives >= value)) if len(positives) else math.nan
    return Threshold(
        value=value,
        target_fpr=target_fpr,
        validation_fpr=fpr,
        validation_recall=0.0 if math.isnan(recall) else recall,
    )


def predict_proba(model: torch.nn.Module, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Fraud probabilities of a binary model on a feature matrix (the scorer's own forward)."""
    return NumpyModel(model).predict_proba(X)


# The false-positive rate at which a served model's decision threshold is set.
TARGET_FPR = 0.01


def build_artifact(
    model: torch.nn.Module,
    spec: ModelSpec,
    pipeline: FeaturePipeline,
    X_val: npt.NDArray[np.float32],
    y_val: npt.NDArray[np.int64],
    *,
    target_fpr: float,
    version: int,
    round: int,
    bank_id: str = "",
    personalization: str = "none",
    metrics: Mapping[str, float] | None = None,
) -> ModelArtifact:
    """Package ``model`` for serving, choosing its threshold on the bank's validation data.

    ``metrics`` (e.g. the evaluation of the round) are stored as they are; the validation
    false-positive rate and recall at the chosen threshold are always added.
    """
    if spec.num_classes != 2:
        raise FraudflError("the scoring service serves binary fraud models only")
    if pipeline.num_features != spec.num_features:
        raise FraudflError(
            f"feature pipeline produces {pipeline.num_features} features, "
            f"the model expects {spec.num_features}"
        )
    threshold = choose_threshold(predict_proba(model, X_val), y_val, target_fpr)
    return ModelArtifact(
        spec=spec,
        params=get_flat_params(model),
        pipeline=pipeline,
        threshold=threshold,
        version=version,
        round=round,
        metrics={k: float(v) for k, v in (metrics or {}).items()},
        bank_id=bank_id,
        personalization=personalization,
    )


def build_tree_artifact(
    ensemble: TreeEnsemble,
    pipeline: FeaturePipeline,
    X_val: npt.NDArray[np.float32],
    y_val: npt.NDArray[np.int64],
    *,
    target_fpr: float,
    version: int,
    round: int,
    bank_id: str = "",
    personalization: str = "none",
    metrics: Mapping[str, float] | None = None,
) -> ModelArtifact:
    """Package a binary tree ensemble over ``pipeline``'s features, as :func:`build_artifact`."""
    _check_trees(ensemble, pipeline, FraudflError)
    threshold = choose_threshold(ensemble.predict_proba(X_val), y_val, target_fpr)
    return ModelArtifact(
        spec=None,
        params=ensemble.node_array(),
        pipeline=pipeline,
        threshold=threshold,
        version=version,
        round=round,
        metrics={k: float(v) for k, v in (metrics or {}).items()},
        bank_id=bank_id,
        personalization=personalization,
        trees=ensemble,
    )


def _check_trees(ensemble: TreeEnsemble, pipeline: FeaturePipeline, fail: Any) -> None:
    if ensemble.num_class != 2:
        raise fail("the scoring service serves binary fraud models only")
    if ensemble.edges.n_features != pipeline.num_features:
        raise fail(
            f"feature pipeline produces {pipeline.num_features} features, the tree ensemble "
            f"expects {ensemble.edges.n_features}"
        )


def metadata_path(path: Path) -> Path:
    """``artifact.json`` of an artifact given as its directory or as that file."""
    return path if path.name == METADATA_FILE else path / METADATA_FILE


def save_artifact(artifact: ModelArtifact, directory: Path) -> Path:
    """Publish ``artifact`` into ``directory`` atomically; returns the metadata file's path."""
    params: npt.NDArray[Any]
    if artifact.trees is not None:
        params = artifact.trees.node_array().reshape(-1)
        model_entry: dict[str, Any] = {"kind": "gbdt", "trees": artifact.trees.metadata()}
    else:
        assert artifact.spec is not None
        params = np.ascontiguousarray(artifact.params, dtype=np.float32).reshape(-1)
        if params.shape[0] != artifact.spec.num_params:
            raise FraudflError(
                f"model artifact: {params.shape[0]} parameters, the spec needs "
                f"{artifact.spec.num_params}"
            )
        model_entry = {"model_spec": artifact.spec.to_dict()}
    buf = io.BytesIO()
    np.save(buf, params, allow_pickle=False)
    blob = buf.getvalue()
    digest = hashlib.sha256(blob).hexdigest()
    params_name = f"{_PARAMS_PREFIX}{digest[:16]}.npy"
    directory.mkdir(parents=True, exist_ok=True)
    meta_file = directory / METADATA_FILE
    previous = _current_params_name(meta_file)
    if not (directory / params_name).exists():
        atomic_write_bytes(directory / params_name, blob)
    metadata = {
        "format": ARTIFACT_FORMAT,
        "format_version": ARTIFACT_VERSION,
        "version": artifact.version,
        "round": artifact.round,
        "bank_id": artifact.bank_id,
        "personalization": artifact.personalization,
        "created_at": artifact.created_at,
        **model_entry,
        "feature_pipeline": artifact.pipeline.to_dict(),
        "threshold": artifact.threshold.to_dict(),
        "metrics": {k: (v if math.isfinite(v) else None) for k, v in artifact.metrics.items()},
        "params": {"file": params_name, "sha256": digest, "count": int(params.shape[0])},
    }
    atomic_write_bytes(meta_file, (json.dumps(metadata, indent=2) + "\n").encode())
    # Keep the parameter file the previous metadata named: a reader that read the old
    # artifact.json just before the rename still finds it. Older ones can go.
    keep = {params_name, previous}
    for stale in directory.glob(f"{_PARAMS_PREFIX}*.npy"):
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    log.info("saved model artifact v%d (round %d) to %s", artifact.version, artifact.round,
             directory)
    return meta_file


def _current_params_name(meta_file: Path) -> str | None:
    try:
        data = json.loads(meta_file.read_bytes())
        name = data["params"]["file"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return name if isinstance(name, str) else None


def load_artifact(path: Path) -> ModelArtifact:
    """Read and check an artifact (its directory or its ``artifact.json``)."""
    meta_file = metadata_path(path)
    try:
        size = meta_file.stat().st_size
        if size > _MAX_METADATA_BYTES:
            raise FraudflError(f"{meta_file}: metadata file is too large ({size} bytes)")
        raw = meta_file.read_bytes()
    except FileNotFoundError:
        raise FraudflError(
            f"{path}: no model artifact here (expected {METADATA_FILE}; a bank node writes it "
            "after each round)"
        ) from None
    except OSError as exc:
        raise FraudflError(f"{meta_file}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise FraudflError(f"{meta_file}: not valid JSON: {exc}") from exc
    return _decode(data, meta_file)


def _decode(data: Any, meta_file: Path) -> ModelArtifact:
    def fail(what: str) -> FraudflError:
        return FraudflError(f"{meta_file}: {what}")

    if not isinstance(data, dict):
        raise fail("expected a JSON object")
    if data.get("format") != ARTIFACT_FORMAT or data.get("format_version") != ARTIFACT_VERSION:
        raise fail(f"not a {ARTIFACT_FORMAT} version {ARTIFACT_VERSION} file")
    for key in ("version", "round"):
        if not isinstance(data.get(key), int) or isinstance(data.get(key), bool):
            raise fail(f"'{key}' must be an integer")
    for key in ("bank_id", "personalization"):
        if not isinstance(data.get(key), str):
            raise fail(f"'{key}' must be a string")
    created_at = data.get("created_at")
    if isinstance(created_at, bool) or not isinstance(created_at, int | float):
        raise fail("'created_at' must be a number")
    kind = data.get("kind", "neural")
    if kind not in KINDS:
        raise fail(f"'kind' must be one of {list(KINDS)}, got {kind!r}")
    try:
        pipeline = FeaturePipeline.from_dict(_obj(data, "feature_pipeline", fail))
        threshold = Threshold.from_dict(data.get("threshold"))
        spec = None if kind == "gbdt" else ModelSpec.from_dict(_obj(data, "model_spec", fail))
    except FraudflError as exc:
        raise fail(str(exc)) from None
    if spec is not None:
        if spec.num_classes != 2:
            raise fail("the scoring service serves binary fraud models only")
        if pipeline.num_features != spec.num_features:
            raise fail(
                f"feature pipeline produces {pipeline.num_features} features, the model "
                f"expects {spec.num_features}"
            )
    metrics_raw = _obj(data, "metrics", fail)
    metrics: dict[str, float] = {}
    for name, value in metrics_raw.items():
        if value is None:
            metrics[name] = math.nan
        elif isinstance(value, int | float) and not isinstance(value, bool):
            metrics[name] = float(value)
        else:
            raise fail(f"metric '{name}' must be a number or null")
    trees = None
    if spec is None:
        meta = _obj(data, "trees", fail)
        params = _load_params(_obj(data, "params", fail), meta_file, _node_count(meta), fail,
                              np.float64)
        try:
            trees = TreeEnsemble.from_parts(
                meta, params.reshape(_node_shape(meta)), source="'trees'"
            )
        except FraudflError as exc:
            raise fail(str(exc)) from None
        _check_trees(trees, pipeline, fail)
    else:
        params = _load_params(_obj(data, "params", fail), meta_file, spec.num_params, fail,
                              np.float32)
    return ModelArtifact(
        spec=spec,
        params=params,
        pipeline=pipeline,
        threshold=threshold,
        version=data["version"],
        round=data["round"],
        metrics=metrics,
        bank_id=data["bank_id"],
        personalization=data["personalization"],
        created_at=float(created_at),
        trees=trees,
    )


def _obj(data: dict[str, Any], key: str, fail: Any) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise fail(f"'{key}' must be an object")
    return value


def _node_shape(meta: dict[str, Any]) -> tuple[int, int, int]:
    """Shape of a tree node array from unchecked metadata (checked by ``from_parts``)."""
    n_trees, depth = meta.get("n_trees"), meta.get("max_depth")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 1 << 20
               for v in (n_trees, depth)) or not 1 <= depth <= 16:  # type: ignore[operator]
        return (0, 0, 0)
    assert isinstance(n_trees, int) and isinstance(depth, int)
    return (n_trees, heap_size(depth), len(NODE_FIELDS))


def _node_count(meta: dict[str, Any]) -> int:
    a, b, c = _node_shape(meta)
    return a * b * c


def _load_params(
    entry: dict[str, Any], meta_file: Path, expected: int, fail: Any,
    dtype: type[np.floating[Any]],
) -> npt.NDArray[np.floating[Any]]:
    name, digest, count = entry.get("file"), entry.get("sha256"), entry.get("count")
    if not isinstance(name, str) or os.sep in name or not name.startswith(_PARAMS_PREFIX):
        raise fail("'params.file' must name a params-*.npy file next to the metadata")
    if not isinstance(digest, str) or not isinstance(count, int):
        raise fail("'params' needs 'sha256' (string) and 'count' (integer)")
    if count != expected:
        raise fail(f"'params.count' is {count}, the model needs {expected}")
    params_file = meta_file.parent / name
    try:
        if params_file.stat().st_size > _MAX_PARAMS_BYTES:
            raise fail(f"{name} is too large")
        blob = params_file.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read {name}: {exc.strerror or exc}") from exc
    if hashlib.sha256(blob).hexdigest() != digest:
        raise fail(f"{name} does not match its SHA-256 (corrupt or replaced)")
    try:
        params: npt.NDArray[np.floating[Any]] = np.load(io.BytesIO(blob), allow_pickle=False)
    except ValueError as exc:
        raise fail(f"{name} is not a .npy array: {exc}") from exc
    if params.dtype != dtype or params.shape != (count,):
        raise fail(
            f"{name} holds {params.dtype}{params.shape}, expected {np.dtype(dtype)} ({count},)"
        )
    if not np.all(np.isfinite(params)):
        raise fail(f"{name} contains NaN or infinite values")
    return params
