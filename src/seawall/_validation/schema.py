"""Schema validators behind one interface: ``validator(doc) -> list of errors``.

A schema can be:

- a JSON Schema ``dict``: compiled once with ``fastjsonschema`` when it is
  installed (fast; reports the first error), else with ``jsonschema``
  (reports every error);
- a pydantic model class (pydantic 2): ``Model.model_validate(doc)``;
- any callable ``fn(doc)``: it returns ``None``/``True`` (valid), ``False``,
  a list of error dicts or strings, or raises
  :class:`~seawall.exceptions.ValidationFailed` or :class:`ValueError`.

Errors are ``{"loc", "msg", "type"}`` dicts. Messages are built from the
schema, never from the input, so a problem body cannot echo what the client
sent.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from typing import Any

from seawall._validation.fields import safe_loc
from seawall.exceptions import ConfigurationError, ValidationFailed

__all__ = ["Validator", "compile_schema"]

Validator = Callable[[Any], list[dict[str, Any]]]

_MAX_MSG = 160


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
            return [
                {
                    "loc": _loc(e["loc"]),
                    "msg": str(e["msg"])[:_MAX_MSG],
                    "type": str(e["type"]),
                }
                for e in exc.errors(include_input=False, include_url=False, include_context=False)[
                    :20
                ]
            ]
        return []

    return validate


def _callable(fn: Callable[[Any], Any]) -> Validator:
    def validate(doc: Any) -> list[dict[str, Any]]:
        try:
            result = fn(doc)
        except ValidationFailed as exc:
            return exc.errors or [
                {"loc": ["body"], "msg": exc.detail[:_MAX_MSG], "type": "invalid"}
            ]
        except ValueError as exc:
            return [{"loc": ["body"], "msg": str(exc)[:_MAX_MSG], "type": "invalid"}]
        if result is None or result is True:
            return []
        if result is False:
            return [{"loc": ["body"], "msg": "the body is not valid", "type": "invalid"}]
        errors = []
        for item in result:
            if isinstance(item, str):
                errors.append({"loc": ["body"], "msg": item[:_MAX_MSG], "type": "invalid"})
            else:
                errors.append(dict(item))
        return errors

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
