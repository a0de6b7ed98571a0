from __future__ import annotations

import sys
from pathlib import Path

# require_binary (skip locally, fail in CI) lives with the real-Prometheus helper.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
