"""One cAdvisor event: decode JSON bytes into a typed value and name its counting key.

This module is the only place that knows the shape of cAdvisor's ``info.Event``
JSON. It must never raise anything but :class:`InvalidEvent` for bad input, and
never lose nanoseconds: the original timestamp string is kept verbatim because
``start_time`` and de-duplication need all nine fractional digits, which
``datetime`` would truncate to six.
"""

from __future__ import annotations

import datetime
import re
from itertools import islice, repeat
from operator import add, attrgetter, itemgetter, le
from typing import Iterable, Optional, Tuple

import msgspec

__all__ = [
    "Event",
    "EventData",
    "InvalidEvent",
    "OomKill",
    "CountingKey",
    "counting_key",
    "count_events",
    "decode_event",
    "decode_history",
    "parse_history",
    "timestamp_ns",
    "timestamps_ns",
    "OOM_TYPES",
    "NS_PER_SECOND",
]

NS_PER_SECOND = 1_000_000_000

#: The Go seed's counting key: (container name, event type, oom process name or "").
CountingKey = Tuple[str, str, str]

#: Event types a restarted cAdvisor re-adds to its (emptied) history from the kernel log.
OOM_TYPES = frozenset(("oom", "oomKill"))


class InvalidEvent(ValueError):
    """A line or document that is not a cAdvisor event; the message says why."""


class OomKill(msgspec.Struct, frozen=True, gc=False):
    """``event_data.oom`` of an ``oomKill`` event (cAdvisor's OomKillEventData)."""

    pid: int = 0
    process_name: str = ""


class EventData(msgspec.Struct, frozen=True, gc=False):
    """``event_data``: only the part we count by; unknown keys are ignored."""

    oom: Optional[OomKill] = None


class Event(msgspec.Struct, frozen=True, gc=False):
    """A decoded cAdvisor event.

    Frozen, so the value itself is hashable and serves as the identity of an
    event for de-duplication (two events are the same event iff every field,
    the nanosecond timestamp string and the pid included, is equal). Not
    tracked by the cyclic garbage collector (``gc=False``): it holds only
    strings, numbers and structs like itself, so it can never be part of a
    cycle, and followers remember thousands of events that a collector
    would otherwise scan again and again.
    """

    container_name: str
    timestamp: str
    event_type: str
    event_data: Optional[EventData] = None

    @property
    def oom_process(self) -> str:
        """The killed process's name for ``oomKill`` events, else ``""`` (Go seed rule)."""
        data = self.event_data
        if data is None or data.oom is None:
            return ""
        return data.oom.process_name

    @property
    def key(self) -> CountingKey:
        """The Go seed's counting key: one series per distinct key."""
        return counting_key(self)


def counting_key(event: Event) -> CountingKey:
    """The Go seed's counting rule, the one place it is written: one series per
    (container name, event type, killed process name or ``""``); the pid is not part of it."""
    data = event.event_data
    oom = data.oom if data is not None else None
    return (event.container_name, event.event_type, oom.process_name if oom is not None else "")


_event_decoder = msgspec.json.Decoder(Event)
_history_decoder = msgspec.json.Decoder(list[Event])


def decode_event(line: bytes) -> Event:
    """Decode one NDJSON line (without its newline) into an :class:`Event`.

    :raises InvalidEvent: for invalid UTF-8, invalid JSON, a JSON value that is
        not an object, a missing ``container_name``/``timestamp``/``event_type``
        or a field of the wrong type.
    """
    try:
        return _event_decoder.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise InvalidEvent(str(e)) from None


def decode_history(body: bytes) -> list[Event]:
    """Decode a history response (one JSON array of events).

    :raises InvalidEvent: when the body is not a JSON array of events (or holds
        invalid UTF-8, which msgspec reports as UnicodeDecodeError); the
        message names the first problem (msgspec gives its JSON path).
    """
    try:
        return _history_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise InvalidEvent(str(e)) from None


def count_events(events: Iterable[Event]) -> dict[CountingKey, int]:
    """Count events by the Go seed's rule (what ``/proxy`` answers)."""
    counts: dict[CountingKey, int] = {}
    get = counts.get
    for event in events:
        key = counting_key(event)
        counts[key] = get(key, 0) + 1
    return counts


