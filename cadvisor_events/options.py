"""Coercers for command-line option values: one family for both twistd plugins.

Each coercer takes the option's text and returns the value, or raises
``ValueError`` with a message that names the option and says what it takes,
which ``usage.Options`` (or the caller) turns into a usage error. They never
read the environment or touch anything else.
"""

from __future__ import annotations

import re
from typing import Callable, Union

__all__ = ["number", "seconds", "whole_number", "byte_size"]

Coercer = Callable[[str], Union[int, float]]

_BYTE_SIZE = re.compile(r"^(\d+)\s*([kmg]?)(i?b)?$")
_BYTE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def number(kind: type, name: str, minimum: float, what: str = "a number") -> Coercer:
    """``kind`` (int or float) of at least ``minimum``; ``_`` separators allowed in whole numbers."""

    def coerce(text: str):
        try:
            value = kind(text.replace("_", "") if kind is int else text)
        except ValueError:
            raise ValueError(f"--{name} takes {what}, not {text!r}") from None
        if value < minimum:
            raise ValueError(f"--{name} cannot be negative" if minimum == 0 else
                             f"--{name} must be at least {minimum}, not {text!r}")
        return value

    coerce.coerceDoc = f"(at least {minimum})"  # type: ignore[attr-defined]
    return coerce


def seconds(name: str) -> Coercer:
    """A duration in seconds, 0 or more."""
    return number(float, name, 0, "a number of seconds")


def whole_number(name: str, minimum: int = 1) -> Coercer:
    """A whole number of at least ``minimum``."""
    return number(int, name, minimum, "a whole number")


def byte_size(name: str) -> Coercer:
    """Bytes as ``268435456``, ``256MiB``, ``256M``, ``512k`` or ``1GiB`` (powers of 1024), at least 1."""

    def coerce(text: str) -> int:
        match = _BYTE_SIZE.match(text.strip().replace("_", "").lower())
        if not match:
            raise ValueError(f"--{name} takes a size in bytes such as 268435456 or 256MiB, not {text!r}")
        size = int(match.group(1)) * _BYTE_UNITS[match.group(2)]
        if size < 1:
            raise ValueError(f"--{name} must be at least 1 byte")
        return size

    return coerce
