"""What one host's follower has counted, so that no event is counted twice.

A follower cannot remember every event it counted and does not need to. A
cAdvisor sends three kinds of repeats, and :class:`Ledger` recognises each
with bounded state:

* **Overlap after a break.** The backfill asks history from ``overlap``
  (default one second) before the newest counted non-OOM timestamp, because
  cAdvisor may date an event before what was already seen (OOMs up to a
  second early, creation events at the container's creation time). The
  events counted in that last window are remembered exactly, two
  generations of one window each, at most :data:`MAX_WINDOW_EVENTS` per
  generation.
* **OOMs a restarted cAdvisor replays.** It re-reads the kernel log and
  re-adds every OOM still there, each run dated with its own boot-time error,
  so the same OOM comes back shifted by up to a second. :class:`OomMemory`
  keeps the counted OOMs for cAdvisor's retention (24 h), at most
  :data:`MAX_OOMS` per host, and matches by container, pid and process name
  within a second; an ``oom`` (which has no pid) goes with the ``oomKill``
  that shares its timestamp.
* **Timestamps far in the future** (a broken clock, a hostile host): counted
  and remembered, at most :data:`MAX_FUTURE`, but never the point a backfill
  resumes from.

:func:`merge_backfill` applies the ledger to a reconnect's history answer and
to the stream events buffered while it was fetched. Nothing here does I/O,
reads a clock other than the one it is given, or counts anything itself: the
caller counts what :meth:`Ledger.offer` accepts.
"""

from __future__ import annotations

import heapq
import struct
from array import array
from bisect import bisect_left, bisect_right
from itertools import chain, compress, islice, repeat
from operator import attrgetter, ge, gt, itemgetter, lt, not_, or_, sub
from typing import AbstractSet, Callable, Generator, Iterable, List, Optional, Sequence, Set, Tuple

from twisted.logger import Logger

from .event import NS_PER_SECOND, OOM_TYPES, Event, format_timestamp, timestamp_ns

__all__ = ["Ledger", "OomMemory", "EventFingerprints", "Backfill", "merge_backfill", "oom_partner", "MAX_WINDOW_EVENTS",
           "MAX_OOMS", "MAX_FUTURE", "merge_backfill_steps", "STEP_EVENTS", "OOM_RETENTION", "REPLAY_TOLERANCE", "RECENT_TAIL", "RECENT_SECONDS"]

log = Logger()

#: Events remembered per generation of the overlap window. A flood of events dated
#: within one window cannot grow a follower's memory: beyond this they are counted
#: but not remembered (a repeat of one of them in the next backfill would count
#: again), and :attr:`Ledger.window_evicted` says how many.
MAX_WINDOW_EVENTS = 4096

#: Counted OOM events (``oom`` and ``oomKill``) remembered per host to recognise replays.
MAX_OOMS = 1024
#: How long a counted OOM is remembered: cAdvisor's default history age limit.
OOM_RETENTION = 24 * 3600 * NS_PER_SECOND
#: A replayed OOM lies within this of the counted one (each cAdvisor run dates OOMs up
#: to a second early, so two runs differ by less than a second).
REPLAY_TOLERANCE = NS_PER_SECOND

#: Events dated too far ahead remembered (see :meth:`Ledger.offer`).
MAX_FUTURE = 1024

#: History events kept after a backfill for the settle window, besides those
#: overlapping the buffered stream events: the newest ones, which a stream may
#: still deliver after the history answer arrived. Those dated within
#: :data:`RECENT_SECONDS` of the newest, at most this many.
RECENT_TAIL = 1024
#: How far before the history's newest event a late stream delivery may be dated: a
#: stream delivers events as cAdvisor adds them, seconds after their timestamps at
#: most (an OOM is dated up to a second early). Twice the default settle window.
RECENT_SECONDS = 60

_NO_MARK = -(1 << 80)
_NO_EVENTS: AbstractSet = frozenset()
_NO_LIMIT = 1 << 80

TimedEvent = Tuple[Event, int]
_event_of, _time_of = itemgetter(0), itemgetter(1)
_type_of = attrgetter("event_type")


