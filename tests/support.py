"""Helpers shared by test modules (fixtures live in conftest.py; test modules import only
from here, conftest and the other support modules, never from each other)."""

from __future__ import annotations

import os

import pytest


def unavailable(reason: str) -> None:
    """Skip a test whose service is missing, or fail it where the services are required
    (``STREAMSIDE_REQUIRE_SERVICES=1``, as in CI)."""
    if os.environ.get("STREAMSIDE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (required here: STREAMSIDE_REQUIRE_SERVICES=1)")
    pytest.skip(reason)
