"""``fraudfl aggregator --config FILE``: run the aggregator until its rounds are done."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from fraudfl.config import AggregatorConfig, load_config

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "aggregator",
        help="run the aggregator service (round orchestration, secure aggregation, models)",
        description=__doc__,
    )
    p.add_argument("--config", type=Path, required=True, help="aggregator TOML config")
    p.set_defaults(func=run)


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM/SIGINT, so the service finishes its step and exits cleanly."""
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        log.warning("received signal %d; stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def quiet_kafka() -> None:
    """kafka-python logs every connection at INFO; keep its warnings only."""
    logging.getLogger("kafka").setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    import torch

    from aggregator.service import AggregatorService
    from fraudfl.monitoring import AggregatorMetrics, config_digest, start_metrics_server
    from fraudfl.transport.kafka import KafkaSettings, KafkaTransport

    config = load_config(AggregatorConfig, args.config)
    torch.set_num_threads(config.torch_threads)
    quiet_kafka()
    metrics = AggregatorMetrics(
        federation=config.federation_id, config_hash=config_digest(args.config.read_bytes())
    )
    server = None if config.metrics_port is None else start_metrics_server(config.metrics_port)
    transport = KafkaTransport(KafkaSettings(**config.kafka.model_dump()))
    try:
        return AggregatorService(config, transport, metrics=metrics).run(stop_on_signals())
    finally:
        transport.close()
        if server is not None:
            server.stop()
