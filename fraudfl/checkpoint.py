"""Atomic state files: a service's checkpoint is either the old one or the new one, never half.

A checkpoint is one JSON document plus named binary blobs (model vectors, protocol state), all in
a single file so one rename publishes them together::

    b"FFLCKPT1" | u32 header length | header JSON | blob 0 | blob 1 | ...

The header lists each blob's name, length and SHA-256, so a torn or tampered file is detected
on load rather than half-restored. Writes go to a temporary file in the same directory, are
fsynced, renamed over the target, and the directory is fsynced so the rename survives a crash.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fraudfl import boundedjson
from fraudfl.errors import FraudflError

MAGIC = b"FFLCKPT1"
# Service state nests a few levels (participant -> client -> round -> replies); a tampered or
# corrupt file must end in a FraudflError, not a RecursionError.
MAX_HEADER_DEPTH = 64
_LEN = struct.Struct(">I")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: Path, body: Any) -> None:
    atomic_write_bytes(path, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())


def save_checkpoint(path: Path, header: Mapping[str, Any], blobs: Mapping[str, bytes]) -> None:
    """Write ``header`` (JSON-serialisable) and ``blobs`` to ``path`` atomically."""
    index = [
        {"name": name, "length": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
        for name, blob in blobs.items()
    ]
    head = json.dumps({"state": header, "blobs": index}, sort_keys=True).encode()
    parts = [MAGIC, _LEN.pack(len(head)), head, *blobs.values()]
    atomic_write_bytes(path, b"".join(parts))


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, bytes]] | None:
    """Read a checkpoint written by :func:`save_checkpoint`; ``None`` when there is none."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FraudflError(f"{path}: cannot read checkpoint: {exc.strerror}") from exc
    if raw[: len(MAGIC)] != MAGIC or len(raw) < len(MAGIC) + _LEN.size:
        raise FraudflError(f"{path}: not a fraudfl checkpoint")
    (head_len,) = _LEN.unpack_from(raw, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    try:
        head = boundedjson.loads(
            raw[start : start + head_len], max_bytes=head_len, max_depth=MAX_HEADER_DEPTH
        )
        state = head["state"]
        index = head["blobs"]
        pos = start + head_len
        blobs: dict[str, bytes] = {}
        for entry in index:
            length, name, sha = int(entry["length"]), str(entry["name"]), entry["sha256"]
            blob = raw[pos : pos + length]
            if length < 0 or len(blob) != length or hashlib.sha256(blob).hexdigest() != sha:
                raise FraudflError(f"{path}: checkpoint blob {name!r} is corrupt")
            blobs[name] = blob
            pos += len(blob)
    except (ValueError, KeyError, TypeError) as exc:
        raise FraudflError(f"{path}: checkpoint header is corrupt") from exc
    if pos != len(raw):
        raise FraudflError(f"{path}: checkpoint has trailing bytes")
    if not isinstance(state, dict):
        raise FraudflError(f"{path}: checkpoint state is not an object")
    return state, blobs