class OomMemory:
    """The OOMs one host's follower counted, to recognise a restarted cAdvisor's replays.

    A replayed ``oomKill`` has the same container, pid and process name as a
    counted one and lies within :data:`REPLAY_TOLERANCE` of it. A replayed
    ``oom`` is recognised through its partner, the ``oomKill`` that shares
    its timestamp: if the partner matches a counted kill at ``t``, the
    ``oom`` is a replay exactly when an ``oom`` of its container was counted
    at ``t``. Without a partner, any counted ``oom`` of its container within
    the tolerance makes it a replay. An OOM dated before what the memory
    still covers (older than the retention, or than the newest one evicted
    by the cap) cannot be told apart and is taken as a replay: a new OOM is
    dated at most a second early, and the cap is only reached within a
    second by a flood no kernel sends (it rate-limits its OOM reports).

    A remembered OOM is its timestamp and the 64-bit hash of what identifies
    it (container, pid and process for a kill; the container for an
    ``oom``), kept in arrays (see :class:`_OomTable`): a big fleet remembers
    millions of OOMs after re-reading its histories, and as objects (a key
    tuple, its strings, ints, a dict entry) each cost some 200 bytes. Two
    different OOMs of one host with the same hash within a second of each
    other would be taken for one: about once in 2**64 pairs.
    """

    __slots__ = ("_kills", "_ooms", "_size", "newest_ns", "horizon_ns", "evicted", "_max", "_name")

    def __init__(self, max_ooms: int = MAX_OOMS, name: str = "") -> None:
        #: Counted ``oomKill`` and ``oom`` events; None until the first (most hosts never OOM).
        self._kills: Optional[_OomTable] = None
        self._ooms: Optional[_OomTable] = None
        self._size = 0
        self.newest_ns = _NO_MARK
        #: OOMs dated before this are older than what is remembered.
        self.horizon_ns = _NO_MARK
        #: OOMs forgotten because of the cap (not the age limit).
        self.evicted = 0
        self._max = max_ooms
        self._name = name

    def __len__(self) -> int:
        return self._size

    def offer(self, event: Event, ns: int, partner: Optional[Event] = None) -> bool:
        """Remember ``event`` and return True if it is a new OOM, else False (a replay)."""
        if ns < self.horizon_ns or ns < self.newest_ns - OOM_RETENTION:
            return False
        kills = self._kills
        if event.event_type == "oomKill":
            key = _kill_key(event)
            if kills is not None and kills.near(key, ns) is not None:
                return False
            if kills is None:
                kills = self._kills = _OomTable()
            self._remember(kills, key, ns)
            return True
        key = hash(event.container_name)
        counted = self._ooms
        if counted is not None:
            if counted.holds(key, ns):  # this very event (two OOMs of one cgroup never share a nanosecond)
                return False
            if partner is not None:
                original = kills.near(_kill_key(partner), ns) if kills is not None else None
                if original is not None and counted.holds(key, original):
                    return False
            elif counted.near(key, ns) is not None:
                return False
        else:
            counted = self._ooms = _OomTable()
        self._remember(counted, key, ns)
        return True

    def needs_partner(self, event: Event, ns: int) -> bool:
        """Whether an ``oom`` could be a replay, so that its partner must be seen first."""
        return self._ooms is not None and self._ooms.near(hash(event.container_name), ns) is not None

    def _remember(self, table: "_OomTable", key: int, ns: int) -> None:
        table.add(key, ns)
        self._size += 1
        if ns > self.newest_ns:
            self.newest_ns = ns
        if self._size > self._max or table.times[0] < self.newest_ns - OOM_RETENTION:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        """Drop what is past the retention, and the oldest beyond the cap (counted)."""
        oldest_kept = self.newest_ns - OOM_RETENTION
        kills, ooms = self._kills, self._ooms
        while True:
            kill_ns = kills.times[0] if kills is not None and kills.times else None
            oom_ns = ooms.times[0] if ooms is not None and ooms.times else None
            if oom_ns is None or (kill_ns is not None and kill_ns <= oom_ns):
                table, old_ns = kills, kill_ns
            else:
                table, old_ns = ooms, oom_ns
            if table is None or old_ns is None or (old_ns >= oldest_kept and self._size <= self._max):
                return
            table.drop_oldest()
            self._size -= 1
            if old_ns >= oldest_kept:
                self.evicted += 1
                if old_ns > self.horizon_ns:
                    self.horizon_ns = old_ns
                if self.evicted == 1:
                    log.warn("{name}: over {n} OOMs remembered; the oldest are forgotten, and a replay "
                             "of them is taken as already counted (said once)", name=self._name, n=self._max)


