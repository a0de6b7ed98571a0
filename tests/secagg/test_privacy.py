"""What the server sees: masked vectors that look uniform, and never both shares of one bank."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
from scipy.stats import chisquare

from fraudfl.secagg import MessageRejected, RejectReason, ServerStatus
from fraudfl.secagg.messages import (
    KIND_MASK_KEY,
    KIND_SELF_MASK,
    MaskedInput,
    RevealedShare,
    ShareKeys,
    ShareRouting,
    SurvivorConfirm,
    SurvivorList,
    UnmaskRequest,
    UnmaskShares,
    decode,
    encode,
)
from tests.secagg.secagg_driver import Driver, make_driver

# A false alarm at this level happens once in a million runs; a real bias of the kind tested
# below (e.g. an unmasked or half-masked vector) gives p-values far smaller.
ALPHA = 1e-6


def _uniformity_p(vector: np.ndarray) -> float:
    """Chi-square p-value of the vector's bytes and of its values in 1024 buckets."""
    as_bytes = np.frombuffer(vector.tobytes(), dtype=np.uint8)
    byte_p = chisquare(np.bincount(as_bytes, minlength=256)).pvalue
    buckets = (vector.astype(np.uint64) * 1024) >> 32
    bucket_p = chisquare(np.bincount(buckets.astype(np.int64), minlength=1024)).pvalue
    return float(min(byte_p, bucket_p))


def _masked_vectors(inputs: float) -> dict[str, np.ndarray]:
    drv = make_driver(n=4, t=3, d=50_000)
    for c in drv.clients.values():
        c.set_input(np.full(50_000, inputs))  # maximally structured inputs
    adverts = drv.to_clients(drv.server.start())
    shares = drv.to_clients(drv.to_server(adverts))
    masked = drv.to_clients(drv.to_server(shares))
    out = {}
    for name, data in masked.items():
        payload = decode(data).payload
        assert isinstance(payload, MaskedInput)
        out[name] = payload.vector
    return out


@pytest.mark.parametrize("value", [0.0, 0.75])
def test_masked_vectors_are_indistinguishable_from_uniform(value: float) -> None:
    for vector in _masked_vectors(value).values():
        assert _uniformity_p(vector) > ALPHA


def test_the_uniformity_test_detects_structure() -> None:
    """Guard: the statistic rejects the unmasked encoding and a pairwise-only masked view."""
    drv = make_driver(n=3, d=50_000)
    q = drv.server.params.quantizer()
    assert _uniformity_p(q.encode(np.full(50_000, 0.75))) < ALPHA
    rng = np.random.default_rng(1)
    half = rng.integers(0, 2**31, 50_000, dtype=np.uint32)  # top bit never set
    assert _uniformity_p(half) < ALPHA


def _unmask_store_owners(dropouts: dict[str, int], n: int = 7, t: int = 4) -> tuple[
    set[int], set[int], list[int], tuple[int, ...]
]:
    drv = make_driver(n=n, t=t, d=4)
    drv.run(dropouts)
    s = drv.server
    return set(s.self_mask_shares), set(s.mask_key_shares), s.u3, s.u2


@pytest.mark.parametrize(
    "dropouts",
    [{}, {"bank-01": 3}, {"bank-01": 3, "bank-05": 3, "bank-06": 4}, {"bank-00": 2, "bank-02": 3}],
)
def test_server_never_holds_both_kinds_of_share_for_one_bank(dropouts: dict[str, int]) -> None:
    self_owners, key_owners, u3, u2 = _unmask_store_owners(dropouts)
    assert not self_owners & key_owners
    assert self_owners <= set(u3)
    assert key_owners <= set(u2) - set(u3)


def test_server_refuses_shares_of_the_wrong_kind() -> None:
    drv = make_driver(n=5, t=3, d=4)
    adverts = drv.to_clients(drv.server.start())
    shares = drv.to_clients(drv.to_server(adverts))
    masked = drv.to_clients(drv.to_server(shares))
    request = drv.to_server(drv.to_clients(drv.to_server(masked)))
    # bank-00 (curious) offers the mask-key share of bank-01, who survived.
    honest = decode(drv.clients["bank-00"].receive(request[0].data)[0]).payload
    assert isinstance(honest, UnmaskShares)
    leaked = tuple(
        RevealedShare(s.owner, KIND_MASK_KEY, s.share) if s.owner == 1 else s
        for s in honest.shares
    )
    bad = encode(drv.fed.banks["bank-00"], drv.fed.federation_id, 1, UnmaskShares(leaked))
    with pytest.raises(MessageRejected) as info:
        drv.server.receive(bad)
    assert info.value.reason is RejectReason.INCONSISTENT
    assert drv.server.mask_key_shares == {}
    assert all(s.kind == KIND_SELF_MASK for s in honest.shares)
    drv.run(outgoing=request)
    assert drv.server.status is ServerStatus.DONE
    np.testing.assert_array_equal(drv.server.result, drv.expected_total(drv.names))


