"""De-duplication with bounded state: which events a follower has already counted.

A follower cannot remember every event it counted, and does not need to:
cAdvisor's history answers ``start_time`` inclusively and a restarted
cAdvisor re-emits old OOMs with their original timestamps, so "already
counted" is decided by a high-water mark of counted timestamps plus the few
events counted exactly at it (:class:`Watermark`). :func:`merge_backfill`
applies it to a reconnect's history answer and to the stream events buffered
while that history was fetched. Nothing here does I/O or keeps more than the
events sharing one nanosecond, the history answer being merged, and the tail
of it a caller keeps for a short settle window.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Callable, Iterable, List, Optional, Set, Tuple

import msgspec
from twisted.logger import Logger

from .event import Event, InvalidEvent, decode_event, decode_history, timestamp_ns

log = Logger()

__all__ = ["MAX_TIES", "MAX_FUTURE", "REPLAYED", "add_tie", "Watermark", "Backfill", "merge_backfill", "parse_history", "DedupPaths", "RECENT_TAIL", "event_ns"]

#: History events kept after a backfill (for the settle window) besides those
#: overlapping the buffered stream events: the newest ones, which a stream may
#: still deliver after the history answer arrived.
RECENT_TAIL = 1024

#: Distinct events remembered at the mark's one nanosecond. A host cannot grow a
#: follower's memory by sending a flood of events sharing one timestamp: beyond
#: this they are still counted, but not remembered (a repeat of one of them after
#: a break would count again); said once per timestamp in the log.
MAX_TIES = 4096
_FULL = object()  # marks a tie set that reached MAX_TIES (never equal to an event)


def add_tie(ties: Set, event: Event) -> None:
    """Remember ``event`` as counted at the mark, up to :data:`MAX_TIES` events."""
    if len(ties) < MAX_TIES:
        ties.add(event)
    elif _FULL not in ties:
        ties.add(_FULL)
        log.warn("over {n} distinct events at {timestamp} (last: {container}); the rest are counted "
                 "without de-duplication state", n=MAX_TIES, timestamp=event.timestamp,
                 container=event.container_name)

NS_PER_SECOND = 1_000_000_000
_NO_MARK = -(1 << 80)
_NO_LIMIT = 1 << 80

#: Events remembered that were dated too far ahead of this process's clock (see
#: :meth:`Watermark.too_far_ahead`). Beyond this they are still counted, but a
#: repeat of one of them after a break would count again; said once in the log.
MAX_FUTURE = 1024

# "YYYY-MM-DDTHH:MM:SS" + zone -> nanoseconds since the epoch of that whole second.
_second_ns: dict = {}
_SECOND_CACHE_LIMIT = 65536
_FRACTION_SCALE = (0, 100_000_000, 10_000_000, 1_000_000, 100_000, 10_000, 1_000, 100, 10, 1)


def event_ns(timestamp: str) -> int:
    """:func:`~cadvisor_events.event.timestamp_ns`, about 2.5 times faster for Go's timestamps.

    Same result and same :class:`InvalidEvent` for every input: the date,
    time and zone are validated (once per distinct second and zone) by
    ``timestamp_ns`` itself, only the fractional digits are read here, and
    anything unusual is handed to ``timestamp_ns`` whole.
    """
    last = timestamp[-1:]
    zone_at = len(timestamp) - (1 if last == "Z" or last == "z" else 6)
    if zone_at < 19:
        return timestamp_ns(timestamp)
    key = timestamp[:19] + timestamp[zone_at:]
    base = _second_ns.get(key)
    if base is None:
        base = timestamp_ns(key)
        if len(_second_ns) >= _SECOND_CACHE_LIMIT:
            _second_ns.clear()
        _second_ns[key] = base
    if zone_at == 19:
        return base
    digits = timestamp[20:zone_at]
    if timestamp[19] != "." or not 0 < len(digits) <= 9 or not digits.isdigit() or not digits.isascii():
        return timestamp_ns(timestamp)
    return base + int(digits) * _FRACTION_SCALE[len(digits)]

TimedEvent = Tuple[Event, int]


#: Event types a restarted cAdvisor re-adds to its (emptied) history from the kernel log.
REPLAYED = frozenset(("oom", "oomKill"))


class Watermark:
    """The newest counted timestamp (nanoseconds and original string) and the events counted at it.

    With a clock (``now``, Unix seconds) and ``max_skew`` seconds, a timestamp
    further ahead of that clock than ``max_skew`` does not move the mark: one
    event dated 2099 (a hostile host, a clock that jumped ahead and back)
    would otherwise make every later backfill ask history from 2099 and drop
    every real event as older than the mark. Such an event is counted and
    remembered among the few in :attr:`future`, so a repeat of it is still
    recognised.
    """

    __slots__ = ("ns", "text", "ties", "anchor", "future", "future_counted", "horizon",
                 "_now", "_skew_ns", "_name")

    def __init__(self, now: Optional[Callable[[], float]] = None, max_skew: float = 0.0,
                 name: str = "") -> None:
        self.ns = _NO_MARK
        #: The original timestamp string of the mark, or None.
        self.text: Optional[str] = None
        #: Events counted at exactly ``ns`` (usually one; two for an oom/oomKill pair).
        self.ties: Set[Event] = set()
        #: The newest event that set the mark and that a restart would not re-add (not an OOM).
        self.anchor: Optional[Event] = None
        #: Events counted while dated too far ahead (event -> ns), at most MAX_FUTURE.
        self.future: dict = {}
        #: How many events were dated too far ahead (all counted).
        self.future_counted = 0
        #: Timestamps up to this (ns) are trusted without reading the clock; refreshed from it.
        self.horizon = _NO_LIMIT if now is None else _NO_MARK
        self._now = now
        self._skew_ns = int(max_skew * NS_PER_SECOND)
        self._name = name

    def boundary(self) -> Tuple[Optional[str], Set[Event]]:
        """``start_time`` of the next backfill, and the counted events its answer must hold
        if cAdvisor's history is whole (else: a gap). The events at the mark, or, when those
        are all OOMs (a restarted cAdvisor re-adds them, so finding them proves nothing),
        the anchor: the backfill then starts at the anchor's time."""
        ties = {tie for tie in self.ties if isinstance(tie, Event)}
        if self.anchor is None or any(tie.event_type not in REPLAYED for tie in ties):
            return self.text, ties
        return self.anchor.timestamp, {self.anchor}

    def seen(self, event: Event, ns: int) -> bool:
        """Whether ``event`` (at ``ns``) is at or before the mark and so already counted."""
        return ns < self.ns or (ns == self.ns and event in self.ties) or (bool(self.future) and event in self.future)

    def too_far_ahead(self, ns: int) -> bool:
        """Whether ``ns`` lies more than ``max_skew`` ahead of the clock (which is read only
        when ``ns`` passes the cached :attr:`horizon`, about once per ``max_skew``)."""
        if self._now is None:
            return False
        self.horizon = int(self._now() * NS_PER_SECOND) + self._skew_ns
        return ns > self.horizon

    def remember_future(self, event: Event, ns: int) -> bool:
        """Record that ``event``, dated too far ahead, is counted without moving the mark;
        False (nothing recorded) if it was counted already."""
        future = self.future
        if event in future:
            return False
        self.future_counted += 1
        if self.future_counted == 1:
            log.warn("{name}: event dated {timestamp} is over {skew:.0f}s ahead of this clock; "
                     "counted, but not trusted as the point to resume from (said once)",
                     name=self._name, timestamp=event.timestamp, skew=self._skew_ns / NS_PER_SECOND)
        if len(future) >= MAX_FUTURE:
            for old in [old for old, old_ns in future.items() if old_ns < self.ns]:
                del future[old]  # the mark has caught up with them: seen() covers them now
        if len(future) < MAX_FUTURE:
            future[event] = ns
        return True

    def advance(self, event: Event, ns: int) -> bool:
        """Record that ``event`` is counted; False (and nothing recorded) if an
        identical event was already counted at the mark."""
        if ns > self.ns:
            if ns > self.horizon and self.too_far_ahead(ns):
                return self.remember_future(event, ns)
            self.ns = ns
            self.text = event.timestamp
            self.ties.clear()
            self.ties.add(event)
            if event.event_type not in REPLAYED:
                self.anchor = event
        elif ns == self.ns:
            if event in self.ties:
                return False
            add_tie(self.ties, event)
        return True

    def copy(self) -> "Watermark":
        """A snapshot (the mark at a break, used while catching up)."""
        other = Watermark(self._now, self._skew_ns / NS_PER_SECOND, self._name)
        other.ns, other.text, other.ties, other.anchor = self.ns, self.text, set(self.ties), self.anchor
        other.future, other.horizon = dict(self.future), self.horizon
        return other

    @property
    def seconds(self) -> Optional[float]:
        """The mark as Unix seconds, or None before anything was counted."""
        return None if self.text is None else self.ns / 1e9


