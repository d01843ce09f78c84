"""The circuit-breaker engine (pybreaker's interface, resilience4j's state machine).

See :mod:`seawall._breaker.engine` for the theory of operation and
docs/breakers.md for the semantics.
"""

from __future__ import annotations

from seawall._breaker.engine import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    Breaker,
    BreakerConfig,
    CircuitBreakerOpen,
)
from seawall._breaker.registry import BreakerRegistry, breakers

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "Breaker",
    "BreakerConfig",
    "BreakerRegistry",
    "CircuitBreakerOpen",
    "breakers",
]
