"""``fraudfl keys``: create identity keys and manage the enrolment allowlist.

    fraudfl keys generate --id bank-a --out keys/          writes bank-a.key (0600), bank-a.pub
    fraudfl keys enroll --allowlist allowlist.json --id bank-a --role bank --public-key bank-a.pub
    fraudfl keys list --allowlist allowlist.json
    fraudfl keys migrate --allowlist allowlist.json --aggregator aggregator

The aggregator accepts protocol messages only from participants in its allowlist, signed by the
enrolled Ed25519 key; banks use the same file to check each other's advertised round keys. Every
entry has a role (aggregator, bank, auditor): banks take part in rounds only with other banks.
An allowlist written before roles existed is migrated explicitly, naming the aggregator.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from rich.table import Table

from fraudfl.cli.console import output_console
from fraudfl.errors import FraudflError
from fraudfl.identity import (
    PUBLIC_KEY_BYTES,
    ROLES,
    Allowlist,
    Identity,
    KeyConflict,
    check_id,
)
from fraudfl.transport.sealing import EncryptionKey


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "keys", help="generate identity keys and enrol participants", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    gen = sub.add_parser(
        "generate", help="write a new Ed25519 identity key pair",
        description="Write <id>.key (PKCS#8 PEM, mode 0600) and <id>.pub (hex) into --out. "
        "Never overwrites an existing key.",
    )
    gen.add_argument("--id", required=True, dest="participant_id", help="participant id")
    gen.add_argument("--out", required=True, type=Path, help="directory for the key files")
    gen.add_argument(
        "--encryption-key", action="store_true",
        help="also write the transport X25519 key pair <id>.enc.key / <id>.enc.pub",
    )
    gen.set_defaults(func=run_generate)

    enr = sub.add_parser(
        "enroll", help="add a participant's public key to an allowlist",
        description="Add (or, with --replace, rotate) a participant's Ed25519 public key, and "
        "optionally its X25519 encryption key, in the JSON allowlist, creating the file if "
        "needed.",
    )
    enr.add_argument("--allowlist", required=True, type=Path, help="allowlist JSON file")
    enr.add_argument("--id", required=True, dest="participant_id", help="participant id")
    enr.add_argument(
        "--role", required=True, choices=ROLES,
        help="what the participant is; only banks can be participants of a round",
    )
    enr.add_argument("--public-key", required=True, type=Path, help="the <id>.pub file (hex)")
    enr.add_argument(
        "--encryption-public-key", type=Path, help="the <id>.enc.pub file (hex), optional"
    )
    enr.add_argument(
        "--replace", action="store_true", help="replace an existing, different key (rotation)"
    )
    enr.set_defaults(func=run_enroll)

    lst = sub.add_parser(
        "list", help="show the enrolled participants",
        description="Print each enrolled participant with a fingerprint of its key.",
    )
    lst.add_argument("--allowlist", required=True, type=Path, help="allowlist JSON file")
    lst.set_defaults(func=run_list)

    mig = sub.add_parser(
        "migrate", help="give an allowlist written before roles existed its roles",
        description="Mark --aggregator as the aggregator and every other participant as a bank, "
        "in place. Refused when the file already has roles.",
    )
    mig.add_argument("--allowlist", required=True, type=Path, help="allowlist JSON file")
    mig.add_argument("--aggregator", required=True, help="the aggregator's participant id")
    mig.set_defaults(func=run_migrate)


def _read_public_key(path: Path) -> bytes:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise FraudflError(f"{path}: cannot read public key: {exc.strerror}") from exc
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise FraudflError(f"{path}: expected a hex-encoded public key") from exc
    if len(raw) != PUBLIC_KEY_BYTES:
        raise FraudflError(f"{path}: expected {PUBLIC_KEY_BYTES} bytes of key, got {len(raw)}")
    return raw


def _load_allowlist(path: Path, *, must_exist: bool) -> Allowlist:
    if not path.exists():
        if must_exist:
            raise FraudflError(f"{path}: allowlist does not exist")
        return Allowlist()
    return Allowlist.load(path)


def fingerprint(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:16]


def run_generate(args: argparse.Namespace) -> int:
    check_id("--id", args.participant_id)
    identity = Identity.generate(args.participant_id)
    key_path, pub_path = identity.save(args.out)
    print(f"wrote {key_path} (0600) and {pub_path}")
    print(f"fingerprint {fingerprint(identity.public_bytes)}")
    if args.encryption_key:
        enc_key, enc_pub = EncryptionKey.generate(args.participant_id).save(args.out)
        print(f"wrote {enc_key} (0600) and {enc_pub}")
    return 0


def run_enroll(args: argparse.Namespace) -> int:
    check_id("--id", args.participant_id)
    public = _read_public_key(args.public_key)
    allow = _load_allowlist(args.allowlist, must_exist=False)
    if args.replace:
        allow.participants.pop(args.participant_id, None)
        allow.roles.pop(args.participant_id, None)
        if args.encryption_public_key is not None:
            allow.encryption_keys.pop(args.participant_id, None)
    try:
        allow.enroll(args.participant_id, public, args.role)
    except ValueError as exc:  # not a valid Ed25519 point
        raise FraudflError(f"{args.public_key}: not an Ed25519 public key ({exc})") from exc
    except FraudflError as exc:
        hint = "; pass --replace to rotate it" if isinstance(exc, KeyConflict) else ""
        raise FraudflError(f"{args.allowlist}: {exc}{hint}") from exc
    if args.encryption_public_key is not None:
        try:
            allow.enroll_encryption_key(
                args.participant_id, _read_public_key(args.encryption_public_key)
            )
        except FraudflError as exc:
            hint = "; pass --replace to rotate it" if isinstance(exc, KeyConflict) else ""
            raise FraudflError(f"{args.encryption_public_key}: {exc}{hint}") from exc
    allow.save(args.allowlist)
    print(f"enrolled {args.participant_id} as {args.role} ({fingerprint(public)}) in "
          f"{args.allowlist}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    allow = _load_allowlist(args.allowlist, must_exist=True)
    table = Table("participant", "role", "identity key fingerprint", "encryption key")
    for pid in sorted(allow.participants):
        enc = allow.encryption_key_of(pid)
        table.add_row(pid, allow.role_of(pid) or "-", fingerprint(allow.participants[pid]),
                      fingerprint(enc) if enc else "-")
    output_console().print(table)
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    check_id("--aggregator", args.aggregator)
    allow = Allowlist.load(args.allowlist, migrate_aggregator=args.aggregator)
    allow.save(args.allowlist)
    banks = allow.members("bank")
    print(f"{args.allowlist}: {args.aggregator} is the aggregator; {len(banks)} banks: "
          f"{', '.join(banks)}")
    return 0
