"""Framework adapters: thin native faces over the same engine.

- :mod:`seawall.contrib.flask` (``from seawall.flask import Seawall``)
- :mod:`seawall.contrib.django` (``seawall.django.SeawallMiddleware``)
- :mod:`seawall.contrib.fastapi` (``from seawall.fastapi import SeawallMiddleware, limit``)

Each imports its framework itself; this module imports none, and holds the
few helpers the three share.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from seawall._app import Seawall
from seawall._core.stack import Stack
from seawall.exceptions import ConfigurationError
from seawall.handlers import exempt_layers

__all__ = ["Walls", "exempt_twin", "missing_extra", "settings_kwargs"]

_W = TypeVar("_W", bound=Seawall)


def missing_extra(adapter: str, extra: str, exc: ModuleNotFoundError) -> ModuleNotFoundError:
    """The error an adapter raises when its framework is not installed: it names the extra.

    Without it ``import seawall.django`` with no Django installed fails deep
    inside, on ``asgiref``, and says nothing of ``pip install 'seawall[django]'``.
    """
    # The distribution, not the submodule whose import found it missing.
    name = (exc.name or "").partition(".")[0] or None
    msg = f"{adapter} needs {name!r}, which is not installed: pip install 'seawall[{extra}]'"
    return ModuleNotFoundError(msg, name=name)


def settings_kwargs(
    settings: Mapping[str, Any] | None,
    *,
    layers: Any = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Turn framework settings (the :func:`seawall.config.load_config` schema) into kwargs.

    *layers*, when given, are layer objects used as they are; the settings
    then hold only the top-level keys (``trusted_proxies``, ...).
    ``SEAWALL_*`` environment variables override the settings, as everywhere.
    """
    from seawall.config import LAYER_KEYS, load_config

    if layers is not None:
        both = [key for key in settings or {} if key in LAYER_KEYS]
        if both:
            # Layer objects replace the layer settings: a layer setting given
            # beside them would be dropped without a word.
            msg = (
                f"layers: give layer objects or layer settings, not both "
                f"(also given: {', '.join(both)}); put that layer's object in layers"
            )
            raise ConfigurationError(msg)
    kwargs = load_config(dict(settings or {}), env=env)
    if layers is not None:
        kwargs["layers"] = list(layers)
    return kwargs


def exempt_twin(wall: _W) -> _W | None:
    """A copy of *wall* running only the layers exempt handlers get; ``None`` if no layer differs.

    The copy shares the app, the client resolver, the request ids and the
    layer objects (so statistics are shared), only its stack is smaller.
    """
    return _twin(wall, exempt_layers(wall.stack.layers))


def limits_twin(wall: _W) -> _W | None:
    """A copy of *wall* without its ``RateLimit`` layers; ``None`` if it has none.

    What a handler whose own limit has ``override_defaults=True`` is served by.
    """
    from seawall.layers.ratelimit import RateLimit

    return _twin(wall, [layer for layer in wall.stack.layers if not isinstance(layer, RateLimit)])


_UNSET = object()


def _twin(wall: _W, kept: list[object]) -> _W | None:
    if len(kept) == len(wall.stack.layers):
        return None
    # Not copy.copy: Seawall.__new__ needs the app to pick the driver class.
    # Field by field, not twin.__dict__.update(wall.__dict__): reading an
    # object's __dict__ gives it a real dict for good, and CPython 3.11 then
    # specialises no attribute load on it. Every self.x of the drivers on
    # the wall would take the generic path on every request (callgrind:
    # ~2k instructions a request through the Flask extension).
    twin = object.__new__(type(wall))
    for name in wall._twin_fields:
        value = getattr(wall, name, _UNSET)
        if value is not _UNSET:
            setattr(twin, name, value)
    twin.stack = Stack(kept, order="as given", on_layer_error=wall.stack.on_layer_error)
    return twin


class Walls:
    """A wall and the twins marked handlers are served by.

    ``@exempt`` handlers get :func:`exempt_twin`, handlers whose limit has
    ``override_defaults=True`` get :func:`limits_twin`. The twins follow the
    wall's stack: when it is swapped (``seawall.testing.override``) they are
    made again from the new one.

    Adapters read it on every request, so the fields are plain attributes
    (a property call costs more than the rest of the test)::

        if walls.source is not walls.wall.stack:
            walls.refresh()
        if walls.differ:  # else no mark can change anything: no route to resolve
            ...
    """

    __slots__ = ("_exempt", "_override", "differ", "source", "wall")

    def __init__(self, wall: Any) -> None:
        self.wall = wall
        self.refresh()

    def refresh(self) -> None:
        """Make the twins again from the wall's current stack."""
        wall = self.wall
        #: The stack the twins were made from.
        self.source: Any = wall.stack
        self._exempt: Any = exempt_twin(wall)
        self._override: Any = limits_twin(wall)
        #: Whether a mark can change anything.
        self.differ: bool = self._exempt is not None or self._override is not None

    def for_mark(self, mark: str | None) -> Any:
        """The wall to serve a handler with *mark* (:func:`seawall.handlers.mark_of`)."""
        if mark is None:
            return self.wall
        if self.source is not self.wall.stack:
            self.refresh()
        twin = self._exempt if mark == "exempt" else self._override
        return self.wall if twin is None else twin
