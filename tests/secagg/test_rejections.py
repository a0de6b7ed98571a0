"""Forged, misdirected, replayed, duplicated and malformed messages are refused with a reason,
and the round still completes with the exact sum afterwards."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudfl.identity import Identity
from fraudfl.secagg import MessageRejected, RejectReason, ServerStatus
from fraudfl.secagg.messages import (
    AdvertiseKeys,
    KeyList,
    MaskedInput,
    ShareRouting,
    SurvivorList,
    UnmaskRequest,
    decode,
    encode,
)
from fraudfl.secagg.server import Outgoing
from tests.secagg.secagg_driver import Driver, make_driver


def _reject(fn: object, data: bytes, reason: RejectReason) -> MessageRejected:
    with pytest.raises(MessageRejected) as info:
        fn(data)  # type: ignore[operator]
    assert info.value.reason is reason, info.value
    return info.value


def _finish(drv: Driver, outgoing: list[Outgoing]) -> None:
    drv.run(outgoing=outgoing)
    assert drv.server.status is ServerStatus.DONE, drv.server.abort_reason
    np.testing.assert_array_equal(drv.server.result, drv.expected_total(drv.names))


def _advance_to_masked(drv: Driver) -> dict[str, bytes]:
    """Run stages 1-2 and return every bank's masked-input message (not yet delivered)."""
    adverts = drv.to_clients(drv.server.start())
    shares = drv.to_clients(drv.to_server(adverts))
    return drv.to_clients(drv.to_server(shares))


def test_forged_signature_is_rejected_then_the_real_message_accepted() -> None:
    drv = make_driver()
    adverts = drv.to_clients(drv.server.start())
    forged = bytearray(adverts["bank-01"])
    forged[-1] ^= 1
    err = _reject(drv.server.receive, bytes(forged), RejectReason.BAD_SIGNATURE)
    assert "bank-01" in str(err)
    _finish(drv, drv.to_server(adverts))


def test_tampered_body_is_rejected() -> None:
    drv = make_driver()
    masked = _advance_to_masked(drv)
    tampered = bytearray(masked["bank-02"])
    tampered[-100] ^= 0xFF  # a vector byte: the signature no longer matches
    _reject(drv.server.receive, bytes(tampered), RejectReason.BAD_SIGNATURE)
    _finish(drv, drv.to_server(masked))


def test_bank_impersonating_another_is_rejected() -> None:
    drv = make_driver()
    adverts = drv.to_clients(drv.server.start())
    # bank-00 signs with its own key but claims to be bank-01.
    liar = Identity("bank-01", drv.fed.banks["bank-00"].private_key)
    fake = encode(liar, drv.fed.federation_id, 1, AdvertiseKeys(b"\x01" * 32, b"\x02" * 32))
    err = _reject(drv.server.receive, fake, RejectReason.IMPERSONATION)
    assert "bank-00" in str(err)
    _finish(drv, drv.to_server(adverts))


def test_unknown_sender_is_rejected() -> None:
    drv = make_driver()
    adverts = drv.to_clients(drv.server.start())
    stranger = Identity.generate("bank-99")
    msg = encode(stranger, drv.fed.federation_id, 1, AdvertiseKeys(b"\x01" * 32, b"\x02" * 32))
    _reject(drv.server.receive, msg, RejectReason.UNKNOWN_SENDER)
    # Enrolled at the key level but not picked for this round: also unknown here.
    outsider = Identity.generate("bank-77")
    drv.fed.allowlist.enroll("bank-77", outsider.public_bytes)
    msg = encode(outsider, drv.fed.federation_id, 1, AdvertiseKeys(b"\x01" * 32, b"\x02" * 32))
    _reject(drv.server.receive, msg, RejectReason.UNKNOWN_SENDER)
    _finish(drv, drv.to_server(adverts))


