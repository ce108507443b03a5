"""Go's standard library, byte for byte: what the fake cAdvisor writes and how it reads.

Everything the simulator encodes or parses the way Go does goes through here:
strings as ``encoding/json`` writes them, times as ``time`` formats and
parses RFC 3339 (trimmed nanoseconds), numbers and booleans as ``strconv``
reads them, queries and paths as ``net/url`` and ``path`` do, quoting as
``%q`` and the ``time`` package's errors write it, and :class:`GoPanic` for
where Go would panic. It knows nothing of cAdvisor (that is :mod:`.query`),
and it must never use Python's own lenient parsers (``int()``,
``fromisoformat``, ``parse_qs``) or ``json.dumps``: each accepts or writes
something Go does not.
"""

from __future__ import annotations

import datetime
import functools
import re
from typing import Optional
from urllib.parse import unquote_to_bytes

__all__ = [
    "GO_ZERO_TIME_NS",
    "GoPanic",
    "NS_PER_SECOND",
    "clean_go_path",
    "decode_url_path",
    "go_duration_error",
    "go_json_string",
    "go_quote",
    "go_time_quote",
    "parse_go_bool",
    "parse_go_int",
    "parse_go_query",
    "parse_rfc3339",
    "rfc3339nano",
]

# --- encoding/json strings ---------------------------------------------------

_JSON_SPECIAL = re.compile('["\\\\\x00-\x1f<>&\u2028\u2029\ud800-\udfff]')


def _json_escape_table() -> dict[int, str]:
    table = {code: "\\u%04x" % code for code in range(0x20)}
    # Go 1.22+ writes \b and \f in short form too (older Go: \u0008, \u000c).
    table.update({0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"})
    table.update({ord('"'): '\\"', ord("\\"): "\\\\"})
    table.update({ord(c): "\\u%04x" % ord(c) for c in "<>&\u2028\u2029"})
    # A Python str holds invalid UTF-8 as surrogates; Go replaces every invalid
    # byte with the escaped replacement rune.  A surrogateescape'd byte is one
    # byte; any other lone surrogate stands for its three UTF-8 bytes.
    for code in range(0xD800, 0xE000):
        table[code] = "\\ufffd" if 0xDC80 <= code <= 0xDCFF else "\\ufffd" * 3
    return table


_JSON_ESCAPES = _json_escape_table()


def go_json_string(text: str) -> str:
    """``text`` as a quoted JSON string exactly as Go's ``json.Marshal`` writes it.

    HTML-sensitive ``< > &`` and U+2028/U+2029 become ``\\u`` escapes, control
    characters use the short forms Go knows (``\\b \\f \\n \\r \\t``) or
    ``\\u00xx``; everything else, non-ASCII included, stays raw UTF-8.
    """
    if _JSON_SPECIAL.search(text) is None:
        return '"' + text + '"'
    return '"' + text.translate(_JSON_ESCAPES) + '"'


# --- time.Time -----------------------------------------------------------------

_EPOCH = datetime.datetime(1970, 1, 1)
NS_PER_SECOND = 1_000_000_000
#: Go's zero ``time.Time`` (0001-01-01T00:00:00Z) in ns since the Unix epoch:
#: a bound parsed to exactly this instant counts as "not given" (``IsZero``).
GO_ZERO_TIME_NS = -62_135_596_800 * NS_PER_SECOND


@functools.lru_cache(maxsize=65536)
def _wall_clock_prefix(local_seconds: int) -> str:
    return (_EPOCH + datetime.timedelta(seconds=local_seconds)).strftime("%Y-%m-%dT%H:%M:%S")


@functools.lru_cache(maxsize=64)
def _zone_suffix(offset_minutes: int) -> str:
    if offset_minutes == 0:
        return "Z"
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return "%s%02d:%02d" % (sign, hours, minutes)


def rfc3339nano(timestamp_ns: int, offset_minutes: int) -> str:
    """A nanosecond timestamp as Go's ``time.RFC3339Nano`` in a fixed zone.

    Up to nine fractional digits with trailing zeros trimmed, no dot at all on
    a whole second, ``Z`` for UTC else ``±hh:mm``: what ``json.Marshal`` writes
    for a ``time.Time``.
    """
    seconds, nanos = divmod(timestamp_ns, NS_PER_SECOND)
    text = _wall_clock_prefix(seconds + offset_minutes * 60)
    if nanos:
        text += ("." + "%09d" % nanos).rstrip("0")
    return text + _zone_suffix(offset_minutes)


_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{1,2}):([0-9]{2}):([0-9]{2})"
    r"(?:[.,]([0-9]+))?(?:(Z)|([+-])([0-9]{2}):([0-9]{2}))"
)


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _days_from_civil(year: int, month: int, day: int) -> int:
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def parse_rfc3339(text: str) -> Optional[int]:
    """Nanoseconds since the Unix epoch, or ``None`` where Go's
    ``time.Parse(time.RFC3339, text)`` fails.

    Go accepts more than the layout says: a fraction after the seconds
    (``.`` or ``,``, any number of digits, truncated to nine), a one-digit
    hour, offsets up to 24:60. It rejects ``t``/``z`` in lower case, second 60
    and impossible dates.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    if not 1 <= month <= 12 or hour > 23 or minute > 59 or second > 59:
        return None
    days_in_month = 29 if month == 2 and _is_leap(year) else _DAYS_IN_MONTH[month - 1]
    if not 1 <= day <= days_in_month:
        return None
    offset_seconds = 0
    if match.group(8) is None:
        zone_hours, zone_minutes = int(match.group(10)), int(match.group(11))
        if zone_hours > 24 or zone_minutes > 60:
            return None
        offset_seconds = (zone_hours * 60 + zone_minutes) * 60
        if match.group(9) == "-":
            offset_seconds = -offset_seconds
    fraction = (match.group(7) or "")[:9].ljust(9, "0")
    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
    return (seconds - offset_seconds) * NS_PER_SECOND + int(fraction)


# --- strconv, net/url, path ------------------------------------------------------

_GO_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}


def parse_go_bool(text: str) -> Optional[bool]:
    """``strconv.ParseBool``: the twelve spellings it knows, else ``None``."""
    return _GO_BOOLS.get(text)


_GO_INT = re.compile(r"[+-]?[0-9]+")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def parse_go_int(text: str) -> Optional[int]:
    """``strconv.Atoi`` on a 64-bit platform: no spaces, no underscores, int64 range."""
    if _GO_INT.fullmatch(text) is None:
        return None
    value = int(text)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def _go_query_unescape(raw: bytes) -> Optional[str]:
    if _BAD_PERCENT.search(raw):
        return None
    return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8", "surrogateescape")


def parse_go_query(raw_query: bytes) -> dict[str, list[str]]:
    """``url.ParseQuery`` as ``r.URL.Query()`` uses it: ``&``-separated, pairs
    holding ``;`` or a bad ``%`` escape silently dropped, ``+`` is a space.
    Callers take ``[0]``: with a repeated key Go's handlers read the first."""
    result: dict[str, list[str]] = {}
    for pair in raw_query.split(b"&"):
        if not pair or b";" in pair:
            continue
        key, _, value = pair.partition(b"=")
        key_text, value_text = _go_query_unescape(key), _go_query_unescape(value)
        if key_text is None or value_text is None:
            continue
        result.setdefault(key_text, []).append(value_text)
    return result


