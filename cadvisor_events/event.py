"""One cAdvisor event: decode JSON bytes into a typed value and name its counting key.

This module is the only place that knows the shape of cAdvisor's ``info.Event``
JSON. It must never raise anything but :class:`InvalidEvent` for bad input, and
never lose nanoseconds: the original timestamp string is kept verbatim because
``start_time`` and de-duplication need all nine fractional digits, which
``datetime`` would truncate to six.
"""

from __future__ import annotations

import datetime
from typing import Iterable, Optional, Tuple

import msgspec

__all__ = [
    "Event",
    "EventData",
    "InvalidEvent",
    "OomKill",
    "CountingKey",
    "decode_event",
    "decode_history",
    "timestamp_ns",
]

#: The Go seed's counting key: (container name, event type, oom process name or "").
CountingKey = Tuple[str, str, str]

OOM_TYPES = ("oom", "oomKill")


class InvalidEvent(ValueError):
    """A line or document that is not a cAdvisor event; the message says why."""


class OomKill(msgspec.Struct, frozen=True):
    """``event_data.oom`` of an ``oomKill`` event (cAdvisor's OomKillEventData)."""

    pid: int = 0
    process_name: str = ""


class EventData(msgspec.Struct, frozen=True):
    """``event_data``: only the part we count by; unknown keys are ignored."""

    oom: Optional[OomKill] = None


class Event(msgspec.Struct, frozen=True):
    """A decoded cAdvisor event.

    Frozen, so the value itself is hashable and serves as the identity of an
    event for de-duplication (two events are the same event iff every field,
    the nanosecond timestamp string and the pid included, is equal).
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
        return (self.container_name, self.event_type, self.oom_process)


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
    for ev in events:
        data = ev.event_data
        oom = data.oom if data is not None else None
        key = (ev.container_name, ev.event_type, oom.process_name if oom is not None else "")
        counts[key] = get(key, 0) + 1
    return counts


# "2026-11-24T17:25:55" -> seconds since the epoch, before the zone offset.
_base_seconds: dict[str, int] = {}
_BASE_CACHE_LIMIT = 65536
_EPOCH = datetime.datetime(1970, 1, 1)


def timestamp_ns(ts: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 timestamp as Go writes it.

    Keeps all nine fractional digits (``datetime.fromisoformat`` keeps six).
    Whole seconds are cached per ``YYYY-MM-DDTHH:MM:SS`` prefix because a
    stream's timestamps share it for many events in a row.

    :raises InvalidEvent: when ``ts`` is not ``YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm)``.
    """
    base = ts[:19]
    seconds = _base_seconds.get(base)
    if seconds is None:
        seconds = _parse_base(ts, base)
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
    """Seconds of the ``YYYY-MM-DDTHH:MM:SS`` part, as if it were UTC; cached."""
    if len(base) != 19 or base[10] not in "Tt" or not base.isascii():
        raise InvalidEvent(f"not an RFC 3339 timestamp: {ts!r}")
    try:
        moment = datetime.datetime.strptime(base[:10] + "T" + base[11:], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise InvalidEvent(f"not an RFC 3339 timestamp: {ts!r}") from None
    seconds = (moment - _EPOCH) // datetime.timedelta(seconds=1)
    if len(_base_seconds) >= _BASE_CACHE_LIMIT:
        _base_seconds.clear()
    _base_seconds[base] = seconds
    return seconds
