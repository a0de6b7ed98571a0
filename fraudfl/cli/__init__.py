"""The ``fraudfl`` command.

Every module in this package that defines ``register(subparsers)`` contributes one subcommand;
``register`` adds a parser and sets ``func`` to a callable taking the parsed args and returning
an exit code. Keeping each subcommand in its own module lets features land independently.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from fraudfl.errors import FraudflError

log = logging.getLogger("fraudfl")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fraudfl",
        description="Privacy-preserving federated fraud detection.",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging verbosity (default: INFO)",
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
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        # Some libraries (Opacus) call basicConfig on import, which would make this a no-op.
        force=True,
    )
    try:
        code: int = args.func(args)
    except FraudflError as exc:
        print(f"fraudfl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        log.warning("interrupted")
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
