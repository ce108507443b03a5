"""cAdvisor's event history: one event as it holds it, and its time-ordered store.

:class:`SimulatedEvent` is an event with Go's JSON encoding computed once;
:class:`EventStore` is cAdvisor's ``utils.TimedStore`` (``utils/timed_store.go``)
for one event type: size and age limits, time-range reads, the Go slice
arithmetic's quirks included. It must never decide what to store or who
sees an event (that is the :class:`~.core.Simulator`'s job), and never read
a clock: age is measured against the events' own timestamps.
"""

from __future__ import annotations

import bisect
from typing import Optional, Sequence

import attrs

from .golang import GoPanic, go_json_string, rfc3339nano

__all__ = ["EventStore", "SimulatedEvent", "timestamp_of"]


@attrs.frozen
class SimulatedEvent:
    """One event as cAdvisor holds it; ``json`` is Go's encoding, computed once."""

    container_name: str
    event_type: str
    timestamp_ns: int
    timestamp: str
    process_name: Optional[str] = None
    pid: Optional[int] = None
    constraint: Optional[str] = None
    exit_code: Optional[int] = None
    json: bytes = attrs.field(default=b"", repr=False)

    @classmethod
    def create(cls, container_name: str, event_type: str, timestamp_ns: int, tz_offset_minutes: int,
               process_name: Optional[str] = None, pid: Optional[int] = None,
               constraint: Optional[str] = None, exit_code: Optional[int] = None) -> "SimulatedEvent":
        """Build the event and its JSON; ``oomKill`` always carries ``oom`` data, as in cAdvisor."""
        timestamp = rfc3339nano(timestamp_ns, tz_offset_minutes)
        data = []
        if event_type == "oomKill" or process_name is not None or pid is not None:
            process_name, pid = process_name or "", pid or 0
            oom = '"oom":{"pid":%d,"process_name":%s' % (pid, go_json_string(process_name))
            data.append(oom + (',"constraint":' + go_json_string(constraint) if constraint else "") + "}")
        if exit_code is not None:
            data.append('"container_deletion":{"exit_code":%d}' % exit_code)
        text = '{"container_name":%s,"timestamp":"%s","event_type":%s,"event_data":{%s}}' % (
            go_json_string(container_name), timestamp, go_json_string(event_type), ",".join(data))
        return cls(container_name, event_type, timestamp_ns, timestamp, process_name, pid, constraint,
                   exit_code, text.encode("utf-8"))

    def to_json(self) -> bytes:
        """Go's ``json.Marshal`` of this event, without a trailing newline."""
        return self.json

    @property
    def counting_key(self) -> tuple[str, str, str]:
        """The Go seed's series key: (container, type, oom process name or "")."""
        return (self.container_name, self.event_type, self.process_name or "")


class EventStore:
    """cAdvisor's ``utils.TimedStore`` for one event type, kept oldest first.

    Age is measured against the timestamp of the event being added (as
    cAdvisor does), so history only shrinks by age when events arrive.
    """

    def __init__(self, max_age_ns: int, max_items: int) -> None:
        self._max_age_ns, self._max_items = max_age_ns, max_items
        self._events: list[SimulatedEvent] = []
        self._times: list[int] = []
        self._start = 0  # evicted entries before this index, dropped in batches

    def __len__(self) -> int:
        return len(self._events) - self._start

    def __iter__(self):
        return iter(self._events[self._start:])

    def add(self, event: SimulatedEvent) -> None:
        """``TimedStore.Add``: evict the oldest when full, insert in order, then age out."""
        stamp = event.timestamp_ns
        if len(self) == self._max_items:
            self._start += 1
        if not len(self) or stamp >= self._times[-1]:
            self._events.append(event)
            self._times.append(stamp)
        else:
            index = bisect.bisect_right(self._times, stamp, self._start)
            self._events.insert(index, event)
            self._times.insert(index, stamp)
        self._age_out(stamp)

    def add_sorted(self, events: Sequence[SimulatedEvent]) -> None:
        """Add many events (oldest first) in one go; same result as one by one
        unless they land among older ones in a full store."""
        if not events:
            return
        if len(self) and events[0].timestamp_ns < self._times[-1]:
            self._events = sorted(self._events[self._start:] + list(events), key=timestamp_of)
            self._times, self._start = [e.timestamp_ns for e in self._events], 0
        else:
            self._events.extend(events)
            self._times.extend(e.timestamp_ns for e in events)
        if 0 <= self._max_items < len(self):
            self._start = len(self._events) - self._max_items
        self._age_out(events[-1].timestamp_ns)

    def _age_out(self, newest_ns: int) -> None:
        index = bisect.bisect_right(self._times, newest_ns - self._max_age_ns, self._start)
        if index < len(self._times):
            self._start = max(self._start, index)
        if self._start > 4096 and self._start * 2 > len(self._events):
            del self._events[:self._start], self._times[:self._start]
            self._start = 0

    def in_time_range(self, start_ns: Optional[int], end_ns: Optional[int], max_results: int) -> list[SimulatedEvent]:
        """``TimedStore.InTimeRange``: the newest ``max_results`` in [start, end].

        Faithful to the Go arithmetic, quirks included: ``max_results`` 0 gives
        nothing, -1 everything, and a negative slice length (start after end,
        or a limit below -1) is a panic.
        """
        count_all, lo = len(self), self._start
        if not count_all:
            return []
        start_index = count_all - 1
        if start_ns is not None:
            start_index = len(self._times) - bisect.bisect_left(self._times, start_ns, lo) - 1
            if start_index < 0:
                return []
        end_index = 0
        if end_ns is not None:
            end_index = len(self._times) - bisect.bisect_right(self._times, end_ns, lo)
            if end_index == count_all:
                return []
        count = start_index - end_index + 1
        if max_results != -1 and count > max_results:
            start_index -= count - max_results
            count = max_results
        if count < 0:
            raise GoPanic("runtime error: makeslice: len out of range")
        first = lo + count_all - 1 - start_index
        return self._events[first:first + count]


def timestamp_of(event: SimulatedEvent) -> int:
    """The sort key of history: an event's time, as ``TimedStore`` orders by."""
    return event.timestamp_ns