class Backfill:
    """What :func:`merge_backfill` did: counts, and the state for the settle window."""

    __slots__ = ("backfilled", "from_buffer", "dropped", "floor", "recent")

    def __init__(self) -> None:
        self.backfilled = 0
        self.from_buffer = 0
        self.dropped = 0
        #: The mark as it was at the break (None on a first connect or when nothing was counted).
        self.floor: Optional[Watermark] = None
        #: History events a late stream delivery may repeat (bounded: see RECENT_TAIL).
        self.recent: Set[Event] = set()


def merge_backfill(
    mark: Watermark,
    history: List[TimedEvent],
    buffered: Iterable[TimedEvent],
    oldest_buffered: Optional[int],
    count: Callable[[Event], None],
) -> Backfill:
    """Count what is new in ``history`` and then in ``buffered``, advancing ``mark``.

    - A history event is dropped when the mark at the break has seen it
      (older than the mark, or identical to an event counted at it).
    - A buffered stream event is dropped when it is identical to a history
      event of this answer (looked up only among history events not older
      than the oldest buffered event, plus the newest ``RECENT_TAIL``), or
      when the mark at the break has seen it.
    - Any event identical to one already counted at the (advancing) mark is
      dropped too.

    ``count`` is called once per accepted event, history first, in order.
    """
    result = Backfill()
    floor = mark.copy() if mark.text is not None else None
    result.floor = floor
    for event, ns in history:
        if (floor is not None and floor.seen(event, ns)) or not mark.advance(event, ns):
            result.dropped += 1
            continue
        count(event)
        result.backfilled += 1
    if history:
        cutoff = min(ns for _, ns in history[-RECENT_TAIL:])
        if oldest_buffered is not None and oldest_buffered < cutoff:
            cutoff = oldest_buffered
        result.recent = {event for event, ns in history if ns >= cutoff}
    recent = result.recent
    for event, ns in buffered:
        if (
            event in recent
            or (floor is not None and floor.seen(event, ns))
            or not mark.advance(event, ns)
        ):
            result.dropped += 1
            continue
        count(event)
        result.from_buffer += 1
    return result


