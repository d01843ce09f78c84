"""Sizes in settings: ``1_000_000``, ``"1 MB"``, ``"512 KiB"``, ``None`` (no limit)."""

from __future__ import annotations

import re

from seawall.exceptions import ConfigurationError

__all__ = ["parse_size"]

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}


def parse_size(value: int | str | None, where: str) -> int | None:
    """Bytes from *value*: an int, ``"1 MB"`` (10**6), ``"1 MiB"`` (2**20), or ``None``."""
    if value is None:
        return None
    if isinstance(value, bool):
        msg = f"{where}: expected a size like 1000000 or '1 MB', got {value!r}"
        raise ConfigurationError(msg)
    if isinstance(value, int):
        if value < 0:
            msg = f"{where}: expected a size >= 0, got {value!r}"
            raise ConfigurationError(msg)
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match is not None and match.group(2).lower() in _UNITS:
            return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    msg = f"{where}: expected a size like 1000000, '1 MB' or '512 KiB', got {value!r}"
    raise ConfigurationError(msg)
