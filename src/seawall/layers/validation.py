"""Validation: request limits, schemas, sanitization and threat detection.

Theory of operation:

1. Cheap checks first, on what the request line and headers say: method
   (405), URL length (414), header count and size (431), query parameter
   count (400), ``Content-Length`` (400 if malformed, 413 if over the limit),
   content type (415), then threat detection over the path, the query and
   chosen headers (403 in ``block`` mode).
2. The body is read only when a configured check needs its content: a JSON
   body (``json=True``: malformed -> 400, structure limits -> 422), a schema,
   sanitization, threat detection on bodies, or ``read_body``. It is read
   with :class:`~seawall.ReadBody` (at most ``max_body`` bytes; past that,
   413 without reading the rest) and replayed to the app byte-identical,
   unless sanitization changed a field: then :class:`~seawall.ReplaceBody`
   hands the app the rewritten body with a correct ``Content-Length``.
3. Any other body streams to the app untouched; ``max_body`` is then
   enforced by the driver as the app reads (``request.max_body``): a chunked
   body that grows past it is cut off with a 413, never buffered.
4. Every rejection is ``application/problem+json`` that never echoes the
   offending input (no ``instance`` either: the path may be the payload).
5. Settings apply globally and per route (``routes={"POST /upload":
   {"max_body": "50 MB"}}``); a request's effective settings are composed
   once per route and cached (see :mod:`seawall._validation.policy`).
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import secrets
import sys
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeVar, cast
from urllib.parse import parse_qsl, quote, quote_plus, unquote_plus

from seawall._core.decisions import ReadBody, ReplaceBody, Respond
from seawall._core.layer import ORDER
from seawall._core.request import RequestView
from seawall._log import current_request, logger
from seawall._validation.charsets import ascii_compatible
from seawall._validation.fields import apply_to_fields, iter_strings, path_of, safe_loc
from seawall._validation.jsonbody import JsonLimits, check_structure, parse_json
from seawall._validation.multipart import MultipartError, TooManyParts, form_pairs
from seawall._validation.policy import (
    DEFAULTS,
    Policy,
    build_policy,
    check_overrides,
    compile_schemas,
)
from seawall._validation.routes import RouteRule
from seawall._validation.schema import compile_schema
from seawall.exceptions import ConfigurationError, ValidationFailed
from seawall.sanitize import MAX_LENGTH, MAX_TAGS, MAX_TOTAL, SanitizeLimitExceeded, Sanitizer

__all__ = ["Validation", "validate"]

F = TypeVar("F", bound=Callable[..., Any])

#: Bodies are read up to this many bytes when ``max_body`` is ``None`` and a
#: check needs the content: reading must always be bounded.
READ_CAP = 64 * 1024 * 1024
#: Policies cached per (method, route); past this, they are composed per request.
CACHE_SIZE = 2048

_JSON = "json"
_FORM = "form"
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def _count_body(request: RequestView, limit: int) -> None:
    """Have the driver count the body against *limit*, unless a tighter limit is set.

    Another Validation layer of the stack may have set one: limits only
    ever tighten, whatever order the layers run in.
    """
    current = request.max_body
    if current is None or limit < current:
        request.max_body = limit


def _ascii_charset(ctype: str) -> bool:
    """Whether the ``charset`` of *ctype* keeps ASCII as ASCII (UTF-8, Latin-1, not UTF-7 or -16).

    The detectors read ASCII: in a charset that spells it otherwise, an
    attack reaches a framework that decodes with it unread. Only a fixed
    list of names is known (see :mod:`seawall._validation.charsets`): a
    client's name never reaches the codec registry, which would keep every
    unknown one.
    """
    name = ""
    for param in ctype.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            name = value
    return not name.strip() or ascii_compatible(name)


def _body_kind(media: str) -> str | None:
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return _JSON
    if media == "application/x-www-form-urlencoded":
        return _FORM
    return None


_IDENTITY = 0
#: Content codings the layer reads (zlib's wbits for each); others get a 415.
_WBITS: dict[str, int] = {
    "identity": _IDENTITY,
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    # RFC 9110's deflate is zlib-wrapped; 32 + MAX_WBITS also takes gzip.
    "deflate": 32 + zlib.MAX_WBITS,
}


def _sent_length(request: RequestView, decoded: int) -> int:
    """The request target's length as the client sent it, when the server kept it."""
    raw = request.raw
    query = request.query_string
    if request.interface == "asgi":
        path = raw.get("raw_path")
        if isinstance(path, bytes):
            return len(path) + len(query) + 1 if query else len(path)
        return decoded
    uri = raw.get("RAW_URI") or raw.get("REQUEST_URI")
    if isinstance(uri, str) and uri:
        return len(uri)
    # No raw URI from this server: the path as a client must have sent it
    # (a byte outside the URI's characters can only come percent-encoded).
    try:
        sent = quote(request.path.encode("latin-1"), safe="/:@!$&'()*+,;=-._~%")
    except UnicodeEncodeError:
        return decoded
    return len(sent) + len(query) + 1 if query else len(sent)


