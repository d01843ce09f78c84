"""Settings from a dict, a TOML file or ``SEAWALL_*`` environment variables.

One schema for all three: top-level keys are the :class:`~seawall.Seawall`
keyword arguments (``trusted_proxies``, ``order``, ...) and one table per
layer, named by its config key (``timing``, ``error_capture``,
``rate_limit``, ...), whose keys are that layer's keyword arguments::

    [seawall]                      # in a TOML file the table is optional
    trusted_proxies = ["10.0.0.0/8"]

    [seawall.timing]
    slow = 0.5

    [seawall.rate_limit]
    limit = "100/minute"
    storage = "redis://127.0.0.1:6379/0"

The same in the environment: ``SEAWALL_TRUSTED_PROXIES=10.0.0.0/8``,
``SEAWALL_TIMING__SLOW=0.5``, ``SEAWALL_RATE_LIMIT__LIMIT=100/minute``;
``SEAWALL_TIMING=false`` leaves a layer out. Values from the environment are
read as TOML values when they parse (``0.5``, ``true``, ``["a", "b"]``),
else as strings; a key that takes a string gets the text as written, even
``2024``. A key that takes a callable accepts an import string
(``"myapp.keys:api_key"``).

Layer tables are built in the canonical order; when no layer table is
given, the recommended layers are used. Unknown keys and ill-typed values
raise :class:`~seawall.exceptions.ConfigurationError` naming the key and the
form it expects.
"""

from __future__ import annotations

import datetime
import difflib
import importlib
import importlib.util
import inspect
import os
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeAlias, Union, get_args, get_origin

from seawall.exceptions import ConfigurationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

__all__ = ["LAYER_KEYS", "ConfigSource", "build_layer", "load_config", "register_layer"]

ConfigSource: TypeAlias = "Mapping[str, Any] | str | os.PathLike[str] | None"

#: Config key -> "module:Class" of the layer it builds, in canonical order.
LAYER_KEYS: dict[str, str] = {
    "timing": "seawall.layers.timing:Timing",
    "error_capture": "seawall.layers.errors:ErrorCapture",
    "health": "seawall.layers.health:Health",
    "metrics": "seawall.layers.metrics:Metrics",
    "dashboard": "seawall.layers.dashboard:Dashboard",
    "load_shedding": "seawall.layers.shedding:LoadShedding",
    "concurrency": "seawall.layers.concurrency:ConcurrencyLimit",
    "rate_limit": "seawall.layers.ratelimit:RateLimit",
    "validation": "seawall.layers.validation:Validation",
    "circuit_breaker": "seawall.layers.breaker:CircuitBreaker",
    "timeout": "seawall.layers.timeout:Timeout",
}

_TOP_LEVEL = {
    "interface": "'auto', 'asgi' or 'wsgi'",
    "trusted_proxies": "a list of CIDRs, e.g. ['10.0.0.0/8']",
    "trusted_hops": "a whole number",
    "ipv6_prefix": "a whole number 0..128",
    "request_id_header": "a header name",
    "order": "'canonical' or 'as given'",
    "on_layer_error": "'continue' or 'raise'",
}


def register_layer(key: str, target: str | type) -> None:
    """Make a custom layer configurable under *key* (a class or ``"module:Class"``)."""
    if isinstance(target, type):
        target = f"{target.__module__}:{target.__qualname__}"
    LAYER_KEYS[key] = target


def _import(target: str, where: str) -> Any:
    module, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        msg = f"{where}: cannot import {target!r} ({exc})"
        raise ConfigurationError(msg) from None
    return obj


# -- loading ------------------------------------------------------------------


