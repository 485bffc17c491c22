"""Shared fixtures: global state is reset around every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from resilient_canvas._config import set_testing


@pytest.fixture(autouse=True)
def _reset_testing_mode() -> Iterator[None]:
    """Every test starts and ends outside testing mode."""
    set_testing(False)
    yield
    set_testing(False)
