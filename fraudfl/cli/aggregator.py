"""``fraudfl aggregator --config FILE``: run the aggregator service until stopped.

After its planned rounds the federation is *finished*; the service keeps serving metrics,
``/healthz``, ``/readyz`` and the admin endpoint until SIGTERM or ``fraudfl admin stop``, and
``fraudfl admin extend N`` continues it (docs/operations.md). ``--exit-when-finished`` makes it
a batch job instead (exit 0 when every planned round completed, 1 when it stopped short).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from fraudfl.config import AggregatorConfig, load_config
from fraudfl.identity import check_id

log = logging.getLogger(__name__)
# The broker probe's metadata requests give up after this long (the main loop's clients wait
# much longer: a large model may take a while to fetch).
PROBE_TIMEOUT_MS = 5_000


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "aggregator",
        help="run the aggregator service (round orchestration, secure aggregation, models)",
        description=__doc__,
    )
    p.add_argument("--config", type=Path, required=True, help="aggregator TOML config")
    p.add_argument("--new-run", metavar="RUN_ID", default=None,
                   help="start a new run of the federation although its topics hold an earlier "
                        "run's history (banks that took part in it refuse until their operator "
                        "joins the new run)")
    p.add_argument("--exit-when-finished", action="store_true",
                   help="exit once the planned rounds are done instead of serving on")
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
    from fraudfl.admin import AdminServer, write_token
    from fraudfl.cli import configure_service_logging
    from fraudfl.cli.service_runtime import metrics_server
    from fraudfl.monitoring import AggregatorMetrics, config_digest
    from fraudfl.monitoring.broker_probe import KafkaLogCounter
    from fraudfl.monitoring.health import Health
    from fraudfl.transport.kafka import KafkaTransport

    config = load_config(AggregatorConfig, args.config)
    configure_service_logging(args, config.log.level, config.log.format)
    if args.new_run is not None:
        check_id("--new-run", args.new_run)
    torch.set_num_threads(config.torch_threads)
    quiet_kafka()
    metrics = AggregatorMetrics(
        federation=config.federation_id, config_hash=config_digest(args.config.read_bytes())
    )
    counter = KafkaLogCounter(metrics).install()
    health = Health()
    server = metrics_server(config, health)
    admin = None
    if config.admin_port is not None:
        config.state_dir.mkdir(parents=True, exist_ok=True)
        admin = AdminServer(config.admin_port, write_token(config.state_dir)).start()
    transport = KafkaTransport(config.kafka.transport_settings())
    probe = KafkaTransport(config.kafka.transport_settings(request_timeout_ms=PROBE_TIMEOUT_MS))
    try:
        return AggregatorService(
            config, transport, metrics=metrics, health=health, admin=admin,
            probe_transport=probe, new_run=args.new_run, stay_up=not args.exit_when_finished,
        ).run(stop_on_signals())
    finally:
        transport.close()
        probe.close()
        counter.remove()
        if admin is not None:
            admin.stop()
        if server is not None:
            server.stop()
