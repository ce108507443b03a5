"""The simulator's wire rules: Go-exact bytes out, Go-exact request parsing in.

Everything the fake cAdvisor writes or reads goes through here, so that it
writes what Go's ``encoding/json`` and ``time`` write (string escaping,
RFC 3339 with trimmed nanoseconds) and reads requests the way cAdvisor's
handlers do with Go's ``net/url``, ``strconv`` and ``time`` (same accepted
spellings, same silent rejections, same error texts, same order of checks).
It must never use Python's own lenient parsers (``int()``, ``fromisoformat``,
``parse_qs``) or ``json.dumps``: each accepts or writes something Go does not.
"""

from __future__ import annotations

import datetime
import functools
import re
from typing import Optional
from urllib.parse import unquote_to_bytes

import attrs

__all__ = [
    "ApiError",
    "EVENT_TYPES",
    "EventQuery",
    "events_container",
    "GO_ZERO_TIME_NS",
    "NS_PER_SECOND",
    "go_duration_error",
    "go_json_string",
    "go_quote",
    "go_time_quote",
    "parse_go_bool",
    "parse_go_int",
    "parse_go_query",
    "parse_rfc3339",
    "rfc3339nano",
    "clean_go_path",
    "decode_url_path",
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


# --- cAdvisor's request handling (cmd/internal/api) ---------------------------------

EVENT_TYPES = ("oom", "oomKill", "containerCreation", "containerDeletion")
_TYPE_FLAGS = {"oom_events": "oom", "oom_kill_events": "oomKill",
               "creation_events": "containerCreation", "deletion_events": "containerDeletion"}
_API_VERSIONS = {
    "v1.0": ("containers", "machine"),
    "v1.1": ("containers", "machine", "subcontainers"),
    "v1.2": ("containers", "machine", "subcontainers", "docker"),
    "v1.3": ("containers", "machine", "subcontainers", "docker", "events"),
    "v2.0": ("version", "attributes", "events", "machine", "summary", "stats", "spec", "storage", "ps", "appmetrics"),
}
_API_VERSIONS["v2.1"] = ("machinestats",) + _API_VERSIONS["v2.0"]
_API_PATH = re.compile(r"/api/([^/]+)/?([^/]+)?(.*)")


class ApiError(Exception):
    """An answer cAdvisor gives instead of events: HTTP status and plain-text message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def events_container(path: str, args: dict[str, list[str]]) -> str:
    """The container an ``/api/...`` path asks events for, checked in cAdvisor's order.

    :raises ApiError: what cAdvisor answers for a path that is not an events
        request (unknown version or type, a v2 option it cannot parse); 501 for
        request types cAdvisor has but the simulator does not serve.
    """
    if path in ("/api", "/api/"):
        raise ApiError(400, "Supported API versions: " + ",".join(sorted(_API_VERSIONS)))
    match = _API_PATH.search(path)
    if match is None:
        raise ApiError(500, "malformed request " + go_quote(path))
    version, request_type, rest = match.group(1), match.group(2) or "", match.group(3)
    if version not in _API_VERSIONS:
        raise ApiError(500, "unsupported API version " + go_quote(version))
    if not request_type:
        raise ApiError(400, "Supported request types: " + go_quote(",".join(sorted(_API_VERSIONS[version]))))
    if version.startswith("v2."):
        _check_v2_request_options(args)
    if request_type not in _API_VERSIONS[version]:
        raise ApiError(500, "unknown request type " + go_quote(request_type))
    if request_type != "events":
        raise ApiError(501, "the cAdvisor simulator serves only events, not " + go_quote(request_type))
    return clean_go_path("/" + rest)


def _check_v2_request_options(args: dict[str, list[str]]) -> None:
    """The v2 API's ``GetRequestOptions`` runs before any handler and fails on bad values."""
    def first(name: str) -> str:
        return args[name][0] if name in args else ""

    if first("type") and first("type") not in ("name", "docker", "podman"):
        raise ApiError(500, "unknown 'type' " + go_quote(first("type")))
    if first("count"):
        count = parse_go_int(first("count"))
        if count is None:
            raise ApiError(500, "failed to parse 'count' option: " + first("count"))
        if count < -1:
            raise ApiError(500, "invalid 'count' option: only -1 and larger values allowed, not %d" % count)
    duration_error = go_duration_error(first("max_age")) if first("max_age") else None
    if duration_error:
        raise ApiError(500, "failed to parse 'max_age' option: " + duration_error)


@attrs.frozen
class EventQuery:
    """cAdvisor's ``events.Request`` plus the ``stream`` flag; time bounds in ns, ``None`` = unset."""

    container_name: str = "/"
    subcontainers: bool = False
    event_types: frozenset = frozenset()
    stream: bool = False
    max_events: int = 10
    start_ns: Optional[int] = None
    end_ns: Optional[int] = None

    @classmethod
    def from_args(cls, args: dict[str, list[str]], container_name: str) -> "EventQuery":
        """``getEventRequest``: first value of each key; a value Go cannot parse leaves the default."""
        def flag(name: str) -> Optional[bool]:
            return parse_go_bool(args[name][0]) if name in args else None

        def bound(name: str) -> Optional[int]:
            value = parse_rfc3339(args[name][0]) if name in args else None
            return None if value == GO_ZERO_TIME_NS else value  # time.IsZero()

        selected = dict.fromkeys(EVENT_TYPES, False)
        for name, event_type in _TYPE_FLAGS.items():
            value = True if flag("all_events") else flag(name)
            if value is not None:
                selected[event_type] = value
        max_events = parse_go_int(args["max_events"][0]) if "max_events" in args else None
        return cls(container_name=container_name, subcontainers=bool(flag("subcontainers")),
                   event_types=frozenset(t for t, on in selected.items() if on), stream=bool(flag("stream")),
                   max_events=10 if max_events is None else max_events,
                   start_ns=bound("start_time"), end_ns=bound("end_time"))

    def selects(self, event) -> bool:
        """Type and container filter (``checkIfEventSatisfiesRequest`` minus the time bounds)."""
        if event.event_type not in self.event_types:
            return False
        if self.subcontainers:
            return self.container_name == "/" or (event.container_name + "/").startswith(self.container_name + "/")
        return event.container_name == self.container_name
