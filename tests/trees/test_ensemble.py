from __future__ import annotations

import io
import json

import numpy as np
import pytest

from fraudfl.errors import FraudflError
from fraudfl.trees import BankData, BinEdges, GBDTParams, TreeEnsemble, train_federated
from fraudfl.trees.ensemble import heap_size, level_nodes


def _random_ensemble(rng: np.random.Generator, num_class: int, n_rounds: int) -> TreeEnsemble:
    depth, n_features, max_bin = 4, 5, 9
    edges = BinEdges.of([np.arange(max_bin - 1, dtype=float)] * n_features, max_bin)
    k = 1 if num_class == 2 else num_class
    t, h = n_rounds * k, heap_size(depth)
    feature = rng.integers(0, n_features, (t, h)).astype(np.int32)
    # Random early leaves, and nothing below the last level.
    feature[rng.random((t, h)) < 0.25] = -1
    feature[:, level_nodes(depth)] = -1
    return TreeEnsemble(
        edges=edges, num_class=num_class, max_depth=depth,
        base_margin=rng.normal(size=k),
        feature=feature,
        split_bin=rng.integers(0, max_bin, (t, h)).astype(np.int32),
        default_left=rng.random((t, h)) < 0.5,
        value=rng.normal(size=(t, h)),
    )


def _slow_margin(model: TreeEnsemble, Xb: np.ndarray) -> np.ndarray:
    out = np.tile(model.base_margin, (len(Xb), 1))
    for i, row in enumerate(Xb):
        for t in range(model.n_trees):
            node = 0
            while model.feature[t, node] >= 0:
                code = row[model.feature[t, node]]
                left = (model.default_left[t, node] if code == model.edges.missing_bin
                        else code <= model.split_bin[t, node])
                node = 2 * node + (1 if left else 2)
            out[i, t % model.n_outputs] += model.value[t, node]
    return out


@pytest.mark.parametrize("num_class", [2, 3])
def test_vectorised_traversal_equals_row_by_row(num_class: int) -> None:
    rng = np.random.default_rng(num_class)
    model = _random_ensemble(rng, num_class, n_rounds=7)
    Xb = rng.integers(0, 10, (300, 5)).astype(np.uint8)  # code 9 = missing
    np.testing.assert_allclose(model.margin_binned(Xb), _slow_margin(model, Xb), atol=1e-12)
    p = model.predict_proba_binned(Xb)
    assert p.shape == ((300,) if num_class == 2 else (300, num_class))


def _through_files(model: TreeEnsemble) -> TreeEnsemble:
    meta = json.loads(json.dumps(model.metadata()))
    buf = io.BytesIO()
    np.save(buf, model.node_array(), allow_pickle=False)
    nodes = np.load(io.BytesIO(buf.getvalue()), allow_pickle=False)
    return TreeEnsemble.from_parts(meta, nodes)


def test_trained_model_round_trips_json_and_npy() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 4))
    X[rng.random(X.shape) < 0.1] = np.nan
    y = (np.nan_to_num(X[:, 0]) + rng.normal(0, 0.5, 1500) > 0.5).astype(np.int64)
    edges = BinEdges.of([np.quantile(X[~np.isnan(X[:, f]), f], np.linspace(0.05, 0.95, 30))
                         for f in range(4)], max_bin=31)
    params = GBDTParams(n_estimators=5, max_depth=3, max_bin=31)
    model = train_federated([BankData(edges.transform(X), y)], params, edges).ensemble
    loaded = _through_files(model)
    assert loaded.edges == model.edges
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_corrupt_parts_are_refused() -> None:
    model = _random_ensemble(np.random.default_rng(0), 2, n_rounds=2)
    meta, nodes = model.metadata(), model.node_array()
    bad = nodes.copy()
    bad[0, level_nodes(4)[0], 0] = 1.0
    with pytest.raises(FraudflError, match="below max_depth"):
        TreeEnsemble.from_parts(meta, bad)
    bad = nodes.copy()
    bad[1, 0, 0] = 5.0
    with pytest.raises(FraudflError, match="split feature outside"):
        TreeEnsemble.from_parts(meta, bad)
    bad = nodes.copy()
    bad[0, 3, 3] = np.nan
    with pytest.raises(FraudflError, match="NaN"):
        TreeEnsemble.from_parts(meta, bad)
    with pytest.raises(FraudflError, match="node array"):
        TreeEnsemble.from_parts(meta, nodes[:1])
    with pytest.raises(FraudflError, match="base_margin"):
        TreeEnsemble.from_parts({**meta, "base_margin": [0.0, 1.0]}, nodes)
