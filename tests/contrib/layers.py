"""Small layers for the adapter tests: each exercises one engine path."""

from __future__ import annotations

from typing import Any

from seawall import ReadBody, ReplaceBody, Respond
from seawall._core.layer import ORDER


class Deny:
    """Refuses (429, Retry-After 7) requests carrying ``x-deny``; marks every response."""

    name = "deny"
    order = ORDER["ratelimit"]

    def __init__(self, header: str = "x-deny") -> None:
        self.header = header
        self.seen = 0

    def on_request(self, request: Any) -> Any:
        self.seen += 1
        request.response_headers.append(("X-Deny-Policy", "test"))
        if request.header(self.header):
            return Respond.problem(
                429,
                "quota-exceeded",
                "Too Many Requests",
                "Slow down.",
                instance=request.path,
                headers=[("Retry-After", "7")],
                request_id=request.request_id,
            )
        return None

    def on_response(self, request: Any, response: Any) -> None:
        response.add("X-Deny-Checked", "1")

    def stats(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def reset(self) -> None:
        self.seen = 0


class Upper:
    """Reads the body (up to *limit*) and gives the app its upper-cased copy."""

    name = "upper"
    order = ORDER["validation"]

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit

    def on_request(self, request: Any) -> Any:
        if request.method != "POST":
            return None
        return self._flow(request)

    def _flow(self, request: Any) -> Any:
        body = yield ReadBody(self.limit)
        if body is None:
            return Respond.problem(413, "body-too-large", "Content Too Large")
        yield ReplaceBody(body.upper())
        return None


class MaxBody:
    """Asks the driver to stop bodies past *limit* bytes as the app reads them."""

    name = "max_body"
    order = ORDER["validation"]

    def __init__(self, limit: int = 8) -> None:
        self.limit = limit

    def on_request(self, request: Any) -> None:
        request.max_body = self.limit


class Deadline:
    """Gives the app *seconds* to answer."""

    name = "deadline"
    order = ORDER["timeout"]

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds

    def on_request(self, request: Any) -> None:
        request.deadline = self.seconds


class Outcomes:
    """Records every outcome (an observing layer: exempt handlers keep it)."""

    name = "outcomes"
    order = ORDER["metrics"]

    def __init__(self) -> None:
        self.outcomes: list[Any] = []

    def on_complete(self, request: Any, outcome: Any) -> None:
        self.outcomes.append(outcome)
