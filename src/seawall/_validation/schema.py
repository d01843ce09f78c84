"""Schema validators behind one interface: ``validator(doc) -> list of errors``.

A schema can be:

- a JSON Schema ``dict``: compiled once with ``fastjsonschema`` when it is
  installed (fast; reports the first error), else with ``jsonschema``
  (reports every error);
- a pydantic model class (pydantic 2): ``Model.model_validate(doc)``;
- any callable ``fn(doc)``: it returns ``None``/``True`` (valid), ``False``,
  a list of error dicts or strings, or raises
  :class:`~seawall.exceptions.ValidationFailed` or :class:`ValueError`.

Errors are ``{"loc", "msg", "type"}`` dicts. Messages of JSON Schema errors
are built from the schema, never from the input. Messages written by others
(pydantic's, a callable's) are checked against the body: a value longer than
:data:`SHORT` characters that shows up in one is replaced by ``<redacted>``
(pydantic quotes a bad discriminator tag, a callable may quote anything), so
a problem body cannot echo what the client sent.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from typing import Any

from seawall._validation.fields import safe_loc
from seawall.exceptions import ConfigurationError, ValidationFailed

__all__ = ["SHORT", "Validator", "compile_schema", "safe_errors"]

Validator = Callable[[Any], list[dict[str, Any]]]

_MAX_MSG = 160
#: Values up to this long may appear in messages (``"a"``, ``"yes"``: enum-like
#: tokens a message names anyway); longer ones are redacted.
SHORT = 4
#: A message holding this many leading characters of a longer value echoes it.
_PREFIX = 12
#: Strings of the body compared with messages, at most (the error path only).
_MAX_VALUES = 2000


def _values(doc: Any) -> list[str]:
    """The body's string values and long numbers, longest first.

    Keys are left out: they are field names, which locations and messages may
    name (:func:`safe_loc` decides how much of a key is sent back).
    """
    found: set[str] = set()
    stack = [doc]
    while stack and len(found) < _MAX_VALUES:
        node = stack.pop()
        if isinstance(node, str):
            if len(node) > SHORT:
                found.add(node)
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            text = str(node)
            if len(text) > SHORT:
                found.add(text)
    return sorted(found, key=len, reverse=True)


def _redact(msg: str, values: list[str]) -> str:
    for value in values:
        if value in msg:
            msg = msg.replace(value, "<redacted>")
        elif len(value) > _PREFIX and value[:_PREFIX] in msg:
            # A cut-down echo ("'hunter2-very-se...'"): where it ends is unknown.
            return "the value is not valid"
    return msg


def safe_errors(errors: list[Any], doc: Any) -> list[dict[str, Any]]:
    """Errors written by others made safe to send: ``loc``, ``msg``, ``type`` only.

    Locations keep array indexes and short plain keys (:func:`safe_loc`);
    locations and messages (cut to 160 characters) lose any echo of *doc*'s values.
    """
    values: list[str] | None = None
    out = []
    for item in errors[:20]:
        if isinstance(item, Mapping):
            raw_loc = item.get("loc", ["body"])
            loc = [safe_loc(p) for p in raw_loc] if isinstance(raw_loc, (list, tuple)) else ["body"]
            msg = str(item.get("msg", "invalid"))[:_MAX_MSG]
            kind = str(item.get("type", "invalid"))[:64]
        else:
            loc, msg, kind = ["body"], str(item)[:_MAX_MSG], "invalid"
        if values is None:
            values = _values(doc)
        if values:
            loc = [
                "<redacted>" if isinstance(p, str) and _redact(p, values) != p else p for p in loc
            ]
        out.append({"loc": loc, "msg": _redact(msg, values), "type": kind})
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_RULE_MSG: dict[str, Callable[[Any], str]] = {
    "type": lambda d: f"must be of type {d}",
    "required": lambda d: "a required field is missing",
    "enum": lambda d: f"must be one of {_short(d)}",
    "const": lambda d: f"must be {_short(d)}",
    "minLength": lambda d: f"must be at least {d} characters long",
    "maxLength": lambda d: f"must be at most {d} characters long",
    "minimum": lambda d: f"must be at least {d}",
    "maximum": lambda d: f"must be at most {d}",
    "exclusiveMinimum": lambda d: f"must be greater than {d}",
    "exclusiveMaximum": lambda d: f"must be less than {d}",
    "minItems": lambda d: f"must have at least {d} items",
    "maxItems": lambda d: f"must have at most {d} items",
    "uniqueItems": lambda d: "items must be unique",
    "pattern": lambda d: "does not match the required pattern",
    "format": lambda d: f"must be a valid {d}",
    "additionalProperties": lambda d: "has fields that are not allowed",
    "minProperties": lambda d: f"must have at least {d} fields",
    "maxProperties": lambda d: f"must have at most {d} fields",
    "multipleOf": lambda d: f"must be a multiple of {d}",
}


def _message(rule: str, definition: Any) -> str:
    make = _RULE_MSG.get(rule)
    return make(definition) if make is not None else f"fails the '{rule}' rule"


def _loc(parts: Any) -> list[Any]:
    return ["body", *(safe_loc(p) for p in parts)]


def _fastjsonschema(schema: Mapping[str, Any]) -> Validator:
    import fastjsonschema

    check = fastjsonschema.compile(dict(schema))

    def validate(doc: Any) -> list[dict[str, Any]]:
        try:
            check(doc)
        except fastjsonschema.JsonSchemaValueException as exc:
            path = list(exc.path[1:]) if exc.path else []
            rule = exc.rule or "schema"
            if rule == "required" and isinstance(exc.rule_definition, list):
                # The message names the missing field, which comes from the schema.
                missing = [f for f in exc.rule_definition if f in str(exc.message)]
                if missing:
                    path = [*path, missing[0]]
            return [{"loc": _loc(path), "msg": _message(rule, exc.rule_definition), "type": rule}]
        return []

    return validate


def _jsonschema(schema: Mapping[str, Any]) -> Validator:
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    checker = cls(schema)

    def validate(doc: Any) -> list[dict[str, Any]]:
        errors = []
        for err in checker.iter_errors(doc):
            path = list(err.absolute_path)
            rule = str(err.validator)
            if rule == "required":
                missing = [f for f in err.validator_value if f in err.message[:200]]
                if missing:
                    path.append(missing[0])
            errors.append(
                {"loc": _loc(path), "msg": _message(rule, err.validator_value), "type": rule}
            )
            if len(errors) >= 20:
                break
        return errors

    return validate


def _pydantic(model: Any) -> Validator:
    import pydantic

    def validate(doc: Any) -> list[dict[str, Any]]:
        try:
            model.model_validate(doc)
        except pydantic.ValidationError as exc:
            errors = exc.errors(include_input=False, include_url=False, include_context=False)
            return safe_errors(
                [{"loc": _loc(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors],
                doc,
            )
        return []

    return validate


def _callable(fn: Callable[[Any], Any]) -> Validator:
    def validate(doc: Any) -> list[dict[str, Any]]:
        try:
            result = fn(doc)
        except ValidationFailed as exc:
            return safe_errors(
                exc.errors or [{"loc": ["body"], "msg": exc.detail, "type": "invalid"}], doc
            )
        except ValueError as exc:
            return safe_errors([str(exc)], doc)
        if result is None or result is True:
            return []
        if result is False:
            return [{"loc": ["body"], "msg": "the body is not valid", "type": "invalid"}]
        return safe_errors([result] if isinstance(result, (str, Mapping)) else list(result), doc)

    return validate


def compile_schema(schema: Any, *, where: str = "schemas") -> Validator:
    """Turn a JSON Schema dict, a pydantic model or a callable into a :data:`Validator`."""
    if isinstance(schema, Mapping):
        try:
            if importlib.util.find_spec("fastjsonschema") is not None:
                return _fastjsonschema(schema)
            if importlib.util.find_spec("jsonschema") is not None:
                return _jsonschema(schema)
        except Exception as exc:
            msg = f"{where}: invalid JSON Schema ({type(exc).__name__}: {str(exc)[:200]})"
            raise ConfigurationError(msg) from None
        msg = f"{where}: a JSON Schema needs fastjsonschema or jsonschema installed"
        raise ConfigurationError(msg)
    if isinstance(schema, type) and hasattr(schema, "model_validate"):
        return _pydantic(schema)
    if callable(schema):
        return _callable(schema)
    kind = type(schema).__name__
    msg = f"{where}: expected a JSON Schema dict, a pydantic model or a callable, got {kind}"
    raise ConfigurationError(msg)
