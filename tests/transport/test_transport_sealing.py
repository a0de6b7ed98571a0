import os
import stat
from pathlib import Path

import pytest

from fraudfl.errors import FraudflError
from fraudfl.transport.errors import RejectedMessage, RejectReason
from fraudfl.transport.sealing import EncryptionKey, load_public_hex, open_sealed, seal

AAD = b"envelope header"


@pytest.fixture(scope="module")
def keys() -> dict[str, EncryptionKey]:
    return {pid: EncryptionKey.generate(pid) for pid in ("aggregator", "bank-a", "bank-b")}


def reason(sealed: bytes, key: EncryptionKey, aad: bytes = AAD) -> RejectReason:
    with pytest.raises(RejectedMessage) as info:
        open_sealed(sealed, key, aad)
    return info.value.reason


def test_round_trip_single_recipient(keys: dict[str, EncryptionKey]) -> None:
    plaintext = os.urandom(10_000)
    sealed = seal(plaintext, {"bank-a": keys["bank-a"].public_bytes}, AAD)
    assert plaintext not in sealed
    assert open_sealed(sealed, keys["bank-a"], AAD) == plaintext


def test_multi_recipient_each_opens_others_cannot(keys: dict[str, EncryptionKey]) -> None:
    plaintext = b"global model v3" * 100
    recipients = {pid: keys[pid].public_bytes for pid in ("bank-a", "bank-b")}
    sealed = seal(plaintext, recipients, AAD)
    assert open_sealed(sealed, keys["bank-a"], AAD) == plaintext
    assert open_sealed(sealed, keys["bank-b"], AAD) == plaintext
    assert reason(sealed, keys["aggregator"]) is RejectReason.UNDECRYPTABLE
    # One ciphertext for all: far less than two copies of the plaintext.
    assert len(sealed) < len(plaintext) + 300


def test_empty_plaintext(keys: dict[str, EncryptionKey]) -> None:
    sealed = seal(b"", {"bank-a": keys["bank-a"].public_bytes}, AAD)
    assert open_sealed(sealed, keys["bank-a"], AAD) == b""


def test_wrong_aad_fails(keys: dict[str, EncryptionKey]) -> None:
    sealed = seal(b"share", {"bank-a": keys["bank-a"].public_bytes}, AAD)
    assert reason(sealed, keys["bank-a"], AAD + b"x") is RejectReason.UNDECRYPTABLE


def test_every_tampered_byte_is_detected(keys: dict[str, EncryptionKey]) -> None:
    sealed = seal(b"secret share", {"bank-a": keys["bank-a"].public_bytes}, AAD)
    for i in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[i] ^= 0x01
        with pytest.raises(RejectedMessage):
            open_sealed(bytes(tampered), keys["bank-a"], AAD)


def test_impostor_with_same_name_cannot_open(keys: dict[str, EncryptionKey]) -> None:
    sealed = seal(b"share", {"bank-a": keys["bank-a"].public_bytes}, AAD)
    assert reason(sealed, EncryptionKey.generate("bank-a")) is RejectReason.UNDECRYPTABLE


def test_truncated_and_garbage(keys: dict[str, EncryptionKey]) -> None:
    sealed = seal(b"share", {"bank-a": keys["bank-a"].public_bytes}, AAD)
    for cut in (0, 1, 3, 10, len(sealed) - 1):
        with pytest.raises(RejectedMessage):
            open_sealed(sealed[:cut], keys["bank-a"], AAD)
    assert reason(b"\x02" + sealed[1:], keys["bank-a"]) is RejectReason.UNSUPPORTED_VERSION


def test_key_files(tmp_path: Path) -> None:
    key = EncryptionKey.generate("bank-a")
    key_path, pub_path = key.save(tmp_path)
    assert key_path.name == "bank-a.enc.key" and pub_path.name == "bank-a.enc.pub"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    loaded = EncryptionKey.load("bank-a", key_path)
    assert loaded.public_bytes == key.public_bytes == load_public_hex(pub_path)
    with pytest.raises(FraudflError, match="refusing to overwrite"):
        key.save(tmp_path)
    key_path.chmod(0o644)
    with pytest.raises(FraudflError, match="chmod 600"):
        EncryptionKey.load("bank-a", key_path)
    with pytest.raises(FraudflError, match="cannot read"):
        EncryptionKey.load("bank-a", tmp_path / "missing.enc.key")


def test_allowlist_carries_encryption_keys_backward_compatibly(tmp_path: Path) -> None:
    from fraudfl.identity import Allowlist, Identity

    ident = Identity.generate("bank-a")
    enc = EncryptionKey.generate("bank-a")
    allow = Allowlist()
    allow.enroll("bank-a", ident.public_bytes)
    plain_path = tmp_path / "plain.json"
    allow.save(plain_path)
    assert "encryption_keys" not in plain_path.read_text()
    allow.enroll_encryption_key("bank-a", enc.public_bytes)
    path = tmp_path / "allow.json"
    allow.save(path)
    loaded = Allowlist.load(path)
    assert loaded.encryption_key_of("bank-a") == enc.public_bytes
    assert Allowlist.load(plain_path).encryption_key_of("bank-a") is None
    with pytest.raises(FraudflError, match="not enrolled"):
        allow.enroll_encryption_key("bank-z", enc.public_bytes)


def test_allowlist_refuses_unusable_or_silently_replaced_encryption_keys() -> None:
    from fraudfl.identity import Allowlist, Identity

    allow = Allowlist()
    allow.enroll("bank-a", Identity.generate("bank-a").public_bytes)
    with pytest.raises(FraudflError, match="not a usable X25519"):
        allow.enroll_encryption_key("bank-a", bytes(32))  # small order: shared secret all zero
    first = EncryptionKey.generate("bank-a").public_bytes
    allow.enroll_encryption_key("bank-a", first)
    allow.enroll_encryption_key("bank-a", first)  # re-enrolling the same key is fine
    with pytest.raises(FraudflError, match="different encryption key"):
        allow.enroll_encryption_key("bank-a", EncryptionKey.generate("bank-a").public_bytes)
    assert allow.encryption_key_of("bank-a") == first
