"""The layers: one module per concern, pure policy (no I/O, no asyncio, no framework)."""

from __future__ import annotations

from seawall.layers.errors import ErrorCapture
from seawall.layers.timing import Timing

__all__ = ["ErrorCapture", "Timing", "recommended_layers"]


def recommended_layers() -> list[object]:
    """
    The stack ``Seawall(app)`` uses when no layers are given, on in-memory defaults.

    Timing and ErrorCapture today; each later layer joins here as it lands
    (see docs/architecture.md for the current list).
    """
    return [Timing(), ErrorCapture()]
