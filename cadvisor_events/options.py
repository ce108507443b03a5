"""Coercers for command-line option values: one family for both twistd plugins.

Each coercer takes the option's text and returns the value, or raises
``ValueError`` with a message that names the option and says what it takes,
which ``usage.Options`` (or the caller) turns into a usage error. They never
read the environment, listen, connect or start anything (``server_endpoint``
only parses, on a reactor that does nothing; an ``ssl:`` endpoint does read
its key and certificate files while parsing).
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Callable, Union

from twisted.internet.endpoints import quoteStringArgument, serverFromString

__all__ = ["number", "seconds", "whole_number", "byte_size", "server_endpoint"]

Coercer = Callable[[str], Union[int, float]]

_BYTE_SIZE = re.compile(r"^(\d+)\s*([kmg]?)(i?b)?$")
_BYTE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}

#: Prometheus' duration syntax (``model.ParseDuration``): whole numbers with units
#: from the largest to the smallest, each unit at most once (``1h30m``, ``500ms``).
_DURATION_UNITS = {"y": 365 * 86400_000, "w": 7 * 86400_000, "d": 86400_000, "h": 3600_000,
                   "m": 60_000, "s": 1000, "ms": 1}
_DURATION = re.compile("^" + "".join(f"(?:(?P<{unit}>[0-9]+){unit})?" for unit in _DURATION_UNITS) + "$")
_DURATION_PARTS = re.compile(r"^(?:[0-9]+(?:ms|[ywdhms]))+$")
_DURATION_EXAMPLES = "a number of seconds or a duration such as 90s, 5m, 1h30m, 1d or 500ms"

#: ``[HOST]:PORT`` shorthands of ``--listen`` (HOST empty or an IP address, IPv6 in brackets).
_LISTEN_SHORTHAND = re.compile(r"^(?:(?P<host>\[[^\]]*\]|[0-9.]*):)?(?P<port>[0-9]+)$")
_LISTEN_EXAMPLES = ("PORT, :PORT, IP:PORT, [IPv6]:PORT or a Twisted server endpoint string "
                    "(tcp:9100:interface=127.0.0.1, ssl:..., unix:...)")


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
    """A duration of 0 or more, as seconds (a float): plain seconds or a Prometheus duration."""

    def coerce(text: str) -> float:
        try:
            value = _duration_seconds(text)
        except ValueError as error:
            reason = f" ({error})" if str(error) else ""
            raise ValueError(f"--{name} takes {_DURATION_EXAMPLES}, not {text!r}{reason}") from None
        if value < 0:
            raise ValueError(f"--{name} cannot be negative")
        return value

    coerce.coerceDoc = "(seconds, or a Prometheus duration: 90s, 5m, 1h30m, 1d, 500ms)"  # type: ignore[attr-defined]
    return coerce


def _duration_seconds(text: str) -> float:
    """Seconds in ``text``, a plain number (``1.5``) or a Prometheus duration (``1h30m``), signed.

    Raises ``ValueError`` for anything else (its message, if any, says why),
    including units out of order (``5m1h``), a repeated unit, ``inf`` and ``nan``.
    """
    text = text.strip()
    sign, body = (-1, text[1:]) if text.startswith("-") else (1, text)
    match = _DURATION.match(body)
    if body and match:
        milliseconds = sum(int(count) * _DURATION_UNITS[unit]
                           for unit, count in match.groupdict().items() if count is not None)
        try:
            return sign * milliseconds / 1000
        except OverflowError:
            raise ValueError("too long") from None
    if _DURATION_PARTS.match(body):
        raise ValueError("duration units go from the largest to the smallest, y w d h m s ms, each once")
    try:
        value = float(text)  # "1.5", "1e3"
    except ValueError:
        raise ValueError() from None
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


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


def server_endpoint(name: str = "listen") -> Callable[[str], str]:
    """A Twisted server endpoint string; ``PORT``, ``:PORT``, ``IP:PORT`` and ``[IPv6]:PORT`` too.

    Returns the endpoint string Twisted understands (``:9100`` is ``tcp:9100``,
    ``127.0.0.1:9100`` is ``tcp:9100:interface=127.0.0.1``, ``[::1]:9100`` is
    ``tcp6:9100:interface=\\:\\:1``); anything else is returned unchanged once
    ``serverFromString`` has parsed it, so ``ssl:``, ``unix:`` and plugin
    endpoints keep working. Nothing listens here.
    """

    def coerce(text: str) -> str:
        description = _expand_listen_shorthand(name, text.strip())
        try:
            _parse_server_endpoint(description)
        except Exception as error:  # a parser may raise anything: TypeError, OSError, IndexError...
            why = str(error) or type(error).__name__
            raise ValueError(f"--{name} {text!r} is not a server endpoint ({why}); "
                             f"it takes {_LISTEN_EXAMPLES}") from None
        return description

    return coerce


def _expand_listen_shorthand(name: str, text: str) -> str:
    """``tcp:``/``tcp6:`` endpoint string for a ``[HOST]:PORT`` shorthand; other text unchanged."""
    match = _LISTEN_SHORTHAND.match(text)
    if not match:
        return text
    port, host = int(match.group("port")), match.group("host") or ""
    if port > 65535:
        raise ValueError(f"--{name} {text!r}: the port must be 0 to 65535")
    if not host:
        return f"tcp:{port}"
    host = host[1:-1] if host.startswith("[") else host
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        raise ValueError(f"--{name} {text!r}: {host!r} is not an IP address; "
                         f"it takes {_LISTEN_EXAMPLES}") from None
    return f"{'tcp6' if version == 6 else 'tcp'}:{port}:interface={quoteStringArgument(host)}"


def _parse_server_endpoint(description: str) -> None:
    """Parse ``description`` as ``serverFromString`` does at startup, on a reactor that never listens."""
    from twisted.internet.testing import MemoryReactor  # imported here: it pulls in twisted.trial

    serverFromString(MemoryReactor(), description)
