"""Fixtures of the breaker tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from seawall.resilience import breakers
from seawall.testing import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when told."""
    return ManualClock()


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    """Named breakers never leak from one test into another."""
    breakers.clear()
    yield
    breakers.clear()
