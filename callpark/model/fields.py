"""Strict field checks for JSON objects: the model's ``from_json`` and the store's record
parsers share them, so a missing or mistyped field is refused the same way everywhere.

Each check raises :class:`BadField` (a ``ValueError``); the store turns it into a
:class:`~callpark.errors.StoreDataError` naming the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


class BadField(ValueError):
    """A field of a record is missing or of the wrong type (becomes a StoreDataError)."""


def text(data: Mapping[str, Any], name: str) -> str:
    """The string field ``name``."""
    value = data.get(name)
    if not isinstance(value, str):
        raise BadField(f"{name} must be a string")
    return value


def opt_text(data: Mapping[str, Any], name: str) -> str | None:
    """The string field ``name``, or None when it is absent or null."""
    return None if data.get(name) is None else text(data, name)


def whole(data: Mapping[str, Any], name: str, default: int | None = None, minimum: int = 0) -> int:
    """The whole-number field ``name`` (not a bool), ``minimum`` to 2**62."""
    value = data.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum or value > 2**62:
        raise BadField(f"{name} must be a whole number >= {minimum}")
    return value


def number(data: Mapping[str, Any], name: str) -> float:
    """The finite number field ``name`` (not a bool)."""
    value = data.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise BadField(f"{name} must be a finite number")
    return float(value)


def flag(data: Mapping[str, Any], name: str, default: bool = False) -> bool:
    """The boolean field ``name``."""
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise BadField(f"{name} must be true or false")
    return value


def obj(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The object field ``name``."""
    value = data.get(name)
    if not isinstance(value, dict):
        raise BadField(f"{name} must be an object")
    return value
