"""The layers: one module per concern, pure policy (no I/O, no asyncio, no framework).

Names are imported on first use, so ``import seawall`` loads only what an
app uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from seawall.layers.errors import ErrorCapture
    from seawall.layers.timing import Timing

__all__ = [
    "CircuitBreaker",
    "ConcurrencyLimit",
    "Dashboard",
    "ErrorCapture",
    "Health",
    "LoadShedding",
    "Metrics",
    "RateLimit",
    "Timeout",
    "Timing",
    "Validation",
    "recommended_layers",
]

#: Public layer name -> defining module.
LAYER_MODULES: dict[str, str] = {
    "Timing": "seawall.layers.timing",
    "ErrorCapture": "seawall.layers.errors",
    "Health": "seawall.layers.health",
    "Metrics": "seawall.layers.metrics",
    "Dashboard": "seawall.layers.dashboard",
    "LoadShedding": "seawall.layers.shedding",
    "ConcurrencyLimit": "seawall.layers.concurrency",
    "RateLimit": "seawall.layers.ratelimit",
    "Validation": "seawall.layers.validation",
    "CircuitBreaker": "seawall.layers.breaker",
    "Timeout": "seawall.layers.timeout",
}


def __getattr__(name: str) -> Any:
    module = LAYER_MODULES.get(name)
    if module is None:
        msg = f"module 'seawall.layers' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def recommended_layers() -> list[object]:
    """The stack ``Seawall(app)`` uses when no layers are given, on in-memory defaults.

    Timing, ErrorCapture, ``Validation()`` request limits (1 MB bodies, JSON
    depth 32, ...; no schemas, no threat detection) and a per-route
    ``CircuitBreaker`` that opens at a 50% failure rate over at least 20
    calls. No rate limit: a limit keyed by client address must not be on
    before the app's proxies are named (behind one, every client would share
    one bucket). See docs/architecture.md for why and how to add one.
    """
    from seawall.layers.breaker import CircuitBreaker
    from seawall.layers.errors import ErrorCapture
    from seawall.layers.timing import Timing
    from seawall.layers.validation import Validation

    return [
        Timing(),
        ErrorCapture(),
        Validation(),
        # Per route, so one broken endpoint cannot take the whole service down with it.
        CircuitBreaker(per="route", failure_rate_threshold=0.5),
    ]
