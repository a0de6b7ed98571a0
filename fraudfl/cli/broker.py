"""``fraudfl broker``: run the embedded Kafka-compatible broker (Tansu) until Ctrl-C.

Prints the bootstrap address on stdout. ``--durable`` keeps topics and records in S3 storage on
a local moto server (still lost when this command exits, but they survive broker restarts).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType

from fraudfl.errors import FraudflError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "broker",
        help="run the embedded Kafka-compatible broker until Ctrl-C",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    p.add_argument(
        "--durable",
        action="store_true",
        help="store data in S3 on a local moto server instead of memory",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fraudfl.transport.broker import EmbeddedBroker

    if args.port is not None and not 0 < args.port < 65536:
        raise FraudflError(f"--port {args.port}: expected 1-65535")
    if logging.getLogger().level > logging.DEBUG:
        # kafka-python narrates every connection of the readiness check at INFO.
        logging.getLogger("kafka").setLevel(logging.WARNING)
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        with EmbeddedBroker(args.port, durable=args.durable) as broker:
            print(f"broker ready: bootstrap servers {broker.bootstrap_servers}", flush=True)
            try:
                while not stop.wait(0.5):
                    if not broker.running:
                        raise FraudflError(
                            "the broker process exited unexpectedly:\n" + broker.log_tail()
                        )
            except KeyboardInterrupt:
                pass
            log.info("stopping the broker")
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
