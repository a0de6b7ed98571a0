"""The consortium policy file: parsed strictly, pinned by hash, signed by banks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fraudfl.cli import main
from fraudfl.errors import FraudflError
from fraudfl.identity import Allowlist, Identity
from fraudfl.monitoring.metrics import DECLINE_REASONS
from fraudfl.rounds.policy import (
    REFUSALS,
    BankHistory,
    ConsortiumPolicy,
    TaskPolicy,
    check_announcement,
    file_sha256,
    load_pinned_policy,
)

POLICY = """\
min_other_banks = 2
min_neighbours = 0
signatures_required = 2

[tasks.train]
local_epochs = [1, 3]
lr = [0.001, 0.5]
"""


@pytest.fixture
def consortium(tmp_path: Path) -> tuple[Path, Path, dict[str, Identity]]:
    ids = {p: Identity.generate(p) for p in ("aggregator", "bank-a", "bank-b", "bank-c")}
    allow = Allowlist()
    for pid, ident in ids.items():
        ident.save(tmp_path / "keys")
        allow.enroll(pid, ident.public_bytes, "aggregator" if pid == "aggregator" else "bank")
    allow.save(tmp_path / "allowlist.json")
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    return policy, tmp_path / "allowlist.json", ids


def sign(policy: Path, pid: str) -> int:
    return main(["policy", "sign", "--policy", str(policy), "--id", pid,
                 "--key", str(policy.parent / "keys" / f"{pid}.key")])


def test_pinned_and_signed_policy_loads(
    consortium: tuple[Path, Path, dict[str, Identity]], capsys: pytest.CaptureFixture[str]
) -> None:
    policy, allowlist, _ = consortium
    allow = Allowlist.load(allowlist)
    pin = file_sha256(policy)
    with pytest.raises(FraudflError, match="0 valid bank signatures"):
        load_pinned_policy(policy, pin, allow)
    # The aggregator's signature does not count: the consortium's banks agree the policy.
    assert sign(policy, "aggregator") == 0 and sign(policy, "bank-a") == 0
    with pytest.raises(FraudflError, match="1 valid bank signatures"):
        load_pinned_policy(policy, pin, allow)
    assert sign(policy, "bank-b") == 0
    loaded = load_pinned_policy(policy, pin, allow)
    assert loaded.min_other_banks == 2 and loaded.tasks.train is not None
    assert loaded.tasks.train.local_epochs == (1, 3)
    capsys.readouterr()
    assert main(["policy", "check", "--policy", str(policy), "--allowlist", str(allowlist)]) == 0
    out = capsys.readouterr().out
    assert pin in out and "bank-a, bank-b" in out


def test_a_changed_file_is_refused_even_if_re_signed(
    consortium: tuple[Path, Path, dict[str, Identity]],
) -> None:
    policy, allowlist, _ = consortium
    pin = file_sha256(policy)
    # The aggregator (or anyone) loosens the file; the banks' pin no longer matches.
    policy.write_text(POLICY.replace("min_other_banks = 2", "min_other_banks = 1"))
    for pid in ("bank-a", "bank-b"):
        assert sign(policy, pid) == 0
    with pytest.raises(FraudflError, match="differs from the pinned policy_sha256"):
        load_pinned_policy(policy, pin, Allowlist.load(allowlist))


@pytest.mark.parametrize("text, where", [
    ("min_other_banks = 0\n", "min_other_banks"),
    ("min_threshold_fraction = 0.4\n", "min_threshold_fraction"),
    ("[tasks.train]\nlr = [1.0, 0.1]\n", "tasks.train"),
    ("[tasks.train]\nbatch_size = [0, 10]\n", "tasks.train.batch_size"),
    ("surprise = 1\n", "surprise"),
])
def test_bad_policy_files_name_the_field(tmp_path: Path, text: str, where: str) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text(text)
    with pytest.raises(FraudflError, match=f"{policy}: {where}"):
        load_pinned_policy(policy, file_sha256(policy), Allowlist())


def test_every_refusal_is_a_counted_decline_reason() -> None:
    assert set(REFUSALS) <= set(DECLINE_REASONS)


def _allowlist() -> Allowlist:
    allow = Allowlist()
    for pid in ("agg", "b1", "b2", "b3"):
        allow.enroll(pid, Identity.generate(pid).public_bytes,
                     "aggregator" if pid == "agg" else "bank")
    return allow


def _announcement(kind: str = "train", **fields: object) -> tuple[Any, Any]:
    from fraudfl.rounds.messages import Announcement, TrainInstructions
    from fraudfl.secagg.graph import graph_seed
    from fraudfl.secagg.params import RoundParams

    banks = ("b1", "b2", "b3")
    train = TrainInstructions(local_epochs=1, batch_size=64, lr=0.1, mu=0.0)
    ann = Announcement(round=4, kind=kind, participants=banks,  # type: ignore[arg-type]
                       train=train if kind == "train" else None, **fields)  # type: ignore[arg-type]
    setup = RoundParams(banks, 2, 0, 100, kind == "train", 32, 1.0, 1.0,
                        graph_seed("f", 4, banks))
    return ann, setup


@pytest.mark.parametrize("policy, history, kind, reason", [
    (ConsortiumPolicy(max_rounds_per_day=5), BankHistory(3, True, 5), "train", "too_many_rounds"),
    (ConsortiumPolicy(tasks=TaskPolicy(stats=None)), BankHistory(3, False, 0), "stats",
     "task_not_allowed"),
    (ConsortiumPolicy(tasks=TaskPolicy(train=None)), BankHistory(3, True, 0), "train",
     "task_not_allowed"),
    (ConsortiumPolicy(min_other_banks=3), BankHistory(3, True, 0), "train", "too_few_banks"),
    (ConsortiumPolicy(), BankHistory(2, True, 0), "train", "round_not_next"),
    (ConsortiumPolicy(), BankHistory(3, True, 4), "train", None),
])
def test_check_announcement_is_a_pure_rule_table(
    policy: ConsortiumPolicy, history: BankHistory, kind: str, reason: str | None
) -> None:
    ann, setup = _announcement(kind)
    refusal = check_announcement(policy, ann, setup, _allowlist(), "agg", history)
    assert (refusal.reason.value if refusal else None) == reason


def test_a_task_kind_is_refused_with_allowed_false(tmp_path: Path) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text("[tasks.stats]\nallowed = false\n")
    loaded = load_pinned_policy(policy, file_sha256(policy), Allowlist())
    ann, setup = _announcement("stats")
    history = BankHistory(3, False, 0)
    refusal = check_announcement(loaded, ann, setup, _allowlist(), "agg", history)
    assert refusal is not None and refusal.reason.value == "task_not_allowed"
    assert loaded.tasks.train is not None and loaded.tasks.train.allowed
    default = check_announcement(ConsortiumPolicy(), ann, setup, _allowlist(), "agg", history)
    assert default is None