class _OomTable:
    """Remembered OOMs of one kind, as (key hash, timestamp) sorted by key then time, for
    lookups in logarithmic time however many OOMs fall within a second (a flood), and their
    timestamps sorted, to forget the oldest (found among the keys' timestamps by a search of
    their machine words). Three machine words an OOM."""

    __slots__ = ("keys", "key_times", "times")

    def __init__(self) -> None:
        self.keys = array("q")
        self.key_times = array("q")
        self.times = array("q")

    def _range(self, key: int) -> Tuple[int, int]:
        """Where ``key``'s entries are in :attr:`keys` (an empty range when there are none)."""
        keys = self.keys
        low = bisect_left(keys, key)
        if low == len(keys) or keys[low] != key:
            return low, low
        return low, bisect_right(keys, key, low)

    def near(self, key: int, ns: int) -> Optional[int]:
        """The remembered timestamp of ``key`` closest to ``ns`` within the replay tolerance, or None."""
        low, high = self._range(key)
        if low == high:
            return None
        times = self.key_times
        index = bisect_left(times, ns, low, high)
        best, gap = None, REPLAY_TOLERANCE
        if index > low:
            best_t = times[index - 1]  # at or before ns
            if ns - best_t < gap:
                best, gap = best_t, ns - best_t
        if index < high and times[index] - ns < gap:
            best = times[index]
        return best

    def holds(self, key: int, ns: int) -> bool:
        """Whether ``key`` is remembered at exactly ``ns``."""
        low, high = self._range(key)
        if low == high:
            return False
        index = bisect_left(self.key_times, ns, low, high)
        return index < high and self.key_times[index] == ns

    def add(self, key: int, ns: int) -> None:
        low, high = self._range(key)
        index = bisect_right(self.key_times, ns, low, high)
        self.keys.insert(index, key)
        self.key_times.insert(index, ns)
        times = self.times
        if not times or ns >= times[-1]:
            times.append(ns)
        else:
            times.insert(bisect_right(times, ns), ns)

    def drop_oldest(self) -> None:
        """Forget an OOM with the oldest timestamp (any one of them, when several share it)."""
        ns = self.times[0]
        del self.times[0]
        words = self.key_times.tobytes()
        needle = _WORD.pack(ns)
        found = words.find(needle)
        while found > 0 and found % _WORD.size:  # a match across two words: not this timestamp
            found = words.find(needle, found + 1)
        if found < 0:
            raise RuntimeError(f"remembered OOM times out of step: {ns} not among their keys'")
        index = found // _WORD.size
        del self.keys[index], self.key_times[index]


#: One remembered timestamp as :class:`_OomTable`'s arrays hold it (a machine word).
_WORD = struct.Struct("=q")


def _kill_key(event: Event) -> int:
    """The hash of what identifies an ``oomKill``: its container, pid and process."""
    data = event.event_data
    oom = data.oom if data is not None else None
    if oom is None:
        return hash((event.container_name, 0, ""))
    return hash((event.container_name, oom.pid, oom.process_name))


class EventFingerprints:
    """A set of events held as their 64-bit hashes in a sorted array: 8 bytes an event.

    What a follower keeps of a history for its settle window, to recognise
    the same events arriving late on the stream. A set of the events would
    hold them whole (their strings and nested structs, several hundred bytes
    each), for every host backfilling at once: the whole fleet after an
    exporter restart. An event whose hash equals a remembered one's would be
    taken for it: about once in 2**64 pairs.
    """

    __slots__ = ("_hashes",)

    def __init__(self, events: Iterable[Event] = ()) -> None:
        self._hashes = array("q", sorted(set(map(hash, events))))

    def __contains__(self, event: object) -> bool:
        key = hash(event)
        hashes = self._hashes
        index = bisect_left(hashes, key)
        return index < len(hashes) and hashes[index] == key

    def __len__(self) -> int:
        return len(self._hashes)


