"""
seawall: a wall of composable protection layers around any ASGI or WSGI app.

::

    from seawall import Seawall, Timing, ErrorCapture
    app = Seawall(app, layers=[Timing(), ErrorCapture()])
"""

from __future__ import annotations

from seawall._app import Seawall, detect_interface
from seawall._core.client import ClientResolver
from seawall._core.decisions import CONTINUE, ReadBody, ReplaceBody, Respond
from seawall._core.layer import Outcome, ResponseHead
from seawall._core.request import RequestView
from seawall._log import request_id
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
from seawall.layers import ErrorCapture, Timing, recommended_layers
from seawall.logging import configure_logging
from seawall.stats import stats

__version__ = "0.1.0"

__all__ = [
    "CONTINUE",
    "CircuitOpen",
    "ClientResolver",
    "ConfigurationError",
    "ErrorCapture",
    "Outcome",
    "Overloaded",
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
    "Timing",
    "ValidationFailed",
    "__version__",
    "configure_logging",
    "detect_interface",
    "recommended_layers",
    "request_id",
    "stats",
]
