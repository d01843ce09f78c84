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
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from seawall.exceptions import ConfigurationError

__all__ = ["MAX_ROUNDS", "Sanitizer", "sanitize"]

Backend = Literal["nh3", "bleach"]

#: Rounds of cleaning before the output is taken as it is.
MAX_ROUNDS = 4

_SURROGATES = re.compile("[\ud800-\udfff]")


class Sanitizer:
    """A configured HTML cleaner; call it like :func:`sanitize`.

    Args:
        backend: ``"nh3"`` (strip disallowed markup) or ``"bleach"`` (escape it).
        tags: allowed tag names (default: the backend's safe set).
        attributes: allowed attributes per tag (``{"a": ["href"], "*": ["title"]}``).
        protocols: allowed URL schemes in links (default ``http``, ``https``, ``mailto``).
    """

    __slots__ = ("_clean", "attributes", "backend", "protocols", "tags")

    def __init__(
        self,
        backend: Backend = "nh3",
        *,
        tags: Iterable[str] | None = None,
        attributes: Mapping[str, Iterable[str]] | None = None,
        protocols: Iterable[str] | None = None,
    ) -> None:
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
        """Return *text* with disallowed markup removed (nh3) or escaped (bleach)."""
        if "<" not in text and "&" not in text and ">" not in text:
            return text  # nothing to clean; the common case costs one scan
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
