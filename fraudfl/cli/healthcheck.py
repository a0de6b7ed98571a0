"""``fraudfl healthcheck [URL]``: exit 0 when a service's health endpoint answers 200.

For Docker's HEALTHCHECK and compose healthchecks, where the slim image has no curl. The URL
defaults to ``$FRAUDFL_HEALTHCHECK_URL``, else ``http://127.0.0.1:9100/healthz``. An HTTPS
endpoint on the loopback interface (the scoring service's own certificate names its public
host) is checked without verifying the certificate: the probe talks to its own container.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import urllib.error
import urllib.request
from urllib.parse import urlparse

DEFAULT_URL = "http://127.0.0.1:9100/healthz"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("healthcheck", help="probe a service's /healthz or /readyz",
                              description=__doc__)
    p.add_argument("url", nargs="?", default=None, help=f"default: {DEFAULT_URL}")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds (default: 5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("FRAUDFL_HEALTHCHECK_URL") or DEFAULT_URL
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        print(f"fraudfl healthcheck: {url}: only http and https URLs", file=sys.stderr)
        return 2
    context = None
    if parsed.scheme == "https" and parsed.hostname in LOOPBACK:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=args.timeout, context=context) as resp:  # noqa: S310
            ok = resp.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"fraudfl healthcheck: {url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    return 0 if ok else 1