def test_wrong_round_and_wrong_federation_are_rejected() -> None:
    drv = make_driver()
    adverts = drv.to_clients(drv.server.start())
    bank = drv.fed.banks["bank-00"]
    keys = AdvertiseKeys(b"\x01" * 32, b"\x02" * 32)
    _reject(drv.server.receive, encode(bank, drv.fed.federation_id, 0, keys),
            RejectReason.WRONG_ROUND)
    _reject(drv.server.receive, encode(bank, "other-fed", 1, keys), RejectReason.WRONG_FEDERATION)
    _finish(drv, drv.to_server(adverts))


def test_message_replayed_from_a_previous_round_is_rejected() -> None:
    first = make_driver(n=4, d=6)
    old = first.to_clients(first.server.start())
    first.run(outgoing=first.to_server(old))
    second = make_driver(n=4, d=6, round_number=2, fed=first.fed)
    adverts = second.to_clients(second.server.start())
    _reject(second.server.receive, old["bank-00"], RejectReason.WRONG_ROUND)
    _finish(second, second.to_server(adverts))


def test_wrong_stage_is_rejected() -> None:
    drv = make_driver(d=16)
    adverts = drv.to_clients(drv.server.start())
    early = encode(
        drv.fed.banks["bank-00"], drv.fed.federation_id, 1,
        MaskedInput(np.zeros(16, dtype=np.uint32)),
    )
    _reject(drv.server.receive, early, RejectReason.WRONG_STAGE)
    _finish(drv, drv.to_server(adverts))


def test_identical_duplicates_are_idempotent_and_not_double_counted() -> None:
    drv = make_driver()
    masked = _advance_to_masked(drv)
    assert drv.server.receive(masked["bank-00"]) == []
    assert drv.server.receive(masked["bank-00"]) == []  # ignored, not added twice
    # an identical stage-1 message arriving late is ignored too, not an error
    _finish(drv, drv.to_server(masked))
    assert drv.server.receive(masked["bank-03"]) == []


def test_a_different_second_message_from_one_bank_is_a_duplicate() -> None:
    drv = make_driver(d=16)
    masked = _advance_to_masked(drv)
    drv.server.receive(masked["bank-00"])
    again = encode(
        drv.fed.banks["bank-00"], drv.fed.federation_id, 1,
        MaskedInput(np.ones(16, dtype=np.uint32)),
    )
    _reject(drv.server.receive, again, RejectReason.DUPLICATE)
    _finish(drv, drv.to_server({k: v for k, v in masked.items() if k != "bank-00"}))


@pytest.mark.parametrize("length", [15, 17, 0])
def test_wrong_length_vector_is_rejected(length: int) -> None:
    drv = make_driver(d=16)
    masked = _advance_to_masked(drv)
    short = encode(
        drv.fed.banks["bank-01"], drv.fed.federation_id, 1,
        MaskedInput(np.zeros(length, dtype=np.uint32)),
    )
    _reject(drv.server.receive, short, RejectReason.WRONG_LENGTH)
    wrong_bits = encode(
        drv.fed.banks["bank-01"], drv.fed.federation_id, 1,
        MaskedInput(np.zeros(16, dtype=np.uint16)),
    )
    _reject(drv.server.receive, wrong_bits, RejectReason.WRONG_LENGTH)
    _finish(drv, drv.to_server(masked))


def test_truncated_and_garbage_bytes_are_rejected() -> None:
    drv = make_driver()
    adverts = drv.to_clients(drv.server.start())
    data = adverts["bank-00"]
    _reject(drv.server.receive, data[:-1], RejectReason.WRONG_LENGTH)
    _reject(drv.server.receive, data + b"\x00", RejectReason.WRONG_LENGTH)
    _reject(drv.server.receive, b"\x00" * 200, RejectReason.MALFORMED)
    _reject(drv.server.receive, b"FSAG", RejectReason.WRONG_LENGTH)
    bad_version = bytearray(data)
    bad_version[4] = 9
    _reject(drv.server.receive, bytes(bad_version), RejectReason.MALFORMED)
    _finish(drv, drv.to_server(adverts))


