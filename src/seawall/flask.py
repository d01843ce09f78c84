"""Flask: ``from seawall.flask import Seawall``. See :mod:`seawall.contrib.flask`."""

from __future__ import annotations

from seawall.contrib.flask import Seawall
from seawall.handlers import exempt

__all__ = ["Seawall", "exempt"]
