"""Runs of a federation: which history a bank's state belongs to.

A *run* is one sequence of rounds, from the statistics round on, driven by one aggregator
state. The aggregator names it (``fraudfl aggregator --new-run RUN_ID``; the first run gets a
generated id) and publishes a signed :class:`RunMarker` on the control topic before the run's
first round; every bank pins the run it takes part in (``state_dir/run.json``).

A bank that took part in one run and then sees the marker of a newer one refuses it, loudly:
its round state (and the model it serves) belongs to the old history, and silently following
the new run would mix the two. The operator decides (``fraudfl bank-node --join-run RUN_ID``
keeps the privacy ledger and drops the round state; docs/operations.md). A marker older than
the pinned run (read while catching up through the topic's history) only means "not yet", and
a message of the aggregator signed before the pinned run's ``started_ms`` belongs to an earlier
run, whatever topic it is read from.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fraudfl.checkpoint import atomic_write_json
from fraudfl.errors import FraudflError
from fraudfl.vocabulary import ID_PATTERN

RUN = "run"
RUN_FILE = "run.json"
MAX_MARKER_BYTES = 1024


class RunMarker(BaseModel):
    """Published by the aggregator on the control topic when a run starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["run"] = "run"
    run_id: str = Field(pattern=ID_PATTERN)
    started_ms: int = Field(ge=0)

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, payload: bytes) -> RunMarker:
        if len(payload) > MAX_MARKER_BYTES:
            raise ValueError(f"run marker of {len(payload)} bytes")
        try:
            return cls.model_validate_json(payload)
        except ValidationError as exc:
            raise ValueError(f"malformed run marker: {exc.errors()[0]['msg']}") from exc


def new_marker(run_id: str | None = None) -> RunMarker:
    """A marker for a run starting now; without an id, one is generated."""
    started = time.time_ns() // 1_000_000
    if run_id is None:
        run_id = f"run-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"
    return RunMarker(run_id=run_id, started_ms=started)


class RunRecord(BaseModel):
    """What a service keeps about its run in ``state_dir/run.json``."""

    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(pattern=ID_PATTERN)
    # None: joined by the operator, the run's marker not read yet.
    started_ms: int | None = Field(default=None, ge=0)
    # A bank: whether it has sent anything in this run (then a newer run needs the operator).
    participated: bool = False

    @classmethod
    def load(cls, state_dir: Path) -> RunRecord | None:
        path = state_dir / RUN_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise FraudflError(f"{path}: cannot read: {exc.strerror}") from exc
        try:
            return cls.model_validate(json.loads(text))
        except (ValueError, ValidationError) as exc:
            raise FraudflError(f"{path}: not a valid run record ({exc})") from exc

    def save(self, state_dir: Path) -> None:
        atomic_write_json(state_dir / RUN_FILE, self.model_dump())

    @classmethod
    def of(cls, marker: RunMarker) -> RunRecord:
        return cls(run_id=marker.run_id, started_ms=marker.started_ms)


def join_run(state_dir: Path, run_id: str) -> Path | None:
    """Make a bank's state follow run ``run_id``: its round state (checkpoint) is archived as
    ``bank.ckpt.<old run>``; the privacy ledger, noise calibration and served model stay.
    Returns the archive's path (None when there was no checkpoint)."""
    from fraudfl.identity import check_id

    check_id("run id", run_id)
    old = RunRecord.load(state_dir)
    checkpoint = state_dir / "bank.ckpt"
    archived = None
    if checkpoint.exists():
        archived = state_dir / f"bank.ckpt.{old.run_id if old else 'before-runs'}"
        checkpoint.rename(archived)
    RunRecord(run_id=run_id).save(state_dir)
    return archived