def rewrite_pairs(
    text: str, wanted: Callable[[str], bool], clean: Callable[[str], str]
) -> str | None:
    """*text* (``a=1&b=2``) with the values of the *wanted* names cleaned; ``None`` if none changed.

    Each pair is rewritten only if its value changed: every other pair keeps
    its bytes (its escapes, a bare ``flag`` with no ``=``, a ``%E9`` of a
    latin-1 form), where parsing and re-encoding all of them would not.
    """
    pieces = text.split("&")
    changed = False
    for i, piece in enumerate(pieces):
        name, eq, value = piece.partition("=")
        if not eq or not wanted(unquote_plus(name)):
            continue
        plain = unquote_plus(value)
        cleaned = clean(plain)
        if cleaned != plain:
            pieces[i] = f"{name}={quote_plus(cleaned)}"
            changed = True
    return "&".join(pieces) if changed else None


def rewrite_json(
    body: bytes, paths: tuple[tuple[str, ...], ...], clean: Callable[[str], str]
) -> bytes:
    r"""*body* (valid JSON) with the strings at *paths* cleaned, every other value as written.

    Numbers and the ``NaN``/``Infinity`` constants come back with the text
    they were sent with: parsed into placeholders (a random token no client
    can guess) and put back after ``json.dumps``, which would otherwise
    print ``1e400`` as ``Infinity`` (not JSON) and round long decimals. A
    duplicated key keeps its last value, as the app's parser would. A lone
    surrogate (``"\ud800"``) is written escaped, as it came.
    """
    token = secrets.token_hex(8)
    mark = f"\x00{token}:"
    written: list[str] = []

    def number(text: str) -> str:
        written.append(text)
        return f"{mark}{len(written) - 1}\x00"

    doc = json.loads(body, parse_float=number, parse_int=number, parse_constant=number)
    doc, _ = apply_to_fields(doc, paths, lambda s: s if s.startswith(mark) else clean(s))
    placeholder = re.compile('"\\\\u0000' + token + ':(\\d+)\\\\u0000"')
    for ascii_only in (False, True):
        out = json.dumps(doc, ensure_ascii=ascii_only, separators=(",", ":"))
        out = placeholder.sub(lambda m: written[int(m.group(1))], out)
        try:
            return out.encode("utf-8")
        except UnicodeEncodeError:
            continue  # a lone surrogate: escaped, in the second pass
    raise AssertionError("unreachable: ensure_ascii output is ASCII")  # pragma: no cover


