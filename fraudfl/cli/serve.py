"""``fraudfl serve``: the bank's scoring service (HTTP API, optional streaming scorer)."""

from __future__ import annotations

import argparse
import logging
import math
import signal
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="serve a model artifact over HTTP (and optionally score a Kafka stream)",
        description=(
            "Serve the bank's model artifact: POST /score (one transaction or a batch), "
            "GET /health, GET /model, GET /metrics (Prometheus) and the OpenAPI schema at "
            "/docs. The artifact is watched and hot-swapped when the bank node publishes a new "
            "model. With --bootstrap-servers, also consume the transactions topic and write "
            "scores to the alerts topic (see docs/scoring.md)."
        ),
    )
    parser.add_argument("--model", type=Path, required=True,
                        help="model artifact directory (or its artifact.json)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port (default: 8080)")
    parser.add_argument("--poll-interval", type=float, default=1.0,
                        help="seconds between checks of the artifact for a new model (default: 1)")
    parser.add_argument("--wait-for-model", action="store_true",
                        help="wait for the bank node to write its first model artifact instead "
                             "of failing when there is none yet")
    parser.add_argument("--id-field", default="transaction_id",
                        help="transaction field echoed back with each score (default: "
                             "transaction_id)")
    parser.add_argument("--federation", default="fraudfl", help="federation label of metrics")
    parser.add_argument("--bank", default=None,
                        help="bank label of metrics (default: the artifact's bank id)")
    stream = parser.add_argument_group("streaming scorer (Kafka)")
    stream.add_argument("--bootstrap-servers", default=None,
                        help="Kafka bootstrap servers; enables the streaming scorer")
    stream.add_argument("--transactions-topic", default="transactions",
                        help="topic of transactions to score (default: transactions)")
    stream.add_argument("--alerts-topic", default="fraud-alerts",
                        help="topic the scores are written to (default: fraud-alerts)")
    stream.add_argument("--stream-partitions", default=None, metavar="P[,P...]",
                        help="read only these partitions of the transactions topic (several "
                             "scorers sharing one topic, each with its own --stream-state)")
    stream.add_argument("--alerts-only", action="store_true",
                        help="produce only flagged (and invalid) transactions, not every score")
    stream.add_argument("--stream-state", type=Path, default=None,
                        help="file keeping the streaming scorer's consumed offsets "
                             "(default: stream-offsets.json next to the artifact)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    import uvicorn
    from threadpoolctl import threadpool_limits

    from fraudfl.errors import FraudflError
    from fraudfl.monitoring import ScoringMetrics
    from fraudfl.scoring.api import create_app
    from fraudfl.scoring.artifact import load_artifact
    from fraudfl.scoring.holder import ModelHolder
    from fraudfl.scoring.server import bind_listener, uvicorn_config

    # Flags are checked before anything with a side effect (signal handler, thread limits,
    # the socket, the model watcher) so that a typo fails at once and leaves nothing behind.
    partitions = _partitions(args.stream_partitions)
    if not 0 <= args.port <= 65535:
        raise FraudflError(f"--port {args.port} is out of range; expected 0-65535")
    if not 0 < args.poll_interval < math.inf:
        raise FraudflError(f"--poll-interval must be a finite number > 0, got {args.poll_interval}")
    # SIGTERM (docker stop, systemd) ends the service cleanly with status 0: uvicorn drains
    # requests, then re-raises the signal, which lands here and unwinds through the finally.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    # One transaction, or a batch through a 64-unit MLP, is far too small to split across
    # threads; extra BLAS/torch threads only contend with the event loop and the stream.
    torch.set_num_threads(1)
    threadpool_limits(1, "blas")
    sock = bind_listener(args.host, args.port)
    first = _first_artifact(args.model, args.wait_for_model, load_artifact)
    bank = args.bank or first.bank_id or "unknown"
    metrics = ScoringMetrics(federation=args.federation, bank=bank)
    holder = ModelHolder(
        args.model, id_field=args.id_field,
        on_load=lambda scorer, swapped: metrics.model_loaded(scorer.version, swapped=swapped),
    )
    holder.start_watching(args.poll_interval)
    streamer = None
    if args.bootstrap_servers:
        from fraudfl.scoring.stream import StreamingScorer, StreamSettings
        from fraudfl.transport.kafka import KafkaSettings, KafkaTransport

        state = args.stream_state or (
            (args.model if args.model.is_dir() else args.model.parent) / "stream-offsets.json"
        )
        streamer = StreamingScorer(
            holder,
            # Larger polls amortise the per-batch flush and offset save (benchmarks/).
            KafkaTransport(KafkaSettings(bootstrap_servers=args.bootstrap_servers,
                                         client_id="fraudfl-scoring"), max_poll_records=2000),
            StreamSettings(state_path=state, transactions_topic=args.transactions_topic,
                           alerts_topic=args.alerts_topic, alerts_only=args.alerts_only,
                           partitions=partitions),
            metrics=metrics,
        )
        streamer.start()
    app = create_app(holder, metrics=metrics, registry=metrics.registry)
    port = int(sock.getsockname()[1])
    log.info("scoring API on http://%s:%d (OpenAPI at /docs)", args.host, port)
    try:
        uvicorn.Server(uvicorn_config(app, args.host, port)).run(sockets=[sock])
    finally:
        sock.close()
        if streamer is not None:
            streamer.stop()
            streamer.transport.close()
        holder.stop_watching()
    return 0


def _first_artifact(path: Path, wait: bool, load: Any) -> Any:
    """The artifact at ``path``; with ``wait``, retried every second until one is there."""
    import time

    from fraudfl.errors import FraudflError

    waited = 0
    while True:
        try:
            return load(path)
        except FraudflError as exc:
            if not wait:
                raise
            if waited % 30 == 0:
                log.info("waiting for a model artifact: %s", exc)
        time.sleep(1.0)
        waited += 1


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _partitions(value: str | None) -> tuple[int, ...] | None:
    from fraudfl.errors import FraudflError

    if value is None:
        return None
    try:
        partitions = tuple(int(p) for p in value.split(",") if p.strip())
    except ValueError:
        partitions = ()
    # An empty list would assign no partition and score nothing, silently.
    if not partitions or min(partitions) < 0:
        raise FraudflError(
            f"--stream-partitions: expected comma-separated partition numbers, got {value!r}"
        )
    if len(set(partitions)) != len(partitions):
        raise FraudflError(f"--stream-partitions: a partition is listed twice in {value!r}")
    return partitions