class Ledger:
    """What one host's follower counted: :meth:`offer` decides, :meth:`resume` says where to backfill from.

    ``overlap`` (seconds) is how far before the newest counted non-OOM event a
    backfill starts. With a clock (``now``, Unix seconds) and ``max_skew``
    seconds, an event dated further ahead of that clock is counted and
    remembered among :attr:`future` but moves nothing.
    """

    __slots__ = ("anchor_ns", "window_evicted", "future", "future_counted", "horizon",
                 "ooms", "_window", "_previous", "_next_window", "_overlap_ns", "_now", "_skew_ns", "_name")

    def __init__(self, overlap: float = 1.0, now: Optional[Callable[[], float]] = None,
                 max_skew: float = 0.0, name: str = "") -> None:
        #: The newest counted timestamp of a non-OOM event (ns): backfills resume from here.
        self.anchor_ns = _NO_MARK
        #: Events dated within the overlap window that could not be remembered.
        self.window_evicted = 0
        #: Events counted while dated too far ahead (event -> ns), at most MAX_FUTURE.
        self.future: dict = {}
        #: How many events were dated too far ahead (all counted).
        self.future_counted = 0
        #: Timestamps up to this (ns) are trusted without reading the clock; refreshed from it.
        self.horizon = _NO_LIMIT if now is None else _NO_MARK
        self.ooms = OomMemory(name=name)
        # Both generations start as one shared empty set, made real on first use: a fleet has
        # thousands of hosts, and an empty set is 216 bytes.
        self._window: AbstractSet[Event] = _NO_EVENTS
        self._previous: AbstractSet[Event] = _NO_EVENTS
        self._next_window = _NO_MARK  # a non-OOM event at or after this starts a new generation
        self._overlap_ns = int(overlap * NS_PER_SECOND)
        self._now = now
        self._skew_ns = int(max_skew * NS_PER_SECOND)
        self._name = name

    @property
    def newest_ns(self) -> int:
        """The newest counted timestamp of any event (ns)."""
        return max(self.anchor_ns, self.ooms.newest_ns)

    def __len__(self) -> int:
        """Events remembered (the bound the caps keep)."""
        return len(self._window) + len(self._previous) + len(self.ooms) + len(self.future)

    @property
    def seconds(self) -> Optional[float]:
        """The newest counted timestamp as Unix seconds, or None before anything was counted."""
        return None if self.newest_ns == _NO_MARK else self.newest_ns / NS_PER_SECOND

    @property
    def evicted(self) -> dict:
        """Remembered events forgotten early because of a cap: ``window`` and ``oom``."""
        return {"window": self.window_evicted, "oom": self.ooms.evicted}

    def offer(self, event: Event, ns: int, partner: Optional[Event] = None) -> bool:
        """Record ``event`` (at ``ns``) as counted and return True, or return False: counted already.

        ``partner``: for an ``oom``, the ``oomKill`` sharing its timestamp, if known.
        """
        if ns > self.horizon and self._too_far_ahead(ns):
            return self._remember_future(event, ns)
        if self.future and event in self.future:
            return False
        if event.event_type in OOM_TYPES:
            return self.ooms.offer(event, ns, partner)
        window = self._window
        if ns > self.anchor_ns:
            if ns >= self._next_window:  # a new generation, in the older one's set
                self._previous, window = window, self._previous
                if window is _NO_EVENTS:
                    window = set()
                else:
                    window.clear()  # type: ignore[attr-defined]
                self._window = window
                self._next_window = ns + self._overlap_ns
            self.anchor_ns = ns
        elif event in window or event in self._previous:
            return False
        if len(window) < MAX_WINDOW_EVENTS:
            if window is _NO_EVENTS:  # (an event older than the anchor before any generation)
                window = self._window = set()
            window.add(event)  # type: ignore[attr-defined]
        else:
            self.window_evicted += 1
        return True

    def offer_plain(self, run: Sequence[TimedEvent]) -> List[bool]:
        """:meth:`offer` of each of ``run``'s events in turn, for non-OOM events: what it
        answers for each. (OOM events, offered in between or not, change nothing it reads.)

        A history's run is sorted by time and, unless the stream overlapped it, newer than
        everything counted: then every event is accepted, moves the anchor on, and lands in
        a generation of the overlap window that the timestamps alone decide. That case is
        worked out from the timestamps with ``map`` and bisection, with no Python step per
        event (a restarted exporter re-reads millions); any other goes through :meth:`offer`.
        """
        events = list(map(_event_of, run))
        times = list(map(_time_of, run))
        if not times:
            return []
        newest = times[-1]
        if (self.future or times[0] <= self.anchor_ns
                or (newest > self.horizon and self._too_far_ahead(newest))
                or not all(map(lt, times, islice(times, 1, None)))):
            return list(map(self.offer, events, times))
        overlap = self._overlap_ns
        count = len(times)
        first = bisect_left(times, self._next_window)  # the first event starting a generation
        starts = self._last_starts(times, first) if count <= MAX_WINDOW_EVENTS else None
        if starts is None:  # every start, for the evictions a long run's generations may count
            starts = _generation_starts(times, first, overlap)
            self.window_evicted += sum(max(0, end - begin - MAX_WINDOW_EVENTS)
                                       for begin, end in zip(starts[:-2], starts[1:-1]))
        if not starts:
            self._window = self._filled(self._window, events)
        else:
            last = starts[-1]
            if len(starts) == 1:
                self._previous = self._filled(self._window, events[:last])
            else:
                self._window = self._filled(self._window, events[:first])  # counts its evictions
                self._previous = self._filled(_NO_EVENTS, events[starts[-2]:last])
            self._window = self._filled(_NO_EVENTS, events[last:])
            self._next_window = times[last] + overlap
        self.anchor_ns = newest
        return [True] * count

    def _last_starts(self, times: List[int], first: int) -> List[int]:
        """The last two (or only) generation starts among ``times`` (sorted, the first start
        at ``first``; none when ``first`` is past the end), as :func:`_generation_starts` would
        find them, without walking every generation: an event at least the overlap after the
        one before it always starts one (the open generation ends by then), so the walk
        begins at the last such event, or the one before it when that is the last start."""
        count = len(times)
        if first >= count:
            return []
        overlap = self._overlap_ns
        after_gaps = list(compress(range(1, count), map(ge, map(sub, islice(times, 1, None), times), repeat(overlap))))
        known = [first]
        known += after_gaps[bisect_right(after_gaps, first):][-2:]
        tail = _generation_starts(times, known[-1], overlap)
        if len(tail) >= 2 or len(known) == 1:
            return tail[-2:]
        between = _generation_starts(times, known[-2], overlap, known[-1])
        return [between[-1], known[-1]]

    def _filled(self, window: AbstractSet[Event], events: List[Event]) -> AbstractSet[Event]:
        """``window`` with ``events`` added (none of them in it yet), up to the cap; those
        beyond it counted as evicted. A new set when ``window`` is the shared empty one."""
        if not events:
            return window
        room = MAX_WINDOW_EVENTS - len(window)
        if room < len(events):
            self.window_evicted += len(events) - max(room, 0)
            events = events[:max(room, 0)]
        if window is _NO_EVENTS:
            return set(events)
        window.update(events)  # type: ignore[attr-defined]
        return window

    def newest(self, n: int) -> List[Event]:
        """Up to ``n`` of the newest counted non-OOM events still remembered (the overlap
        window's), newest first: what a status page shows as a host's last events."""
        return heapq.nlargest(n, self._window | self._previous, key=lambda event: timestamp_ns(event.timestamp))

    def needs_partner(self, event: Event, ns: int) -> bool:
        """Whether an ``oom`` event's verdict depends on its ``oomKill`` partner (hold it until then)."""
        return event.event_type == "oom" and self.ooms.needs_partner(event, ns)

    def resume(self) -> Tuple[Optional[str], Set[Event]]:
        """``start_time`` of the next backfill (None: nothing counted yet), and the counted events
        its answer must hold if cAdvisor's history is whole (else: a gap).

        The backfill starts ``overlap`` before the newest counted non-OOM event
        (or the newest OOM when there was none), so events dated a little
        before what was seen are asked for again and recognised here. The
        events to find are the non-OOM ones counted since that start: OOMs
        prove nothing, since a restarted cAdvisor re-adds them.
        """
        if self.anchor_ns != _NO_MARK:
            start = self.anchor_ns - self._overlap_ns
        elif self.newest_ns != _NO_MARK:
            start = self.newest_ns - self._overlap_ns
        else:
            return None, set()
        boundary = {event for event in self._window | self._previous
                    if event.event_type not in OOM_TYPES and timestamp_ns(event.timestamp) >= start}
        return format_timestamp(start), boundary

    def _too_far_ahead(self, ns: int) -> bool:
        """Whether ``ns`` lies more than ``max_skew`` ahead of the clock (read only when
        ``ns`` passes the cached :attr:`horizon`, about once per ``max_skew``)."""
        if self._now is None:
            return False
        self.horizon = int(self._now() * NS_PER_SECOND) + self._skew_ns
        return ns > self.horizon

    def _remember_future(self, event: Event, ns: int) -> bool:
        future = self.future
        if event in future:
            return False
        self.future_counted += 1
        if self.future_counted == 1:
            log.warn("{name}: event dated {timestamp} is over {skew:.0f}s ahead of this clock; "
                     "counted, but not trusted as the point to resume from (said once)",
                     name=self._name, timestamp=event.timestamp, skew=self._skew_ns / NS_PER_SECOND)
        if len(future) >= MAX_FUTURE:
            for old in [old for old, old_ns in future.items() if old_ns < self.newest_ns]:
                del future[old]  # the clock has caught up with them
        if len(future) < MAX_FUTURE:
            future[event] = ns
        return True


