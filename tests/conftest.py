"""Shared pytest set-up: paths to the real data in ../shared, skipped cleanly where absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAIRS = Path(os.environ.get("DSMAR_PAIRS", REPO.parent / "shared" / "data" / "pairs"))

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def pairs_dir() -> Path:
    if not (PAIRS / "pairs.csv").exists():
        pytest.skip(f"real pairs not found at {PAIRS} (set DSMAR_PAIRS)")
    return PAIRS
