"""``fraudfl keys generate / enroll / list``."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from fraudfl.cli import main
from fraudfl.errors import FraudflError
from fraudfl.identity import Allowlist, Identity


def test_generate_writes_private_key_0600_and_public_key(tmp_path: Path) -> None:
    assert main(["keys", "generate", "--id", "bank-a", "--out", str(tmp_path / "k")]) == 0
    key, pub = tmp_path / "k" / "bank-a.key", tmp_path / "k" / "bank-a.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ident = Identity.load("bank-a", key)
    assert pub.read_text().strip() == ident.public_bytes.hex()
    # never overwrites
    assert main(["keys", "generate", "--id", "bank-a", "--out", str(tmp_path / "k")]) == 2


def test_generate_with_encryption_key(tmp_path: Path) -> None:
    args = ["keys", "generate", "--id", "bank-b", "--out", str(tmp_path), "--encryption-key"]
    assert main(args) == 0
    assert stat.S_IMODE((tmp_path / "bank-b.enc.key").stat().st_mode) == 0o600
    assert (tmp_path / "bank-b.enc.pub").exists()


def test_enroll_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    allow = tmp_path / "allowlist.json"
    for bank in ("bank-a", "bank-b"):
        assert main(["keys", "generate", "--id", bank, "--out", str(tmp_path)]) == 0
        assert main([
            "keys", "enroll", "--allowlist", str(allow), "--id", bank, "--role", "bank",
            "--public-key", str(tmp_path / f"{bank}.pub"),
        ]) == 0
    loaded = Allowlist.load(allow)
    assert loaded.key_of("bank-a") == Identity.load("bank-a", tmp_path / "bank-a.key").public_bytes
    assert set(json.loads(allow.read_text())["participants"]) == {"bank-a", "bank-b"}
    capsys.readouterr()
    assert main(["keys", "list", "--allowlist", str(allow)]) == 0
    out = capsys.readouterr().out
    assert "bank-a" in out and "bank-b" in out


def test_enroll_refuses_a_different_key_unless_replacing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    allow = tmp_path / "allowlist.json"
    main(["keys", "generate", "--id", "bank-a", "--out", str(tmp_path / "old")])
    main(["keys", "generate", "--id", "bank-a", "--out", str(tmp_path / "new")])
    base = ["keys", "enroll", "--allowlist", str(allow), "--id", "bank-a", "--role", "bank",
            "--public-key"]
    assert main([*base, str(tmp_path / "old" / "bank-a.pub")]) == 0
    capsys.readouterr()
    assert main([*base, str(tmp_path / "new" / "bank-a.pub")]) == 2
    assert "--replace" in capsys.readouterr().err
    assert main([*base, str(tmp_path / "new" / "bank-a.pub"), "--replace"]) == 0
    new = (tmp_path / "new" / "bank-a.pub").read_text().strip()
    assert Allowlist.load(allow).key_of("bank-a") == bytes.fromhex(new)


@pytest.mark.parametrize(
    "content, message", [("zz", "hex"), ("abcd", "32 bytes"), (None, "cannot read")]
)
def test_enroll_reports_bad_public_key_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    pub = tmp_path / "x.pub"
    if content is not None:
        pub.write_text(content)
    code = main([
        "keys", "enroll", "--allowlist", str(tmp_path / "a.json"), "--id", "bank-a",
        "--role", "bank", "--public-key", str(pub),
    ])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and str(pub) in err


def test_invalid_id_and_missing_allowlist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "generate", "--id", "../evil", "--out", str(tmp_path)]) == 2
    assert "--id" in capsys.readouterr().err
    # The services' config and topic names refuse '.', so the keys CLI must too.
    assert main(["keys", "generate", "--id", "bank.a", "--out", str(tmp_path)]) == 2
    assert "--id 'bank.a'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    assert main(["keys", "list", "--allowlist", str(tmp_path / "none.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("action", ["generate", "enroll", "list", "migrate"])
def test_help(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["keys", action, "--help"])
    assert info.value.code == 0
    assert "--" in capsys.readouterr().out


def test_one_key_cannot_serve_two_participants_or_two_roles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Both .pub files are 32 bytes of hex; a swapped file or a copied key used to be accepted.
    for pid in ("bank-a", "bank-b"):
        generate = ["keys", "generate", "--id", pid, "--out", str(tmp_path), "--encryption-key"]
        assert main(generate) == 0
    allow = str(tmp_path / "allowlist.json")
    enroll = ["keys", "enroll", "--allowlist", allow, "--role", "bank"]
    assert main([*enroll, "--id", "bank-a", "--public-key", str(tmp_path / "bank-a.pub")]) == 0
    capsys.readouterr()
    assert main([*enroll, "--id", "bank-b", "--public-key", str(tmp_path / "bank-a.pub")]) == 2
    err = capsys.readouterr().err
    assert "already enrolled as the identity key of 'bank-a'" in err and "--replace" not in err
    assert main([*enroll, "--id", "bank-b", "--public-key", str(tmp_path / "bank-b.pub"),
                 "--encryption-public-key", str(tmp_path / "bank-b.pub")]) == 2
    assert "already enrolled as the identity key of 'bank-b'" in capsys.readouterr().err
    assert set(Allowlist.load(tmp_path / "allowlist.json").participants) == {"bank-a"}


def test_roles_are_written_listed_and_fixed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    allow = tmp_path / "allowlist.json"
    for pid, role in (("aggregator", "aggregator"), ("bank-a", "bank")):
        assert main(["keys", "generate", "--id", pid, "--out", str(tmp_path)]) == 0
        assert main(["keys", "enroll", "--allowlist", str(allow), "--id", pid, "--role", role,
                     "--public-key", str(tmp_path / f"{pid}.pub")]) == 0
    assert json.loads(allow.read_text())["roles"] == {"aggregator": "aggregator", "bank-a": "bank"}
    loaded = Allowlist.load(allow)
    assert loaded.members("bank") == ("bank-a",) and loaded.role_of("aggregator") == "aggregator"
    capsys.readouterr()
    # The same key under another role is a conflict, not a silent promotion to bank.
    assert main(["keys", "enroll", "--allowlist", str(allow), "--id", "aggregator", "--role",
                 "bank", "--public-key", str(tmp_path / "aggregator.pub")]) == 2
    assert "already enrolled as aggregator" in capsys.readouterr().err
    assert main(["keys", "list", "--allowlist", str(allow)]) == 0
    assert "aggregator" in capsys.readouterr().out


def test_allowlist_without_roles_is_refused_until_migrated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = {pid: Identity.generate(pid).public_bytes.hex() for pid in ("agg", "b1", "b2")}
    allow = tmp_path / "allowlist.json"
    allow.write_text(json.dumps({"participants": keys}))
    with pytest.raises(FraudflError, match="fraudfl keys migrate"):
        Allowlist.load(allow)
    assert main(["keys", "migrate", "--allowlist", str(allow), "--aggregator", "nobody"]) == 2
    assert "'nobody' is not enrolled" in capsys.readouterr().err
    assert main(["keys", "migrate", "--allowlist", str(allow), "--aggregator", "agg"]) == 0
    loaded = Allowlist.load(allow)
    assert loaded.members("bank") == ("b1", "b2") and loaded.members("aggregator") == ("agg",)
    assert main(["keys", "migrate", "--allowlist", str(allow), "--aggregator", "agg"]) == 2
    assert "already has roles" in capsys.readouterr().err
