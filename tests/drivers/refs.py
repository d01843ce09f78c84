"""Whether a driver frees its request views by reference counting."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from seawall._core.request import RequestView


def views_left(requests: Callable[[], None], raws: list[Any]) -> list[RequestView]:
    """Run *requests* with the collector off; the views of *raws* still tracked after.

    *raws* are the scopes or environs the requests were given, kept alive by
    the caller: only a reference cycle (or a leak) keeps their views alive
    then. Only these views count, as other tests may keep theirs; ``type()``,
    not ``isinstance()``: lazy objects of other tests evaluate on ``__class__``.
    """
    gc.collect()
    gc.disable()
    try:
        requests()
        return [
            o for o in gc.get_objects() if type(o) is RequestView and any(o.raw is r for r in raws)
        ]
    finally:
        gc.enable()
