"""SecAgg+'s graph is fixed by every bank's nonce, committed to with its keys and revealed
only once all commitments are out: the server can neither pick the graph (by leaving nonces
out or forging them) nor let a bank change its nonce after seeing the others'."""

from __future__ import annotations

import numpy as np
import pytest

from fraudfl.secagg import ServerStatus
from fraudfl.secagg.errors import MessageRejected
from fraudfl.secagg.graph import graph_seed, mixed_seed
from fraudfl.secagg.inmemory import AGGREGATOR_ID
from fraudfl.secagg.messages import (
    STAGE_REVEAL,
    NonceList,
    NonceReveal,
    decode,
    encode,
)
from fraudfl.secagg.server import Outgoing
from tests.secagg.secagg_driver import Driver, make_driver


def to_reveal(drv: Driver) -> tuple[list[Outgoing], dict[str, bytes]]:
    """Play the round until every bank has answered the key list with its nonce."""
    pending = drv.to_server(drv.to_clients(drv.server.start()))  # -> the key list
    assert drv.server.stage == STAGE_REVEAL
    return pending, drv.to_clients(pending)


def test_graph_seed_mixes_every_nonce_and_the_sum_is_exact() -> None:
    drv = make_driver(n=12, t=3, d=16, neighbours=4)
    base = drv.server.params.graph_seed
    assert base == graph_seed("fed-test", 1, drv.names)
    _, reveals = to_reveal(drv)
    nonces = {}
    for name, data in reveals.items():
        payload = decode(data).payload
        assert isinstance(payload, NonceReveal)
        nonces[drv.names.index(name)] = payload.nonce
    drv.run(outgoing=drv.to_server(reveals))
    assert drv.server.status is ServerStatus.DONE, drv.server.abort_reason
    assert drv.server.params.graph_seed == mixed_seed(base, nonces) != base
    np.testing.assert_array_equal(drv.server.result, drv.expected_total(drv.names))


def _forged_nonce_list(drv: Driver, nonces: tuple[tuple[int, bytes], ...]) -> bytes:
    return encode(drv.fed.aggregator, drv.fed.federation_id, 1, NonceList(nonces))


def test_server_cannot_leave_a_nonce_out_or_forge_one() -> None:
    drv = make_driver(n=8, t=3, d=4, neighbours=2)
    _, reveals = to_reveal(drv)
    genuine = []
    for name in drv.names:
        payload = decode(reveals[name]).payload
        assert isinstance(payload, NonceReveal)
        genuine.append((drv.names.index(name), payload.nonce))
    # Choosing among subsets of the nonces (as it could once it has seen them) ...
    without = _forged_nonce_list(drv, tuple(genuine[1:]))
    # ... or replacing one with a value ground for a graph of its liking.
    forged = _forged_nonce_list(drv, ((genuine[0][0], b"\x00" * 32), *genuine[1:]))
    for name in drv.names[1:]:
        client = drv.clients[name]
        with pytest.raises(MessageRejected, match="exactly the key list"):
            client.receive(without)
        with pytest.raises(MessageRejected, match="does not open its commitment"):
            client.receive(forged)
        assert client.stage is not None and client.stage.value == "revealed"


def test_a_withheld_nonce_aborts_instead_of_dropping_the_bank() -> None:
    drv = make_driver(n=8, t=3, d=4, neighbours=2)
    drv.run({drv.names[3]: STAGE_REVEAL})
    assert drv.server.status is ServerStatus.ABORTED
    assert "did not reveal its graph nonce" in drv.server.abort_reason


def test_a_bank_cannot_reveal_another_nonce_than_it_committed_to() -> None:
    drv = make_driver(n=8, t=3, d=4, neighbours=2)
    to_reveal(drv)
    liar = drv.fed.banks[drv.names[0]]
    other = encode(liar, drv.fed.federation_id, 1, NonceReveal(b"\x01" * 32))
    with pytest.raises(MessageRejected, match="does not open its commitment"):
        drv.server.receive(other)
    assert AGGREGATOR_ID not in drv.names