def test_client_rejects_server_messages_from_a_bank() -> None:
    drv = make_driver()
    setup = drv.server.start()
    fake_server = Identity("aggregator", drv.fed.banks["bank-02"].private_key)
    forged = encode(fake_server, drv.fed.federation_id, 1, decode(setup[0].data).payload)
    _reject(drv.clients["bank-00"].receive, forged, RejectReason.IMPERSONATION)
    _finish(drv, setup)


def test_client_rejects_a_key_list_with_a_substituted_key() -> None:
    drv = make_driver()
    keylist_out = drv.to_server(drv.to_clients(drv.server.start()))
    keylist = decode(keylist_out[0].data).payload
    assert isinstance(keylist, KeyList)
    # The server swaps in its own mask key for bank-01 (a man-in-the-middle attempt).
    e = keylist.entries[1]
    swapped = KeyList(
        (*keylist.entries[:1], type(e)(e.index, e.enc_public, b"\x09" * 32, e.signature),
         *keylist.entries[2:])
    )
    forged = encode(drv.fed.aggregator, drv.fed.federation_id, 1, swapped)
    err = _reject(drv.clients["bank-00"].receive, forged, RejectReason.BAD_SIGNATURE)
    assert "bank-01" in str(err)
    # Dropping the recipient's own keys is caught too.
    without_me = encode(
        drv.fed.aggregator, drv.fed.federation_id, 1, KeyList(keylist.entries[1:])
    )
    _reject(drv.clients["bank-00"].receive, without_me, RejectReason.IMPERSONATION)
    _finish(drv, keylist_out)


def test_client_rejects_shares_routed_to_the_wrong_bank() -> None:
    drv = make_driver()
    shares = drv.to_clients(drv.to_server(drv.to_clients(drv.server.start())))
    routing = drv.to_server(shares)
    by_name = {o.recipients[0]: o for o in routing}
    mine = decode(by_name["bank-00"].data).payload
    other = decode(by_name["bank-01"].data).payload
    assert isinstance(mine, ShareRouting) and isinstance(other, ShareRouting)
    # Give bank-00 the ciphertext bank-02 addressed to bank-01, labelled as addressed to it.
    stolen = dict(other.shares)[2]
    rerouted = tuple((s, stolen if s == 2 else ct) for s, ct in mine.shares)
    forged = encode(
        drv.fed.aggregator, drv.fed.federation_id, 1, ShareRouting(mine.survivors, rerouted)
    )
    _reject(drv.clients["bank-00"].receive, forged, RejectReason.DECRYPTION_FAILED)
    _finish(drv, routing)


def _advance_to_unmask(drv: Driver) -> list[Outgoing]:
    """Run stages 1-4 and return the server's unmask requests (not yet delivered)."""
    return drv.to_server(drv.to_clients(drv.to_server(_advance_to_masked(drv))))


def test_client_refuses_a_survivor_list_outside_its_u2() -> None:
    drv = make_driver(n=5)
    survivor_list = drv.to_server(_advance_to_masked(drv))
    stranger = encode(
        drv.fed.aggregator, drv.fed.federation_id, 1, SurvivorList((0, 1, 2, 3, 4, 5))
    )
    _reject(drv.clients["bank-00"].receive, stranger, RejectReason.INCONSISTENT)
    _finish(drv, survivor_list)