def _form_doc(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """A form as a dict for schemas and detection: a repeated field becomes a list."""
    doc: dict[str, Any] = {}
    for fname, value in pairs:
        prior = doc.get(fname)
        if prior is None:
            doc[fname] = value
        elif isinstance(prior, list):
            prior.append(value)  # in place: a copy per repeat made "a&a&a..." quadratic
        else:
            doc[fname] = [prior, value]
    return doc


def _too_many_fields(text: str, limit: int | None) -> bool:
    """Whether form *text* has more than *limit* fields.

    Counted like the query (non-empty pieces), not by parse_qsl's
    max_num_fields, which counts separators: "a=1&" would be two.
    """
    return (
        limit is not None
        and text.count("&") >= limit
        and sum(1 for part in text.split("&") if part) > limit
    )


def _media_allowed(media: str, allowed: tuple[str, ...]) -> bool:
    for item in allowed:
        if item == media:
            return True
        if item.endswith("/*") and media.startswith(item[:-1]):
            return True
        if item == "*/*":
            return True
        if "/*+" in item:
            # A structured-syntax suffix: "application/*+json" takes
            # application/vnd.api+json and application/problem+json.
            kind, _, suffix = item.partition("/*")
            if media.startswith(kind + "/") and media.endswith(suffix):
                return True
    return False


class Validation:
    """Refuse malformed, oversized or hostile requests before the app sees them.

    Every limit has a default (``None`` turns it off) and can be set per route
    through *routes*. See docs/validation.md for each check's status code.

    Args:
        max_body: body size limit (bytes, or ``"1 MB"``, ``"512 KiB"``); 413.
        max_url: path and query length limit; 414.
        max_headers: header line count limit; 431.
        max_header_bytes: total size of header names and values; 431.
        max_query_params: query parameters (and form fields) limit; 400.
        methods: allowed methods (default: any); 405 with ``Allow``.
        content_types: allowed media types of request bodies (``"text/*"``
            allowed); 415.
        json: parse JSON bodies: malformed -> 400 with line and column,
            structure limits -> 422.
        max_json_depth: nesting limit of JSON bodies; 422.
        max_json_keys: keys per JSON object; 422.
        max_json_array: items per JSON array; 422.
        max_json_string: characters per JSON string (and key); 422.
        schemas: ``{"POST /users": schema}``: a JSON Schema dict, a pydantic
            model or a callable, applied to JSON and form bodies; 422.
        sanitize: ``{"POST /comments": ["body", "author.name", "tags.*"]}``:
            fields of JSON and form bodies cleaned of HTML before the app sees them.
        sanitize_query: query parameter names to clean of HTML too.
        sanitizer: ``"nh3"`` (strip, default) or ``"bleach"`` (escape).
        allowed_tags: tags the sanitizer keeps (default: the backend's safe set).
        allowed_attributes: attributes it keeps, per tag.
        allowed_protocols: URL schemes it keeps in links.
        sanitize_max_length: characters of one field or query value that
            needs cleaning (has ``<``, ``&`` or ``>``), at most; 413.
        sanitize_max_tags: ``<`` in one such value, at most; 413.
        sanitize_max_total: characters cleaned per request, at most; 413.
        threats: ``"block"`` (403 ``abnormal-usage-detected``), ``"monitor"``
            (log and count only) or ``"off"`` (default).
        threat_level: 1 (default, specific rules) to 4 (every rule).
        threat_headers: headers scanned for threats.
        threat_body: also scan JSON and form bodies.
        threat_ignore_fields: query, form, JSON (dotted path or key) or header
            names never scanned (a password field, a rich-text field).
        threat_scan_budget: characters scanned per request at most (the rest
            is let through unscanned and counted as ``scan_budget_exceeded``):
            detection costs up to a few microseconds per character of hostile
            input, so this bounds the CPU one request can buy. ``None``: no bound.
        read_body: always read JSON and form bodies (so ``request.body`` is
            set for :func:`validate` in handlers).
        routes: per-route settings: ``{"POST /upload": {"max_body": "50 MB"},
            "/api/*": {"threats": "block"}}``; keys are any of the above
            except *schemas*, *sanitize*, the sanitizer's settings and *shadow*.
        shadow: decide, log and count, but let every request through.
    """

    name: ClassVar[str] = "validation"
    order: ClassVar[int] = ORDER["validation"]

    def __init__(
        self,
        *,
        max_body: int | str | None = DEFAULTS["max_body"],
        max_url: int | None = DEFAULTS["max_url"],
        max_headers: int | None = DEFAULTS["max_headers"],
        max_header_bytes: int | str | None = DEFAULTS["max_header_bytes"],
        max_query_params: int | None = DEFAULTS["max_query_params"],
        methods: Sequence[str] | None = None,
        content_types: Sequence[str] | None = None,
        json: bool = True,
        max_json_depth: int | None = DEFAULTS["max_json_depth"],
        max_json_keys: int | None = DEFAULTS["max_json_keys"],
        max_json_array: int | None = DEFAULTS["max_json_array"],
        max_json_string: int | None = DEFAULTS["max_json_string"],
        schemas: Mapping[str, Any] | None = None,
        sanitize: Mapping[str, Sequence[str]] | None = None,
        sanitize_query: Sequence[str] = (),
        sanitizer: Literal["nh3", "bleach"] = "nh3",
        allowed_tags: Sequence[str] | None = None,
        allowed_attributes: Mapping[str, Sequence[str]] | None = None,
        allowed_protocols: Sequence[str] | None = None,
        sanitize_max_length: int | None = MAX_LENGTH,
        sanitize_max_tags: int | None = MAX_TAGS,
        sanitize_max_total: int | None = MAX_TOTAL,
        threats: Literal["block", "monitor", "off"] | bool = "off",
        threat_level: int = 1,
        threat_headers: Sequence[str] = DEFAULTS["threat_headers"],
        threat_body: bool = True,
        threat_ignore_fields: Sequence[str] = (),
        threat_scan_budget: int | None = DEFAULTS["threat_scan_budget"],
        read_body: bool = False,
        routes: Mapping[str, Mapping[str, Any]] | None = None,
        shadow: bool = False,
    ) -> None:
        self._settings: dict[str, Any] = {
            "max_body": max_body,
            "max_url": max_url,
            "max_headers": max_headers,
            "max_header_bytes": max_header_bytes,
            "max_query_params": max_query_params,
            "methods": methods,
            "content_types": content_types,
            "json": json,
            "max_json_depth": max_json_depth,
            "max_json_keys": max_json_keys,
            "max_json_array": max_json_array,
            "max_json_string": max_json_string,
            "threats": threats,
            "threat_level": threat_level,
            "threat_headers": threat_headers,
            "threat_body": threat_body,
            "threat_ignore_fields": threat_ignore_fields,
            "threat_scan_budget": threat_scan_budget,
            "sanitize_query": sanitize_query,
            "read_body": read_body,
        }
        self.shadow = shadow
        self.sanitizer = Sanitizer(
            sanitizer,
            tags=allowed_tags,
            attributes=allowed_attributes,
            protocols=allowed_protocols,
            max_length=sanitize_max_length,
            max_tags=sanitize_max_tags,
            max_total=sanitize_max_total,
        )
        overrides = {k: check_overrides(k, v) for k, v in (routes or {}).items()}
        compiled = compile_schemas(schemas or {})
        fields: dict[str, tuple[str, ...]] = {}
        for key, names in (sanitize or {}).items():
            if isinstance(names, str):
                names = [names]
            fields[key] = tuple(str(n) for n in names)
        keys = list(dict.fromkeys([*overrides, *compiled, *fields]))
        # (rule, overrides, schema, sanitize fields), least specific first.
        self._rules = sorted(
            ((RouteRule(k), overrides.get(k, {}), compiled.get(k), fields.get(k)) for k in keys),
            key=lambda item: item[0].specificity,
        )
        self._global = build_policy(self._settings, ())
        for rule, over, schema, paths in self._rules:
            # Fail at startup on a bad per-route value, naming the rule.
            build_policy(self._settings, [(over, schema, paths)], f"routes[{rule.key!r}].")
        self._cache: dict[tuple[str, str], Policy] = {}
        self._counts: dict[str, int] = {}
        self._rule_counts: dict[str, int] = {}
        self._detections: dict[str, int] = {}
        self._shadowed: dict[str, int] = {}
        self.requests = 0
        self.bodies_read = 0
        self.bodies_rewritten = 0
        self.budget_exceeded = 0

    def __repr__(self) -> str:
        g = self._global
        return (
            f"Validation(max_body={g.max_body}, max_url={g.max_url}, "
            f"threats={g.threats!r}, routes={len(self._rules)}, shadow={self.shadow})"
        )

    # -- policy ---------------------------------------------------------------

    def policy_for(self, method: str, path: str) -> Policy:
        """The effective settings for a request with *method* and *path* (or route)."""
        if not self._rules:
            return self._global
        key = (method, path)
        found = self._cache.get(key)
        if found is not None:
            return found
        matching = [(o, s, f) for r, o, s, f in self._rules if r.matches(method, path)]
        policy = build_policy(self._settings, matching) if matching else self._global
        if len(self._cache) < CACHE_SIZE:
            self._cache[key] = policy
        return policy

    # -- rejections and counts ---------------------------------------------------

    def _reject(
        self,
        request: RequestView,
        reason: str,
        status: int,
        problem_type: str,
        title: str,
        detail: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        **extensions: Any,
    ) -> Respond | None:
        if self.shadow:
            self._shadowed[reason] = self._shadowed.get(reason, 0) + 1
            logger.info(
                "seawall.validation.shadow_rejected",
                reason=reason,
                status=status,
                request_id=request.request_id,
            )
            return None
        self._counts[reason] = self._counts.get(reason, 0) + 1
        # Debug: a refusal costs a client one cheap request, and a line per
        # refusal at info would let it fill the server's logs (stats() counts them).
        logger.debug(
            "seawall.validation.rejected",
            reason=reason,
            status=status,
            method=request.method,
            request_id=request.request_id,
        )
        return Respond.problem(
            status,
            problem_type,
            title,
            detail,
            headers=headers,
            request_id=request.request_id,
            **extensions,
        )

    def _threat(
        self, request: RequestView, policy: Policy, found: dict[str, set[str]]
    ) -> Respond | None:
        rules = sorted({r for ids in found.values() for r in ids})
        places = sorted(found)
        if policy.threats == "monitor":
            for rule in rules:
                self._detections[rule] = self._detections.get(rule, 0) + 1
            logger.warning(
                "seawall.validation.threat",
                mode="monitor",
                rules=rules,
                places=places,
                request_id=request.request_id,
            )
            return None
        for rule in rules:
            self._rule_counts[rule] = self._rule_counts.get(rule, 0) + 1
        logger.warning(
            "seawall.validation.threat",
            mode="block" if not self.shadow else "shadow",
            rules=rules,
            places=places,
            request_id=request.request_id,
        )
        return self._reject(
            request,
            "threat",
            403,
            "abnormal-usage-detected",
            "Forbidden",
            "The request matched threat detection rules and was refused.",
            rules=rules,
        )

    # -- the hook ---------------------------------------------------------------

    def on_request(self, request: RequestView) -> Any:
        """Run the cheap checks; return a body flow if a check needs the body."""
        self.requests += 1
        # No route rules (the default): one policy, without a call.
        policy = (
            self.policy_for(request.method, request.route or request.path)
            if self._rules
            else self._global
        )
        if (
            policy.methods is not None
            and request.method not in policy.methods
            # A CORS preflight asks whether a listed method may be used: it
            # must reach the CORS middleware, not be refused as a method.
            and not (
                request.method == "OPTIONS" and "access-control-request-method" in request.headers
            )
        ):
            return self._reject(
                request,
                "method_not_allowed",
                405,
                "method-not-allowed",
                "Method Not Allowed",
                "This method is not allowed here.",
                headers=[("Allow", policy.allow)],
                allowed=sorted(policy.methods),
            )
        query = request.query_string
        # len(request.target), without building the string.
        url_length = len(request.path) + len(query) + 1 if query else len(request.path)
        # The caps are the limits as numbers (no limit: one never reached).
        # Nested: a URL within a twelfth of the cap is within the cap, so
        # most requests test one comparison, not two.
        if url_length * 12 > policy.url_cap:
            # The path is decoded, and a character took up to 12 as sent
            # (%F0%9F%98%80): measure what was sent, where the server says.
            url_length = _sent_length(request, url_length)
            if url_length > policy.url_cap:
                return self._reject(
                    request,
                    "uri_too_long",
                    414,
                    "uri-too-long",
                    "URI Too Long",
                    f"The URL is longer than {policy.max_url} characters.",
                    max_url=policy.max_url,
                )
        # Count and size in one pass over the raw headers: the header map is
        # built only when a check needs a value (a body's framing, threats).
        lines, size, framed = request.header_totals()
        if lines > policy.lines_cap:
            return self._reject(
                request,
                "too_many_headers",
                431,
                "request-header-fields-too-large",
                "Request Header Fields Too Large",
                f"The request has more than {policy.max_headers} header lines.",
                max_headers=policy.max_headers,
            )
        if size > policy.bytes_cap:
            return self._reject(
                request,
                "headers_too_large",
                431,
                "request-header-fields-too-large",
                "Request Header Fields Too Large",
                f"The request headers are larger than {policy.max_header_bytes} bytes.",
                max_header_bytes=policy.max_header_bytes,
            )
        limit = policy.params_cap
        if query and query.count("&") >= limit:
            count = sum(1 for part in query.split("&") if part)
            if count > limit:
                return self._reject(
                    request,
                    "too_many_query_params",
                    400,
                    "too-many-parameters",
                    "Bad Request",
                    f"The query has more than {limit} parameters.",
                    max_query_params=limit,
                )
        if framed or not policy.simple:
            return self._after_headers(request, policy, query, framed)
        # The method is tested once: a GET, the common case, ends here.
        if request.method not in _BODILESS:
            # HTTP/2 may send a body unframed (see _after_headers).
            if policy.wants_body and request.interface == "asgi":
                return self._after_headers(request, policy, query, framed)
            # No body to speak of, nothing more to check: what
            # _after_headers() concludes for such a request, without the call.
            if policy.max_body is not None:
                _count_body(request, policy.max_body)
        return None

    def _after_headers(self, request: RequestView, policy: Policy, query: str, framed: bool) -> Any:
        """The checks past the request line and headers: body framing, threats, the body."""
        # What the headers say of the body. Content-Length is believed only to
        # refuse early: the body itself is always counted. With neither
        # Content-Length nor Transfer-Encoding there is no body to speak of.
        length: int | None = None
        has_body = False
        media = ""
        if framed:
            headers = request.headers
            raw_length = headers.get("content-length")
            if raw_length:
                text = raw_length[0].strip()
                # isascii(): "²" is a digit to isdigit() and not to int().
                if not (text.isascii() and text.isdigit()) or len(raw_length) > 1:
                    return self._reject(
                        request,
                        "invalid_content_length",
                        400,
                        "invalid-content-length",
                        "Bad Request",
                        "The Content-Length header is not a single whole number.",
                    )
                length = int(text)
            has_body = (length is not None and length > 0) or "transfer-encoding" in headers
        elif (
            request.interface == "asgi"
            and request.method not in _BODILESS
            and "content-type" in request.headers
        ):
            # HTTP/2 and HTTP/3 may send a body with neither header: one with
            # a content type is checked like any other (an empty one passes,
            # as with Content-Length: 0).
            has_body = True
        if has_body:
            headers = request.headers
            ctype = headers.get("content-type")
            media = ctype[0].split(";", 1)[0].strip().lower() if ctype else ""
            if policy.content_types is not None and not _media_allowed(media, policy.content_types):
                return self._reject(
                    request,
                    "unsupported_media_type",
                    415,
                    "unsupported-media-type",
                    "Unsupported Media Type",
                    "The body's content type is not accepted here.",
                    accepted=list(policy.content_types),
                )
            if policy.max_body is not None and length is not None and length > policy.max_body:
                return self._body_too_large(request, policy.max_body)
        if policy.detector is not None:
            declared = request.header("content-type")
            if (
                declared is not None
                and "charset" in declared.lower()
                and not _ascii_charset(declared)
            ):
                # Django on WSGI decodes the query (and forms) with the charset
                # the client names: UTF-7 turns text the detectors read as
                # harmless into an injection only the view sees.
                return self._reject(
                    request,
                    "unsupported_charset",
                    415,
                    "unsupported-media-type",
                    "Unsupported Media Type",
                    "The request's charset is not supported: send UTF-8.",
                )
            found = self._scan_request(request, policy, [policy.threat_budget])
            if found:
                answer = self._threat(request, policy, found)
                if answer is not None:
                    return answer
        if policy.sanitize_query and query:
            try:
                self._sanitize_query(request, policy)
            except SanitizeLimitExceeded as exc:
                return self._too_much_markup(request, exc)
        kind = _body_kind(media) if has_body else None
        if kind is not None and policy.wants_body:
            coding = request.headers.get("content-encoding")
            wbits: int | None = None
            if coding:
                wbits = _WBITS.get(",".join(coding).strip().lower())
                if wbits is None:
                    return self._reject(
                        request,
                        "unsupported_content_encoding",
                        415,
                        "unsupported-media-type",
                        "Unsupported Media Type",
                        "The body's content encoding is not accepted here.",
                        accepted_encodings=["gzip", "deflate", "identity"],
                    )
            return self._body_flow(request, policy, kind, wbits)
        if policy.max_body is not None and (
            has_body or (length is None and request.method not in _BODILESS)
        ):
            # Counted by the driver as the app reads; HTTP/2 may send a body
            # without Content-Length, so only a bodiless method is trusted.
            _count_body(request, policy.max_body)
        return None

    def _too_much_markup(self, request: RequestView, exc: SanitizeLimitExceeded) -> Respond | None:
        limit = getattr(self.sanitizer, exc.limit)
        return self._reject(
            request,
            "sanitize_limits",
            413,
            "sanitize-limits-exceeded",
            "Content Too Large",
            "A value to sanitize is longer, or has more markup, than this server cleans.",
            **{f"sanitize_{exc.limit}": limit},
        )

    def _body_too_large(self, request: RequestView, limit: int) -> Respond | None:
        return self._reject(
            request,
            "body_too_large",
            413,
            "body-too-large",
            "Content Too Large",
            f"The request body is larger than {limit} bytes.",
            max_body=limit,
        )

    def _scan_request(
        self, request: RequestView, policy: Policy, budget: list[int]
    ) -> dict[str, set[str]]:
        ignore = policy.threat_ignore
        found: dict[str, set[str]] = {}
        ids = self._scan(policy, request.path, budget)
        if ids:
            found["path"] = set(ids)
        query = request.query_string
        if query:
            # Raw (still percent-encoded) pieces: the detector decodes them
            # itself, including overlong UTF-8 that a strict decoder would turn
            # into replacement characters and so hide. Only "+" is decoded
            # here: it is a space in a query (a literal plus comes as %2B),
            # but not in the JSON and header values the detector also reads.
            after_empty = False
            for part in query.split("&"):
                if not part:
                    after_empty = True
                    continue
                qname, eq, value = part.partition("=")
                if ignore and unquote_plus(qname) in ignore:
                    after_empty = False
                    continue
                scanned = qname.replace("+", " ")
                if not eq and (after_empty or " " in scanned or "%20" in scanned):
                    # A bare "name" after "&&" or with blanks in it is no
                    # parameter but a shell chain sent unencoded (`?q=x&&id`,
                    # `?host=a&+sleep+5`): CGI-style code hands the raw query to
                    # a shell, so scan it with the separators it came with.
                    scanned = ("&&" if after_empty else "&") + scanned
                after_empty = False
                ids = self._scan(policy, scanned, budget)
                if value:
                    ids += self._scan(policy, value.replace("+", " "), budget)
                if ids:
                    where = safe_loc(unquote_plus(qname))
                    found.setdefault(f"query:{where}", set()).update(ids)
        for hname in policy.threat_headers:
            if hname in policy.threat_ignore_headers:
                continue
            for value in request.header_list(hname):
                ids = self._scan(policy, value, budget)
                if ids:
                    found.setdefault(f"header:{hname}", set()).update(ids)
        return found

    def _scan(self, policy: Policy, value: str, budget: list[int]) -> tuple[str, ...]:
        """Scan *value* within what is left of the request's budget (``budget[0]``).

        The budget is charged what the scan cost: the value's length, or
        its length once decoded when that is more (NFKC expands U+FDFA 18x).
        """
        left = budget[0]
        if left <= 0:
            if left == 0 and value:
                self.budget_exceeded += 1  # once per request: -1 marks it counted
                budget[0] = -1
            return ()
        assert policy.detector is not None
        found, cost = policy.detector.scan_within(value, left)
        if cost > left or len(value) > left:
            self.budget_exceeded += 1
            budget[0] = -1
        else:
            budget[0] = left - cost
        return found

    def _sanitize_query(self, request: RequestView, policy: Policy) -> None:
        names = policy.sanitize_query
        query = rewrite_pairs(request.query_string, names.__contains__, self.sanitizer.metered())
        if query is None:
            return
        # The request view is read-only; the query lives in the scope/environ
        # the app reads (both are mutable mappings owned by this request).
        raw = cast("dict[str, Any]", request.raw)
        if request.interface == "asgi":
            raw["query_string"] = query.encode("latin-1")
        else:
            raw["QUERY_STRING"] = query
        request.query_string = query

    def _body_flow(
        self,
        request: RequestView,
        policy: Policy,
        kind: str,
        wbits: int | None = None,
    ) -> Any:
        limit = policy.max_body if policy.max_body is not None else READ_CAP
        body = yield ReadBody(limit)
        if body is None:
            return self._body_too_large(request, limit)
        if not body:
            return None  # no body after all (chunked or unframed), as with Content-Length: 0
        if wbits is not None and wbits != _IDENTITY:
            # Checked decoded; max_body bounds the decoded size too (no bomb).
            decoder = zlib.decompressobj(wbits)
            try:
                decoded = decoder.decompress(body, limit + 1)
            except zlib.error:
                return self._reject(
                    request,
                    "undecodable_body",
                    400,
                    "malformed-body",
                    "Bad Request",
                    "The body does not decode with its content encoding.",
                )
            if len(decoded) > limit or decoder.unconsumed_tail:
                return self._body_too_large(request, limit)
            body = decoded
        self.bodies_read += 1
        form_pairs: list[tuple[str, str]] | None = None
        form_text: str | None = None
        if kind == _JSON:
            doc, error = parse_json(body)
            if (
                error is not None
                and not policy.json
                and policy.schema is None
                and not policy.sanitize_fields
            ):
                # JSON checks are off: the app judges the body. Threats, if
                # on, read it as text. (With fields to sanitize it is refused:
                # a parser that takes what json.loads does not, nesting deeper
                # for one, would hand the app those fields uncleaned.)
                doc = body.decode("utf-8", "replace")
            elif error is not None:
                return self._reject(
                    request,
                    "malformed_json",
                    400,
                    "malformed-json",
                    "Bad Request",
                    "The body is not valid JSON.",
                    errors=[error],
                )
            if policy.json:
                error = check_structure(body, doc, policy.json_limits)
                if error is not None:
                    return self._reject(
                        request,
                        "json_limits",
                        422,
                        "json-limits-exceeded",
                        "Unprocessable Content",
                        "The JSON body exceeds a structure limit.",
                        errors=[error],
                    )
        else:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = body.decode("latin-1")
            max_fields = policy.max_query_params
            if _too_many_fields(text, max_fields):
                return self._reject(
                    request,
                    "too_many_form_fields",
                    400,
                    "too-many-parameters",
                    "Bad Request",
                    f"The form has more than {max_fields} fields.",
                    max_query_params=max_fields,
                )
            form_pairs = parse_qsl(text, keep_blank_values=True)
            form_text = text
            doc = _form_doc(form_pairs)
        if policy.schema is not None:
            errors = policy.schema(doc)
            if errors:
                return self._reject(
                    request,
                    "schema",
                    422,
                    "validation-failed",
                    "Unprocessable Content",
                    "The body does not match the expected schema.",
                    errors=errors,
                )
        if policy.detector is not None and policy.threat_body:
            # The body gets a budget of its own: the request part used little.
            budget = [policy.threat_budget]
            found: dict[str, set[str]] = {}
            for link, value in iter_strings(doc, policy.threat_ignore):
                ids = self._scan(policy, value, budget)
                if ids:
                    where = ".".join(str(safe_loc(p)) for p in path_of(link))
                    found.setdefault(f"body:{where}", set()).update(ids)
                elif budget[0] < 0:
                    break  # spent: the rest would go unscanned anyway
            if found:
                answer = self._threat(request, policy, found)
                if answer is not None:
                    return answer
        if policy.sanitize_fields and not isinstance(doc, str):
            try:
                new_body = self._sanitize_body(body, doc, form_text, policy)
            except SanitizeLimitExceeded as exc:
                return self._too_much_markup(request, exc)
            if new_body is not None:
                self.bodies_rewritten += 1
                yield ReplaceBody(new_body)
        return None

    def _sanitize_body(
        self, body: bytes, doc: Any, form_text: str | None, policy: Policy
    ) -> bytes | None:
        """The body with its sanitize fields cleaned, or ``None`` if none changed.

        Only the cleaned fields change: the other form pairs keep their bytes,
        and the other JSON values their text (numbers as written, not as a
        float would print them; see :func:`rewrite_json`).
        """
        clean = self.sanitizer.metered()
        if form_text is None:
            _, changed = apply_to_fields(doc, policy.sanitize_fields, clean)
            if not changed:
                return None
            # The same values again, each already within the bounds.
            return rewrite_json(body, policy.sanitize_fields, self.sanitizer)
        names = {p[0] for p in policy.sanitize_fields if p}
        text = rewrite_pairs(form_text, lambda name: name in names or "*" in names, clean)
        if text is None:
            return None
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a latin-1 body, decoded as such
            return text.encode("latin-1")

    # -- stats ------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Requests checked, rejections by reason and by threat rule, monitor detections."""
        return {
            "requests": self.requests,
            "rejected": sum(self._counts.values()),
            "rejected_by_reason": dict(self._counts),
            "rejected_by_rule": dict(self._rule_counts),
            "detections": dict(self._detections),
            "shadow_rejections": dict(self._shadowed),
            "bodies_read": self.bodies_read,
            "bodies_rewritten": self.bodies_rewritten,
            "scan_budget_exceeded": self.budget_exceeded,
        }

    def reset(self) -> None:
        """Forget every count (for tests)."""
        self._counts.clear()
        self._rule_counts.clear()
        self._detections.clear()
        self._shadowed.clear()
        self.requests = 0
        self.bodies_read = 0
        self.bodies_rewritten = 0
        self.budget_exceeded = 0


# -- handler level -------------------------------------------------------------


def _too_many_fields_error(limit: int) -> ValidationFailed:
    return ValidationFailed(
        f"The form has more than {limit} fields.",
        status=400,
        problem_type="too-many-parameters",
        extensions={"max_fields": limit},
    )


def _multipart_doc(body: bytes, ctype: str, max_fields: int | None = None) -> dict[str, Any]:
    """The text fields of a ``multipart/form-data`` body, as a form's document.

    HTML forms with files, and Django's test ``Client.post(url, data)``,
    send multipart: its fields are validated as a urlencoded form's are.
    Files are not fields (their names and bytes are not the document), but
    count as parts against *max_fields*.
    """
    try:
        pairs = form_pairs(body, ctype, max_fields)
    except TooManyParts:
        assert max_fields is not None
        raise _too_many_fields_error(max_fields) from None
    except MultipartError:
        raise ValidationFailed(
            "The multipart body is malformed.", status=400, problem_type="malformed-body"
        ) from None
    return _form_doc(pairs)


def _frame_body(args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes | None:
    """The body from a framework request among the handler's arguments, if one is there."""
    for arg in (*args, *kwargs.values()):
        body = getattr(arg, "body", None)
        if isinstance(body, bytes):  # Django's HttpRequest
            return body
    flask = sys.modules.get("flask")
    if flask is not None and flask.has_request_context():
        data = flask.request.get_data(cache=True)
        return data if isinstance(data, bytes) else None
    return None


def _frame_content_type(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """The Content-Type of a framework request among the handler's arguments (or Flask's)."""
    for arg in (*args, *kwargs.values()):
        meta = getattr(arg, "META", None)
        if isinstance(meta, Mapping):  # Django's HttpRequest
            return str(meta.get("CONTENT_TYPE") or "")
        headers = getattr(arg, "headers", None)
        if headers is not None and hasattr(arg, "scope"):  # Starlette's Request
            return str(headers.get("content-type") or "")
    flask = sys.modules.get("flask")
    if flask is not None and flask.has_request_context():
        return str(flask.request.content_type or "")
    return ""


async def _aframe_body(args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes | None:
    for arg in (*args, *kwargs.values()):
        body = getattr(arg, "body", None)
        if body is not None and inspect.iscoroutinefunction(body):  # Starlette's Request
            data = await body()
            return data if isinstance(data, bytes) else None
    return _frame_body(args, kwargs)


def validate(
    schema: Any = None,
    *,
    sanitize: Sequence[str] = (),
    into: str | None = None,
    sanitizer: Sanitizer | None = None,
    max_json_depth: int | None = DEFAULTS["max_json_depth"],
    max_fields: int | None = DEFAULTS["max_query_params"],
) -> Callable[[F], F]:
    """Validate (and clean) a handler's JSON or form body; raise 422 when it does not fit.

    A form is urlencoded or ``multipart/form-data`` (its text fields; files
    are not part of the document).

    Works on sync and async handlers. The body comes from
    ``seawall.current_request().body`` (set once a :class:`Validation` layer
    read it: give the route a schema, a sanitize rule or ``read_body=True``),
    else from a framework request among the handler's arguments (Django's
    ``request.body``, Starlette's ``await request.body()``) or Flask's
    ``request.get_data()``.

    Args:
        schema: a JSON Schema dict, a pydantic model or a callable (see
            :class:`Validation`); ``None``: only parse and sanitize.
        sanitize: fields to clean of HTML (dotted paths, ``*`` for any key or item).
        into: pass the parsed (and cleaned) body to the handler as this
            keyword argument (a pydantic model instance when *schema* is one).
        sanitizer: the :class:`~seawall.sanitize.Sanitizer` to use (default: nh3).
        max_json_depth: nesting limit of the JSON body.
        max_fields: fields of a urlencoded form, parts of a multipart one,
            at most (the :class:`Validation` layer's ``max_query_params``
            protects only the stacks it is in); 400 past it.

    Raises:
        ValidationFailed: 400 for a malformed body or one with too many
            fields, 413 for a field to sanitize past the sanitizer's bounds
            (see :class:`~seawall.sanitize.Sanitizer`), 422 for one that
            does not fit.
    """
    check = compile_schema(schema, where="validate(schema)") if schema is not None else None
    paths = tuple(tuple(p for p in f.split(".") if p) for f in sanitize)
    clean = sanitizer or (Sanitizer() if paths else None)
    limits = JsonLimits(max_json_depth, None, None, None)
    is_model = isinstance(schema, type) and hasattr(schema, "model_validate")

    def process(body: bytes | None, frame_ctype: str = "") -> Any:
        if body is None:
            msg = (
                "validate(): no request body available; let a Validation layer read it "
                "(read_body=True) or take the framework's request as an argument"
            )
            raise ConfigurationError(msg)
        view = current_request()
        ctype = (view.header("content-type") if view is not None else frame_ctype) or ""
        media = ctype.split(";", 1)[0].strip().lower()
        if _body_kind(media) == _FORM:
            text = body.decode("utf-8", "replace")
            if _too_many_fields(text, max_fields):
                assert max_fields is not None
                raise _too_many_fields_error(max_fields)
            doc: Any = _form_doc(parse_qsl(text, keep_blank_values=True))
        elif media == "multipart/form-data":
            doc = _multipart_doc(body, ctype, max_fields)
        else:
            doc, error = parse_json(body or b"null")
            if error is not None:
                raise ValidationFailed(
                    "The body is not valid JSON.",
                    status=400,
                    problem_type="malformed-json",
                    errors=[error],
                )
            error = check_structure(body, doc, limits)
            if error is not None:
                raise ValidationFailed(
                    "The JSON body exceeds a structure limit.",
                    status=422,
                    problem_type="json-limits-exceeded",
                    title="Unprocessable Content",
                    errors=[error],
                )
        if check is not None:
            errors = check(doc)
            if errors:
                raise ValidationFailed(
                    "The body does not match the expected schema.",
                    status=422,
                    problem_type="validation-failed",
                    title="Unprocessable Content",
                    errors=errors,
                )
        if paths and clean is not None:
            try:
                doc, _ = apply_to_fields(doc, paths, clean.metered())
            except SanitizeLimitExceeded as exc:
                raise ValidationFailed(
                    "A value to sanitize is longer, or has more markup, than this server cleans.",
                    status=413,
                    problem_type="sanitize-limits-exceeded",
                    title="Content Too Large",
                    extensions={f"sanitize_{exc.limit}": getattr(clean, exc.limit)},
                ) from None
        if is_model:
            return schema.model_validate(doc)
        return doc

    def decorator(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                view = current_request()
                body = view.body if view is not None and view.body is not None else None
                if body is None:
                    body = await _aframe_body(args, kwargs)
                doc = process(body, "" if view is not None else _frame_content_type(args, kwargs))
                if into is not None:
                    kwargs[into] = doc
                return await fn(*args, **kwargs)

            return cast("F", async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            view = current_request()
            body = view.body if view is not None and view.body is not None else None
            if body is None:
                body = _frame_body(args, kwargs)
            doc = process(body, "" if view is not None else _frame_content_type(args, kwargs))
            if into is not None:
                kwargs[into] = doc
            return fn(*args, **kwargs)

        return cast("F", wrapper)

    return decorator