def _generation_starts(times: List[int], first: int, overlap: int, end: Optional[int] = None) -> List[int]:
    """Where the overlap window's generations start among ``times`` (sorted) from ``first``
    (a start) up to ``end``: each is the first event at or after the previous start plus
    ``overlap``."""
    end = len(times) if end is None else end
    starts = []
    start = first
    while start < end:
        starts.append(start)
        start = bisect_left(times, times[start] + overlap, start + 1)
    return starts


def oom_partner(timed: Sequence[TimedEvent], index: int) -> Optional[Event]:
    """For the ``oom`` at ``timed[index]``: the ``oomKill`` next to it with the same timestamp."""
    ns = timed[index][1]
    for step in (1, -1):
        other = index + step
        while 0 <= other < len(timed) and timed[other][1] == ns:
            if timed[other][0].event_type == "oomKill":
                return timed[other][0]
            other += step
    return None


class Backfill:
    """What :func:`merge_backfill` did: counts, and the history events for the settle window."""

    __slots__ = ("backfilled", "from_buffer", "dropped", "recent")

    def __init__(self) -> None:
        self.backfilled = 0
        self.from_buffer = 0
        self.dropped = 0
        #: History events a late stream delivery may repeat (bounded: see RECENT_TAIL).
        self.recent = EventFingerprints()


