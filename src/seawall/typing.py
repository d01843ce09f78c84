"""Public types for writing layers and type-checking code that uses seawall."""

from __future__ import annotations

from collections.abc import Callable

from seawall._core.decisions import Continue, Decision, Effect, Flow, ReadBody, ReplaceBody, Respond
from seawall._core.layer import Layer, Outcome, ResponseHead
from seawall._core.request import RequestView

__all__ = [
    "Clock",
    "Continue",
    "Decision",
    "Effect",
    "Flow",
    "KeyFunc",
    "Layer",
    "Outcome",
    "ReadBody",
    "ReplaceBody",
    "RequestView",
    "Respond",
    "ResponseHead",
]

#: A clock: seconds as a float (``time.monotonic``, ``time.perf_counter``, a ManualClock).
Clock = Callable[[], float]

#: Computes a rate-limit or breaker key from a request.
KeyFunc = Callable[[RequestView], str]
