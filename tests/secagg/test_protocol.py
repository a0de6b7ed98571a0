"""The protocol recovers exactly the ring sum of the surviving banks' encodings, or aborts."""

from __future__ import annotations

import numpy as np
import pytest

from fraudfl.secagg import ClientStage, ServerStatus
from fraudfl.secagg.messages import STAGE_SHARE
from tests.secagg.secagg_driver import make_driver


def test_exact_sum_without_dropouts() -> None:
    drv = make_driver(n=5, d=32)
    drv.run()
    assert drv.server.status is ServerStatus.DONE
    assert drv.server.survivors == drv.names
    np.testing.assert_array_equal(drv.server.result, drv.expected_total(drv.names))
    decoded = drv.server.params.quantizer().decode(drv.server.result)
    clipped = np.sum([np.clip(x, -1, 1) for x in drv.inputs.values()], axis=0)
    assert np.max(np.abs(decoded - clipped)) <= drv.server.params.quantizer().error_bound()
    assert all(c.stage is ClientStage.DONE for c in drv.clients.values())


@pytest.mark.parametrize("stage", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("dropped", [1, 2])  # n - t = 2
def test_exact_sum_with_dropouts_at_each_stage(stage: int, dropped: int) -> None:
    drv = make_driver(n=6, t=4, d=24, seed=stage)
    gone = drv.names[1 : 1 + dropped]
    drv.run({b: stage for b in gone})
    assert drv.server.status is ServerStatus.DONE, drv.server.abort_reason
    # A bank silent from the consistency check on already sent its masked input: it is summed.
    summed = drv.names if stage >= 4 else [b for b in drv.names if b not in gone]
    assert drv.server.survivors == summed
    np.testing.assert_array_equal(drv.server.result, drv.expected_total(summed))


def test_dropouts_spread_over_stages() -> None:
    drv = make_driver(n=7, t=4, d=8)
    drv.run({"bank-00": 2, "bank-03": 3, "bank-06": 4})
    summed = [b for b in drv.names if b not in ("bank-00", "bank-03")]
    np.testing.assert_array_equal(drv.server.result, drv.expected_total(summed))


@pytest.mark.parametrize("stage", [1, 2, 3, 4, 5])
def test_round_aborts_below_threshold(stage: int) -> None:
    drv = make_driver(n=5, t=3, d=8)
    drv.run({b: stage for b in drv.names[:3]})  # 2 left < t
    assert drv.server.status is ServerStatus.ABORTED
    assert "below t=3" in drv.server.abort_reason
    assert drv.server.pending() == drv.names[:3]
    with pytest.raises(RuntimeError, match="aborted"):
        _ = drv.server.result
    for name in drv.names[3:]:
        assert drv.clients[name].stage is ClientStage.ABORTED
        assert "below t=3" in drv.clients[name].abort_reason


def test_secagg_plus_sparse_graph_with_dropouts() -> None:
    drv = make_driver(n=12, t=3, d=16, neighbours=4)
    # The graph is fixed once every bank's nonce is revealed: play up to the share stage.
    pending = drv.server.start()
    while drv.server.stage != STAGE_SHARE:
        pending = drv.to_server(drv.to_clients(pending))
    p = drv.server.params
    assert not p.full_graph and all(len(nb) == 4 for nb in p.neighbour_sets)
    # Three dropouts (at share keys, masked input, consistency) leaving every group t members.
    gone: list[int] = []
    for v in range(p.n):
        if len(gone) < 3 and all(len(g & {*gone, v}) <= 2 for g in p.groups):
            gone.append(v)
    a, b, c = (drv.names[v] for v in gone)
    drv.run({a: 2, b: 3, c: 4}, outgoing=pending)
    summed = [x for x in drv.names if x not in (a, b)]
    assert drv.server.status is ServerStatus.DONE, drv.server.abort_reason
    np.testing.assert_array_equal(drv.server.result, drv.expected_total(summed))


def test_secagg_plus_aborts_when_a_neighbourhood_cannot_reconstruct() -> None:
    drv = make_driver(n=10, t=3, d=4, neighbours=2)
    victim = 0
    # The graph is fixed once every bank's nonce is revealed: play up to the share stage.
    pending = drv.server.start()
    while drv.server.stage != STAGE_SHARE:
        pending = drv.to_server(drv.to_clients(pending))
    nb = sorted(drv.server.params.neighbour_sets[victim])
    # The victim drops after masking; its two neighbours stay silent in the unmask stage, so
    # only the victim's own share exists... and the victim is silent too.
    silent = {drv.names[victim]: 5, **{drv.names[v]: 5 for v in nb}}
    drv.run(silent, outgoing=pending)
    assert drv.server.status is ServerStatus.ABORTED
    assert "cannot reconstruct the self-mask seed" in drv.server.abort_reason


def test_weighted_round_sums_weight_times_update_and_weights() -> None:
    drv = make_driver(n=4, d=10, weighted=True)
    drv.run({"bank-01": 3})
    summed = ["bank-00", "bank-02", "bank-03"]
    np.testing.assert_array_equal(drv.server.result, drv.expected_total(summed))
    q = drv.server.params.quantizer()
    total, weight = q.decode_weighted(drv.server.result)
    expect = sum(np.clip(drv.weights[b] * drv.inputs[b], -1, 1) for b in summed)
    assert np.max(np.abs(total - expect)) <= q.error_bound()
    assert abs(weight - sum(drv.weights[b] for b in summed)) <= q.weight_error_bound()


def test_16_bit_ring() -> None:
    drv = make_driver(n=4, d=10, bits=16)
    drv.run()
    assert drv.server.result.dtype == np.uint16
    np.testing.assert_array_equal(drv.server.result, drv.expected_total(drv.names))


def test_client_takes_part_in_successive_rounds() -> None:
    first = make_driver(n=4, d=6)
    first.run()
    second = make_driver(n=4, d=6, round_number=2, fed=first.fed, seed=5)
    second.clients = first.clients  # the same client objects continue into round 2
    for name, c in second.clients.items():
        c.set_input(second.inputs[name])
    second.run({"bank-03": 3})
    np.testing.assert_array_equal(
        second.server.result, second.expected_total(["bank-00", "bank-01", "bank-02"])
    )
