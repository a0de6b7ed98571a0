"""Long-term Ed25519 identities of banks and the aggregator, and the enrolment allowlist.

Private keys are stored as PKCS#8 PEM files readable only by their owner (0600); public keys as raw
32-byte hex. The allowlist is a JSON object ``{"participants": {id: public_key_hex},
"roles": {id: role}}`` written by ``fraudfl keys enroll`` and read by the aggregator (and by banks,
to verify one another's keys). It may also carry ``"encryption_keys": {id: x25519_public_key_hex}``,
the long-term keys that ``fraudfl.transport.sealing`` encrypts payloads to.

Every participant has a role: ``aggregator``, ``bank`` or ``auditor``. Only banks may be
participants of a round; banks refuse a round whose participant list names anyone else, so the
aggregator's own key can never stand in for a bank (a Sybil that would isolate one bank's input).
A file written before roles existed is refused with the command that migrates it explicitly
(``fraudfl keys migrate --aggregator ID``): guessing which entry is the aggregator would defeat
the purpose.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fraudfl.errors import FraudflError
from fraudfl.vocabulary import valid_id

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
# Ids name key files and Kafka topics (``fraudfl.<federation>.bank.<id>``), so one pattern
# holds for federation and participant ids everywhere (keys CLI, allowlist, config, topics).

Role = Literal["aggregator", "bank", "auditor"]
ROLES: tuple[Role, ...] = get_args(Role)


def check_id(kind: str, value: str) -> str:
    """``value`` if it is a valid federation or participant id, else a FraudflError."""
    if not valid_id(value):
        raise FraudflError(
            f"{kind} {value!r} must be 1-64 characters of letters, digits, '_' or '-'"
        )
    return value


@dataclass(frozen=True)
class Identity:
    """A participant's name and Ed25519 signing key."""

    participant_id: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, participant_id: str) -> Identity:
        return cls(check_id("participant id", participant_id), Ed25519PrivateKey.generate())

    @property
    def public_bytes(self) -> bytes:
        return public_key_bytes(self.private_key.public_key())

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)

    def save(self, directory: Path) -> tuple[Path, Path]:
        """Write ``<id>.key`` (0600) and ``<id>.pub``; refuses to overwrite an existing key."""
        return save_key_pair(
            directory, f"{self.participant_id}.key", self.private_key, self.public_bytes
        )

    @classmethod
    def load(cls, participant_id: str, key_path: Path) -> Identity:
        key = load_private_key(key_path, "identity key")
        if not isinstance(key, Ed25519PrivateKey):
            raise FraudflError(f"{key_path}: expected an Ed25519 private key")
        return cls(participant_id, key)


