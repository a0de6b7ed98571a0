from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.rounds.federation import Federation, make_federation


@pytest.fixture()
def federation_factory(tmp_path: Path) -> Callable[..., Federation]:
    def factory(**kwargs: Any) -> Federation:
        return make_federation(tmp_path, **kwargs)

    return factory