def decode_url_path(raw_path: bytes) -> str:
    """The request path percent-decoded, as Go's ``r.URL.Path``."""
    return unquote_to_bytes(raw_path).decode("utf-8", "surrogateescape")


def clean_go_path(path: str) -> str:
    """Go's ``path.Clean``: one slash between elements, ``.`` and ``..``
    resolved lexically (never above ``/``), no trailing slash."""
    rooted = path.startswith("/")
    parts: list[str] = []
    for element in path.split("/"):
        if element in ("", "."):
            continue
        if element == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(element)
    cleaned = ("/" if rooted else "") + "/".join(parts)
    return cleaned or "."


_SHORT_QUOTE_ESCAPES = {
    "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
    '"': '\\"', "\\": "\\\\",
}


def go_quote(text: str) -> str:
    """Go's ``%q`` (``strconv.Quote``), as in cAdvisor's error messages."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _SHORT_QUOTE_ESCAPES:
            out.append(_SHORT_QUOTE_ESCAPES[char])
        elif 0xDC80 <= code <= 0xDCFF:  # one invalid UTF-8 byte
            out.append("\\x%02x" % (code - 0xDC00))
        elif code < 0x20 or code == 0x7F:
            out.append("\\x%02x" % code)
        elif char.isprintable() and not 0xD800 <= code <= 0xDFFF:
            out.append(char)
        elif code < 0x10000:
            out.append("\\u%04x" % code)
        else:
            out.append("\\U%08x" % code)
    out.append('"')
    return "".join(out)


def go_time_quote(text: str) -> str:
    """The ``time`` package's own quote: bytes outside printable ASCII as ``\\xNN``."""
    out = ['"']
    for byte in text.encode("utf-8", "surrogateescape"):
        if byte < 0x20 or byte >= 0x80:
            out.append("\\x%02x" % byte)
        else:
            out.append(("\\" if byte in (0x22, 0x5C) else "") + chr(byte))
    out.append('"')
    return "".join(out)


_DURATION_UNITS = frozenset(("ns", "us", "\u00b5s", "\u03bcs", "ms", "s", "m", "h"))
_DURATION_NUMBER = re.compile(r"([0-9]*)(?:\.([0-9]*))?")
_DURATION_UNIT = re.compile(r"[^0-9.]*")


def go_duration_error(text: str) -> Optional[str]:
    """The message ``time.ParseDuration(text)`` fails with, or ``None`` if it parses.

    Overflow of huge values is not checked (cAdvisor only validates ``max_age``).
    """
    invalid = "time: invalid duration " + go_time_quote(text)
    rest = text[1:] if text[:1] in ("+", "-") else text
    if rest == "0":
        return None
    if not rest:
        return invalid
    while rest:
        if not (rest[0] == "." or "0" <= rest[0] <= "9"):
            return invalid
        number = _DURATION_NUMBER.match(rest)
        assert number is not None
        if not number.group(1) and not number.group(2):
            return invalid
        rest = rest[number.end():]
        unit = _DURATION_UNIT.match(rest).group(0)  # type: ignore[union-attr]
        if not unit:
            return "time: missing unit in duration " + go_time_quote(text)
        if unit not in _DURATION_UNITS:
            return "time: unknown unit %s in duration %s" % (go_time_quote(unit), go_time_quote(text))
        rest = rest[len(unit):]
    return None


# --- runtime -------------------------------------------------------------------------


class GoPanic(Exception):
    """Where cAdvisor's Go code would panic (it closes the connection unanswered)."""
