"""``fraudfl serve``: the bank's scoring service (HTTP API, optional streaming scorer).

``--config FILE`` reads a :class:`~fraudfl.config.ScoringConfig` TOML file (with ``FRAUDFL_*``
environment overrides, like the other services): TLS, bearer tokens, request limits and the
streaming scorer's full Kafka security settings live there. Without it, the flags describe
an unauthenticated service (for a laptop or a loopback address).
"""

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
    parser.add_argument("--config", type=Path, default=None,
                        help="scoring service TOML config (TLS, tokens, limits, Kafka security); "
                             "replaces the other options")
    parser.add_argument("--model", type=Path, default=None,
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
    stream.add_argument("--alerts-per-record", type=int, default=1, metavar="N",
                        help="pack up to N alerts into one record as a JSON array (default 1: "
                             "one record per transaction, keyed by its id)")
    stream.add_argument("--stream-state", type=Path, default=None,
                        help="file keeping the streaming scorer's consumed offsets "
                             "(default: stream-offsets.json next to the artifact)")
    parser.set_defaults(func=run)


def scoring_config(args: argparse.Namespace) -> Any:
    """The :class:`ScoringConfig` of ``--config FILE``, or one built from the flags."""
    from fraudfl.config import KafkaSettings as KafkaSection
    from fraudfl.config import ScoringConfig, StreamConfig, load_scoring_config
    from fraudfl.errors import FraudflError

    if args.config is not None:
        if args.model is not None:
            raise FraudflError("--model and --config exclude each other; set model in the file")
        return load_scoring_config(args.config)
    if args.model is None:
        raise FraudflError("--model DIR (or --config FILE) is required")
    partitions = _partitions(args.stream_partitions)
    if not 0 <= args.port <= 65535:
        raise FraudflError(f"--port {args.port} is out of range; expected 0-65535")
    if not 0 < args.poll_interval < math.inf:
        raise FraudflError(f"--poll-interval must be a finite number > 0, got {args.poll_interval}")
    stream = None
    if args.bootstrap_servers:
        stream = StreamConfig(
            kafka=KafkaSection(bootstrap_servers=args.bootstrap_servers,
                               client_id="fraudfl-scoring"),
            transactions_topic=args.transactions_topic, alerts_topic=args.alerts_topic,
            partitions=partitions, alerts_only=args.alerts_only, state=args.stream_state,
            alerts_per_record=args.alerts_per_record,
        )
    return ScoringConfig(
        model=args.model, host=args.host, port=args.port, poll_interval=args.poll_interval,
        wait_for_model=args.wait_for_model, id_field=args.id_field, federation=args.federation,
        bank=args.bank, stream=stream,
    )


def read_tokens(path: Path) -> list[str]:
    """Bearer tokens, one per line (blank lines and ``#`` comments skipped)."""
    from fraudfl.errors import FraudflError

    tokens = [
        line.strip() for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not tokens:
        raise FraudflError(f"{path}: auth_tokens_file holds no token")
    if any(len(t) < 16 for t in tokens):
        raise FraudflError(f"{path}: every token must be at least 16 characters")
    return tokens


def run(args: argparse.Namespace) -> int:
    import torch
    import uvicorn
    from threadpoolctl import threadpool_limits

    from fraudfl.cli import configure_service_logging
    from fraudfl.monitoring import ScoringMetrics, start_metrics_server
    from fraudfl.scoring.api import create_app
    from fraudfl.scoring.artifact import load_artifact
    from fraudfl.scoring.holder import ModelHolder
    from fraudfl.scoring.server import bind_listener, uvicorn_config

    # The config is checked before anything with a side effect (signal handler, thread limits,
    # the socket, the model watcher) so that a typo fails at once and leaves nothing behind.
    config = scoring_config(args)
    configure_service_logging(args, config.log.level, config.log.format)
    tokens = [] if config.auth_tokens_file is None else read_tokens(config.auth_tokens_file)
    # SIGTERM (docker stop, systemd) ends the service cleanly with status 0: uvicorn drains
    # requests, then re-raises the signal, which lands here and unwinds through the finally.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    # One transaction, or a batch through a 64-unit MLP, is far too small to split across
    # threads; extra BLAS/torch threads only contend with the event loop and the stream.
    torch.set_num_threads(1)
    threadpool_limits(1, "blas")
    sock = bind_listener(config.host, config.port)
    first = _first_artifact(config.model, config.wait_for_model, load_artifact)
    bank = config.bank or first.bank_id or "unknown"
    metrics = ScoringMetrics(federation=config.federation, bank=bank)
    holder = ModelHolder(
        config.model, id_field=config.id_field,
        on_load=lambda scorer, swapped: metrics.model_loaded(scorer.version, swapped=swapped),
    )
    holder.start_watching(config.poll_interval)
    streamer = None
    if config.stream is not None:
        from fraudfl.scoring.stream import StreamingScorer, StreamSettings
        from fraudfl.transport.kafka import KafkaTransport

        stream = config.stream
        model_dir = config.model if config.model.is_dir() else config.model.parent
        streamer = StreamingScorer(
            holder,
            # Larger polls amortise the per-batch flush and offset save (benchmarks/).
            KafkaTransport(stream.kafka.transport_settings(
                client_id=stream.kafka.client_id or "fraudfl-scoring"), max_poll_records=2000),
            StreamSettings(state_path=stream.state or model_dir / "stream-offsets.json",
                           transactions_topic=stream.transactions_topic,
                           alerts_topic=stream.alerts_topic, alerts_only=stream.alerts_only,
                           partitions=stream.partitions,
                           alerts_per_record=stream.alerts_per_record),
            metrics=metrics,
        )
        streamer.start()
    app = create_app(holder, metrics=metrics, registry=metrics.registry, limits=config.limits,
                     tokens=tokens)
    metrics_server = None if config.metrics_port is None else start_metrics_server(
        config.metrics_port, config.metrics_host, metrics.registry
    )
    port = int(sock.getsockname()[1])
    scheme = "http" if config.tls is None else "https"
    log.info("scoring API on %s://%s:%d (OpenAPI at /docs%s)", scheme, config.host, port,
             "; bearer tokens required" if tokens else "")
    try:
        server_config = uvicorn_config(app, config.host, port, config.tls)
        uvicorn.Server(server_config).run(sockets=[sock])
    finally:
        sock.close()
        if streamer is not None:
            streamer.stop()
            streamer.transport.close()
        holder.stop_watching()
        if metrics_server is not None:
            metrics_server.stop()
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
