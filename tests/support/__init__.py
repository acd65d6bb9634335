"""Helpers shared by tests/unit, tests/inprocess and tests/e2e (and the demo and benchmarks)."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
VECTORS = REPO / "tests" / "vectors"