def merge_backfill(
    ledger: Ledger,
    start_ns: Optional[int],
    history: List[TimedEvent],
    buffered: Sequence[TimedEvent],
    oldest_buffered: Optional[int],
    count: Callable[[Event], None],
) -> Backfill:
    """Count what is new in ``history`` (asked from ``start_ns``), then in ``buffered``.

    - A history event older than ``start_ns`` was not asked for (a cAdvisor
      that ignores ``start_time``) and is dropped.
    - A buffered stream event identical to a history event of this answer is
      dropped (looked up among history events not older than the oldest
      buffered event, plus the newest ones: see :data:`RECENT_TAIL`).
    - Everything else is offered to ``ledger``.

    ``count`` is called once per accepted event, history first, in order.
    :func:`merge_backfill_steps` does the same a slice at a time.
    """
    steps = merge_backfill_steps(ledger, start_ns, history, lambda: (buffered, oldest_buffered), count)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


#: History events merged between two pauses of :func:`merge_backfill_steps`.
STEP_EVENTS = 256


def merge_backfill_steps(
    ledger: Ledger,
    start_ns: Optional[int],
    history: List[TimedEvent],
    take_buffered: Callable[[], Tuple[Sequence[TimedEvent], Optional[int]]],
    count: Callable[[Event], None],
    count_many: Optional[Callable[[List[Event]], None]] = None,
) -> Generator[None, None, Backfill]:
    """:func:`merge_backfill` as a generator that pauses after every :data:`STEP_EVENTS`
    history events and returns its :class:`Backfill`: a big history is counted over many
    reactor turns. The stream events buffered meanwhile are taken (``take_buffered()``:
    the events and the oldest one's timestamp) at the end, in the last step.

    With ``count_many`` (a sink's way to count a list of events as ``count`` would one by
    one), each step's non-OOM events are offered at once (:meth:`Ledger.offer_plain`) and
    its accepted events counted at once: the same result, with no Python step per event
    where the ledger and the sink can avoid one.
    """
    result = Backfill()
    begin = 0
    for end in chain(range(STEP_EVENTS - 1, len(history), STEP_EVENTS), (len(history),)):
        if begin:
            yield None
        if count_many is None:
            _merge_each(ledger, start_ns, history, range(begin, end), count, result)
        else:
            _merge_step(ledger, start_ns, history, begin, end, count_many, result)
        begin = end
    buffered, oldest_buffered = take_buffered()
    if history:
        times = list(map(_time_of, history))
        cutoff = max(min(times[-RECENT_TAIL:]), max(times) - RECENT_SECONDS * NS_PER_SECOND)
        if oldest_buffered is not None and oldest_buffered < cutoff:
            cutoff = oldest_buffered
        result.recent = EventFingerprints(compress(map(_event_of, history), map(ge, times, repeat(cutoff))))
        del times
    recent = result.recent
    for index, (event, ns) in enumerate(buffered):
        partner = oom_partner(buffered, index) if event.event_type == "oom" else None
        if event in recent or not ledger.offer(event, ns, partner):
            result.dropped += 1
            continue
        count(event)
        result.from_buffer += 1
    return result