def _from_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        msg = f"config file {str(path)!r} does not exist"
        raise ConfigurationError(msg) from None
    except tomllib.TOMLDecodeError as exc:
        msg = f"config file {str(path)!r} is not valid TOML: {exc}"
        raise ConfigurationError(msg) from None
    if path.name == "pyproject.toml":
        tool = data.get("tool", {})
        if "seawall" not in tool:
            # [tool.seawal] would leave the defaults in place without a word.
            near = difflib.get_close_matches("seawall", [str(k) for k in tool], n=1, cutoff=0.75)
            if near:
                msg = (
                    f"config file {str(path)!r}: no [tool.seawall] table; "
                    f"[tool.{near[0]}] is not read (a typo?)"
                )
                raise ConfigurationError(msg)
        data = tool.get("seawall", {})
    elif "seawall" in data and isinstance(data["seawall"], dict):
        # Seawall's own settings outside the table would be dropped without
        # a word ([seawall.timing] makes a [seawall] table): say so. Other
        # keys may be another program's, in a shared file.
        stray = sorted(k for k in data if k != "seawall" and (k in _TOP_LEVEL or k in LAYER_KEYS))
        if stray:
            msg = (
                f"config file {str(path)!r}: {', '.join(stray)} outside the [seawall] table "
                "would be ignored; put every seawall setting under [seawall]"
            )
            raise ConfigurationError(msg)
        data = data["seawall"]
    return dict(data)


class _EnvText:
    """A variable's text that TOML reads as a number or a date: the setting decides.

    ``SEAWALL_RATE_LIMIT__KEY_PREFIX=2024`` is a string to a setting that
    takes one, and ``SEAWALL_TIMING__MAX_ROUTES=10`` a number to one that
    takes a number: :func:`_coerce` tries the parsed value, then the text.
    """

    __slots__ = ("parsed", "raw")

    def __init__(self, raw: str, parsed: Any) -> None:
        self.raw = raw
        self.parsed = parsed

    def __repr__(self) -> str:
        return repr(self.raw)


def _env_value(raw: str) -> Any:
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
    # Booleans stay booleans: SEAWALL_TIMING=false leaves a layer out.
    if isinstance(value, (int, float, datetime.date, datetime.time)) and not isinstance(
        value, bool
    ):
        return _EnvText(raw, value)
    return value


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith("SEAWALL_") or name == "SEAWALL_REQUIRE_REDIS":
            continue
        path = name[len("SEAWALL_") :].lower().split("__")
        if path[0] not in _TOP_LEVEL and path[0] not in LAYER_KEYS:
            # Name the variable: "unknown setting 'timng'" reads as the file's.
            known = ", ".join(sorted([*_TOP_LEVEL, *LAYER_KEYS]))
            msg = f"environment variable {name}: unknown setting {path[0]!r}; known: {known}"
            raise ConfigurationError(msg)
        value = _env_value(raw)
        if path[0] == "trusted_proxies" and isinstance(value, str):
            value = [p for p in value.replace(",", " ").split() if p]
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {} if child is None or child is True else {"__enabled__": child}
                node[part] = child
            node = child
        if isinstance(node.get(path[-1]), dict):
            node[path[-1]]["__enabled__"] = value
        else:
            node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any], *, top: bool = True) -> dict[str, Any]:
    """*over* laid on *base*, tables merged key by key.

    A layer given as a shorthand on one side (``timeout = 2``,
    ``rate_limit = "100/minute"``, ``timing = true``) and as a table on the
    other keeps both: the shorthand goes in the table as ``__enabled__``,
    which :func:`build_layer` reads as the shorthand it is.
    """
    out = dict(base)
    for key, value in over.items():
        current = out.get(key)
        layer = top and key in LAYER_KEYS
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            out[key] = _merge(dict(current), value, top=False)
        elif layer and isinstance(value, Mapping) and key in out and current is not None:
            out[key] = _merge({"__enabled__": current}, value, top=False)
        elif layer and isinstance(current, Mapping) and value is not None:
            out[key] = {**current, "__enabled__": value}
        else:
            out[key] = value
    return out


def _canonical(data: dict[str, Any]) -> dict[str, Any]:
    """*data* with each layer table's aliases (``default``) under their own names (``limit``).

    Done on each source apart, before they are merged, so that an alias in
    the settings and the plain name in an environment variable are one
    setting, the variable winning, not two that clash.
    """
    for key, aliases in _ALIASES.items():
        section = data.get(key)
        if not isinstance(section, Mapping):
            continue
        section = dict(section)
        for alias, name in aliases.items():
            if alias in section:
                if name in section:
                    msg = (
                        f"{key}: give {key}.{name} or {key}.{alias}, not both "
                        "(they are one setting)"
                    )
                    raise ConfigurationError(msg)
                section[name] = section.pop(alias)
        data[key] = section
    return data


