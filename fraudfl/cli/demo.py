"""``fraudfl demo``: a whole federation on this machine, one process per participant.

It starts the embedded Kafka broker (Tansu), writes a federation directory (``fraudfl init``:
keys, allowlist, configs, synthetic data for N banks), starts N ``fraudfl bank-node`` processes
and one ``fraudfl aggregator`` process, and shows a live table of the rounds: participants,
dropouts, the global model's AUPRC on the held-out set, the largest record-level epsilon any
bank has spent, and the round's duration. FedProx, DP-SGD (per-bank budget) and secure
aggregation are all on. With ``--personalization`` each bank also adapts every new global
model to its own data (fine-tuning, Ditto, or FedPer's personal output layer) and the summary
shows, per bank, the global and the personalised model's AUPRC on the bank's validation split.
When the aggregator has finished its rounds every process is stopped; Ctrl-C stops everything
at any time.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fraudfl.cli.init import FederationPlan, add_personalization_argument
from fraudfl.errors import FraudflError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
STOP_TIMEOUT_S = 10.0
# Banks personalise the final model after the aggregator is done: how long the summary waits.
PERSONALIZE_TIMEOUT_S = 120.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run a whole federation locally: broker, aggregator and bank nodes as processes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--banks", type=int, default=3, help="number of banks (default: 3)")
    p.add_argument("--rounds", type=int, default=5, help="training rounds (default: 5)")
    p.add_argument(
        "--transactions", type=int, default=12_000,
        help="synthetic transactions over all banks (default: 12000)",
    )
    p.add_argument(
        "--epsilon", type=float, default=8.0,
        help="each bank's record-level privacy budget (default: 8)",
    )
    p.add_argument(
        "--dir", type=Path, default=None,
        help="federation directory to create (default: a temporary one, removed at the end)",
    )
    add_personalization_argument(p)
    p.set_defaults(func=run)


def _die_with_parent() -> None:
    # The demo's children must not outlive it, even if it is killed with SIGKILL.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class LocalFederation:
    """The aggregator and bank nodes of a federation directory, as child processes."""

    root: Path
    aggregator_config: Path
    bank_configs: Mapping[str, Path]
    log_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The children run in root, so a path relative to the caller's directory (demo --dir
        # fed) would name nothing there.
        self.root = self.root.resolve()
        self.aggregator_config = self.aggregator_config.resolve()
        self.bank_configs = {bank: path.resolve() for bank, path in self.bank_configs.items()}
        self.log_dir = self.log_dir.resolve()

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "PYTHONWARNINGS": "ignore"}
        with (self.log_dir / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fraudfl", *argv],
                cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
            )
        self.procs[name] = proc
        return proc

    def start_bank(self, bank_id: str) -> subprocess.Popen[bytes]:
        return self._spawn(bank_id, ["bank-node", "--config", str(self.bank_configs[bank_id])])

    def start_aggregator(self) -> subprocess.Popen[bytes]:
        return self._spawn(
            "aggregator",
            ["aggregator", "--config", str(self.aggregator_config), "--exit-when-finished"],
        )

    def state_dir(self, name: str) -> Path:
        return self.root / "state" / name

    def bank_status(self, bank_id: str) -> dict[str, Any]:
        try:
            status = json.loads((self.state_dir(bank_id) / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return status if isinstance(status, dict) else {}

    def rounds(self) -> list[dict[str, Any]]:
        """The aggregator's round log (one record per finished round)."""
        path = self.state_dir("aggregator") / "rounds.jsonl"
        try:
            lines = path.read_text().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def wait_banks_ready(self, timeout_s: float) -> None:
        """Until every bank node has loaded its data and written its first status."""
        deadline = time.monotonic() + timeout_s
        pending = set(self.bank_configs)
        while pending:
            for bank in sorted(pending):
                proc = self.procs.get(bank)
                if proc is not None and proc.poll() is not None:
                    raise FraudflError(
                        f"bank node {bank} exited with status {proc.returncode}: "
                        f"{self.last_log_line(bank)} (log: {self.log_dir / (bank + '.log')})"
                    )
                if self.bank_status(bank):
                    pending.discard(bank)
            if time.monotonic() > deadline:
                raise FraudflError(f"bank nodes {sorted(pending)} not ready after {timeout_s} s")
            time.sleep(0.2)

    def last_log_line(self, name: str) -> str:
        """The last line a child wrote (its error), so that it is shown even when the log is in
        a temporary directory removed on exit."""
        try:
            lines = (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return next((line for line in reversed(lines) if line.strip()), "(empty log)")

    def wait_banks_quality(self, version: int, timeout_s: float) -> dict[str, dict[str, Any]]:
        """Each running bank's validation quality of model ``version`` (global and, if it
        serves one, personal), once written to its status; banks still without it after
        ``timeout_s`` (or no longer running) are left out."""
        deadline = time.monotonic() + timeout_s
        while True:
            quality: dict[str, dict[str, Any]] = {}
            for bank in self.bank_configs:
                q = self.bank_status(bank).get("model_quality")
                if isinstance(q, dict) and q.get("version") == version:
                    quality[bank] = q
            running = {b for b in self.bank_configs
                       if b in self.procs and self.procs[b].poll() is None}
            if running <= set(quality) or time.monotonic() > deadline:
                return quality
            time.sleep(0.2)

    def kill(self, name: str) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self, name: str) -> int | None:
        """SIGTERM, then SIGKILL after a grace period; returns the exit status."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) ignored SIGTERM; killing it", name, proc.pid)
                proc.kill()
                proc.wait()
        return proc.returncode

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def run(args: argparse.Namespace) -> int:
    if args.banks < 2:
        raise FraudflError(f"--banks must be at least 2, got {args.banks}")
    if args.rounds < 1:
        raise FraudflError(f"--rounds must be at least 1, got {args.rounds}")
    with _workdir(args.dir) as root:
        return _run_demo(args, root)


@contextlib.contextmanager
def _workdir(directory: Path | None) -> Iterator[Path]:
    if directory is not None:
        yield directory
        return
    with tempfile.TemporaryDirectory(prefix="fraudfl-demo-") as tmp:
        yield Path(tmp) / "federation"


def _run_demo(args: argparse.Namespace, root: Path) -> int:
    from rich.console import Console
    from rich.live import Live
    from rich.markup import escape

    from fraudfl.cli.aggregator import quiet_kafka
    from fraudfl.cli.init import write_federation
    from fraudfl.transport.broker import EmbeddedBroker

    quiet_kafka()
    # The table is the demo's output; the services' logs go to files under the federation.
    logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
    console = Console()
    started = time.monotonic()
    method: str = args.personalization
    quality: dict[str, dict[str, Any]] = {}
    with EmbeddedBroker() as broker:
        console.print(f"[bold]broker[/] Tansu on {broker.bootstrap_servers}")
        fed = write_federation(
            FederationPlan(
                directory=root, banks=args.banks, transactions=args.transactions,
                bootstrap_servers=broker.bootstrap_servers, rounds=args.rounds,
                aggregator_overrides={
                    "timeouts": {"advertise_keys": 120.0, "share_keys": 30.0,
                                 "masked_input": 30.0, "consistency_check": 30.0,
                                 "unmask": 30.0},
                },
                bank_overrides={"privacy": {"target_epsilon": args.epsilon}},
                personalization=method,
                messy=True,
            )
        )
        console.print(
            f"[bold]federation[/] {len(fed.bank_configs)} banks, {args.transactions} synthetic "
            f"transactions, {args.rounds} rounds of FedProx with DP-SGD (epsilon budget "
            f"{args.epsilon:g} per bank) and secure aggregation; files in {root}"
        )
        if method != "none":
            console.print(f"[bold]personalisation[/] {_METHOD_TEXT[method]}")
        local = LocalFederation(root, fed.aggregator_config, fed.bank_configs, root / "logs")
        table = _RoundTable(local)
        try:
            for bank in fed.bank_configs:
                local.start_bank(bank)
            console.print("[bold]bank nodes[/] starting ...")
            local.wait_banks_ready(timeout_s=300.0)
            aggregator = local.start_aggregator()
            console.print("[bold]aggregator[/] started; rounds:")
            with Live(table.render(), console=console, refresh_per_second=4) as live:
                while aggregator.poll() is None:
                    time.sleep(0.25)
                    live.update(table.render())
                live.update(table.render())
            console.print()
            code = aggregator.returncode
            final = _final_version(table.records)
            if method != "none" and final is not None:
                console.print(f"[bold]bank nodes[/] personalising model v{final} ...")
                quality = local.wait_banks_quality(final, PERSONALIZE_TIMEOUT_S)
        except KeyboardInterrupt:
            console.print("\n[yellow]interrupted: stopping every process[/]")
            local.stop_all()
            return 130
        finally:
            local.stop_all()
    rounds = [r for r in table.records if r.get("kind") == "train"]
    completed = [r for r in rounds if r.get("status") == "completed"]
    eps = max(table.max_epsilon.values(), default=0.0)
    last_auprc = completed[-1]["metrics"].get("auprc") if completed else None
    console.print(
        f"[bold]summary[/] {len(completed)}/{args.rounds} rounds completed in "
        f"{time.monotonic() - started:.0f} s; final global AUPRC "
        f"{'n/a' if last_auprc is None else f'{last_auprc:.3f}'}; largest epsilon spent "
        f"{eps:.2f} of {args.epsilon:g}; every process stopped"
    )
    if method != "none":
        console.print(_quality_table(method, list(fed.bank_configs), quality))
    if code != 0:
        # The log line may hold brackets ("['bank_00']") that rich would read as markup.
        reason = escape(local.last_log_line("aggregator"))
        console.print(f"[red]the aggregator exited with status {code}: {reason} "
                      f"(logs: {escape(str(root / 'logs'))})[/]")
        return 1
    return 0 if len(completed) == args.rounds else 1


_METHOD_TEXT = {
    "finetune": "each bank fine-tunes every new global model on its own data (DP-SGD, charged "
    "to its budget)",
    "ditto": "each bank trains a Ditto model regularised towards every new global model (DP-SGD, "
    "charged to its budget)",
    "fedper": "FedPer: the output layer stays at each bank, the aggregator averages the body "
    "only (the held-out AUPRC above scores the body with an untrained head)",
}


def _final_version(records: list[dict[str, Any]]) -> int | None:
    """The newest model version published (= its round), None if none was trained."""
    trained = [int(r["round"]) for r in records
               if r.get("kind") == "train" and r.get("status") == "completed"]
    return max(trained, default=None)


def _quality_table(method: str, banks: list[str], quality: Mapping[str, Mapping[str, Any]]) -> Any:
    """Per bank: the global and the personalised model's AUPRC on the bank's validation split."""
    from rich.table import Table

    table = Table(
        title=f"personalisation ({method}): AUPRC on each bank's validation split",
        title_justify="left",
    )
    for name in ("bank", "model", "global", "personal", "change"):
        table.add_column(name, justify="left" if name == "bank" else "right")
    for bank in banks:
        q = quality.get(bank)
        if q is None:
            table.add_row(bank, "-", "-", "-", "no result")
            continue
        g = (q.get("global") or {}).get("auprc")
        personal = q.get("personal")
        p = None if personal is None else personal.get("auprc")
        if personal is None:
            change = "global kept (budget)"
        elif g is None or p is None:
            change = "n/a (no fraud in validation)"
        else:
            change = f"{p - g:+.3f}"
        table.add_row(
            bank, f"v{q['version']}", "n/a" if g is None else f"{g:.3f}",
            "-" if personal is None else "n/a" if p is None else f"{p:.3f}", change,
        )
    return table


class _RoundTable:
    """The live per-round table, built from the aggregator's round log and bank statuses."""

    def __init__(self, local: LocalFederation) -> None:
        self.local = local
        self.records: list[dict[str, Any]] = []
        self.max_epsilon: dict[int, float] = {}

    def render(self) -> Any:
        from rich.table import Table

        self.records = self.local.rounds()
        statuses = [self.local.bank_status(b) for b in self.local.bank_configs]
        table = Table(
            title="rounds (banks = participants in the sum; AUPRC of the global model on the "
            "held-out set; max eps = largest record-level epsilon spent by any bank)",
            title_justify="left",
        )
        # Short headers: the table must fit an 80-column terminal.
        for name in ("round", "kind", "banks", "dropped", "declined", "AUPRC", "max eps",
                     "secs", "status"):
            table.add_column(name, justify="right" if name not in ("kind", "status") else "left")
        for rec in self.records:
            r = int(rec["round"])
            eps = [float(s.get("epsilon_by_round", {}).get(str(r), 0.0)) for s in statuses]
            if eps and r not in self.max_epsilon:
                self.max_epsilon[r] = max(eps)
            auprc = rec.get("metrics", {}).get("auprc")
            table.add_row(
                str(r), rec["kind"], str(len(rec.get("survivors", []))),
                str(len(rec.get("dropouts", []))), str(len(rec.get("declined", []))),
                "-" if auprc is None else f"{auprc:.3f}",
                "-" if rec["kind"] == "stats" else f"{self.max_epsilon.get(r, 0.0):.2f}",
                f"{rec['finished_at'] - rec['started_at']:.1f}",
                "ok" if rec["status"] == "completed" else f"{rec['status']}: {rec.get('reason')}",
            )
        return table
