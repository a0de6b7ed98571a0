"""End-to-end encryption of payloads, so that nothing secret depends on the broker.

Each participant has a long-term X25519 key (``<id>.enc.key`` 0600, ``<id>.enc.pub``) next to its
Ed25519 identity; the public halves live in the ``Allowlist``. ``seal`` encrypts a payload once
under a fresh random content key (AES-256-GCM) and wraps that key for each recipient with
ephemeral-static X25519 + HKDF-SHA256 + AES-256-GCM, so a model broadcast to twenty banks costs
one ciphertext, not twenty. Both layers authenticate the associated data (the envelope header:
sender, recipient, round, stage, message id), so a sealed payload cannot be replayed inside
another envelope. Sender authenticity comes from the envelope's Ed25519 signature over the
ciphertext.

Sealed format (version 1)::

    version u8 | recipient count u16
    per recipient: id (u8 length + UTF-8) | ephemeral X25519 public 32B | wrapped key 48B
    nonce 12B | AES-256-GCM ciphertext + tag
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fraudfl.errors import FraudflError
from fraudfl.identity import load_private_key, save_key_pair
from fraudfl.transport.errors import RejectedMessage, RejectReason

SEAL_VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_WRAPPED_BYTES = KEY_BYTES + TAG_BYTES
_WRAP_NONCE = bytes(NONCE_BYTES)  # each wrapping key is used once, so a fixed nonce is safe
_HKDF_INFO = b"fraudfl.transport.seal.v1"
_COUNT = struct.Struct(">BH")


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class EncryptionKey:
    """A participant's long-term X25519 key for receiving sealed payloads."""

    participant_id: str
    private_key: X25519PrivateKey

    @classmethod
    def generate(cls, participant_id: str) -> EncryptionKey:
        return cls(participant_id, X25519PrivateKey.generate())

    @property
    def public_bytes(self) -> bytes:
        return _raw_public(self.private_key.public_key())

    def save(self, directory: Path) -> tuple[Path, Path]:
        """Write ``<id>.enc.key`` (0600, PKCS#8 PEM) and ``<id>.enc.pub`` (hex); never overwrite."""
        return save_key_pair(
            directory, f"{self.participant_id}.enc.key", self.private_key, self.public_bytes
        )

    @classmethod
    def load(cls, participant_id: str, key_path: Path) -> EncryptionKey:
        key = load_private_key(key_path, "encryption key")
        if not isinstance(key, X25519PrivateKey):
            raise FraudflError(f"{key_path}: expected an X25519 private key")
        return cls(participant_id, key)


def load_public_hex(path: Path) -> bytes:
    """Read an ``<id>.enc.pub`` file."""
    try:
        raw = bytes.fromhex(path.read_text().strip())
    except OSError as exc:
        raise FraudflError(f"{path}: cannot read public key: {exc.strerror}") from exc
    except ValueError as exc:
        raise FraudflError(f"{path}: not a hex public key") from exc
    if len(raw) != KEY_BYTES:
        raise FraudflError(f"{path}: public key must be {KEY_BYTES} bytes, got {len(raw)}")
    return raw


def _kek(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=None,
        info=_HKDF_INFO + ephemeral_public + recipient_public,
    ).derive(shared)


def seal(plaintext: bytes, recipients: Mapping[str, bytes], aad: bytes) -> bytes:
    """Encrypt ``plaintext`` so that only ``recipients`` (id -> X25519 public key) can open it."""
    if not recipients:
        raise ValueError("seal needs at least one recipient")
    if len(recipients) >= 2**16:
        raise ValueError("too many recipients")
    content_key = AESGCM.generate_key(bit_length=256)
    parts = [_COUNT.pack(SEAL_VERSION, len(recipients))]
    for participant_id, public in sorted(recipients.items()):
        pid = participant_id.encode()
        if not 1 <= len(pid) <= 255:
            raise ValueError(f"recipient id {participant_id!r} must be 1-255 bytes")
        if len(public) != KEY_BYTES:
            raise ValueError(f"encryption key of {participant_id!r} must be {KEY_BYTES} bytes")
        ephemeral = X25519PrivateKey.generate()
        ephemeral_public = _raw_public(ephemeral.public_key())
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(public))
        kek = _kek(shared, ephemeral_public, public)
        wrapped = AESGCM(kek).encrypt(_WRAP_NONCE, content_key, aad + pid)
        parts.append(bytes([len(pid)]) + pid + ephemeral_public + wrapped)
    nonce = os.urandom(NONCE_BYTES)
    parts.append(nonce)
    parts.append(AESGCM(content_key).encrypt(nonce, plaintext, aad))
    return b"".join(parts)


def open_sealed(sealed: bytes, key: EncryptionKey, aad: bytes) -> bytes:
    """Decrypt a payload sealed to ``key``'s owner, or raise :class:`RejectedMessage`."""
    if len(sealed) < _COUNT.size:
        raise RejectedMessage(RejectReason.MALFORMED, "sealed payload truncated")
    version, count = _COUNT.unpack_from(sealed)
    if version != SEAL_VERSION:
        raise RejectedMessage(RejectReason.UNSUPPORTED_VERSION, f"seal version {version}")
    me = key.participant_id.encode()
    pos = _COUNT.size
    entry: tuple[bytes, bytes] | None = None
    for _ in range(count):
        if pos >= len(sealed):
            raise RejectedMessage(RejectReason.MALFORMED, "sealed recipient list truncated")
        length = sealed[pos]
        end = pos + 1 + length + KEY_BYTES + _WRAPPED_BYTES
        if length == 0 or end > len(sealed):
            raise RejectedMessage(RejectReason.MALFORMED, "sealed recipient entry truncated")
        pid = sealed[pos + 1 : pos + 1 + length]
        if pid == me:
            eph_start = pos + 1 + length
            entry = (
                sealed[eph_start : eph_start + KEY_BYTES],
                sealed[eph_start + KEY_BYTES : end],
            )
        pos = end
    if len(sealed) < pos + NONCE_BYTES + TAG_BYTES:
        raise RejectedMessage(RejectReason.MALFORMED, "sealed ciphertext truncated")
    if entry is None:
        raise RejectedMessage(RejectReason.UNDECRYPTABLE, f"not sealed to {key.participant_id!r}")
    ephemeral_public, wrapped = entry
    try:
        shared = key.private_key.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
        kek = _kek(shared, ephemeral_public, key.public_bytes)
        content_key = AESGCM(kek).decrypt(_WRAP_NONCE, wrapped, aad + me)
        nonce = sealed[pos : pos + NONCE_BYTES]
        return AESGCM(content_key).decrypt(nonce, sealed[pos + NONCE_BYTES :], aad)
    except (InvalidTag, ValueError) as exc:
        raise RejectedMessage(
            RejectReason.UNDECRYPTABLE, "sealed payload failed authentication"
        ) from exc
