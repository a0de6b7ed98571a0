from __future__ import annotations

from pathlib import Path

import pytest

from fraudfl.config import AggregatorConfig, BankNodeConfig, load_config
from fraudfl.errors import FraudflError
from fraudfl.identity import Allowlist, Identity


@pytest.fixture()
def fed(tmp_path: Path) -> Path:
    ident = Identity.generate("bank-1")
    ident.save(tmp_path / "keys")
    Identity.generate("aggregator").save(tmp_path / "keys")
    for pid in ("bank-1", "aggregator"):
        (tmp_path / "keys" / f"{pid}.enc.key").write_text("k")
    (tmp_path / "schema.toml").write_text("")
    allow = Allowlist()
    allow.enroll("bank-1", ident.public_bytes)
    allow.save(tmp_path / "allowlist.json")
    (tmp_path / "data.csv").write_text("x\n")
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BANK = """
federation_id = "fed1"
bank_id = "bank-1"
identity_key = "keys/bank-1.key"
encryption_key = "keys/bank-1.enc.key"
allowlist = "allowlist.json"
data = "data.csv"
state_dir = "state/bank-1"

[kafka]
bootstrap_servers = "127.0.0.1:1234"

[privacy]
target_epsilon = 3.0
"""

AGG = """
federation_id = "fed1"
identity_key = "keys/aggregator.key"
encryption_key = "keys/aggregator.enc.key"
allowlist = "allowlist.json"
state_dir = "state/agg"
schema_file = "schema.toml"

[rounds]
rounds = 3
min_banks = 2
banks_per_round = 3
"""


def test_loads_bank_config_and_resolves_paths(fed: Path) -> None:
    cfg = load_config(BankNodeConfig, write(fed / "bank.toml", BANK), env={})
    assert cfg.bank_id == "bank-1"
    assert cfg.identity_key == fed / "keys/bank-1.key"
    assert cfg.state_dir == fed / "state/bank-1"
    assert cfg.privacy.target_epsilon == 3.0
    assert cfg.kafka.transport_settings().common()["bootstrap_servers"] == ["127.0.0.1:1234"]


def test_env_overrides_nested_and_top_level(fed: Path) -> None:
    env = {
        "FRAUDFL_KAFKA__BOOTSTRAP_SERVERS": "10.0.0.1:9093",
        "FRAUDFL_PRIVACY__TARGET_EPSILON": "1.5",
        "FRAUDFL_METRICS_PORT": "9100",
        "FRAUDFL_ROUNDS__ROUNDS": "7",  # an aggregator setting: not this config's, ignored
        "OTHER": "x",
    }
    cfg = load_config(BankNodeConfig, write(fed / "bank.toml", BANK), env=env)
    assert cfg.kafka.bootstrap_servers == "10.0.0.1:9093"
    assert cfg.privacy.target_epsilon == 1.5
    assert cfg.metrics_port == 9100


def test_unknown_key_names_path_and_file(fed: Path) -> None:
    path = write(fed / "bank.toml", BANK + "\n[training]\nlr = 1\n")
    with pytest.raises(FraudflError, match=r"bank\.toml: training: unknown key"):
        load_config(BankNodeConfig, path, env={})
    path = write(fed / "bank.toml", BANK.replace("target_epsilon", "target_epsilom"))
    with pytest.raises(FraudflError, match=r"privacy\.target_epsilom: unknown key"):
        load_config(BankNodeConfig, path, env={})


def test_wrong_type_names_key(fed: Path) -> None:
    path = write(fed / "agg.toml", AGG.replace("rounds = 3", 'rounds = "many"'))
    with pytest.raises(FraudflError, match=r"agg\.toml: rounds\.rounds: .*integer.*'many'"):
        load_config(AggregatorConfig, path, env={})


def test_wrong_type_from_env_names_variable(fed: Path) -> None:
    path = write(fed / "agg.toml", AGG)
    expected = r"FRAUDFL_ROUNDS__MIN_BANKS \(overrides .*\): rounds\.min_banks"
    with pytest.raises(FraudflError, match=expected):
        load_config(AggregatorConfig, path, env={"FRAUDFL_ROUNDS__MIN_BANKS": "lots"})


