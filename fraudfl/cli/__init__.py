"""The ``fraudfl`` command.

Every module in this package that defines ``register(subparsers)`` contributes one subcommand;
``register`` adds a parser and sets ``func`` to a callable taking the parsed args and returning
an exit code. Keeping each subcommand in its own module lets features land independently.

Exit codes (docs/operations.md): 0 done or stopped cleanly (SIGTERM, ``fraudfl admin stop``);
1 the command ran and failed (a federation finished short of its rounds, a preflight check
failed); 2 a usage or configuration error, named in one line; 3 the broker could not be used
(publishing kept failing); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Sequence

from fraudfl import logs
from fraudfl.errors import FraudflError
from fraudfl.monitoring.metrics import fraudfl_version
from fraudfl.transport.errors import TransportError

log = logging.getLogger("fraudfl")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BROKER = 3
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fraudfl",
        description="Privacy-preserving federated fraud detection.",
    )
    parser.add_argument(
        "--version", action="version", version=f"fraudfl {fraudfl_version()}",
    )
    parser.add_argument(
        "--log-level",
        default=None,
        choices=list(logs.LEVELS),
        help="logging verbosity (default: FRAUDFL_LOG__LEVEL, the config's log.level, INFO)",
    )
    parser.add_argument(
        "--log-format",
        default=None,
        choices=list(logs.FORMATS),
        help="text, or one JSON object per line (default: FRAUDFL_LOG__FORMAT, the config's "
             "log.format, text)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    env_level, env_format = logs.from_environment(os.environ)
    args.log_level = args.log_level or env_level
    args.log_format = args.log_format or env_format
    logs.configure(args.log_level or "INFO", args.log_format or "text")
    try:
        code: int = args.func(args)
    except TransportError as exc:
        # Before FraudflError, of which it is a kind: the broker, not the user's input.
        log.error("giving up on the broker: %s", exc)
        return EXIT_BROKER
    except FraudflError as exc:
        if args.log_format == "json":
            # Log collectors parse every line of a JSON-logging process.
            log.error("fraudfl %s: error: %s", args.command, exc)
        else:
            print(f"fraudfl {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        log.warning("interrupted")
        return EXIT_INTERRUPTED
    return code


def configure_service_logging(args: argparse.Namespace, level: str, fmt: logs.LogFormat) -> None:
    """After a service config is loaded: its ``[log]`` table fills what the command line and
    the environment left open."""
    if args.log_level is None or args.log_format is None:
        logs.configure(args.log_level or level, args.log_format or fmt)


if __name__ == "__main__":
    sys.exit(main())
