"""``fraudfl policy``: the consortium's secure-aggregation policy file, its pin and signatures.

    fraudfl policy check --policy policy.toml --allowlist allowlist.json
    fraudfl policy sign --policy policy.toml --id bank-a --key keys/bank-a.key

``check`` validates the file and prints the SHA-256 every bank pins as ``policy_sha256`` in its
config, with the banks whose signatures are valid. ``sign`` adds the bank's Ed25519 signature of
the exact file bytes to ``policy.toml.sig.json``. The rules are described in
``fraudfl.rounds.policy`` and docs/threat-model.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fraudfl.errors import FraudflError
from fraudfl.identity import Allowlist, Identity, check_id
from fraudfl.rounds.policy import (
    file_sha256,
    parse_policy,
    read_signatures,
    sign_policy,
    signatures_path,
    valid_signers,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "policy", help="check, pin and sign the consortium's secure-aggregation policy",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    chk = sub.add_parser("check", help="validate a policy file and print its pin",
                         description="Validate the policy and print its sha256 and signers.")
    chk.add_argument("--policy", required=True, type=Path, help="the policy TOML file")
    chk.add_argument("--allowlist", required=True, type=Path, help="allowlist JSON file")
    chk.set_defaults(func=run_check)
    sgn = sub.add_parser("sign", help="add a bank's signature of the policy file",
                         description="Sign the exact bytes of the policy file with a bank's "
                         "identity key; the signature goes into <policy>.sig.json.")
    sgn.add_argument("--policy", required=True, type=Path, help="the policy TOML file")
    sgn.add_argument("--id", required=True, dest="participant_id", help="the signing bank")
    sgn.add_argument("--key", required=True, type=Path, help="the bank's <id>.key file")
    sgn.set_defaults(func=run_sign)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FraudflError(f"{path}: cannot read policy: {exc.strerror}") from exc


def run_check(args: argparse.Namespace) -> int:
    raw = _read(args.policy)
    policy = parse_policy(raw, args.policy)
    signers = valid_signers(raw, read_signatures(signatures_path(args.policy)),
                            Allowlist.load(args.allowlist))
    print(f"policy_sha256 = \"{file_sha256(args.policy)}\"")
    print(f"signed by {len(signers)} banks ({', '.join(signers) or 'none'}); "
          f"{policy.signatures_required} required")
    return 0 if len(signers) >= policy.signatures_required else 1


def run_sign(args: argparse.Namespace) -> int:
    check_id("--id", args.participant_id)
    raw = _read(args.policy)
    parse_policy(raw, args.policy)  # never sign a file the banks would refuse to load
    identity = Identity.load(args.participant_id, args.key)
    sig_path = signatures_path(args.policy)
    signatures = read_signatures(sig_path)
    signatures[args.participant_id] = sign_policy(raw, identity).hex()
    sig_path.write_text(json.dumps({"signatures": dict(sorted(signatures.items()))}, indent=2)
                        + "\n")
    print(f"{sig_path}: signed by {args.participant_id} ({len(signatures)} signatures)")
    return 0