_EPOCH = datetime.datetime(1970, 1, 1)
# "YYYY-MM-DDTHH:MM:SS" + zone -> nanoseconds since the epoch of that whole second.
_second_ns: dict[str, int] = {}
_SECOND_CACHE_LIMIT = 65536
_FRACTION_SCALE = (0, 100_000_000, 10_000_000, 1_000_000, 100_000, 10_000, 1_000, 100, 10, 1)
# The whole second and zone of the last timestamp that went through the cache, and its value;
# the minute (with its colon) and the value of its first second.
_last_second, _last_zone, _last_base = "\0", "\0", 0
_last_minute, _last_minute_base = "\0", 0


def timestamp_ns(timestamp: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 timestamp as Go writes it.

    The per-event path: a stream's timestamps share their whole second for
    many events in a row, and a history's (sorted, spread over hours) their
    minute, so the date, time and zone are validated once per distinct
    second and zone (by :func:`strict_timestamp_ns`) and cached; the last
    second is checked first, then the last minute, whose seconds are read
    here like the fractional digits. Anything unusual goes to
    :func:`strict_timestamp_ns` whole, so the result and the errors are the same.

    :raises InvalidEvent: when ``timestamp`` is not
        ``YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm)``.
    """
    global _last_second, _last_zone, _last_base, _last_minute, _last_minute_base
    if timestamp.startswith(_last_second) and timestamp.endswith(_last_zone):
        base, zone_at = _last_base, len(timestamp) - len(_last_zone)
    elif timestamp.startswith(_last_minute) and timestamp.endswith(_last_zone):
        seconds = timestamp[17:19]
        zone_at = len(timestamp) - len(_last_zone)
        if zone_at < 19 or not seconds.isdigit() or not seconds.isascii() or seconds > "59":
            return strict_timestamp_ns(timestamp)
        base = _last_minute_base + int(seconds) * NS_PER_SECOND
        _last_second, _last_base = timestamp[:19], base
    else:
        last = timestamp[-1:]
        zone_at = len(timestamp) - (1 if last == "Z" or last == "z" else 6)
        if zone_at < 19:
            return strict_timestamp_ns(timestamp)
        key = timestamp[:19] + timestamp[zone_at:]
        cached = _second_ns.get(key)
        if cached is not None:
            base = cached
        else:
            base = strict_timestamp_ns(key)
            if len(_second_ns) >= _SECOND_CACHE_LIMIT:
                _second_ns.clear()
            _second_ns[key] = base
        _last_second, _last_zone, _last_base = timestamp[:19], timestamp[zone_at:], base
        _last_minute, _last_minute_base = timestamp[:17], base - int(timestamp[17:19]) * NS_PER_SECOND
    if zone_at == 19:
        return base
    digits = timestamp[20:zone_at]
    if timestamp[19] != "." or not 0 < len(digits) <= 9 or not digits.isdigit() or not digits.isascii():
        return strict_timestamp_ns(timestamp)
    return base + int(digits) * _FRACTION_SCALE[len(digits)]


def format_timestamp(ns: int) -> str:
    """RFC 3339 in UTC with nine fractional digits, for ``start_time`` (cAdvisor parses it exactly)."""
    seconds, nanos = divmod(ns, NS_PER_SECOND)
    moment = _EPOCH + datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + ".%09dZ" % nanos


def parse_history(body: bytes) -> tuple[list[tuple[Event, int]], int]:
    """Decode a history answer into ``(event, timestamp_ns)`` pairs sorted by time, and
    the number of elements that were not valid events (skipped, not fatal).

    :raises InvalidEvent: when the body is not a JSON array at all.
    """
    invalid = 0
    try:
        events = decode_history(body)
    except InvalidEvent:
        try:
            raws = msgspec.json.decode(body, type=list[msgspec.Raw])
        except msgspec.DecodeError as e:
            raise InvalidEvent(f"history is not a JSON array: {e}") from None
        events = []
        for raw in raws:
            try:
                events.append(decode_event(raw))
            except InvalidEvent:
                invalid += 1
    stamps = list(map(_timestamp_of, events))
    times = timestamps_ns(stamps)
    if times is not None:
        timed = list(zip(events, times))
    else:
        timed = []
        for event in events:
            try:
                timed.append((event, timestamp_ns(event.timestamp)))
            except InvalidEvent:
                invalid += 1
    if times is None or not all(map(le, times, islice(times, 1, None))):  # (cAdvisor sorts them)
        timed.sort(key=itemgetter(1))
    return timed, invalid


_timestamp_of = attrgetter("timestamp")


def timestamps_ns(stamps: list[str]) -> Optional[list[int]]:
    """:func:`timestamp_ns` of each of ``stamps`` (a history's, thousands at a time), or None
    when they are not all written as cAdvisor writes a history's: a whole second, a dot and
    one to nine digits, and one zone for all. The caller then takes them one by one, which
    gives the same values and says which are bad.

    Every step is a ``map`` over the whole list or a method of one string joined from it:
    no Python step per timestamp, and few new objects. The date and time are validated
    once per distinct second and zone by the cache's :func:`strict_timestamp_ns` (a
    second found there was valid).
    """
    if not stamps:
        return []
    first = stamps[0]
    zone = first[-1:] if first[-1:] == "Z" else first[-6:]
    if zone != "Z" and not _NUMERIC_ZONE.fullmatch(zone):
        return None
    if min(map(len, stamps)) < 21 + len(zone) or not all(map(str.endswith, stamps, repeat(zone))):
        return None
    if "".join(map(_dot_place, stamps)) != "." * len(stamps):
        return None
    fractions = list(map(itemgetter(slice(20, -len(zone))), stamps))  # "123456789"
    digits = "".join(fractions)
    if max(map(len, fractions)) > 9 or not digits.isdigit() or not digits.isascii():
        return None
    seconds = _zone_seconds.get(zone)
    if seconds is None:
        if len(_zone_seconds) >= _ZONES_CACHED:
            _zone_seconds.clear()
        seconds = _zone_seconds[zone] = _ZoneSeconds(zone)
    try:
        bases = list(map(seconds.__getitem__, map(_whole_second, stamps)))
    except InvalidEvent:
        return None
    return list(map(add, bases, map(int, map(str.ljust, fractions, repeat(9), repeat("0")))))


class _ZoneSeconds(dict):
    """``"YYYY-MM-DDTHH:MM:SS"`` -> nanoseconds since the epoch of that whole second in one
    zone; a miss is parsed (and validated) by :func:`strict_timestamp_ns`, so that a lookup
    through ``map`` stays in C for every hit."""

    def __init__(self, zone: str) -> None:
        super().__init__()
        self.zone = zone

    def __missing__(self, second: str) -> int:
        value = strict_timestamp_ns(second + self.zone)
        if len(self) >= _SECOND_CACHE_LIMIT:
            self.clear()
        self[second] = value
        return value


_zone_seconds: dict[str, _ZoneSeconds] = {}
_ZONES_CACHED = 64
_NUMERIC_ZONE = re.compile(r"[+-][0-9]{2}:[0-9]{2}")
_whole_second = itemgetter(slice(0, 19))
_dot_place = itemgetter(19)


def strict_timestamp_ns(ts: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 timestamp, validating every part.

    The reference for :func:`timestamp_ns`, which calls it for each new whole
    second and for anything unusual. Keeps all nine fractional digits
    (``datetime.fromisoformat`` keeps six).

    :raises InvalidEvent: when ``ts`` is not ``YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm)``.
    """
    seconds = _parse_base(ts, ts[:19])
    rest = ts[19:]
    fraction = 0
    if rest[:1] == ".":
        end = 1
        length = len(rest)
        while end < length and rest[end].isdigit():
            end += 1
        digits = rest[1:end]
        if not 1 <= len(digits) <= 9 or not digits.isascii():
            raise InvalidEvent(f"bad fractional seconds in timestamp {ts!r}")
        fraction = int(digits) * 10 ** (9 - len(digits))
        rest = rest[end:]
    if rest == "Z" or rest == "z":
        offset = 0
    elif (
        len(rest) == 6
        and rest[0] in "+-"
        and rest[3] == ":"
        and rest[1:3].isdigit()
        and rest[4:6].isdigit()
        and rest.isascii()
    ):
        offset = int(rest[1:3]) * 3600 + int(rest[4:6]) * 60
        if rest[0] == "-":
            offset = -offset
    else:
        raise InvalidEvent(f"bad zone in timestamp {ts!r}")
    return (seconds - offset) * 1_000_000_000 + fraction


def _parse_base(ts: str, base: str) -> int:
    """Seconds of the ``YYYY-MM-DDTHH:MM:SS`` part, as if it were UTC."""
    if len(base) != 19 or base[10] not in "Tt" or not base.isascii():
        raise InvalidEvent(f"not an RFC 3339 timestamp: {ts!r}")
    try:
        moment = datetime.datetime.strptime(base[:10] + "T" + base[11:], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise InvalidEvent(f"not an RFC 3339 timestamp: {ts!r}") from None
    return (moment - _EPOCH) // datetime.timedelta(seconds=1)