def _confirm(drv: Driver, views: Mapping[int, tuple[int, ...]]) -> dict[int, bytes]:
    """Show bank i the survivor list ``views[i]``; return the confirmations it signs."""
    fed, agg = drv.fed.federation_id, drv.fed.aggregator
    signatures = {}
    for i, u3 in views.items():
        reply = decode(drv.clients[drv.names[i]].receive(encode(agg, fed, 1, SurvivorList(u3)))[0])
        assert reply.payload == SurvivorConfirm(u3)
        signatures[i] = reply.signature
    return signatures


def test_an_equivocating_server_cannot_collect_both_secrets_of_a_bank() -> None:
    """The server tells banks 0, 1 and 4 that bank 4 survived and banks 2, 3 that it dropped.

    Only three banks (t) commit to each survivor list, two to the other: no bank reveals
    anything for a survivor list fewer than t banks confirmed, nor for one it did not confirm.
    """
    drv = make_driver(n=5, t=3, d=4)
    adverts = drv.to_clients(drv.server.start())
    shares = drv.to_clients(drv.to_server(adverts))
    drv.to_server(drv.to_clients(drv.to_server(shares)))  # masked inputs; U3 = everyone
    fed, agg = drv.fed.federation_id, drv.fed.aggregator
    everyone, without_4 = (0, 1, 2, 3, 4), (0, 1, 2, 3)
    sig = _confirm(drv, {0: everyone, 1: everyone, 4: everyone, 2: without_4, 3: without_4})
    short = UnmaskRequest(without_4, ((2, sig[2]), (3, sig[3])))
    borrowed = UnmaskRequest(without_4, ((0, sig[0]), (2, sig[2]), (3, sig[3])))
    for request, reason in [(short, RejectReason.INCONSISTENT),
                            (borrowed, RejectReason.BAD_SIGNATURE)]:
        for i in (2, 3):
            with pytest.raises(MessageRejected) as info:
                drv.clients[drv.names[i]].receive(encode(agg, fed, 1, request))
            assert info.value.reason is reason
    # The list three banks confirmed is answered, with self-mask shares for bank 4 only.
    honest = UnmaskRequest(everyone, ((0, sig[0]), (1, sig[1]), (4, sig[4])))
    reply = decode(drv.clients["bank-00"].receive(encode(agg, fed, 1, honest))[0]).payload
    assert isinstance(reply, UnmaskShares)
    assert {s.kind for s in reply.shares} == {KIND_SELF_MASK}
    with pytest.raises(MessageRejected) as info:  # a second list to the same bank
        drv.clients["bank-00"].receive(encode(agg, fed, 1, SurvivorList(without_4)))
    assert info.value.reason is RejectReason.DUPLICATE


def test_an_equivocating_server_cannot_unmask_one_input() -> None:
    """The attack the consistency check exists for (found in review; it worked before it).

    All five banks are honest and t = 3 > n/2. The server tells bank 0 that U2 = {0, 1, 2}, so
    bank 0 masks with banks 1 and 2 only, then shows each bank its own survivor list: bank 0
    survived everywhere, banks 1 and 2 dropped in the lists shown to the banks holding their
    shares. Without the check it collected b_0 from banks {0, 3, 4}, s_sk_1 from {2, 3, 4} and
    s_sk_2 from {1, 3, 4} (no bank revealing both secrets of anyone) and unmasked y_0 alone.
    """
    drv = make_driver(n=5, t=3, d=4)
    fed, agg = drv.fed.federation_id, drv.fed.aggregator
    adverts = drv.to_clients(drv.server.start())
    shares = drv.to_clients(drv.to_server(adverts))
    sealed = {}
    for i, name in enumerate(drv.names):
        payload = decode(shares[name]).payload
        assert isinstance(payload, ShareKeys)
        sealed[i] = dict(payload.shares)
    for i, name in enumerate(drv.names):
        u2 = (0, 1, 2) if i == 0 else (0, 1, 2, 3, 4)
        routing = ShareRouting(u2, tuple((u, sealed[u][i]) for u in u2 if u != i))
        drv.clients[name].receive(encode(agg, fed, 1, routing))
    views = {0: (0, 1, 2), 1: (0, 1, 3), 2: (0, 2, 3), 3: (0, 3, 4), 4: (0, 3, 4)}
    # Bank 0 will not confirm a U3 outside its U2: the list the server needs most.
    with pytest.raises(MessageRejected) as info:
        drv.clients["bank-00"].receive(encode(agg, fed, 1, SurvivorList(views[3])))
    assert info.value.reason is RejectReason.INCONSISTENT
    sig = _confirm(drv, views)
    for i, u3 in views.items():
        confirmed = tuple((j, sig[j]) for j in sorted(sig) if views[j] == u3)
        assert len(confirmed) < 3  # no survivor list reaches t confirmations
        with pytest.raises(MessageRejected) as info:
            drv.clients[drv.names[i]].receive(encode(agg, fed, 1, UnmaskRequest(u3, confirmed)))
        assert info.value.reason is RejectReason.INCONSISTENT
        # Nor do other banks' confirmations of other lists stand in for them.
        padded = tuple((j, sig[j]) for j in u3)
        with pytest.raises(MessageRejected) as info:
            drv.clients[drv.names[i]].receive(encode(agg, fed, 1, UnmaskRequest(u3, padded)))
        assert info.value.reason is RejectReason.BAD_SIGNATURE