def _merge_each(ledger: Ledger, start_ns: Optional[int], history: List[TimedEvent], indexes: Iterable[int],
                count: Callable[[Event], None], result: Backfill) -> None:
    """Offer the history events at ``indexes`` one by one; count what the ledger accepts."""
    for index in indexes:
        event, ns = history[index]
        if start_ns is not None and ns < start_ns:
            result.dropped += 1
            continue
        partner = oom_partner(history, index) if event.event_type == "oom" else None
        if not ledger.offer(event, ns, partner):
            result.dropped += 1
            continue
        count(event)
        result.backfilled += 1


def _merge_step(ledger: Ledger, start_ns: Optional[int], history: List[TimedEvent], begin: int, end: int,
                count_many: Callable[[List[Event]], None], result: Backfill) -> None:
    """History events ``begin`` to ``end`` as :func:`_merge_each` merges them, counted by
    ``count_many``: OOMs and events older than ``start_ns`` are offered one by one, the
    others all at once (:meth:`Ledger.offer_plain`)."""
    step = history[begin:end]
    special = list(map(OOM_TYPES.__contains__, map(_type_of, map(_event_of, step))))
    if start_ns is not None:
        special = list(map(or_, special, map(gt, repeat(start_ns), map(_time_of, step))))
    if True not in special:
        accepted = ledger.offer_plain(step)
    else:
        plain = list(compress(range(len(step)), map(not_, special)))
        one_by_one = list(compress(range(len(step)), special))
        verdicts = ledger.offer_plain(list(map(step.__getitem__, plain)))
        accepted = list(map(not_, special))  # each special one replaced below by its verdict
        if False in verdicts:
            for index, verdict in zip(plain, verdicts):
                accepted[index] = verdict
        for index in one_by_one:
            event, ns = step[index]
            if start_ns is not None and ns < start_ns:
                accepted[index] = False
                continue
            partner = oom_partner(history, begin + index) if event.event_type == "oom" else None
            accepted[index] = ledger.offer(event, ns, partner)
    counted = list(compress(map(_event_of, step), accepted))
    result.backfilled += len(counted)
    result.dropped += len(step) - len(counted)
    if counted:
        count_many(counted)
