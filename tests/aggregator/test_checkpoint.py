from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fraudfl.checkpoint import atomic_write_json, load_checkpoint, save_checkpoint
from fraudfl.errors import FraudflError


def test_roundtrip_with_blobs(tmp_path: Path) -> None:
    model = np.arange(10, dtype=np.float32)
    path = tmp_path / "sub" / "ckpt.bin"
    save_checkpoint(path, {"round": 3, "stage": "unmask"}, {"model": model.tobytes(), "x": b""})
    loaded = load_checkpoint(path)
    assert loaded is not None
    state, blobs = loaded
    assert state == {"round": 3, "stage": "unmask"}
    assert np.array_equal(np.frombuffer(blobs["model"], dtype=np.float32), model)
    assert blobs["x"] == b""
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.bin"]  # no temp file left


def test_missing_is_none(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path / "none.bin") is None


def test_overwrite_replaces(tmp_path: Path) -> None:
    path = tmp_path / "c.bin"
    save_checkpoint(path, {"v": 1}, {"m": b"a" * 100})
    save_checkpoint(path, {"v": 2}, {"m": b"b"})
    loaded = load_checkpoint(path)
    assert loaded is not None and loaded[0] == {"v": 2} and loaded[1]["m"] == b"b"


def test_corruption_detected(tmp_path: Path) -> None:
    path = tmp_path / "c.bin"
    save_checkpoint(path, {"v": 1}, {"m": b"abcdef"})
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(FraudflError, match="blob 'm' is corrupt"):
        load_checkpoint(path)
    path.write_bytes(raw[:-3])
    with pytest.raises(FraudflError, match="corrupt"):
        load_checkpoint(path)
    path.write_bytes(b"garbage")
    with pytest.raises(FraudflError, match="not a fraudfl checkpoint"):
        load_checkpoint(path)


def test_atomic_json(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "a.json", {"b": [1, 2]})
    assert (tmp_path / "a.json").read_text().startswith("{")


@pytest.mark.parametrize("head", [
    b"[" * 100_000 + b"]" * 100_000,  # RecursionError in json.loads before the depth limit
    b'{"state": {}, "blobs": [{"name": "x"}]}',  # a blob entry without length or digest
    b'{"state": {}, "blobs": [{"name": "x", "length": -5, "sha256": ""}]}',
    b'{"state": {}, "blobs": 7}',
    b"\xff\xfe",
])
def test_malformed_header_is_a_one_line_user_error(tmp_path: Path, head: bytes) -> None:
    path = tmp_path / "svc.ckpt"
    path.write_bytes(b"FFLCKPT1" + len(head).to_bytes(4, "big") + head)
    with pytest.raises(FraudflError, match=r"svc\.ckpt: checkpoint"):
        load_checkpoint(path)
