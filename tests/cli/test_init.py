from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fraudfl.cli import main
from fraudfl.config import AggregatorConfig, BankNodeConfig, load_config
from fraudfl.identity import Allowlist


def test_init_writes_loadable_federation(tmp_path: Path) -> None:
    root = tmp_path / "fed"
    assert main(["init", str(root), "--banks", "2", "--transactions", "2000"]) == 0
    agg = load_config(AggregatorConfig, root / "aggregator.toml", env={})
    assert agg.eval_data is not None and agg.eval_data.exists()
    allow = Allowlist.load(agg.allowlist)
    banks = sorted(p.stem for p in (root / "banks").glob("*.toml"))
    assert banks == ["bank_00", "bank_01"]
    assert set(allow.participants) == {"aggregator", *banks}
    assert set(allow.encryption_keys) == set(allow.participants)
    for bank in banks:
        cfg = load_config(BankNodeConfig, root / "banks" / f"{bank}.toml", env={})
        assert cfg.bank_id == bank
        assert cfg.data.exists() and cfg.schema_path.exists()
        for key in (cfg.identity_key, cfg.encryption_key):
            assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "fraudfl bank-node --config banks/bank_01.toml" in (root / "README.md").read_text()


def test_init_refuses_non_empty_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x").write_text("")
    assert main(["init", str(tmp_path), "--banks", "2"]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.parametrize(("method", "personal_layers"), [
    ("none", 0), ("finetune", 0), ("ditto", 0), ("fedper", 1),
])
def test_init_personalization(tmp_path: Path, method: str, personal_layers: int) -> None:
    root = tmp_path / "fed"
    argv = ["init", str(root), "--banks", "2", "--transactions", "1000"]
    assert main([*argv, "--personalization", method]) == 0
    agg = load_config(AggregatorConfig, root / "aggregator.toml", env={})
    # FedPer is the federation's: the aggregator aggregates the body only.
    assert agg.training.personal_layers == personal_layers
    for path in (root / "banks").glob("*.toml"):
        assert load_config(BankNodeConfig, path, env={}).personalization == method


def test_init_refuses_unknown_personalization(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["init", str(tmp_path / "fed"), "--personalization", "lora"])
    assert "invalid choice: 'lora'" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "expected"), [
    (["--rounds", "0"], "aggregator.toml: rounds.rounds: Input should be greater than or equal"),
    (["--federation-id", "my fed"], "aggregator.toml: federation_id: String should match"),
    (["--bootstrap-servers", ""], "aggregator.toml: kafka.bootstrap_servers: String should"),
])
def test_init_refuses_values_the_services_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], expected: str
) -> None:
    # These used to write a federation whose services then refused to start.
    root = tmp_path / "fed"
    assert main(["init", str(root), "--banks", "2", *flags]) == 2
    assert expected in capsys.readouterr().err
    assert not root.exists()


def test_init_into_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "fed").write_text("")
    assert main(["init", str(tmp_path / "fed"), "--banks", "2"]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err


def test_per_bank_kits_hold_one_participants_keys_each(tmp_path: Path) -> None:
    import json

    from bank_node.service import BankNodeService
    from fraudfl.transport.memory import MemoryBroker, MemoryTransport

    root = tmp_path / "kits"
    assert main(["--log-level", "ERROR", "init", str(root), "--banks", "3",
                 "--transactions", "1500", "--federation-id", "kits", "--per-bank-kits"]) == 0
    participants = ["aggregator", "bank_00", "bank_01", "bank_02"]
    assert not (root / "keys").exists()
    public = (root / "allowlist.json").read_text()
    policy = json.loads((root / "federation.json").read_text())
    assert policy["federation_id"] == "kits" and "bank_privacy" in policy
    for pid in participants:
        kit = root / pid
        private = sorted(p.name for p in (kit / "keys").iterdir() if p.name.endswith(".key"))
        assert private == [f"{pid}.enc.key", f"{pid}.key"]  # its own, and only its own
        for key in private:
            assert (kit / "keys" / key).stat().st_mode & 0o077 == 0
        assert (kit / "allowlist.json").read_text() == public
        assert json.loads((kit / "federation.json").read_text()) == policy
    for bank in participants[1:]:
        data = sorted(p.name for p in (root / bank / "data").iterdir())
        assert data == [f"{bank}.csv", "schema.toml"]  # no other bank's transactions
        config = load_config(BankNodeConfig, root / bank / "bank.toml", env={})
        assert config.state_dir == (root / bank / "state").resolve()
        # The kit is complete: the service loads its keys, allowlist, schema and data.
        BankNodeService(config, MemoryTransport(MemoryBroker()))
    agg = load_config(AggregatorConfig, root / "aggregator" / "aggregator.toml", env={})
    assert agg.eval_data is not None and agg.eval_data.parent == (root / "aggregator" / "data")
