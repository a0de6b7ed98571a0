"""Services refuse to start with a set-up that could never work: their own keys are not the
enrolled ones (everyone would drop their messages), or too few banks are enrolled for a round."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.service import AggregatorService
from bank_node.service import BankNodeService
from fraudfl.cli.init import Federation, FederationPlan, write_federation
from fraudfl.config import AggregatorConfig, BankNodeConfig, load_config
from fraudfl.errors import FraudflError
from fraudfl.identity import Identity
from fraudfl.rounds.policy import file_sha256
from fraudfl.transport.memory import MemoryBroker, MemoryTransport


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    root = tmp_path_factory.mktemp("ownkeys") / "fed"
    return write_federation(FederationPlan(directory=root, banks=2, transactions=600))


def test_bank_with_a_key_other_than_the_enrolled_one(fed: Federation, tmp_path: Path) -> None:
    config = load_config(BankNodeConfig, fed.bank_configs["bank_00"], env={})
    transport = MemoryTransport(MemoryBroker())
    # Another bank's id in this bank's config: the key it holds is bank_00's, not bank_01's.
    wrong_id = config.model_copy(update={"bank_id": "bank_01"})
    with pytest.raises(FraudflError, match=r"identity key is not the one enrolled for 'bank_01'"):
        BankNodeService(wrong_id, transport)
    unknown = config.model_copy(update={"bank_id": "bank_99"})
    with pytest.raises(FraudflError, match=r"allowlist.json: 'bank_99' is not enrolled"):
        BankNodeService(unknown, transport)
    key_path, _ = Identity.generate("bank_00").save(tmp_path)
    with pytest.raises(FraudflError, match=r"identity key is not the one enrolled for 'bank_00'"):
        BankNodeService(config.model_copy(update={"identity_key": key_path}), transport)
    other_enc = fed.directory / "keys" / "bank_01.enc.key"
    with pytest.raises(FraudflError, match=r"encryption key is not the one enrolled"):
        BankNodeService(config.model_copy(update={"encryption_key": other_enc}), transport)


def test_aggregator_with_a_key_other_than_the_enrolled_one(
    fed: Federation, tmp_path: Path
) -> None:
    config = load_config(AggregatorConfig, fed.aggregator_config, env={})
    key_path, _ = Identity.generate("aggregator").save(tmp_path)
    with pytest.raises(FraudflError, match=r"identity key is not the one enrolled for 'aggr"):
        AggregatorService(config.model_copy(update={"identity_key": key_path}),
                          MemoryTransport(MemoryBroker()))


def test_aggregator_with_fewer_banks_enrolled_than_min_banks(fed: Federation) -> None:
    config = load_config(AggregatorConfig, fed.aggregator_config, env={})
    rounds = config.rounds.model_copy(update={"min_banks": 3})
    with pytest.raises(FraudflError, match=r"enrolled, fewer than rounds.min_banks = 3"):
        AggregatorService(config.model_copy(update={"rounds": rounds}),
                          MemoryTransport(MemoryBroker()))


def test_bank_refuses_a_policy_file_other_than_the_pinned_one(
    fed: Federation, tmp_path: Path
) -> None:
    config = load_config(BankNodeConfig, fed.bank_configs["bank_00"], env={})
    policy = tmp_path / "policy.toml"
    policy.write_text("min_other_banks = 1\n")
    pin = file_sha256(policy)
    service = BankNodeService(config.model_copy(update={"policy": policy, "policy_sha256": pin}),
                              MemoryTransport(MemoryBroker()))
    assert service.participant.policy.min_other_banks == 1
    policy.write_text("min_other_banks = 1\nmin_neighbours = 2\n")  # loosened after pinning
    with pytest.raises(FraudflError, match=r"policy.toml: policy sha256 .* differs from the pin"):
        BankNodeService(config.model_copy(update={"policy": policy, "policy_sha256": pin}),
                        MemoryTransport(MemoryBroker()))


def test_services_refuse_roles_that_do_not_fit(fed: Federation) -> None:
    config = load_config(BankNodeConfig, fed.bank_configs["bank_00"], env={})
    # A bank told that another bank is its aggregator: it would take that bank's orders.
    with pytest.raises(FraudflError, match=r"'bank_01' is enrolled as bank, not as the aggr"):
        BankNodeService(config.model_copy(update={"aggregator_id": "bank_01"}),
                        MemoryTransport(MemoryBroker()))
