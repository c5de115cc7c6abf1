"""Tests here run against the session's temporary Prefect server (tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _prefect(prefect_server: None) -> None:
    """Every test in this folder talks to the Prefect API."""
