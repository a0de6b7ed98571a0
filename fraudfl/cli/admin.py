"""``fraudfl admin status|extend N|stop --config FILE``: talk to a running aggregator.

Run it where the aggregator runs (``kubectl exec``, ``docker compose exec``): it reads the
aggregator's config for ``admin_port`` and ``state_dir``, and the token the aggregator wrote to
``state_dir/admin.token``. ``status`` prints JSON; ``extend N`` plans N more training rounds
(a finished federation starts the next one at once); ``stop`` stops the service cleanly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fraudfl.config import AggregatorConfig, load_config
from fraudfl.errors import FraudflError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "admin", help="status, extend or stop a running aggregator (local admin endpoint)",
        description=__doc__,
    )
    p.add_argument("action", choices=["status", "extend", "stop"],
                   help="status: print JSON; extend N: plan N more rounds; stop: stop cleanly")
    p.add_argument("rounds", nargs="?", type=int, default=None,
                   help="with extend: how many more training rounds")
    p.add_argument("--config", type=Path, required=True, help="the aggregator's TOML config")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fraudfl.admin import TOKEN_FILE, call

    config = load_config(AggregatorConfig, args.config)
    if config.admin_port is None:
        raise FraudflError(f"{args.config}: admin_port is not set; the endpoint is disabled")
    if (args.action == "extend") != (args.rounds is not None):
        raise FraudflError("extend takes the number of rounds (fraudfl admin extend N); "
                           "status and stop take none")
    token_path = config.state_dir / TOKEN_FILE
    try:
        token = token_path.read_text().strip()
    except OSError as exc:
        raise FraudflError(
            f"{token_path}: cannot read the admin token ({exc.strerror}); is the aggregator "
            f"running, and is this its user?"
        ) from exc
    body = None if args.rounds is None else {"rounds": args.rounds}
    answer = call(config.admin_port, token, args.action, body)
    json.dump(answer, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0
