"""The scoring HTTP API (FastAPI): ``POST /score``, ``GET /health``, ``GET /model``, ``/metrics``.

``POST /score`` takes one transaction (a JSON object) or a batch (a JSON array of objects) in the
bank's schema and answers with the fraud probability and the decision at the model's threshold.
The request body is validated straight from bytes by pydantic-core (see
:mod:`fraudfl.scoring.records`) rather than through FastAPI's body models: that keeps one
transaction's round trip well under a millisecond of server time. The body's JSON schema is
still published in the OpenAPI document, built from the serving model's feature pipeline.

Each request reads the holder's scorer once, so a hot swap mid-request is invisible to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool

from fraudfl.monitoring import ScoringMetrics
from fraudfl.monitoring.metrics import Outcome
from fraudfl.scoring.holder import ModelHolder
from fraudfl.scoring.records import InvalidTransactions, Record
from fraudfl.scoring.scorer import Scorer, Scores

log = logging.getLogger(__name__)

# Bodies above this are refused before parsing (a full MAX_BATCH of transactions fits).
MAX_BODY_BYTES = 64 * 1024 * 1024
# Batches this large are scored in a worker thread so the event loop keeps answering others.
_THREAD_BATCH = 512


class ScoreResult(BaseModel):
    transaction_id: str | int | None = None
    probability: float
    fraud: bool
    threshold: float
    model_version: int


class BatchResult(BaseModel):
    transaction_id: str | int | None = None
    probability: float
    fraud: bool


class BatchScoreResponse(BaseModel):
    model_version: int
    threshold: float
    count: int
    alerts: int
    results: list[BatchResult]


class FieldProblem(BaseModel):
    field: str
    message: str
    index: int | None = None


class ErrorResponse(BaseModel):
    error: str
    detail: list[FieldProblem]


class Health(BaseModel):
    status: str
    model_version: int


def create_app(
    holder: ModelHolder,
    *,
    metrics: ScoringMetrics | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The API serving ``holder``'s current model; ``registry`` is exposed on ``/metrics``."""
    app = FastAPI(
        title="fraudfl scoring",
        version="1",
        description="Fraud probabilities and decisions from the bank's federated model.",
    )
    request_schema = holder.scorer.validator.json_schema()

    def finished(outcome: Outcome, started: float, scores: Scores | None = None) -> None:
        if metrics is None:
            return
        metrics.request_finished(
            "score", outcome,
            duration_seconds=time.perf_counter() - started,
            transactions=0 if scores is None else len(scores.probabilities),
            alerts=0 if scores is None else scores.alerts,
        )

    @app.post(
        "/score",
        summary="Score one transaction or a batch",
        response_model=ScoreResult | BatchScoreResponse,
        responses={413: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request_schema}},
            }
        },
    )
    async def score(request: Request) -> Response:
        started = time.perf_counter()
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            finished("client_error", started)
            return _error(413, [{"field": "(body)",
                                 "message": f"body larger than {MAX_BODY_BYTES} bytes"}])
        body = await _read_body(request)
        if body is None:
            finished("client_error", started)
            return _error(413, [{"field": "(body)",
                                 "message": f"body larger than {MAX_BODY_BYTES} bytes"}])
        scorer = holder.scorer
        try:
            records, is_batch = scorer.validator.validate_json(body)
        except InvalidTransactions as exc:
            finished("client_error", started)
            return _error(422, [e.to_dict() for e in exc.errors])
        try:
            if len(records) >= _THREAD_BATCH:
                scores = await run_in_threadpool(scorer.score_records, records)
            else:
                scores = scorer.score_records(records)
        except Exception:
            finished("server_error", started)
            raise
        payload = _batch_payload(scorer, records, scores) if is_batch else _single_payload(
            scorer, records[0], scores
        )
        finished("ok", started, scores)
        return Response(content=payload, media_type="application/json")

    @app.get("/health", response_model=Health, summary="Liveness and the serving model version")
    async def health() -> Health:
        started = time.perf_counter()
        out = Health(status="ok", model_version=holder.scorer.version)
        if metrics is not None:
            metrics.request_finished("health", "ok",
                                     duration_seconds=time.perf_counter() - started)
        return out

    @app.get("/model", summary="Version, round, metrics and threshold of the serving model")
    async def model() -> dict[str, Any]:
        started = time.perf_counter()
        out = holder.scorer.artifact.describe()
        if metrics is not None:
            metrics.request_finished("model", "ok",
                                     duration_seconds=time.perf_counter() - started)
        return out

    if registry is not None:
        exposed = registry

        @app.get("/metrics", include_in_schema=False)
        async def prometheus_metrics() -> Response:
            return Response(generate_latest(exposed), media_type=CONTENT_TYPE_LATEST)

    return app


async def _read_body(request: Request) -> bytes | None:
    """The request body, or None once it exceeds MAX_BODY_BYTES (chunked bodies declare no
    length up front)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _error(status: int, problems: Sequence[dict[str, Any]]) -> JSONResponse:
    first = problems[0]
    where = f"transaction {first['index']}: " if first.get("index") is not None else ""
    summary = f"{where}field '{first['field']}': {first['message']}"
    if len(problems) > 1:
        summary += f" (and {len(problems) - 1} more)"
    return JSONResponse(status_code=status, content={"error": summary, "detail": list(problems)})


def _single_payload(scorer: Scorer, record: Record, scores: Scores) -> bytes:
    return to_json({
        "transaction_id": record.get(scorer.id_field),
        "probability": float(scores.probabilities[0]),
        "fraud": bool(scores.decisions[0]),
        "threshold": scorer.threshold,
        "model_version": scores.model_version,
    })


def _batch_payload(scorer: Scorer, records: Sequence[Record], scores: Scores) -> bytes:
    id_field = scorer.id_field
    results = [
        {"transaction_id": r.get(id_field), "probability": p, "fraud": d}
        for r, p, d in zip(records, scores.probabilities.tolist(), scores.decisions.tolist(),
                           strict=True)
    ]
    # pydantic-core's serialiser: several times faster than json.dumps on a large batch.
    return to_json({
        "model_version": scores.model_version,
        "threshold": scorer.threshold,
        "count": len(results),
        "alerts": scores.alerts,
        "results": results,
    })
