"""``fraudfl preflight --config FILE``: check a service's setup before starting it.

One line per check, ``ok``, ``FAIL`` or ``skip``, and exit status 0 when nothing failed, 1
otherwise (2 for a config that does not load). The checks:

- config: the file (with ``FRAUDFL_*`` overrides) validates and names readable files;
- keys: the identity and encryption keys load and match the allowlist's entry;
- allowlist: the participant and the aggregator are enrolled, and enough banks for
  ``rounds.min_banks`` (aggregator);
- broker: a metadata request is answered;
- topics: the federation's topics this service uses exist with the expected partition counts
  (the aggregator creates missing ones, so for it a missing topic is only reported);
- read access: the topics this service reads can be fetched (a missing ACL fails here);
- clock skew: the newest message on the control topic is not from the future.

Write access cannot be checked without writing to the federation's topics, so it is not.
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fraudfl.config import AggregatorConfig, BankNodeConfig, ServiceConfig, load_config
from fraudfl.errors import FraudflError

PROBE_TIMEOUT_MS = 5_000
READ_CHECK_S = 3.0
# Envelope timestamps further ahead of this host's clock than this mean its clock is behind.
MAX_SKEW_S = 30.0


@dataclass
class Check:
    name: str
    status: str  # ok | FAIL | skip
    detail: str


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "preflight", help="check keys, allowlist, broker, topics, read access and clock skew",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, required=True,
                   help="an aggregator or bank-node TOML config")
    p.set_defaults(func=run)


def service_kind(path: Path) -> type[ServiceConfig]:
    """A bank node's config names its bank_id; the aggregator's does not."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise FraudflError(f"{path}: cannot read the config: {exc}") from exc
    return BankNodeConfig if "bank_id" in data else AggregatorConfig


def run(args: argparse.Namespace) -> int:
    config = load_config(service_kind(args.config), args.config)
    checks = [Check("config", "ok", f"{args.config} ({type(config).__name__})")]
    checks += run_checks(config)
    for c in checks:
        print(f"{c.status:<4} {c.name}: {c.detail}", file=sys.stdout)
    return 1 if any(c.status == "FAIL" for c in checks) else 0


def run_checks(config: ServiceConfig) -> list[Check]:
    from fraudfl.transport.kafka import KafkaTransport

    checks = [_keys(config)]
    checks.append(_guard("allowlist", lambda: _allowlist(config)))
    transport = KafkaTransport(
        config.kafka.transport_settings(request_timeout_ms=PROBE_TIMEOUT_MS)
    )
    try:
        broker = _guard("broker", lambda: _broker(transport))
        checks.append(broker)
        if broker.status != "ok":
            checks += [Check(n, "skip", "no broker") for n in ("topics", "read access",
                                                                 "clock skew")]
            return checks
        checks.append(_guard("topics", lambda: _topics(config, transport)))
        checks.append(_guard("read access", lambda: _read_access(config, transport)))
        checks.append(_guard("clock skew", lambda: _clock_skew(config, transport)))
    finally:
        transport.close()
    return checks


