from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

WriteFile = Callable[[str, str], Path]

SCHEMA_TOML = """\
label = "Class"
numeric = ["amount", "hour"]
categorical = ["channel"]
drop = ["id"]
"""

GOOD_ROWS = """\
id,amount,hour,channel,Class
1,10.5,3,pos,0
2,250.0,23,online,1
3,7.25,12,atm,0
"""


@pytest.fixture
def write(tmp_path: Path) -> WriteFile:
    """Write a text file into a fresh dataset directory and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return _write


@pytest.fixture
def dataset_dir(tmp_path: Path, write: WriteFile) -> Path:
    """Two valid banks, a test file and a schema."""
    write("schema.toml", SCHEMA_TOML)
    write("bank_a.csv", GOOD_ROWS)
    write("bank_b.csv", "id,amount,hour,channel,Class\n9,1.0,1,pos,1\n10,3.5,14,online,0\n")
    write("test.csv", "id,amount,hour,channel,Class\n11,2.0,2,contactless,0\n")
    return tmp_path
