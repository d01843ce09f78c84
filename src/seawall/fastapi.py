"""FastAPI and Starlette: ``from seawall.fastapi import SeawallMiddleware, limit``.

See :mod:`seawall.contrib.fastapi`.
"""

from __future__ import annotations

from seawall.contrib.fastapi import (
    SeawallMiddleware,
    breaker,
    document,
    limit,
    problem_responses,
    validate,
)
from seawall.handlers import exempt

__all__ = [
    "SeawallMiddleware",
    "breaker",
    "document",
    "exempt",
    "limit",
    "problem_responses",
    "validate",
]
