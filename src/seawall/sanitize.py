"""HTML sanitization behind one seam: ``sanitize(text) -> str``.

Two backends, chosen by name:

- ``"nh3"`` (the default): Python bindings to the Rust ``ammonia`` crate,
  maintained and fast. Disallowed tags are **removed** (``<script>`` and
  ``<style>`` with their content; other disallowed tags keep their text),
  disallowed attributes and URL schemes are dropped.
- ``"bleach"``: **escape mode**: disallowed tags are kept as visible text
  (``&lt;script&gt;``), so nothing the user typed disappears. bleach's README
  says it is no longer maintained (security fixes included); it is offered
  for apps that need escaping rather than stripping, and as an optional
  extra (``seawall[bleach]``).

Both are idempotent in practice (sanitizing clean output changes nothing);
:class:`Sanitizer` also re-runs the backend until its output is stable (at
most :data:`MAX_ROUNDS` rounds) so that ``sanitize(sanitize(x)) ==
sanitize(x)`` holds even for inputs where one round is not a fixed point.
docs/sanitization.md compares the two with measurements.

Both backends cost time that grows faster than their input on hostile
markup (nh3 is quadratic in nested open tags: ``"<div>" * 20000``, 100 KB,
takes 1.3-2.9 s), so text that needs cleaning is bounded: at most
:data:`MAX_LENGTH` characters and :data:`MAX_TAGS` ``<`` per value, and
:data:`MAX_TOTAL` characters per request (:meth:`Sanitizer.metered`). Past
a bound :class:`SanitizeLimitExceeded` is raised: the
:class:`~seawall.Validation` layer and :func:`seawall.validate` answer it
with a 413. Text with no ``<``, ``&`` or ``>`` is never bounded: it costs
one scan and comes back as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from seawall.exceptions import ConfigurationError

__all__ = [
    "MAX_LENGTH",
    "MAX_ROUNDS",
    "MAX_TAGS",
    "MAX_TOTAL",
    "SanitizeLimitExceeded",
    "Sanitizer",
    "sanitize",
]

Backend = Literal["nh3", "bleach"]

#: Rounds of cleaning before the output is taken as it is.
MAX_ROUNDS = 4
#: Characters of one value that needs cleaning, by default.
MAX_LENGTH = 32_768
#: ``<`` in one value that needs cleaning, by default: what bounds the
#: nesting nh3 spends quadratic time on (2048 nested ``<div>``: ~30 ms).
#: Rich text has a tag every 50-100 characters, 300-700 in 32 KB.
MAX_TAGS = 2048
#: Characters cleaned per request (:meth:`Sanitizer.metered`), by default.
MAX_TOTAL = 65_536


class SanitizeLimitExceeded(ValueError):
    """Text to clean is longer, or has more markup, than the sanitizer takes.

    Attributes:
        limit: which bound: ``"max_length"``, ``"max_tags"`` or ``"max_total"``.
    """

    def __init__(self, limit: str) -> None:
        super().__init__(f"the text to sanitize is past {limit}")
        self.limit = limit


_SURROGATES = re.compile("[\ud800-\udfff]")


class Sanitizer:
    """A configured HTML cleaner; call it like :func:`sanitize`.

    Args:
        backend: ``"nh3"`` (strip disallowed markup) or ``"bleach"`` (escape it).
        tags: allowed tag names (default: the backend's safe set).
        attributes: allowed attributes per tag (``{"a": ["href"], "*": ["title"]}``).
        protocols: allowed URL schemes in links (default ``http``, ``https``, ``mailto``).
        max_length: characters of one value that needs cleaning, at most
            (``None``: no bound); past it, :class:`SanitizeLimitExceeded`.
        max_tags: ``<`` in one such value, at most (``None``: no bound).
        max_total: characters cleaned per :meth:`metered` call, at most.
    """

    __slots__ = (
        "_clean",
        "attributes",
        "backend",
        "max_length",
        "max_tags",
        "max_total",
        "protocols",
        "tags",
    )

    def __init__(
        self,
        backend: Backend = "nh3",
        *,
        tags: Iterable[str] | None = None,
        attributes: Mapping[str, Iterable[str]] | None = None,
        protocols: Iterable[str] | None = None,
        max_length: int | None = MAX_LENGTH,
        max_tags: int | None = MAX_TAGS,
        max_total: int | None = MAX_TOTAL,
    ) -> None:
        for name, bound in (
            ("max_length", max_length),
            ("max_tags", max_tags),
            ("max_total", max_total),
        ):
            if bound is not None and (
                isinstance(bound, bool) or not isinstance(bound, int) or bound < 0
            ):
                msg = f"sanitizer {name}: expected a whole number >= 0 or None, got {bound!r}"
                raise ConfigurationError(msg)
        self.max_length = max_length
        self.max_tags = max_tags
        self.max_total = max_total
        self.backend = backend
        self.tags = None if tags is None else frozenset(tags)
        self.attributes = (
            None if attributes is None else {k: frozenset(v) for k, v in attributes.items()}
        )
        self.protocols = (
            frozenset(("http", "https", "mailto")) if protocols is None else frozenset(protocols)
        )
        if backend == "nh3":
            self._clean = self._nh3()
        elif backend == "bleach":
            self._clean = self._bleach()
        else:
            msg = f"sanitizer: expected 'nh3' or 'bleach', got {backend!r}"
            raise ConfigurationError(msg)

    def _nh3(self) -> Callable[[str], str]:
        import nh3

        kwargs: dict[str, Any] = {"url_schemes": set(self.protocols)}
        if self.tags is not None:
            kwargs["tags"] = set(self.tags)
        if self.attributes is not None:
            kwargs["attributes"] = {k: set(v) for k, v in self.attributes.items()}
            if "a" in self.attributes and "rel" in self.attributes["a"]:
                kwargs["link_rel"] = None  # nh3 refuses rel both allowed and set
        try:
            cleaner = nh3.Cleaner(**kwargs)
        except (TypeError, ValueError) as exc:
            msg = f"sanitizer: nh3 refused the settings: {exc}"
            raise ConfigurationError(msg) from None
        return cleaner.clean

    def _bleach(self) -> Callable[[str], str]:
        try:
            import bleach
        except ImportError:
            msg = "sanitizer='bleach' needs bleach installed: pip install 'seawall[bleach]'"
            raise ConfigurationError(msg) from None
        kwargs: dict[str, Any] = {"protocols": set(self.protocols), "strip": False}
        if self.tags is not None:
            kwargs["tags"] = set(self.tags)
        if self.attributes is not None:
            kwargs["attributes"] = {k: list(v) for k, v in self.attributes.items()}
        cleaner = bleach.sanitizer.Cleaner(**kwargs)
        return cleaner.clean  # type: ignore[no-any-return]

    def __call__(self, text: str) -> str:
        """Return *text* with disallowed markup removed (nh3) or escaped (bleach).

        Raises:
            SanitizeLimitExceeded: *text* needs cleaning and is past
                :attr:`max_length` characters or :attr:`max_tags` ``<``.
        """
        if "<" not in text and "&" not in text and ">" not in text:
            return text  # nothing to clean; the common case costs one scan
        self._check(text)
        clean = self._clean
        try:
            out = clean(text)
        except UnicodeEncodeError:
            # A lone surrogate (JSON's "\\ud800") is no text nh3 can take: the
            # error would skip the layer and let the field through uncleaned.
            # It cannot be shown anyway: U+FFFD stands in for it.
            text = _SURROGATES.sub("\ufffd", text)
            out = clean(text)
        if out == text:
            return text  # already a fixed point: a second call would change nothing
        for _ in range(MAX_ROUNDS - 1):
            again = clean(out)
            if again == out:
                break
            out = again
        return out

    def _check(self, text: str) -> None:
        if self.max_length is not None and len(text) > self.max_length:
            raise SanitizeLimitExceeded("max_length")
        if self.max_tags is not None and text.count("<") > self.max_tags:
            raise SanitizeLimitExceeded("max_tags")

    def metered(self) -> Callable[[str], str]:
        """The sanitizer, also bounded to :attr:`max_total` characters cleaned in all.

        One per request: every value that needs cleaning is charged its
        length; past the total, :class:`SanitizeLimitExceeded`.
        """
        total = self.max_total
        if total is None:
            return self
        left = [total]

        def clean(text: str) -> str:
            if "<" in text or "&" in text or ">" in text:
                self._check(text)  # a value's own bound first: it names the real cause
                left[0] -= len(text)
                if left[0] < 0:
                    raise SanitizeLimitExceeded("max_total")
            return self(text)

        return clean

    def __repr__(self) -> str:
        return f"Sanitizer(backend={self.backend!r})"


_DEFAULTS: dict[str, Sanitizer] = {}


def sanitize(text: str, *, backend: Backend = "nh3") -> str:
    """Clean HTML out of *text* with the default settings of *backend*.

    ``sanitize("<b>hi</b><script>x()</script>") == "<b>hi</b>"`` with nh3;
    bleach gives ``"<b>hi</b>&lt;script&gt;x()&lt;/script&gt;"``.
    """
    cleaner = _DEFAULTS.get(backend)
    if cleaner is None:
        cleaner = _DEFAULTS[backend] = Sanitizer(backend)
    return cleaner(text)
