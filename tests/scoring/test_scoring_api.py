"""The scoring HTTP API end to end: valid, invalid and batch requests, metadata, metrics, and a
hot swap under concurrent requests against a real uvicorn server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from fraudfl.monitoring import ScoringMetrics, new_registry
from fraudfl.scoring import ModelHolder, save_artifact
from fraudfl.scoring.api import create_app
from fraudfl.scoring.server import ServerThread
from tests.scoring.conftest import TrainedBank, transactions


@pytest.fixture
def client(artifact_dir: Path) -> TestClient:
    registry = new_registry()
    metrics = ScoringMetrics(registry, federation="test", bank="bank_00")
    holder = ModelHolder(artifact_dir)
    return TestClient(create_app(holder, metrics=metrics, registry=registry))


def test_single_transaction_matches_the_pipeline_path(
    client: TestClient, trained_bank: TrainedBank
) -> None:
    tx = transactions(trained_bank, 1)[0]
    response = client.post("/score", json=tx)
    assert response.status_code == 200, response.text
    body = response.json()
    art = trained_bank.artifact
    expected = art.build_model()
    from fraudfl.scoring.artifact import predict_proba

    X = art.pipeline.transform_features(trained_bank.val.iloc[:1])
    p = float(predict_proba(expected, X)[0])
    assert body["probability"] == pytest.approx(p, rel=1e-6)
    assert body["fraud"] == (p >= art.threshold.value)
    assert body["transaction_id"] == tx["transaction_id"]
    assert body["threshold"] == art.threshold.value
    assert body["model_version"] == 1


def test_batch_scores_every_transaction_in_order(
    client: TestClient, trained_bank: TrainedBank
) -> None:
    txs = transactions(trained_bank, 300)
    response = client.post("/score", json=txs)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 300
    assert [r["transaction_id"] for r in body["results"]] == [t["transaction_id"] for t in txs]
    art = trained_bank.artifact
    from fraudfl.scoring.artifact import predict_proba

    X = art.pipeline.transform_features(trained_bank.val.iloc[:300])
    p = predict_proba(art.build_model(), X)
    np.testing.assert_allclose([r["probability"] for r in body["results"]], p, rtol=1e-6)
    assert body["alerts"] == int(np.sum(p >= art.threshold.value))
    # Frauds in the validation data are flagged more often than legitimate transactions.
    labels = trained_bank.val["is_fraud"].to_numpy()[:300]
    assert np.mean(p[labels == 1]) > np.mean(p[labels == 0])


def test_invalid_input_gets_422_naming_the_field(
    client: TestClient, trained_bank: TrainedBank
) -> None:
    tx = transactions(trained_bank, 3)
    missing = dict(tx[0])
    del missing["amount"]
    r = client.post("/score", json=missing)
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "amount"
    assert "amount" in r.json()["error"]

    wrong = dict(tx[0], channel=7)
    r = client.post("/score", json=wrong)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "channel"

    as_text = dict(tx[0], hour="23")
    r = client.post("/score", json=as_text)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "hour"

    batch = [tx[0], dict(tx[1], amount=None), tx[2]]
    r = client.post("/score", json=batch)
    assert r.status_code == 422
    assert r.json()["detail"] == [
        {"field": "amount", "index": 1, "message": "Input should be a valid number"}
    ]
    assert r.json()["error"].startswith("transaction 1: field 'amount'")

    r = client.post("/score", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "(body)"
    assert client.post("/score", json=[]).status_code == 422
    assert client.post("/score", json=5).status_code == 422


def test_health_model_openapi_and_metrics(client: TestClient, trained_bank: TrainedBank) -> None:
    assert client.get("/health").json() == {"status": "ok", "model_version": 1}
    info = client.get("/model").json()
    assert (info["version"], info["round"], info["bank_id"]) == (1, 3, "bank_00")
    assert info["metrics"] == {"auprc": 0.5}
    assert info["threshold"]["target_fpr"] == 0.01
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]
    single = body["schema"]["oneOf"][0]
    assert set(single["required"]) == {*trained_bank.pipeline.numeric,
                                       *trained_bank.pipeline.categorical}
    client.post("/score", json=transactions(trained_bank, 5))
    client.post("/score", json={"amount": 1})
    text = client.get("/metrics").text
    assert 'fraudfl_scoring_transactions_total{bank="bank_00",federation="test"} 5.0' in text
    assert ('fraudfl_scoring_requests_total{bank="bank_00",endpoint="score",federation="test",'
            'outcome="client_error"} 1.0') in text


def test_undefined_metrics_are_null(artifact_dir: Path, trained_bank: TrainedBank) -> None:
    art = replace(trained_bank.artifact, metrics={"auprc": float("nan"), "loss": 0.2})
    save_artifact(art, artifact_dir)
    client = TestClient(create_app(ModelHolder(artifact_dir)))
    assert client.get("/model").json()["metrics"] == {"auprc": None, "loss": 0.2}


def test_hot_swap_under_concurrent_requests(
    artifact_dir: Path, trained_bank: TrainedBank
) -> None:
    registry = new_registry()
    metrics = ScoringMetrics(registry, federation="test", bank="bank_00")
    holder = ModelHolder(
        artifact_dir, on_load=lambda s, swapped: metrics.model_loaded(s.version, swapped=swapped)
    )
    holder.start_watching(0.02)
    app = create_app(holder, metrics=metrics, registry=registry)
    single = transactions(trained_bank, 1)[0]
    batch = transactions(trained_bank, 50)
    stop = threading.Event()
    failures: list[str] = []
    seen: list[list[int]] = [[] for _ in range(4)]

    def hammer(k: int, url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                r = http.post("/score", json=batch if k % 2 else single)
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")
                    continue
                seen[k].append(r.json()["model_version"])

    art = trained_bank.artifact
    try:
        with ServerThread(app) as server:
            workers = [threading.Thread(target=hammer, args=(k, server.url)) for k in range(4)]
            for w in workers:
                w.start()
            for version in range(2, 7):
                # Each version's parameters differ, so a half-swapped model would be visible as
                # a load failure or a mismatch between version and probabilities.
                scaled = art.params * (1 + version / 100)
                save_artifact(replace(art, version=version, params=scaled), artifact_dir)
                deadline = threading.Event()
                for _ in range(500):
                    if holder.scorer.version == version:
                        break
                    deadline.wait(0.01)
                assert holder.scorer.version == version
                deadline.wait(0.05)
            stop.set()
            for w in workers:
                w.join()
    finally:
        stop.set()
        holder.stop_watching()
    assert failures == []
    for versions in seen:
        assert versions, "every worker got answers"
        assert versions == sorted(versions), "a worker saw an older model after a newer one"
    assert max(max(v) for v in seen) == 6
    assert holder.failed_reloads == 0
    text = "\n".join(line for line in httpx_get_metrics(app).splitlines())
    assert 'fraudfl_scoring_model_swaps_total{bank="bank_00",federation="test"} 5.0' in text


def httpx_get_metrics(app: Any) -> str:
    return TestClient(app).get("/metrics").text


def test_oversized_bodies_are_refused(artifact_dir: Path, trained_bank: TrainedBank) -> None:
    from fraudfl.config import ScoringLimits

    client = TestClient(create_app(ModelHolder(artifact_dir),
                                   limits=ScoringLimits(max_body_bytes=2_000)))
    big = transactions(trained_bank, 50)
    r = client.post("/score", json=big)
    assert r.status_code == 413 and r.json()["detail"][0]["field"] == "(body)"

    def chunked() -> Iterator[bytes]:  # no content-length: the limit applies while reading
        import json

        data = json.dumps(big).encode()
        for i in range(0, len(data), 500):
            yield data[i : i + 500]

    r = client.post("/score", content=chunked(), headers={"content-type": "application/json"})
    assert r.status_code == 413
