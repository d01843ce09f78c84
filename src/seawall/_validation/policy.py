"""The effective settings of one request: global settings plus matching route rules.

Theory of operation:

1. ``Validation.__init__`` validates every setting once, globally and for each
   route rule, so a typo fails at startup, never on a request.
2. A request's :class:`Policy` is the global settings with every matching rule
   applied from least to most specific (see :mod:`.routes`). It is composed
   once per ``(method, route or path)`` and cached (bounded: past the bound,
   policies are composed per request rather than letting clients grow memory).
3. A policy is immutable and shared; per-request data never goes on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from seawall._validation.jsonbody import JsonLimits
from seawall._validation.schema import Validator, compile_schema
from seawall._validation.sizes import parse_size
from seawall.exceptions import ConfigurationError
from seawall.threats import Detector

__all__ = ["DEFAULTS", "ROUTE_KEYS", "Policy", "build_policy"]

#: Every per-route setting and its default (docs/validation.md lists them).
DEFAULTS: dict[str, Any] = {
    "max_body": 1_000_000,
    "max_url": 8192,
    "max_headers": 100,
    "max_header_bytes": 16384,
    "max_query_params": 1000,
    "methods": None,
    "content_types": None,
    "json": True,
    "max_json_depth": 32,
    "max_json_keys": 1000,
    "max_json_array": 10_000,
    "max_json_string": 100_000,
    "threats": "off",
    "threat_level": 1,
    "threat_headers": ("user-agent", "referer"),
    "threat_body": True,
    "threat_ignore_fields": (),
    "threat_scan_budget": 65_536,
    "sanitize_query": (),
    "read_body": False,
}
ROUTE_KEYS = frozenset(DEFAULTS)

_THREAT_MODES = ("block", "monitor", "off")
#: Stands for "no limit" where a limit is compared as a number.
_UNLIMITED = 1 << 62
_DETECTORS: dict[int, Detector] = {}


def _detector(level: int) -> Detector:
    found = _DETECTORS.get(level)
    if found is None:
        found = _DETECTORS[level] = Detector(level)
    return found


def _limit(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        msg = f"{where}: expected a whole number >= 0 or None, got {value!r}"
        raise ConfigurationError(msg)
    return value


def _cap(limit: int | None) -> int:
    return _UNLIMITED if limit is None else limit


def _names(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        msg = f"{where}: expected a list of names, got {value!r}"
        raise ConfigurationError(msg)
    return tuple(str(v) for v in value)


def _media_types(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    out = []
    for item in _names(value, where):
        media = item.split(";", 1)[0].strip().lower()
        if "/" not in media:
            msg = f"{where}: expected media types like 'application/json', got {item!r}"
            raise ConfigurationError(msg)
        out.append(media)
    return tuple(out)


def _paths(fields: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(p for p in f.split(".") if p) for f in fields)


class Policy:
    """The resolved checks for one route: limits, schema, sanitization, threats."""

    __slots__ = (
        "allow",
        "bytes_cap",
        "content_types",
        "detector",
        "json",
        "json_limits",
        "lines_cap",
        "max_body",
        "max_header_bytes",
        "max_headers",
        "max_query_params",
        "max_url",
        "methods",
        "params_cap",
        "read_body",
        "sanitize_fields",
        "sanitize_query",
        "schema",
        "simple",
        "threat_body",
        "threat_budget",
        "threat_headers",
        "threat_ignore",
        "threat_ignore_headers",
        "threats",
        "url_cap",
        "wants_body",
    )

    def __init__(self, settings: Mapping[str, Any], where: str) -> None:
        self.max_body = parse_size(settings["max_body"], f"{where}max_body")
        self.max_url = _limit(settings["max_url"], f"{where}max_url")
        self.max_headers = _limit(settings["max_headers"], f"{where}max_headers")
        self.max_header_bytes = parse_size(settings["max_header_bytes"], f"{where}max_header_bytes")
        self.max_query_params = _limit(settings["max_query_params"], f"{where}max_query_params")
        methods = settings["methods"]
        if methods is None:
            self.methods: frozenset[str] | None = None
            self.allow = ""
        else:
            names = [m.upper() for m in _names(methods, f"{where}methods")]
            if "GET" in names and "HEAD" not in names:
                names.append("HEAD")  # a GET without its body, as every server answers it
            self.methods = frozenset(names)
            self.allow = ", ".join(sorted(self.methods))
        self.content_types = _media_types(settings["content_types"], f"{where}content_types")
        self.json = bool(settings["json"])
        self.json_limits = JsonLimits(
            _limit(settings["max_json_depth"], f"{where}max_json_depth"),
            _limit(settings["max_json_keys"], f"{where}max_json_keys"),
            _limit(settings["max_json_array"], f"{where}max_json_array"),
            _limit(settings["max_json_string"], f"{where}max_json_string"),
        )
        threats = settings["threats"]
        if threats is False or threats is None:
            threats = "off"
        if threats is True:
            threats = "block"
        if threats not in _THREAT_MODES:
            msg = f"{where}threats: expected 'block', 'monitor' or 'off', got {threats!r}"
            raise ConfigurationError(msg)
        self.threats: str = threats
        level = settings["threat_level"]
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 4:
            msg = f"{where}threat_level: expected 1, 2, 3 or 4, got {level!r}"
            raise ConfigurationError(msg)
        self.detector: Detector | None = None if threats == "off" else _detector(level)
        self.threat_headers = tuple(
            h.lower() for h in _names(settings["threat_headers"], f"{where}threat_headers")
        )
        self.threat_body = bool(settings["threat_body"])
        budget = _limit(settings["threat_scan_budget"], f"{where}threat_scan_budget")
        self.threat_budget = 1 << 62 if budget is None else budget
        ignored = _names(settings["threat_ignore_fields"], f"{where}threat_ignore_fields")
        self.threat_ignore = frozenset(ignored)
        #: The same names lower-cased: header names are matched without regard to case.
        self.threat_ignore_headers = frozenset(name.lower() for name in ignored)
        self.sanitize_query = frozenset(
            _names(settings["sanitize_query"], f"{where}sanitize_query")
        )
        self.read_body = bool(settings["read_body"])
        self.schema: Validator | None = settings.get("__schema__")
        self.sanitize_fields: tuple[tuple[str, ...], ...] = _paths(settings.get("__sanitize__", ()))
        # Whether a JSON or form body must be read (else it streams, counted).
        self.wants_body = (
            self.read_body
            or self.json
            or self.schema is not None
            or bool(self.sanitize_fields)
            or (self.detector is not None and self.threat_body)
        )
        # The request-line and header limits as plain numbers (``None``: one
        # no request reaches), so each check on every request is one compare.
        self.url_cap = _cap(self.max_url)
        self.lines_cap = _cap(self.max_headers)
        self.bytes_cap = _cap(self.max_header_bytes)
        self.params_cap = _cap(self.max_query_params)
        # Nothing checked past the headers unless a body comes: no threat
        # detection, no query to clean.
        self.simple = self.detector is None and not self.sanitize_query


def build_policy(
    base: Mapping[str, Any],
    layers: Sequence[tuple[Mapping[str, Any], Any, Sequence[str] | None]],
    where: str = "",
) -> Policy:
    """Compose *base* with each ``(overrides, schema, sanitize fields)`` in order."""
    settings = dict(base)
    for overrides, schema, fields in layers:
        settings.update(overrides)
        if schema is not None:
            settings["__schema__"] = schema
        if fields is not None:
            settings["__sanitize__"] = tuple(fields)
    return Policy(settings, where)


def check_overrides(key: str, overrides: Any) -> dict[str, Any]:
    """Validate the per-route settings of rule *key*; unknown names fail loudly."""
    if not isinstance(overrides, Mapping):
        msg = f"routes[{key!r}]: expected a table of settings, got {type(overrides).__name__}"
        raise ConfigurationError(msg)
    for name in overrides:
        if name not in ROUTE_KEYS:
            known = ", ".join(sorted(ROUTE_KEYS))
            msg = f"routes[{key!r}]: unknown setting {name!r}; known: {known}"
            raise ConfigurationError(msg)
    return dict(overrides)


def compile_schemas(schemas: Mapping[str, Any]) -> dict[str, Validator]:
    """Compile every route's schema once."""
    return {key: compile_schema(s, where=f"schemas[{key!r}]") for key, s in schemas.items()}


SchemaFactory = Callable[[Any], Validator]