def save_key_pair(
    directory: Path, key_name: str, private_key: PrivateKeyTypes, public_raw: bytes
) -> tuple[Path, Path]:
    """Write ``key_name`` (PKCS#8 PEM, created 0600, never overwritten) and its ``.pub`` (hex)."""
    if directory.exists() and not directory.is_dir():
        raise FraudflError(f"{directory}: exists and is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FraudflError(f"{directory}: cannot create the key directory: {exc.strerror}") from exc
    key_path = directory / key_name
    pub_path = key_path.with_suffix(".pub")
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        # O_EXCL with the mode at creation: the key is never readable by others, even briefly.
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise FraudflError(f"{key_path}: key file already exists; refusing to overwrite") from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub_path.write_text(public_raw.hex() + "\n")
    return key_path, pub_path


def load_private_key(key_path: Path, what: str) -> PrivateKeyTypes:
    """A PEM private key from a file only its owner can read; ``what`` names it in errors."""
    try:
        mode = key_path.stat().st_mode
        data = key_path.read_bytes()
    except OSError as exc:
        raise FraudflError(f"{key_path}: cannot read {what}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise FraudflError(
            f"{key_path}: {what} is readable by group/others; run chmod 600 on it"
        )
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise FraudflError(f"{key_path}: not a PEM private key") from exc


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_public_key(raw: bytes) -> Ed25519PublicKey:
    if len(raw) != PUBLIC_KEY_BYTES:
        raise FraudflError(f"public key must be {PUBLIC_KEY_BYTES} bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``data`` under ``public_key``."""
    if len(signature) != SIGNATURE_BYTES or len(public_key) != PUBLIC_KEY_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except InvalidSignature:
        return False
    return True


class KeyConflict(FraudflError):
    """The participant is enrolled with a different key (rotating it must be explicit)."""


@dataclass
class Allowlist:
    """Enrolled participants and their Ed25519 public keys."""

    participants: dict[str, bytes] = field(default_factory=dict)
    encryption_keys: dict[str, bytes] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=dict)

    def enroll(self, participant_id: str, public_key: bytes, role: Role = "bank") -> None:
        check_id("participant id", participant_id)
        load_public_key(public_key)
        if role not in ROLES:
            raise FraudflError(f"role {role!r} must be one of {', '.join(ROLES)}")
        existing = self.participants.get(participant_id)
        if existing is not None and existing != public_key:
            raise KeyConflict(
                f"participant {participant_id!r} is already enrolled with a different key"
            )
        existing_role = self.roles.get(participant_id)
        if existing is not None and existing_role is not None and existing_role != role:
            raise KeyConflict(
                f"participant {participant_id!r} is already enrolled as {existing_role}"
            )
        # One key for two ids would let either act as the other; an encryption key here means
        # the .pub files were swapped (both are 32 bytes of hex).
        self._check_unused(participant_id, public_key, "identity")
        self.participants[participant_id] = public_key
        self.roles[participant_id] = role

    def role_of(self, participant_id: str) -> Role | None:
        return self.roles.get(participant_id)

    def members(self, role: Role) -> tuple[str, ...]:
        """The enrolled participants with ``role``, sorted."""
        return tuple(sorted(p for p, r in self.roles.items() if r == role))

    def remove(self, participant_id: str) -> None:
        """Forget a participant's keys and role (before enrolling it again: rotation)."""
        for table in (self.participants, self.encryption_keys, self.roles):
            table.pop(participant_id, None)

    def _check_unused(self, participant_id: str, public_key: bytes, kind: str) -> None:
        for other_kind, keys in (("identity", self.participants),
                                 ("encryption", self.encryption_keys)):
            for other, key in keys.items():
                if key == public_key and (other, other_kind) != (participant_id, kind):
                    raise FraudflError(
                        f"this {kind} key for {participant_id!r} is already enrolled as the "
                        f"{other_kind} key of {other!r}; every participant needs its own keys"
                    )

    def check_own_keys(
        self, participant_id: str, public_key: bytes, encryption_public_key: bytes, source: Path,
        role: Role | None = None,
    ) -> None:
        """Refuse to run a participant whose keys are not the enrolled ones.

        Everyone else would drop its messages as unsigned by the enrolled key (or fail to open
        what was sealed to the enrolled encryption key), so the service would wait forever.
        """
        enrolled = self.participants.get(participant_id)
        if enrolled is None:
            raise FraudflError(
                f"{source}: {participant_id!r} is not enrolled; enrol its public key "
                "(fraudfl keys enroll) or fix the participant id"
            )
        if enrolled != public_key:
            raise FraudflError(
                f"{source}: the identity key is not the one enrolled for {participant_id!r}"
            )
        if role is not None and self.roles.get(participant_id) != role:
            raise FraudflError(
                f"{source}: {participant_id!r} is enrolled as {self.roles.get(participant_id)}, "
                f"not as {role}"
            )
        enrolled_enc = self.encryption_keys.get(participant_id)
        if enrolled_enc is not None and enrolled_enc != encryption_public_key:
            raise FraudflError(
                f"{source}: the encryption key is not the one enrolled for {participant_id!r}"
            )

    def key_of(self, participant_id: str) -> bytes | None:
        return self.participants.get(participant_id)

    def enroll_encryption_key(self, participant_id: str, public_key: bytes) -> None:
        """Record an enrolled participant's X25519 public key (32 raw bytes)."""
        if participant_id not in self.participants:
            raise FraudflError(f"participant {participant_id!r} is not enrolled")
        if len(public_key) != PUBLIC_KEY_BYTES:
            raise FraudflError(
                f"encryption key must be {PUBLIC_KEY_BYTES} bytes, got {len(public_key)}"
            )
        try:
            # A small-order point gives an all-zero shared secret (the library refuses it), so
            # every later seal to this participant would fail: refuse it at enrolment instead.
            X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(public_key))
        except ValueError as exc:
            raise FraudflError("encryption key is not a usable X25519 public key") from exc
        existing = self.encryption_keys.get(participant_id)
        if existing is not None and existing != public_key:
            raise KeyConflict(
                f"participant {participant_id!r} already has a different encryption key"
            )
        self._check_unused(participant_id, public_key, "encryption")
        self.encryption_keys[participant_id] = public_key

    def encryption_key_of(self, participant_id: str) -> bytes | None:
        return self.encryption_keys.get(participant_id)

    def __contains__(self, participant_id: object) -> bool:
        return participant_id in self.participants

    def save(self, path: Path) -> None:
        body: dict[str, dict[str, str]] = {
            "participants": {k: v.hex() for k, v in sorted(self.participants.items())},
            "roles": dict(sorted(self.roles.items())),
        }
        if self.encryption_keys:
            body["encryption_keys"] = {
                k: v.hex() for k, v in sorted(self.encryption_keys.items())
            }
        tmp = path.with_suffix(path.suffix + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(body, indent=2) + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            raise FraudflError(f"{path}: cannot write allowlist: {exc.strerror}") from exc

    @classmethod
    def load(cls, path: Path, *, migrate_aggregator: str | None = None) -> Allowlist:
        """Read an allowlist; ``migrate_aggregator`` gives a file without roles (written before
        they existed) its roles: that id the aggregator, everyone else a bank."""
        try:
            body = json.loads(path.read_text())
        except OSError as exc:
            raise FraudflError(f"{path}: cannot read allowlist: {exc.strerror}") from exc
        except json.JSONDecodeError as exc:
            raise FraudflError(f"{path}: allowlist is not valid JSON ({exc.msg})") from exc
        entries = body.get("participants") if isinstance(body, dict) else None
        if not isinstance(entries, dict):
            raise FraudflError(f"{path}: expected an object with a 'participants' mapping")
        roles = body.get("roles")
        if roles is not None and migrate_aggregator is not None:
            raise FraudflError(f"{path}: already has roles; nothing to migrate")
        if roles is None:
            if migrate_aggregator is None:
                raise FraudflError(
                    f"{path}: allowlist has no 'roles' (written before roles existed); run "
                    f"fraudfl keys migrate --allowlist {path} --aggregator AGGREGATOR_ID"
                )
            if migrate_aggregator not in entries:
                raise FraudflError(f"{path}: {migrate_aggregator!r} is not enrolled")
            roles = {pid: "aggregator" if pid == migrate_aggregator else "bank" for pid in entries}
        if not isinstance(roles, dict):
            raise FraudflError(f"{path}: 'roles' must be an object")
        unknown = sorted(set(roles) - set(entries))
        if unknown:
            raise FraudflError(f"{path}: roles.{unknown[0]}: not an enrolled participant")
        allow = cls()
        for pid, hexkey in entries.items():
            try:
                raw = bytes.fromhex(hexkey)
            except (ValueError, TypeError) as exc:
                raise FraudflError(f"{path}: participants.{pid}: not a hex public key") from exc
            role = roles.get(pid)
            if role not in ROLES:
                raise FraudflError(
                    f"{path}: roles.{pid}: expected one of {', '.join(ROLES)}, got {role!r}"
                )
            try:
                allow.enroll(pid, raw, role)
            except (FraudflError, ValueError) as exc:
                raise FraudflError(f"{path}: participants.{pid}: {exc}") from exc
        enc_entries = body.get("encryption_keys", {})
        if not isinstance(enc_entries, dict):
            raise FraudflError(f"{path}: 'encryption_keys' must be an object")
        for pid, hexkey in enc_entries.items():
            try:
                raw = bytes.fromhex(hexkey)
            except (ValueError, TypeError) as exc:
                raise FraudflError(f"{path}: encryption_keys.{pid}: not a hex public key") from exc
            try:
                allow.enroll_encryption_key(pid, raw)
            except FraudflError as exc:
                raise FraudflError(f"{path}: encryption_keys.{pid}: {exc}") from exc
        return allow
