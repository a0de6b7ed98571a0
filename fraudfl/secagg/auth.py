"""Checks shared by client and server: who signed a message, and hashing for idempotency."""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fraudfl.identity import Allowlist
from fraudfl.secagg.errors import MessageRejected, RejectReason
from fraudfl.secagg.messages import Message


def authenticate(allowlist: Allowlist, message: Message) -> None:
    """Raise unless ``message`` is signed by the enrolled key of its claimed sender.

    A signature that fails under the claimed sender's key but verifies under another enrolled
    key is reported as impersonation: an enrolled party tried to speak as someone else.
    """
    sender = message.header.sender
    key = allowlist.key_of(sender)
    if key is None:
        raise MessageRejected(RejectReason.UNKNOWN_SENDER, f"{sender!r} is not enrolled")
    if _verify(key, message.signature, message.signed):
        return
    for other, other_key in allowlist.participants.items():
        if other != sender and _verify(other_key, message.signature, message.signed):
            raise MessageRejected(
                RejectReason.IMPERSONATION, f"message claims to be from {sender!r} but {other!r} "
                "signed it",
            )
    raise MessageRejected(RejectReason.BAD_SIGNATURE, f"signature does not match {sender!r}'s key")


def _verify(public_key: bytes, signature: bytes, data: bytes | memoryview) -> bool:
    # fraudfl.identity.verify takes bytes; verifying the memoryview directly saves copying
    # a 4 MB masked vector per message.
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def digest(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)
