"""``fraudfl bank-node --config FILE``: run one bank's node until stopped (SIGTERM/Ctrl-C)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fraudfl.cli.aggregator import quiet_kafka, stop_on_signals
from fraudfl.config import BankNodeConfig, load_config


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "bank-node",
        help="run a bank node (local DP training, secure aggregation client, latest model)",
        description=__doc__,
    )
    p.add_argument("--config", type=Path, required=True, help="bank node TOML config")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from bank_node.service import BankNodeService
    from fraudfl.monitoring import BankMetrics, config_digest, start_metrics_server
    from fraudfl.transport.kafka import KafkaSettings, KafkaTransport

    config = load_config(BankNodeConfig, args.config)
    # Small models on few cores: intra-op threads only contend (several nodes share a host).
    torch.set_num_threads(config.torch_threads)
    quiet_kafka()
    metrics = BankMetrics(
        federation=config.federation_id,
        bank=config.bank_id,
        config_hash=config_digest(args.config.read_bytes()),
    )
    server = None if config.metrics_port is None else start_metrics_server(config.metrics_port)
    transport = KafkaTransport(KafkaSettings(**config.kafka.model_dump()))
    try:
        return BankNodeService(config, transport, metrics=metrics).run(stop_on_signals())
    finally:
        transport.close()
        if server is not None:
            server.stop()