def parse_history(body: bytes) -> Tuple[List[Tuple[Event, int]], int]:
    """Decode a history answer into ``(event, timestamp_ns)`` pairs sorted by time, and
    the number of elements that were not valid events (skipped, not fatal).

    :raises InvalidEvent: when the body is not a JSON array at all.
    """
    invalid = 0
    try:
        events = decode_history(body)
    except InvalidEvent:
        try:
            raws = msgspec.json.decode(body, type=List[msgspec.Raw])
        except msgspec.DecodeError as e:
            raise InvalidEvent(f"history is not a JSON array: {e}") from None
        events = []
        for raw in raws:
            try:
                events.append(decode_event(raw))
            except InvalidEvent:
                invalid += 1
    timed = []
    for event in events:
        try:
            timed.append((event, event_ns(event.timestamp)))
        except InvalidEvent:
            invalid += 1
    timed.sort(key=itemgetter(1))
    return timed, invalid


class DedupPaths:
    """The per-event paths of a follower, one per phase of a stream (a mixin).

    The protocol's ``on_event`` points at one of them at a time, so no
    per-event check of the phase is needed: :meth:`_on_buffered_event` while
    a backfill runs, :meth:`_on_settling_event` for the settle window after
    it, :meth:`_on_live_event` (the hot path) after that. They use the
    follower's ``_mark``, ``_buffer``, ``_buffer_oldest``, ``max_buffered``,
    ``_floor``, ``_recent``, ``_count``, the statistics ``received``,
    ``duplicates_dropped``, ``last_event_time``, and its ``_on_invalid`` and
    ``_overflow`` methods.
    """

    __slots__ = ()

    def _on_buffered_event(self, event: Event) -> None:
        """While backfilling: hold stream events for the merge (bounded)."""
        try:
            ns = event_ns(event.timestamp)
        except InvalidEvent as e:
            self._on_invalid(str(e))
            return
        self.received += 1
        buffer = self._buffer
        buffer.append((event, ns))
        if self._buffer_oldest is None or ns < self._buffer_oldest:
            self._buffer_oldest = ns
        if len(buffer) > self.max_buffered:
            self._overflow()

    def _on_settling_event(self, event: Event) -> None:
        """Just after a backfill: also drop replays and late repeats of history events."""
        try:
            ns = event_ns(event.timestamp)
        except InvalidEvent as e:
            self._on_invalid(str(e))
            return
        self.received += 1
        floor = self._floor
        if event in self._recent or (floor is not None and floor.seen(event, ns)):
            self.duplicates_dropped += 1
            return
        mark = self._mark
        if not mark.advance(event, ns):
            self.duplicates_dropped += 1
            return
        self.last_event_time = mark.ns / 1e9
        self._count(event)

    def _on_live_event(self, event: Event) -> None:
        """The hot path: one call per live stream event."""
        mark = self._mark
        timestamp = event.timestamp
        if timestamp == mark.text:
            self.received += 1
            ties = mark.ties
            if event in ties:
                self.duplicates_dropped += 1
                return
            add_tie(ties, event)
        else:
            try:
                ns = event_ns(timestamp)
            except InvalidEvent as e:
                self._on_invalid(str(e))
                return
            self.received += 1
            if ns > mark.ns:
                if ns > mark.horizon and mark.too_far_ahead(ns):
                    if mark.remember_future(event, ns):
                        self._count(event)
                    else:
                        self.duplicates_dropped += 1
                    return
                mark.ns = ns
                mark.text = timestamp
                ties = mark.ties
                ties.clear()
                ties.add(event)
                if event.event_type not in REPLAYED:
                    mark.anchor = event
                self.last_event_time = ns / 1e9
            elif ns == mark.ns:
                if event in mark.ties:
                    self.duplicates_dropped += 1
                    return
                add_tie(mark.ties, event)
        self._count(event)
