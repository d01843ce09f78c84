"""Named breakers shared by the layer, the handler decorator and ``@protect``.

``CircuitBreaker(breaker_name="payments")``, ``@seawall.breaker("payments")``
and ``@seawall.protect(breaker="payments")`` all reach the same
:class:`~seawall._breaker.engine.Breaker` through :data:`breakers`, so the
calls of a handler and of the outbound client it uses can trip one breaker.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from seawall._breaker.engine import Breaker
from seawall.exceptions import ConfigurationError

__all__ = ["BreakerRegistry", "breakers"]


class BreakerRegistry:
    """Breakers by name; thread-safe. Use the process-wide :data:`breakers`."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[Breaker, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BreakerRegistry({sorted(self._items)!r})"

    def get(self, name: str, **options: Any) -> Breaker:
        """The breaker called *name*, created with *options* the first time.

        Raises:
            ConfigurationError: *name* exists with other options (two parts of
                an app disagreeing silently about one breaker is a bug).
        """
        item = self._items.get(name)
        if item is None:
            with self._lock:
                item = self._items.get(name)
                if item is None:
                    item = (Breaker(name, **options), dict(options))
                    self._items[name] = item
        if options and item[1] != options:
            msg = (
                f"breaker {name!r} already exists with other settings "
                f"({item[1]!r}); configure it in one place"
            )
            raise ConfigurationError(msg)
        return item[0]

    def register(self, breaker: Breaker) -> Breaker:
        """Add a breaker built elsewhere under its name (replacing none)."""
        name = str(breaker.name)
        with self._lock:
            existing = self._items.get(name)
            if existing is not None and existing[0] is not breaker:
                msg = f"a breaker named {name!r} is already registered"
                raise ConfigurationError(msg)
            self._items[name] = (breaker, {})
        return breaker

    def __getitem__(self, name: str) -> Breaker:
        return self._items[name][0]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def remove(self, name: str) -> None:
        """Forget the breaker called *name* (if any)."""
        with self._lock:
            self._items.pop(name, None)

    def clear(self) -> None:
        """Forget every breaker (tests)."""
        with self._lock:
            self._items.clear()

    def reset(self) -> None:
        """Close every breaker and zero its statistics."""
        for breaker, _ in list(self._items.values()):
            breaker.reset()

    def stats(self) -> dict[str, Any]:
        """Every breaker's :meth:`~Breaker.stats`, by name."""
        return {name: item[0].stats() for name, item in list(self._items.items())}


#: The process-wide registry.
breakers = BreakerRegistry()
