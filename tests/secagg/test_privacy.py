"""What the server sees: masked vectors that look uniform, and never both shares of one bank."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from scipy.stats import chisquare

from fraudfl.secagg import MessageRejected, RejectReason, ServerStatus, crypto, shamir
from fraudfl.secagg.messages import (
    KIND_MASK_KEY,
    KIND_SELF_MASK,
    MaskedInput,
    RevealedShare,
    UnmaskRequest,
    UnmaskShares,
    decode,
    encode,
)
from tests.secagg.secagg_driver import make_driver

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
    request = drv.to_server(masked)
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


def test_an_equivocating_server_cannot_collect_both_secrets_of_a_bank() -> None:
    """The server tells banks 0, 1 and 4 that bank 4 survived and banks 2, 3 that it dropped.

    With t = 3 of 5 and every honest bank answering one request only, it gets three shares of
    b_4 but only two of s_sk_4, which reveal nothing; asking again is refused.
    """
    drv = make_driver(n=5, t=3, d=4)
    adverts = drv.to_clients(drv.server.start())
    shares = drv.to_clients(drv.to_server(adverts))
    drv.to_server(drv.to_clients(drv.to_server(shares)))  # masked inputs; U3 = everyone
    keys = {e.index: e for e in drv.server.keys.values()}
    fed, agg = drv.fed.federation_id, drv.fed.aggregator
    survived = encode(agg, fed, 1, UnmaskRequest((0, 1, 2, 3, 4), ()))
    dropped = encode(agg, fed, 1, UnmaskRequest((0, 1, 2, 3), (4,)))
    got: dict[int, dict[int, bytes]] = {KIND_SELF_MASK: {}, KIND_MASK_KEY: {}}
    for i, request in [(0, survived), (1, survived), (4, survived), (2, dropped), (3, dropped)]:
        reply = decode(drv.clients[drv.names[i]].receive(request)[0]).payload
        assert isinstance(reply, UnmaskShares)
        for s in reply.shares:
            if s.owner == 4:
                got[s.kind][i + 1] = s.share
    assert len(got[KIND_SELF_MASK]) == 3 and len(got[KIND_MASK_KEY]) == 2
    with pytest.raises(ValueError, match="need 3"):
        shamir.combine(got[KIND_MASK_KEY], 3)
    with contextlib.suppress(ValueError):  # usually not even a 32-byte value
        guess = shamir.combine(got[KIND_MASK_KEY], 2)
        assert crypto.x25519_public(guess) != keys[4].mask_public
    for i, request in [(0, dropped), (2, survived)]:
        with pytest.raises(MessageRejected) as info:
            drv.clients[drv.names[i]].receive(request)
        assert info.value.reason is RejectReason.DUPLICATE