def test_missing_data_file(fed: Path) -> None:
    (fed / "data.csv").unlink()
    with pytest.raises(FraudflError, match=r"data: cannot read .*data\.csv"):
        load_config(BankNodeConfig, write(fed / "bank.toml", BANK), env={})


def test_missing_required_key(fed: Path) -> None:
    path = write(fed / "bank.toml", BANK.replace('bank_id = "bank-1"\n', ""))
    with pytest.raises(FraudflError, match="bank_id: required key is missing"):
        load_config(BankNodeConfig, path, env={})


def test_missing_config_file(fed: Path) -> None:
    with pytest.raises(FraudflError, match=r"nope\.toml: cannot read config file"):
        load_config(BankNodeConfig, fed / "nope.toml", env={})


def test_bad_toml(fed: Path) -> None:
    with pytest.raises(FraudflError, match="not valid TOML"):
        load_config(BankNodeConfig, write(fed / "bank.toml", "a = = 1"), env={})


def test_unreadable_key_file(fed: Path) -> None:
    (fed / "keys/bank-1.key").unlink()
    with pytest.raises(FraudflError, match=r"identity_key: cannot read .*bank-1\.key"):
        load_config(BankNodeConfig, write(fed / "bank.toml", BANK), env={})


def test_threshold_above_banks_per_round_rejected(fed: Path) -> None:
    path = write(fed / "agg.toml", AGG.replace("min_banks = 2", "min_banks = 4"))
    with pytest.raises(FraudflError, match="banks_per_round"):
        load_config(AggregatorConfig, path, env={})


def test_sasl_passthrough(fed: Path) -> None:
    text = AGG + (
        '\n[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "SCRAM-SHA-512"\n'
        'sasl_plain_username = "u"\nsasl_plain_password = "p"\nssl_cafile = "ca.pem"\n'
    )
    cfg = load_config(AggregatorConfig, write(fed / "agg.toml", text), env={})
    opts = cfg.kafka.transport_settings().common()
    assert opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert opts["ssl_cafile"] == str(fed / "ca.pem")
    with pytest.raises(FraudflError, match="sasl_mechanism is required"):
        load_config(
            AggregatorConfig,
            write(fed / "agg.toml", AGG + '\n[kafka]\nsecurity_protocol = "SASL_PLAINTEXT"\n'),
            env={},
        )


def test_personalization_options(fed: Path) -> None:
    cfg = load_config(BankNodeConfig, write(
        fed / "b.toml",
        'personalization = "ditto"\n' + BANK + "\n[personal_training]\nepochs = 2\n"
        "ditto_lambda = 0.5\n",
    ), env={})
    assert cfg.personalization == "ditto"
    assert (cfg.personal_training.epochs, cfg.personal_training.ditto_lambda) == (2, 0.5)
    with pytest.raises(FraudflError, match=r"b\.toml: personalization: .*'fedper'.*'perfed'"):
        load_config(BankNodeConfig, write(fed / "b.toml", 'personalization = "perfed"\n' + BANK),
                    env={})


def test_fedper_needs_a_body_to_aggregate(fed: Path) -> None:
    cfg = load_config(AggregatorConfig, write(
        fed / "a.toml", AGG + "\n[training]\nhidden = [16, 8]\npersonal_layers = 2\n"
    ), env={})
    assert cfg.training.personal_layers == 2
    for training in (
        'hidden = [16]\npersonal_layers = 2', 'model = "logistic"\npersonal_layers = 1'
    ):
        with pytest.raises(FraudflError, match=r"a\.toml: training: .*personal_layers"):
            load_config(AggregatorConfig, write(fed / "a.toml", AGG + "\n[training]\n" + training),
                        env={})


