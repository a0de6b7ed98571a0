"""Client and server state survive a JSON round trip at every stage and the round resumes."""

from __future__ import annotations

import json

import numpy as np

from fraudfl.secagg import SecAggClient, SecAggServer, ServerStatus
from tests.secagg.secagg_driver import Driver, make_driver


def _restore_all(drv: Driver) -> None:
    state = json.loads(json.dumps(drv.server.to_dict()))
    assert "private" not in json.dumps(state)
    drv.server = SecAggServer.from_dict(state, drv.fed.aggregator, drv.fed.allowlist)
    for name in drv.names:
        blob = json.loads(json.dumps(drv.clients[name].to_dict()))
        drv.clients[name] = SecAggClient.from_dict(blob, drv.fed.banks[name], drv.fed.allowlist)


def test_round_resumes_after_checkpointing_everyone_at_every_stage() -> None:
    drv = make_driver(n=5, d=12)
    pending = drv.server.start()
    while drv.server.status is ServerStatus.RUNNING:
        _restore_all(drv)
        replies = drv.to_clients(pending, silent={"bank-04"} if drv.server.stage >= 3 else ())
        _restore_all(drv)
        pending = drv.to_server(replies) or drv.server.stage_timeout()
    np.testing.assert_array_equal(drv.server.result, drv.expected_total(drv.names[:4]))


def test_restarted_server_resends_and_clients_answer_idempotently() -> None:
    drv = make_driver(n=5, d=12)
    adverts = drv.to_clients(drv.server.start())
    shares = drv.to_clients(drv.to_server(adverts))
    request = drv.to_server(shares)
    masked = drv.to_clients(request)
    drv.server.receive(masked["bank-00"])
    drv.server.receive(masked["bank-01"])
    checkpoint = json.dumps(drv.server.to_dict())
    # The aggregator crashes; the replies it had not processed are lost with it.
    restored = SecAggServer.from_dict(json.loads(checkpoint), drv.fed.aggregator, drv.fed.allowlist)
    drv.server = restored
    resent = restored.resend()
    again = drv.to_clients(resent)
    assert again == masked  # same bytes: the clients do not re-mask with fresh randomness
    drv.run(outgoing=drv.to_server(again))
    np.testing.assert_array_equal(drv.server.result, drv.expected_total(drv.names))


def test_client_state_holds_its_secrets_and_server_state_holds_none() -> None:
    drv = make_driver(n=3, t=2, d=4)
    drv.to_clients(drv.server.start())
    client_state = drv.clients["bank-00"].to_dict()
    assert client_state["round"]["mask_sk"] and client_state["round"]["self_seed"]
    server_state = drv.server.to_dict()
    for forbidden in ("mask_sk", "enc_sk", "self_seed"):
        assert forbidden not in json.dumps(server_state)
