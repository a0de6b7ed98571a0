"""Shamir sharing, the neighbour graph, the PRG and the wire codec."""

from __future__ import annotations

import contextlib
import os
import tracemalloc

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudfl.identity import Identity
from fraudfl.secagg import MessageRejected, RejectReason, crypto, shamir
from fraudfl.secagg.graph import graph_seed, neighbours
from fraudfl.secagg.messages import (
    Abort,
    KeyEntry,
    KeyList,
    MaskedInput,
    NonceList,
    NonceReveal,
    RevealedShare,
    RoundSetup,
    ShareKeys,
    ShareRouting,
    SurvivorConfirm,
    SurvivorList,
    UnmaskRequest,
    UnmaskShares,
    decode,
    encode,
)
from fraudfl.secagg.params import RoundParams


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 12), data=st.data())
def test_shamir_any_t_shares_recover_and_fewer_do_not(n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    secret = os.urandom(32)
    shares = shamir.split(secret, shamir.points(range(n)), t)
    subset = data.draw(st.permutations(sorted(shares)))[:t]
    assert shamir.combine({x: shares[x] for x in subset}, t) == secret
    if t > 1:
        fewer = {x: shares[x] for x in subset[: t - 1]}
        with pytest.raises(ValueError, match="need"):
            shamir.combine(fewer, t)
        # Interpolating t-1 shares as if t-1 sufficed yields something else.
        with contextlib.suppress(ValueError):
            assert shamir.combine(fewer, t - 1) != secret


def test_shamir_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError):
        shamir.split(b"short", [1, 2], 2)
    with pytest.raises(ValueError):
        shamir.split(os.urandom(32), [1, 1], 2)
    with pytest.raises(ValueError):
        shamir.split(os.urandom(32), [1, 2], 3)


@pytest.mark.parametrize("n,k", [(10, 2), (20, 4), (21, 5), (50, 6), (7, 6), (5, 0)])
def test_graph_is_symmetric_regular_and_deterministic(n: int, k: int) -> None:
    seed = graph_seed("fed", 3, [f"b{i}" for i in range(n)])
    g = neighbours(n, k, seed)
    assert g == neighbours(n, k, seed)
    degree = n - 1 if k == 0 or k >= n - 1 else k + k % 2
    for i, nb in enumerate(g):
        assert i not in nb and len(nb) == degree
        assert all(i in g[j] for j in nb)
    other = neighbours(n, k, graph_seed("fed", 4, [f"b{i}" for i in range(n)]))
    assert other != g or degree == n - 1


def _keystream(seed: bytes, length: int, dtype: type) -> np.ndarray:
    """The documented PRG: AES-256-CTR from a zero counter block, little-endian words."""
    nbytes = length * np.dtype(dtype).itemsize
    enc = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    return np.frombuffer(enc.update(bytes(nbytes)), dtype=np.dtype(dtype).newbyteorder("<"))


def test_prg_is_seed_separated_and_word_size_independent() -> None:
    seed = bytes(range(32))
    a, b = np.zeros(1000, np.uint32), np.zeros(1000, np.uint32)
    crypto.apply_prg(a, seed, subtract=False)
    crypto.apply_prg(b, bytes(32), subtract=False)
    assert not np.array_equal(a, b)
    c = np.zeros(2000, np.uint16)
    crypto.apply_prg(c, seed, subtract=False)
    assert c.tobytes() == a.tobytes()


def _params() -> RoundParams:
    names = ("a", "b", "c")
    return RoundParams(names, 2, 0, 5, True, 32, 0.5, 10.0, graph_seed("f", 1, names))


@pytest.mark.parametrize(
    "payload",
    [
        RoundSetup(_params()),
        KeyList((KeyEntry(0, b"\x01" * 32, b"\x02" * 32, b"\x03" * 64, b"\x04" * 32),)),
        NonceReveal(b"\x0c" * 32),
        NonceList(((0, b"\x0d" * 32), (2, b"\x0e" * 32))),
        ShareKeys(((1, b"\x05" * 160), (2, b"\x06" * 160))),
        ShareRouting((0, 1, 2), ((1, b"\x07" * 160),)),
        SurvivorList((0, 2)),
        SurvivorConfirm((0, 1, 2), b"\x0f" * 32),
        UnmaskRequest((0, 2), ((0, b"\x0a" * 64), (2, b"\x0b" * 64)), b"\x10" * 32),
        UnmaskShares((RevealedShare(0, 0, b"\x08" * 66), RevealedShare(1, 1, b"\x09" * 66))),
        Abort("too few banks: below t"),
    ],
)
def test_codec_round_trip(payload: object) -> None:
    ident = Identity.generate("aggregator")
    data = encode(ident, "fed-1", 7, payload, stage=2)  # type: ignore[arg-type]
    msg = decode(data)
    assert msg.payload == payload
    h = msg.header
    assert (h.federation_id, h.round, h.sender) == ("fed-1", 7, "aggregator")
    assert ident.private_key.public_key().verify(msg.signature, bytes(msg.signed)) is None


def test_masked_input_layout_is_minimal() -> None:
    ident = Identity.generate("bank-1")
    vec = np.arange(1000, dtype=np.uint32)
    data = encode(ident, "f", 1, MaskedInput(vec))
    payload = decode(data).payload
    assert isinstance(payload, MaskedInput)
    np.testing.assert_array_equal(payload.vector, vec)
    overhead = len(data) - 4 * 1000
    assert overhead < 100  # header, 5-byte vector header, 64-byte signature


@pytest.mark.parametrize("cut", [1, 10, 30, 64, 65])
def test_every_truncation_is_rejected(cut: int) -> None:
    data = encode(Identity.generate("b"), "f", 1, UnmaskRequest((0, 1), ((1, bytes(64)),)))
    with pytest.raises(MessageRejected) as info:
        decode(data[:-cut])
    assert info.value.reason in (RejectReason.WRONG_LENGTH, RejectReason.MALFORMED)


def test_setup_with_invalid_parameters_is_malformed() -> None:
    names = ("a", "b")
    bad = RoundParams(names, 3, 0, 5, False, 32, 0.5, 1.0, graph_seed("f", 1, names))
    data = encode(Identity.generate("aggregator"), "f", 1, RoundSetup(bad))
    with pytest.raises(MessageRejected, match="threshold") as info:
        decode(data)
    assert info.value.reason is RejectReason.MALFORMED


def test_stage_must_match_type() -> None:
    data = bytearray(encode(Identity.generate("b"), "f", 1, UnmaskRequest((0,), ())))
    data[6] = 1  # stage byte
    with pytest.raises(MessageRejected, match="cannot be stage"):
        decode(bytes(data))


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_in_place_prg_matches_the_stream(dtype: type) -> None:
    seed = os.urandom(32)
    base = np.arange(1001, dtype=dtype)
    added = base.copy()
    crypto.apply_prg(added, seed, subtract=False)
    np.testing.assert_array_equal(added, base + _keystream(seed, 1001, dtype))
    crypto.apply_prg(added, seed, subtract=True)
    np.testing.assert_array_equal(added, base)


def test_decoding_a_large_setup_does_not_build_the_graph() -> None:
    """A setup is decoded (and validated) before its signature is checked: validating 4096
    participants with the full graph must not materialise 4096 groups of 4096 (1.6 GB)."""
    names = tuple(f"b{i:05d}" for i in range(4096))
    params = RoundParams(names, 2049, 0, 10, False, 32, 1.0, 1.0, graph_seed("f", 1, names))
    data = encode(Identity.generate("aggregator"), "f", 1, RoundSetup(params))
    tracemalloc.start()
    try:
        decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20
