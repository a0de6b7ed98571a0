"""The consortium policy file: parsed strictly, pinned by hash, signed by banks."""

from __future__ import annotations

from pathlib import Path

import pytest

from fraudfl.cli import main
from fraudfl.errors import FraudflError
from fraudfl.identity import Allowlist, Identity
from fraudfl.monitoring.metrics import DECLINE_REASONS
from fraudfl.rounds.policy import REFUSALS, file_sha256, load_pinned_policy

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
