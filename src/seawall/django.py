"""Django: ``MIDDLEWARE = ["seawall.django.SeawallMiddleware", ...]``.

See :mod:`seawall.contrib.django`.
"""

from __future__ import annotations

from seawall.contrib.django import (
    SeawallMiddleware,
    breaker,
    exempt,
    get_wall,
    limit,
    validate,
)

__all__ = ["SeawallMiddleware", "breaker", "exempt", "get_wall", "limit", "validate"]