def _guard(name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except FraudflError as exc:
        return Check(name, "FAIL", str(exc))


def _participant(config: ServiceConfig) -> str:
    return config.bank_id if isinstance(config, BankNodeConfig) else (
        config.aggregator_id if isinstance(config, AggregatorConfig) else "?"
    )


def _keys(config: ServiceConfig) -> Check:
    from fraudfl.identity import Allowlist, Identity
    from fraudfl.transport.sealing import EncryptionKey

    pid = _participant(config)
    try:
        identity = Identity.load(pid, config.identity_key)
        encryption = EncryptionKey.load(pid, config.encryption_key)
        Allowlist.load(config.allowlist).check_own_keys(
            pid, identity.public_bytes, encryption.public_bytes, config.allowlist
        )
    except FraudflError as exc:
        return Check("keys", "FAIL", str(exc))
    return Check("keys", "ok", f"{pid}'s keys load and match the allowlist")


def _allowlist(config: ServiceConfig) -> Check:
    from fraudfl.identity import Allowlist

    allow = Allowlist.load(config.allowlist)
    aggregator = config.aggregator_id  # type: ignore[attr-defined]
    if aggregator not in allow:
        return Check("allowlist", "FAIL", f"the aggregator {aggregator!r} is not enrolled")
    banks = sorted(p for p in allow.participants if p != aggregator)
    if isinstance(config, AggregatorConfig) and len(banks) < config.rounds.min_banks:
        return Check("allowlist", "FAIL",
                     f"{len(banks)} banks enrolled, fewer than rounds.min_banks")
    if isinstance(config, BankNodeConfig) and config.bank_id not in banks:
        return Check("allowlist", "FAIL", f"{config.bank_id} is not enrolled")
    return Check("allowlist", "ok", f"aggregator and {len(banks)} banks enrolled")


def _broker(transport: object) -> Check:
    from fraudfl.transport.kafka import KafkaTransport

    assert isinstance(transport, KafkaTransport)
    started = time.monotonic()
    transport.list_topics()
    return Check("broker", "ok", f"{transport.settings.bootstrap_servers} answered in "
                                 f"{(time.monotonic() - started) * 1000:.0f} ms")


def _layout_topics(config: ServiceConfig) -> tuple[list[tuple[str, int]], list[str]]:
    """(topic, partitions) this service needs, and the topics it reads."""
    from fraudfl.identity import Allowlist
    from fraudfl.transport.topics import TopicLayout

    layout = TopicLayout(config.federation_id)
    if isinstance(config, BankNodeConfig):
        reads = [layout.control, layout.inbox(config.bank_id), layout.models]
        return [(t, 1) for t in reads], reads
    aggregator = config.aggregator_id  # type: ignore[attr-defined]
    banks = [p for p in Allowlist.load(config.allowlist).participants if p != aggregator]
    specs = [(s.name, s.partitions) for s in layout.specs(banks)]
    return specs, [layout.to_aggregator]


def _topics(config: ServiceConfig, transport: object) -> Check:
    from fraudfl.transport.kafka import KafkaTransport

    assert isinstance(transport, KafkaTransport)
    wanted, _ = _layout_topics(config)
    existing = transport.list_topics()
    missing = [t for t, _ in wanted if t not in existing]
    wrong = [
        f"{t} has {transport.partitions_for(t)} partitions, expected {n}"
        for t, n in wanted if t in existing and transport.partitions_for(t) != n
    ]
    if wrong:
        return Check("topics", "FAIL", "; ".join(wrong))
    if missing and isinstance(config, BankNodeConfig):
        return Check("topics", "FAIL", f"missing (the topic job creates them): "
                                       f"{', '.join(missing)}")
    if missing:
        return Check("topics", "ok", f"{len(wanted) - len(missing)} present; the aggregator "
                                     f"will create {', '.join(missing)}")
    return Check("topics", "ok", f"all {len(wanted)} present")


def _read_access(config: ServiceConfig, transport: object) -> Check:
    from kafka.errors import KafkaError

    from fraudfl.transport.errors import TransportError
    from fraudfl.transport.kafka import KafkaTransport

    assert isinstance(transport, KafkaTransport)
    _, reads = _layout_topics(config)
    present = [t for t in reads if t in transport.list_topics()]
    if not present:
        return Check("read access", "skip", "no topic to read yet")
    try:
        transport.assign_topics(present)
        deadline = time.monotonic() + READ_CHECK_S
        while time.monotonic() < deadline:
            transport.poll(0.5)
    except (KafkaError, TransportError) as exc:
        return Check("read access", "FAIL", f"cannot fetch {', '.join(present)}: {exc}")
    return Check("read access", "ok", f"fetched {', '.join(present)}")


def _clock_skew(config: ServiceConfig, transport: object) -> Check:
    from fraudfl.transport.base import TopicPartition
    from fraudfl.transport.chunking import parse_chunk
    from fraudfl.transport.envelope import decode
    from fraudfl.transport.errors import RejectedMessage
    from fraudfl.transport.kafka import KafkaTransport
    from fraudfl.transport.topics import TopicLayout

    assert isinstance(transport, KafkaTransport)
    control = TopicLayout(config.federation_id).control
    if control not in transport.list_topics():
        return Check("clock skew", "skip", "no control topic yet")
    transport.assign([TopicPartition(control, 0)])
    newest = None
    deadline = time.monotonic() + READ_CHECK_S
    while time.monotonic() < deadline:
        records = transport.poll(0.5)
        if not records and newest is not None:
            break
        for record in records:
            try:
                chunk = parse_chunk(record.value)
                if chunk.count == 1:
                    stamp = decode(bytes(chunk.data)).timestamp_ms
                    newest = stamp if newest is None else max(newest, stamp)
            except RejectedMessage:
                continue
    if newest is None:
        return Check("clock skew", "skip", "no message on the control topic yet")
    ahead = newest / 1000 - time.time()
    if ahead > MAX_SKEW_S:
        return Check("clock skew", "FAIL", f"the aggregator's newest message is {ahead:.0f} s "
                                           f"in this host's future: fix NTP")
    return Check("clock skew", "ok", f"newest control message {-ahead:.0f} s old")
