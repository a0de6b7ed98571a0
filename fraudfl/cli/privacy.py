"""``fraudfl privacy``: a bank's spent and remaining privacy budget from its saved accountant.

    fraudfl privacy --state state/bank-a/privacy.json
    fraudfl privacy --state-dir sim-privacy/            every accountant state file in the dir
    fraudfl privacy --state-dir sim-privacy/ --json     machine-readable

Epsilon is recomputed from the saved composition history (noise multiplier, sample rate,
steps) with the accountant the state names (RDP or PRV), at the budget's delta.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from rich.table import Table

from fraudfl.cli.console import output_console
from fraudfl.errors import FraudflError
from fraudfl.privacy.accountant import STATE_FORMAT, PrivacyAccountant


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "privacy", help="show spent/remaining privacy budgets from saved accountant state",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--state", type=Path, action="append",
                     help="an accountant state file (repeatable)")
    src.add_argument("--state-dir", type=Path,
                     help="a directory: every accountant state *.json in it")
    p.add_argument("--delta", type=float,
                   help="delta for states saved without a budget (default: the budget's delta)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _is_accountant_state(path: Path) -> bool:
    """Whether ``path`` holds accountant state; other JSON (a bank's status) is skipped.

    A file that is not readable JSON at all may be a damaged accountant state: skipping it would
    leave that bank's spending out of the report without a word, so it is an error.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FraudflError(
            f"{path}: not readable JSON ({exc}); cannot tell whether it is accountant state"
        ) from exc
    return isinstance(data, dict) and data.get("format") == STATE_FORMAT


def _state_files(args: argparse.Namespace) -> list[Path]:
    if args.state_dir is None:
        return list(args.state)
    directory: Path = args.state_dir
    if not directory.is_dir():
        raise FraudflError(f"--state-dir {directory}: not a directory")
    files = [p for p in sorted(directory.glob("*.json")) if _is_accountant_state(p)]
    if not files:
        raise FraudflError(f"--state-dir {directory}: no accountant state files in it")
    return files


def summarize(path: Path, delta: float | None) -> dict[str, Any]:
    acc = PrivacyAccountant.load(path)
    if delta is None:
        if acc.budget is None:
            raise FraudflError(f"{path}: saved without a budget; pass --delta")
        delta = acc.budget.delta
    spent = acc.epsilon(delta)
    budget = acc.budget.epsilon if acc.budget is not None else math.inf
    last = acc.history[-1] if acc.history else None
    return {
        "bank": acc.label,
        "file": str(path),
        "accountant": acc.mechanism,
        "delta": delta,
        "steps": acc.total_steps,
        "epsilon_spent": spent,
        # JSON has no infinity: an unlimited budget is null.
        "epsilon_budget": budget if math.isfinite(budget) else None,
        "epsilon_remaining": max(0.0, budget - spent) if math.isfinite(budget) else None,
        "noise_multiplier": None if last is None else last.noise_multiplier,
        "sample_rate": None if last is None else last.sample_rate,
    }


def run(args: argparse.Namespace) -> int:
    if args.delta is not None and not 0 < args.delta < 1:
        raise FraudflError(f"--delta must be in (0, 1), got {args.delta}")
    rows = [summarize(path, args.delta) for path in _state_files(args)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="record-level privacy (per bank)")
    for col in ("bank", "acct", "delta", "steps", "ε spent", "ε budget", "ε left", "noise",
                "q"):
        table.add_column(col, justify="left" if col in ("bank", "acct") else "right")

    def num(value: float | None, fmt: str, missing: str = "-") -> str:
        return missing if value is None else format(value, fmt)

    for r in rows:
        table.add_row(
            r["bank"], r["accountant"], f"{r['delta']:.3g}", str(r["steps"]),
            f"{r['epsilon_spent']:.4f}", num(r["epsilon_budget"], "g", "unlimited"),
            num(r["epsilon_remaining"], ".4f"), num(r["noise_multiplier"], ".4f"),
            num(r["sample_rate"], ".4g"),
        )
    output_console().print(table)
    return 0