def load_config(
    source: ConfigSource = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Read settings and return the keyword arguments for :class:`~seawall.Seawall`.

    *source* is a dict, a path to a TOML file (a ``seawall`` table in it, or
    ``[tool.seawall]`` in ``pyproject.toml``), or ``None``. Environment
    variables (*env*, default ``os.environ``) override it, and *overrides*
    (settings in the same form) override both; ``layers=`` in *overrides*
    (layer objects) replaces the layers the settings build.
    """
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, Mapping):
        data = dict(source)
    elif isinstance(source, (str, os.PathLike)):
        data = _from_file(Path(source))
    else:
        msg = f"config: expected a dict, a TOML file path or None, got {type(source).__name__}"
        raise ConfigurationError(msg)
    data = _merge(_canonical(data), _canonical(_from_env(os.environ if env is None else env)))
    extra = dict(overrides or {})
    layers = extra.pop("layers", None)
    if extra:
        data = _merge(data, _canonical(extra))
    kwargs = settings_to_kwargs(data)
    if layers is not None:
        kwargs["layers"] = list(layers)
    return kwargs


def settings_to_kwargs(data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a settings mapping and build the layers it names."""
    kwargs: dict[str, Any] = {}
    layer_sections: dict[str, Any] = {}
    for key, value in data.items():
        if key in _TOP_LEVEL:
            kwargs[key] = value
        elif key in LAYER_KEYS:
            layer_sections[key] = value
        elif key == "layers":
            msg = "layers: in settings, give one table per layer (e.g. [seawall.timing])"
            raise ConfigurationError(msg)
        else:
            known = ", ".join(sorted([*_TOP_LEVEL, *LAYER_KEYS]))
            msg = f"unknown setting {key!r}; known settings: {known}"
            raise ConfigurationError(msg)
    _check_top_level(kwargs)
    if layer_sections:
        layers = []
        for key in LAYER_KEYS:  # canonical order
            if key in layer_sections:
                layer = build_layer(key, layer_sections[key])
                if layer is not None:
                    layers.append(layer)
        kwargs["layers"] = layers
    return kwargs


def _check_top_level(kwargs: dict[str, Any]) -> None:
    from seawall._app import Seawall

    hints = typing.get_type_hints(Seawall.__init__)
    for key, value in kwargs.items():
        kwargs[key] = coerce(value, hints[key], key)


#: Settings-file spellings of a layer's keyword arguments. ``default`` reads
#: naturally beside ``rules`` in a settings table (``rate_limit = {default =
#: "100/minute", rules = {...}}``), as the Django and Flask guides write it.
_ALIASES: dict[str, dict[str, str]] = {"rate_limit": {"default": "limit"}}


def build_layer(key: str, section: Any) -> object | None:
    """Build the layer configured under *key*; ``None`` if the section disables it."""
    if section is False:
        return None
    if section is True or section is None:
        section = {}
    if not isinstance(section, Mapping):
        section = {_first_param(key): section}  # shorthand: rate_limit = "100/minute"
    section = dict(section)
    enabled = section.pop("__enabled__", True)
    if enabled is False:
        return None
    if enabled is not True and enabled is not None:
        # A shorthand merged with a table from another source (see _merge).
        section.setdefault(_first_param(key), enabled)
    for alias, name in _ALIASES.get(key, {}).items():
        if alias in section:
            if name in section:
                msg = f"{key}: give {key}.{name} or {key}.{alias}, not both (they are one setting)"
                raise ConfigurationError(msg)
            section[name] = section.pop(alias)
    cls = _import(LAYER_KEYS[key], key)
    params = inspect.signature(cls).parameters
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: fall back to no type checks
        hints = {}
    accepts_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    args: dict[str, Any] = {}
    for name, value in section.items():
        where = f"{key}.{name}"
        if name not in params or params[name].kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            if accepts_kwargs:
                args[name] = value.parsed if type(value) is _EnvText else value
                continue
            known = ", ".join(
                n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD
            )
            msg = f"unknown setting {where!r}; {key} takes: {known}"
            raise ConfigurationError(msg)
        hint = hints.get(name, Any)
        args[name] = coerce(value, hint, where)
    try:
        return cls(**args)  # type: ignore[no-any-return]
    except ConfigurationError as exc:
        msg = f"{key}: {exc}"
        raise ConfigurationError(msg) from None
    except TypeError as exc:
        msg = f"{key}: {exc}"
        raise ConfigurationError(msg) from None


def _first_param(key: str) -> str:
    cls = _import(LAYER_KEYS[key], key)
    for name, param in inspect.signature(cls).parameters.items():
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            return name
    msg = f"{key}: expected a table of settings"
    raise ConfigurationError(msg)


# -- type coercion ------------------------------------------------------------


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(hint))
    if hint is type(None):
        return "none"
    if hint is bool:
        return "true or false"
    if hint is int:
        return "a whole number"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if origin in (list, tuple, Sequence, typing.Sequence) or hint in (list, tuple):
        args = get_args(hint)
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin in (dict, Mapping, typing.Mapping) or hint in (dict,):
        return "a table"
    if origin is Callable or hint is Callable or origin is typing.Callable:
        return "a callable or an import string 'module:name'"
    return getattr(hint, "__name__", str(hint))


