"""Dashboard: an opt-in, token-protected page and JSON feed of the wall's statistics.

Never on by accident: the layer exists only if you add it, and it refuses to
be built without a token of at least 16 characters. Three paths under *path*:

- ``GET <path>?token=...``: checks the token, sets an ``HttpOnly``,
  ``SameSite=Strict`` cookie scoped to *path* (holding an HMAC of the token,
  not the token) and redirects to ``<path>`` so the token leaves the address
  bar and the history.
- ``GET <path>``: the self-contained HTML page (inline CSS and JS allowed by
  a hash-based Content-Security-Policy; no CDN, no build step), refreshing
  itself from the JSON feed.
- ``GET <path>/stats.json``: ``seawall.stats(app)`` plus a summary (breakers,
  shed and rejected counts). Accepts the cookie or
  ``Authorization: Bearer <token>`` (for ``curl`` and scripts).

Anything else under *path*, or a missing or wrong token, gets a problem+json
401/404; the token is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qs

from seawall._core.decisions import Respond
from seawall._core.layer import ORDER
from seawall._core.request import RequestView
from seawall._observe.page import csp, page
from seawall._observe.registry import _breakers
from seawall.exceptions import ConfigurationError
from seawall.layers.metrics import bearer_matches

__all__ = ["Dashboard", "summarize"]

_MIN_TOKEN = 16


def _num(value: Any) -> float:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def summarize(
    stats: Mapping[str, Any], rejections: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """The figures the dashboard shows at a glance, read defensively from *stats*.

    Args:
        stats: ``wall.stats()``.
        rejections: refusals by layer, when a Metrics layer counted them.
    """
    breakers: list[dict[str, Any]] = []
    shed: dict[str, int] = {}
    rejected: dict[str, int] = dict(rejections or {})
    requests = errors = 0
    limit = None
    for layer, st in stats.items():
        if not isinstance(st, Mapping):
            continue
        for name, item in _breakers(st):
            window = item.get("window")
            window = window if isinstance(window, Mapping) else {}
            rate = item.get("failure_rate", window.get("failure_rate"))
            if rate is None and _num(item.get("calls")):
                # The window restarts on a transition: fall back to the totals.
                rate = round(_num(item.get("failures")) / _num(item["calls"]), 4)
            breakers.append(
                {
                    "name": name,
                    "layer": layer,
                    "state": str(item.get("state")),
                    "failure_rate": rate,
                    "calls": item.get("calls", window.get("calls")),
                    "retry_after": item.get("retry_after"),
                }
            )
        reasons = st.get("shed")
        if isinstance(reasons, Mapping):
            for reason, n in reasons.items():
                shed[str(reason)] = shed.get(str(reason), 0) + int(_num(n))
            if st.get("limit") is not None:
                limit = st.get("limit")
        refused = _num(st.get("rejected")) or _num(st.get("limited"))
        if rejections is None and refused and not _breakers(st):
            rejected[str(layer)] = int(refused)
        if layer in ("timing", "metrics") and _num(st.get("requests")):
            requests = max(requests, int(_num(st["requests"])))
        if _num(st.get("captured")):
            errors += int(_num(st["captured"]))
    return {
        "requests": requests,
        "errors": errors,
        "breakers": breakers,
        "shed": shed,
        "shed_total": sum(shed.values()),
        "rejected": rejected,
        "rejected_total": sum(rejected.values()),
        "limit": limit,
    }


class Dashboard:
    """Serve the wall's statistics as JSON and as a small HTML dashboard.

    Args:
        token: the secret that opens it (16 characters or more; required).
        path: where it is served.
        refresh: seconds between the page's refreshes.
        cookie_max_age: seconds the login cookie lasts.
    """

    name: ClassVar[str] = "dashboard"
    # Just inside Health: it must answer while limits or breakers refuse traffic.
    order: ClassVar[int] = ORDER["health"] + 10

    def __init__(
        self,
        *,
        token: str | None = None,
        path: str = "/_seawall",
        refresh: float = 2.0,
        cookie_max_age: int = 8 * 3600,
    ) -> None:
        if not token or not isinstance(token, str):
            msg = (
                "token: the dashboard needs a secret token (16+ characters), e.g. "
                "Dashboard(token=os.environ['SEAWALL_DASHBOARD__TOKEN']); it never starts without"
            )
            raise ConfigurationError(msg)
        if len(token) < _MIN_TOKEN:
            msg = f"token: expected at least {_MIN_TOKEN} characters, got {len(token)}"
            raise ConfigurationError(msg)
        if not path.startswith("/") or path == "/" or path.endswith("/"):
            msg = f"path: expected a path like '/_seawall', got {path!r}"
            raise ConfigurationError(msg)
        if refresh <= 0:
            msg = f"refresh: expected seconds > 0, got {refresh!r}"
            raise ConfigurationError(msg)
        self.path = path
        self.refresh = refresh
        self._token = token.encode()
        self._cookie_name = "seawall_dashboard"
        self._cookie = hmac.new(self._token, b"seawall-dashboard-v1", hashlib.sha256).hexdigest()
        self._cookie_attrs = f"Path={path}; HttpOnly; SameSite=Strict; Max-Age={cookie_max_age}"
        self._json_path = path + "/stats.json"
        self._page = page(self._json_path, refresh)
        self._page_headers = (
            ("Content-Security-Policy", csp()),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("X-Frame-Options", "DENY"),
        )
        self._wall: Any = None
        self.views = 0
        self.denied = 0

    def __repr__(self) -> str:
        return f"Dashboard(path={self.path!r}, refresh={self.refresh}, token=<hidden>)"

    def bind(self, wall: Any) -> None:
        """Remember the wall whose statistics are shown."""
        self._wall = wall

    # -- auth -----------------------------------------------------------------

    def _cookie_ok(self, request: RequestView) -> bool:
        for line in request.header_list("cookie"):
            for part in line.split(";"):
                name, _, value = part.strip().partition("=")
                if name == self._cookie_name and hmac.compare_digest(
                    value.encode("latin-1", "replace"), self._cookie.encode()
                ):
                    return True
        return False

    def _bearer_ok(self, request: RequestView) -> bool:
        return bearer_matches(request.header("authorization"), self._token)

    def _denied(self) -> Respond:
        self.denied += 1
        return Respond.problem(
            401, "unauthorized", "Unauthorized",
            "Open the dashboard with ?token=<token> or send Authorization: Bearer <token>.",
            headers=(("WWW-Authenticate", 'Bearer realm="seawall"'), ("Cache-Control", "no-store")),
        )  # fmt: skip

    # -- hooks ----------------------------------------------------------------

    def on_request(self, request: RequestView) -> Respond | None:
        """Answer the dashboard paths; everything else goes on."""
        path = request.path
        if not path.startswith(self.path):
            return None
        if path != self.path and path != self._json_path:
            if path[len(self.path)] != "/":
                return None  # /_seawallfoo is not ours
            if not (self._cookie_ok(request) or self._bearer_ok(request)):
                return self._denied()  # what lies under the path is for the holders only
            return Respond.problem(404, "not-found", "Not Found")
        if request.method not in ("GET", "HEAD"):
            return Respond.problem(405, "method-not-allowed", "Method Not Allowed",
                                   headers=(("Allow", "GET, HEAD"),))  # fmt: skip
        query = parse_qs(request.query_string) if path == self.path else {}
        if "token" in query:
            given = query["token"][0].encode()
            if not hmac.compare_digest(given, self._token):
                return self._denied()
            secure = "; Secure" if request.scheme == "https" else ""
            return Respond(
                303,
                b"",
                (
                    ("Location", self.path),
                    (
                        "Set-Cookie",
                        f"{self._cookie_name}={self._cookie}; {self._cookie_attrs}{secure}",
                    ),
                    ("Cache-Control", "no-store"),
                    ("Referrer-Policy", "no-referrer"),
                ),
                content_type="text/plain; charset=utf-8",
            )
        if not (self._cookie_ok(request) or self._bearer_ok(request)):
            return self._denied()
        self.views += 1
        if path == self._json_path:
            body = json.dumps(self.snapshot(), separators=(",", ":"), default=str).encode()
            return Respond(200, body, (("Cache-Control", "no-store"),
                                       ("X-Content-Type-Options", "nosniff")),
                           content_type="application/json")  # fmt: skip
        return Respond(200, self._page, self._page_headers, content_type="text/html; charset=utf-8")

    def snapshot(self) -> dict[str, Any]:
        """What ``stats.json`` serves: the wall, every layer's stats, and a summary."""
        wall = self._wall
        if wall is None:
            return {"wall": {}, "layers": {}, "summary": summarize({})}
        layers = wall.stats()
        rejections: dict[str, int] | None = None
        for layer in wall.stack.layers:
            registry = getattr(layer, "registry", None)
            counts = getattr(registry, "rejections", None)
            if isinstance(counts, dict):
                rejections = {}
                for (name, _status), n in counts.items():
                    rejections[name] = rejections.get(name, 0) + n
        return {
            "time": time.time(),
            "wall": {
                "interface": getattr(wall, "interface", None),
                "layers": list(wall.stack.names),
                "in_flight": getattr(wall, "in_flight", None),
                "draining": bool(getattr(wall, "draining", False)),
            },
            "layers": layers,
            "summary": summarize(layers, rejections),
        }

    def stats(self) -> dict[str, Any]:
        """Views and refused attempts."""
        return {"views": self.views, "denied": self.denied}

    def reset(self) -> None:
        """Forget the counts (for tests)."""
        self.views = 0
        self.denied = 0