def test_client_refuses_unmask_requests_without_t_valid_confirmations() -> None:
    drv = make_driver(n=5)  # t = 3
    request = _advance_to_unmask(drv)
    genuine = decode(request[0].data).payload
    assert isinstance(genuine, UnmaskRequest) and len(genuine.confirmations) == 5
    fed, agg = drv.fed.federation_id, drv.fed.aggregator
    (i0, sig0), (i1, sig1), (i2, _) = genuine.confirmations[:3]
    client = drv.clients["bank-00"]
    two = UnmaskRequest(genuine.survivors, ((i0, sig0), (i1, sig1)))
    _reject(client.receive, encode(agg, fed, 1, two), RejectReason.INCONSISTENT)
    twice = UnmaskRequest(genuine.survivors, ((i0, sig0), (i1, sig1), (i1, sig1)))
    _reject(client.receive, encode(agg, fed, 1, twice), RejectReason.INCONSISTENT)
    forged = UnmaskRequest(genuine.survivors, ((i0, sig0), (i1, sig1), (i2, sig1)))
    _reject(client.receive, encode(agg, fed, 1, forged), RejectReason.BAD_SIGNATURE)
    other_list = UnmaskRequest((0, 1, 2, 3), genuine.confirmations[:4])
    _reject(client.receive, encode(agg, fed, 1, other_list), RejectReason.INCONSISTENT)
    _finish(drv, request)


def test_client_answers_one_unmask_request_only() -> None:
    drv = make_driver(n=5)
    request = _advance_to_unmask(drv)
    client = drv.clients["bank-00"]
    first = client.receive(request[0].data)
    assert client.receive(request[0].data) == first  # identical request: identical answer
    genuine = decode(request[0].data).payload
    assert isinstance(genuine, UnmaskRequest)
    fewer = UnmaskRequest(genuine.survivors, genuine.confirmations[:3])
    second = encode(drv.fed.aggregator, drv.fed.federation_id, 1, fewer)
    _reject(client.receive, second, RejectReason.DUPLICATE)
    drv.server.receive(first[0])
    _finish(drv, [Outgoing(tuple(n for n in drv.names if n != "bank-00"), request[0].data)])


def test_client_refuses_round_parameters_against_its_policy() -> None:
    drv = make_driver(n=6, t=3)  # t = 3 is not a majority of 6
    with pytest.raises(MessageRejected) as info:
        drv.to_clients(drv.server.start())
    assert info.value.reason is RejectReason.INCONSISTENT
    assert "threshold 3 too low" in str(info.value)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.49, 1.0])
def test_client_policy_cannot_allow_a_minority_threshold(fraction: float) -> None:
    with pytest.raises(ValueError, match="min_threshold_fraction"):
        make_driver(n=4, min_threshold_fraction=fraction)


def test_small_order_keys_are_refused() -> None:
    drv = make_driver()
    adverts = drv.to_clients(drv.server.start())
    bank = drv.fed.banks["bank-04"]
    weak = encode(bank, drv.fed.federation_id, 1, AdvertiseKeys(bytes(32), b"\x09" + bytes(31)))
    _reject(drv.server.receive, weak, RejectReason.MALFORMED)
    _finish(drv, drv.to_server(adverts))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_mutated_messages_only_ever_raise_message_rejected(data: st.DataObject) -> None:
    drv = make_driver(n=3, t=2, d=4, min_threshold_fraction=0.5)
    setup = drv.server.start()
    adverts = drv.to_clients(setup)
    keylist = drv.to_server(adverts)
    target = data.draw(st.sampled_from(["setup", "advert", "keylist"]))
    original = {"setup": setup[0].data, "advert": adverts["bank-01"],
                "keylist": keylist[0].data}[target]
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(mutated) - 1)))
        if op == "flip" and mutated:
            mutated[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del mutated[pos:pos + data.draw(st.integers(1, 8))]
        else:
            mutated[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    receiver = drv.server.receive if target == "advert" else drv.clients["bank-00"].receive
    try:
        receiver(bytes(mutated))
    except MessageRejected:
        pass
    else:
        assert bytes(mutated) == original  # only an unmodified message is ever accepted
    # Whatever happened, the honest round still completes exactly.
    drv.run(outgoing=keylist)
    np.testing.assert_array_equal(drv.server.result, drv.expected_total(drv.names))