class _Mismatch(Exception):
    pass


class _NoModule(_Mismatch):
    """An import string whose module does not exist: text, where the hint also takes text."""


class _BadImport(Exception):
    """An import string whose module exists but whose name does not: reported as is."""


def _is_callable_hint(hint: Any) -> bool:
    origin = get_origin(hint)
    return origin is Callable or hint is Callable or origin is typing.Callable


def _module_exists(name: str) -> bool:
    try:
        return bool(name) and importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package is missing, or a bad name
        return False


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check *value* against the type *hint*; convert where settings files can't express it."""
    try:
        return _coerce(value, hint)
    except (_BadImport, _NoModule) as exc:
        msg = f"{where}: {exc}"
        raise ConfigurationError(msg) from None
    except _Mismatch:
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        msg = f"{where}: expected {_describe(hint)}, got {shown}"
        raise ConfigurationError(msg) from None


def _coerce(value: Any, hint: Any) -> Any:
    if type(value) is _EnvText:
        try:
            return _coerce(value.parsed, hint)
        except _Mismatch:
            return _coerce(value.raw, hint)
    if hint is Any or hint is object:
        return value
    origin = get_origin(hint)
    if origin is Literal:
        if value in get_args(hint):
            return value
        raise _Mismatch
    if origin in (Union, types.UnionType):
        arms = get_args(hint)
        if isinstance(value, str):
            # An import string names a callable even where the hint also takes
            # text (a limit, "header:X-API-Key"): the callable arm goes first,
            # and refuses text whose module does not exist.
            arms = tuple(sorted(arms, key=lambda arm: not _is_callable_hint(arm)))
        for arg in arms:
            try:
                return _coerce(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if _is_callable_hint(hint):
        if isinstance(value, str) and ":" in value:
            module, _, attr = value.partition(":")
            if not all(part.isidentifier() for part in attr.split(".")) or not _module_exists(
                module
            ):
                raise _NoModule(f"cannot import {value!r} (no such module, or not module:name)")
            try:
                return _import(value, "callable")
            except ConfigurationError as exc:
                raise _BadImport(str(exc).removeprefix("callable: ")) from None
        if callable(value):
            return value
        raise _Mismatch
    if origin in (list, tuple, Sequence, typing.Sequence, set, frozenset) or hint in (
        list,
        tuple,
    ):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)):
            raise _Mismatch
        args = get_args(hint)
        if args and args[-1] is not Ellipsis and origin is not tuple:
            return [_coerce(v, args[0]) for v in value]
        if args and origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        return list(value) if origin is not tuple else tuple(value)
    if origin in (dict, Mapping, typing.Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch
        args = get_args(hint)
        if len(args) == 2:
            return {_coerce(k, args[0]): _coerce(v, args[1]) for k, v in value.items()}
        return dict(value)
    # A generic alias (type[X]) is checked against its origin; on Python 3.10
    # isinstance(alias, type) is True, but an alias cannot be isinstance's argument.
    checked = hint if origin is None else origin
    if isinstance(checked, type):
        if isinstance(value, checked):
            return value
        raise _Mismatch
    return value  # a hint we cannot check (a Protocol, a TypeVar): trust the layer
