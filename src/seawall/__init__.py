"""seawall: a wall of composable protection layers around any ASGI or WSGI app.

::

    from seawall import Seawall, Timing, ErrorCapture
    app = Seawall(app, layers=[Timing(), ErrorCapture()])

Layers and handler decorators are imported on first use, so an app pays
only for what it uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from seawall._app import Seawall, detect_interface
from seawall._core.client import ClientResolver
from seawall._core.decisions import CONTINUE, ReadBody, ReplaceBody, Respond
from seawall._core.layer import Outcome, ResponseHead
from seawall._core.request import RequestView
from seawall._log import current_request, request_id
from seawall.exceptions import (
    CircuitOpen,
    ConfigurationError,
    Overloaded,
    RateLimited,
    Rejected,
    RequestTimeout,
    SeawallError,
    StorageError,
    ValidationFailed,
)
from seawall.layers import LAYER_MODULES, recommended_layers
from seawall.logging import configure_logging
from seawall.stats import stats

if TYPE_CHECKING:
    from seawall.layers.errors import ErrorCapture
    from seawall.layers.timing import Timing

__version__ = "0.1.0"

#: Public name -> defining module, imported on first attribute access.
_LAZY: dict[str, str] = {
    **LAYER_MODULES,
    "limit": "seawall.layers.ratelimit",
    "breaker": "seawall.layers.breaker",
    "protect": "seawall.resilience",
    "validate": "seawall.layers.validation",
    "exempt": "seawall.handlers",
}

__all__ = [
    "CONTINUE",
    "CircuitBreaker",
    "CircuitOpen",
    "ClientResolver",
    "ConcurrencyLimit",
    "ConfigurationError",
    "Dashboard",
    "ErrorCapture",
    "Health",
    "LoadShedding",
    "Metrics",
    "Outcome",
    "Overloaded",
    "RateLimit",
    "RateLimited",
    "ReadBody",
    "Rejected",
    "ReplaceBody",
    "RequestTimeout",
    "RequestView",
    "Respond",
    "ResponseHead",
    "Seawall",
    "SeawallError",
    "StorageError",
    "Timeout",
    "Timing",
    "Validation",
    "ValidationFailed",
    "__version__",
    "breaker",
    "configure_logging",
    "current_request",
    "detect_interface",
    "exempt",
    "limit",
    "protect",
    "recommended_layers",
    "request_id",
    "stats",
    "validate",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'seawall' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
