"""``fraudfl bank-node --config FILE``: run one bank's node until stopped (SIGTERM/Ctrl-C).

``--join-run RUN_ID`` first makes the bank follow a new run of its federation (after the
aggregator started one with ``--new-run``): the round state of the old run is archived, the
privacy ledger is kept (docs/operations.md).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fraudfl.cli.aggregator import PROBE_TIMEOUT_MS, quiet_kafka, stop_on_signals
from fraudfl.config import BankNodeConfig, load_config

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "bank-node",
        help="run a bank node (local DP training, secure aggregation client, latest model)",
        description=__doc__,
    )
    p.add_argument("--config", type=Path, required=True, help="bank node TOML config")
    p.add_argument("--join-run", metavar="RUN_ID", default=None,
                   help="follow this new run of the federation (archives the old run's round "
                        "state; keeps the privacy ledger)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from bank_node.service import BankNodeService
    from fraudfl.cli import configure_service_logging
    from fraudfl.cli.service_runtime import metrics_server
    from fraudfl.monitoring import BankMetrics, config_digest
    from fraudfl.monitoring.broker_probe import KafkaLogCounter
    from fraudfl.monitoring.health import Health
    from fraudfl.rounds.run import join_run
    from fraudfl.transport.kafka import KafkaTransport

    config = load_config(BankNodeConfig, args.config)
    configure_service_logging(args, config.log.level, config.log.format)
    if args.join_run is not None:
        config.state_dir.mkdir(parents=True, exist_ok=True)
        archived = join_run(config.state_dir, args.join_run)
        log.warning("%s: joining run %s%s; privacy ledger kept", config.bank_id, args.join_run,
                    "" if archived is None else f" (old round state archived as {archived})")
    # Small models on few cores: intra-op threads only contend (several nodes share a host).
    torch.set_num_threads(config.torch_threads)
    quiet_kafka()
    metrics = BankMetrics(
        federation=config.federation_id,
        bank=config.bank_id,
        config_hash=config_digest(args.config.read_bytes()),
    )
    counter = KafkaLogCounter(metrics).install()
    health = Health()
    server = metrics_server(config, health)
    transport = KafkaTransport(config.kafka.transport_settings())
    probe = KafkaTransport(config.kafka.transport_settings(request_timeout_ms=PROBE_TIMEOUT_MS))
    try:
        return BankNodeService(
            config, transport, metrics=metrics, health=health, probe_transport=probe
        ).run(stop_on_signals())
    finally:
        transport.close()
        probe.close()
        counter.remove()
        if server is not None:
            server.stop()
