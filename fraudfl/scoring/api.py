"""The scoring HTTP API (FastAPI): ``POST /score``, ``GET /health``, ``GET /model``, ``/metrics``.

``POST /score`` takes one transaction (a JSON object) or a batch (a JSON array of objects) in the
bank's schema and answers with the fraud probability and the decision at the model's threshold.
The request body is validated straight from bytes by pydantic-core (see
:mod:`fraudfl.scoring.records`) rather than through FastAPI's body models: that keeps one
transaction's round trip well under a millisecond of server time. The body's JSON schema is
still published in the OpenAPI document, built from the serving model's feature pipeline.

Each request reads the holder's scorer once, so a hot swap mid-request is invisible to it.

Security and limits (``fraudfl serve --config``): with bearer tokens configured, ``/score`` and
``/model`` answer 401 without one of them (``/health``, ``/healthz``, ``/readyz`` and
``/metrics`` stay open for probes and Prometheus; restrict them by network policy). A body over
``max_body_bytes`` is refused with 413 before it is read in full, a batch over ``max_batch``
with 413 right after JSON parsing, invalid transactions with 422 listing at most
MAX_REPORTED_ERRORS problems, and a request whose validation and scoring outlast
``request_timeout_s`` with 503.
"""

from __future__ import annotations

import asyncio
import hmac
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

from fraudfl.config import ScoringLimits
from fraudfl.monitoring import ScoringMetrics
from fraudfl.monitoring.metrics import Outcome
from fraudfl.scoring.holder import ModelHolder
from fraudfl.scoring.records import BatchTooLarge, InvalidTransactions, Record
from fraudfl.scoring.scorer import Scorer, Scores

log = logging.getLogger(__name__)

# Batches this large are scored in a worker thread so the event loop keeps answering others.
_THREAD_BATCH = 512
# Bodies this large are validated in a worker thread, under the request's time limit.
_THREAD_BODY_BYTES = 64 * 1024


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
    limits: ScoringLimits | None = None,
    tokens: Sequence[str] = (),
) -> FastAPI:
    """The API serving ``holder``'s current model; ``registry`` is exposed on ``/metrics``.

    ``tokens``: bearer tokens accepted on ``/score`` and ``/model`` (empty: no authentication).
    """
    limits = limits or ScoringLimits()
    max_body = limits.max_body_bytes
    expected = [f"Bearer {t}".encode() for t in tokens]

    def authorized(request: Request) -> bool:
        if not expected:
            return True
        given = request.headers.get("authorization", "").encode()
        # Every token is compared, so the time taken does not tell which one nearly matched.
        return sum(hmac.compare_digest(given, e) for e in expected) > 0

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
        responses={401: {"model": ErrorResponse}, 413: {"model": ErrorResponse},
                   422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request_schema}},
            }
        },
    )
    async def score(request: Request) -> Response:
        started = time.perf_counter()
        if not authorized(request):
            finished("client_error", started)
            return _unauthorized()
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            finished("client_error", started)
            return _too_large(max_body)
        body = await _read_body(request, max_body)
        if body is None:
            finished("client_error", started)
            return _too_large(max_body)
        scorer = holder.scorer

        def validate_and_score() -> tuple[list[Record], bool, Scores]:
            records, is_batch = scorer.validator.validate_json(body, limits.max_batch)
            return records, is_batch, scorer.score_records(records)

        try:
            if len(body) >= _THREAD_BODY_BYTES:
                records, is_batch, scores = await asyncio.wait_for(
                    run_in_threadpool(validate_and_score), limits.request_timeout_s
                )
            else:
                records, is_batch = scorer.validator.validate_json(body, limits.max_batch)
                if len(records) >= _THREAD_BATCH:
                    scores = await asyncio.wait_for(
                        run_in_threadpool(scorer.score_records, records),
                        limits.request_timeout_s,
                    )
                else:
                    scores = scorer.score_records(records)
        except InvalidTransactions as exc:
            finished("client_error", started)
            return _error(422, [e.to_dict() for e in exc.errors], more=exc.more)
        except BatchTooLarge as exc:
            finished("client_error", started)
            return _error(413, [{"field": "(body)", "message": str(exc)}])
        except TimeoutError:
            finished("server_error", started)
            return _error(503, [{"field": "(body)", "message": (
                f"not scored within {limits.request_timeout_s:g} s; send smaller batches")}])
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

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        # Answered by the event loop itself: a wedged loop fails the probe by timing out.
        return {"alive": True}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> dict[str, Any]:
        return {"ready": True, "model_version": holder.scorer.version}

    @app.get("/model", summary="Version, round, metrics and threshold of the serving model",
             responses={401: {"model": ErrorResponse}})
    async def model(request: Request) -> Response:
        started = time.perf_counter()
        if not authorized(request):
            if metrics is not None:
                metrics.request_finished("model", "client_error",
                                         duration_seconds=time.perf_counter() - started)
            return _unauthorized()
        out = JSONResponse(holder.scorer.artifact.describe())
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


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None once it exceeds ``limit`` bytes (chunked bodies declare no
    length up front)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _error(status: int, problems: Sequence[dict[str, Any]], more: int = 0) -> JSONResponse:
    first = problems[0]
    where = f"transaction {first['index']}: " if first.get("index") is not None else ""
    summary = f"{where}field '{first['field']}': {first['message']}"
    others = len(problems) - 1 + more
    if others:
        summary += f" (and {others} more)"
    return JSONResponse(status_code=status, content={"error": summary, "detail": list(problems)})


def _too_large(limit: int) -> JSONResponse:
    return _error(413, [{"field": "(body)", "message": f"body larger than {limit} bytes"}])


def _unauthorized() -> JSONResponse:
    response = _error(401, [{"field": "(header)", "message": "a valid bearer token is required"}])
    response.headers["WWW-Authenticate"] = 'Bearer realm="fraudfl-scoring"'
    return response


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