def test_hidden_layer_sizes_must_be_positive(fed: Path) -> None:
    path = write(fed / "a.toml", AGG + "\n[training]\nhidden = [16, 0]\n")
    with pytest.raises(FraudflError, match=r"a\.toml: training\.hidden\.1: .*greater than 0"):
        load_config(AggregatorConfig, path, env={})


def test_missing_eval_data_is_reported_at_start(fed: Path) -> None:
    path = write(fed / "a.toml", 'eval_data = "held-out.csv"\n' + AGG)
    with pytest.raises(FraudflError, match=r"a\.toml: eval_data: cannot read .*held-out\.csv"):
        load_config(AggregatorConfig, path, env={})


def test_env_variable_no_service_knows_is_warned_about(
    fed: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"FRAUDFL_KAFKA__BOOTSTRAP_SERVER": "typo:9092", "FRAUDFL_EVAL_DATA": "held-out.csv"}
    with caplog.at_level("DEBUG", logger="fraudfl.config"):
        load_config(BankNodeConfig, write(fed / "bank.toml", BANK), env=env)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    # eval_data is an aggregator setting, so not a typo.
    assert len(warned) == 1 and "FRAUDFL_KAFKA__BOOTSTRAP_SERVER" in warned[0]


def test_state_dir_under_a_file(fed: Path) -> None:
    # The bank node's mkdir of it was a NotADirectoryError traceback.
    text = BANK.replace('state_dir = "state/bank-1"', 'state_dir = "data.csv/state"')
    with pytest.raises(FraudflError, match=r"bank\.toml: state_dir: .*data\.csv exists and is not"):
        load_config(BankNodeConfig, write(fed / "bank.toml", text), env={})


def test_inf_and_nan_are_refused(fed: Path) -> None:
    for value in ("inf", "nan"):
        path = write(fed / "a.toml", AGG + f"\n[training]\nlr = {value}\n")
        with pytest.raises(FraudflError, match=r"a\.toml: training\.lr: Input should be a finite"):
            load_config(AggregatorConfig, path, env={})


def test_secret_overrides_taken_verbatim_and_never_shown(fed: Path) -> None:
    text = AGG + '\n[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "SCRAM-SHA-512"\n'
    path = write(fed / "agg.toml", text)
    # A numeric-looking password was TOML-parsed into an integer and refused.
    for password in ("123456", "true", "[1, 2]", '"quoted"', "0x1F"):
        cfg = load_config(AggregatorConfig, path, env={
            "FRAUDFL_KAFKA__SASL_PLAIN_PASSWORD": password,
            "FRAUDFL_KAFKA__SASL_PLAIN_USERNAME": "007",
        })
        assert cfg.kafka.sasl_plain_password is not None
        assert cfg.kafka.sasl_plain_password.get_secret_value() == password
        assert cfg.kafka.sasl_plain_username == "007"
        assert password not in repr(cfg) and password not in str(cfg)
    # Non-text settings are still parsed.
    cfg = load_config(AggregatorConfig, path, env={"FRAUDFL_ROUNDS__ROUNDS": "7"})
    assert cfg.rounds.rounds == 7


def test_a_bad_secret_in_the_file_is_not_echoed(fed: Path) -> None:
    text = AGG + '\n[kafka]\nsasl_plain_password = 918273645\n'
    with pytest.raises(FraudflError, match=r"kafka\.sasl_plain_password: .*value hidden") as err:
        load_config(AggregatorConfig, write(fed / "agg.toml", text), env={})
    assert "918273645" not in str(err.value)


def test_metrics_basic_auth_password_from_the_environment(fed: Path) -> None:
    text = AGG.replace("[rounds]", '[metrics_basic_auth]\nusername = "prometheus"\n\n[rounds]', 1)
    assert "[metrics_basic_auth]" in text
    cfg = load_config(AggregatorConfig, write(fed / "agg.toml", text),
                      env={"FRAUDFL_METRICS_BASIC_AUTH__PASSWORD": "000111"})
    assert cfg.metrics_basic_auth is not None
    assert cfg.metrics_basic_auth.password.get_secret_value() == "000111"
    assert "000111" not in repr(cfg)
