"""What the fleet did lately: events per minute by type over the last hour, and state histories.

The status page draws its charts from :class:`Activity`, a bounded ring of
per-minute counts (:data:`MINUTES` of them) by event type. Nothing is added
on the per-event path: a timer (:meth:`Activity.sample`, every
:data:`SAMPLE_SECONDS`) reads the per-type totals
(:meth:`~cadvisor_events.counters.EventCounters.counted`) and moves what was
counted since the last sample into the current minute, so an event is
charted in the minute it was *counted* (a backfill after a reconnect shows in
the minute it caught up). OOM kills are the ``oomKill`` counts. Memory is
fixed: the ring, a handful of samples, one dict of totals.

:func:`note_state_change` keeps a follower's last :data:`STATE_CHANGES`
state changes (time, state, reason) for the host page.

This module never does I/O and never reads a clock but the one it is given.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Deque, Dict, List, Mapping, Optional, Tuple

__all__ = ["Activity", "MINUTES", "SAMPLE_SECONDS", "STATE_CHANGES", "note_state_change", "OOM_KILL"]

#: Minutes of per-minute counts kept (the charts' hour).
MINUTES = 60
#: How often what was counted moves into the ring (seconds).
SAMPLE_SECONDS = 5.0
#: State changes kept per follower.
STATE_CHANGES = 50
OOM_KILL = "oomKill"

#: (clock seconds, new state, reason or None)
StateChange = Tuple[float, str, Optional[str]]


def note_state_change(changes: List[StateChange], when: float, state: str, reason: Optional[str]) -> None:
    """Append a state change to a follower's history, keeping the last :data:`STATE_CHANGES`."""
    changes.append((when, state, reason))
    if len(changes) > STATE_CHANGES:
        del changes[0]


class Activity:
    """The fleet's events per minute by type over the last :data:`MINUTES` minutes.

    ``totals`` returns the events counted per type since the process
    started (the event counters' :meth:`counted`); :meth:`sample` calls it.
    ``started`` is when the exporter started (for the uptime).
    """

    def __init__(self, totals: Callable[[], Mapping[str, int]], clock, *, minutes: int = MINUTES) -> None:
        self.totals = totals
        self.clock = clock
        self.minutes = minutes
        self.started = clock.seconds()
        #: (minute start, {event type: events counted in that minute}), oldest first.
        self.ring: Deque[Tuple[int, Dict[str, int]]] = deque(maxlen=minutes)
        #: (clock seconds, events counted in all) at the last samples, for the rate.
        self.samples: Deque[Tuple[float, int]] = deque(maxlen=int(60 / (SAMPLE_SECONDS / 2)) + 2)
        self._last: Dict[str, int] = dict(totals())
        self.samples.append((self.started, sum(self._last.values())))

    def sample(self) -> None:
        """Move what was counted since the last sample into the current minute."""
        now = self.clock.seconds()
        minute = int(now // 60) * 60
        ring = self.ring
        if not ring or ring[-1][0] != minute:
            ring.append((minute, {}))
        bucket = ring[-1][1]
        last = self._last
        total = 0
        for kind, count in list(self.totals().items()):
            total += count
            moved = count - last.get(kind, 0)
            if moved:
                bucket[kind] = bucket.get(kind, 0) + moved
                last[kind] = count
        samples = self.samples
        if samples and now - samples[-1][0] < SAMPLE_SECONDS / 2:
            samples.pop()  # a read right after a timed sample: keep the span, not the point
        samples.append((now, total))

    def events_per_second(self) -> float:
        """Events counted per second over (about) the last minute."""
        self.sample()
        samples = self.samples
        now, total = samples[-1]
        cutoff = now - 60
        old_time, old_total = samples[0]
        for when, count in samples:
            if when >= cutoff:
                break
            old_time, old_total = when, count
        span = now - old_time
        return (total - old_total) / span if span > 0 else 0.0

    def minute_starts(self) -> List[int]:
        """The start of each of the last :attr:`minutes` minutes, oldest first (the charts' x axis)."""
        current = int(self.clock.seconds() // 60) * 60
        return [current - 60 * (self.minutes - 1 - i) for i in range(self.minutes)]

    def per_minute(self) -> Dict[str, List[int]]:
        """Event type -> its count in each minute of :meth:`minute_starts` (0 when none)."""
        self.sample()
        starts = self.minute_starts()
        index = {start: i for i, start in enumerate(starts)}
        series: Dict[str, List[int]] = {}
        for minute, bucket in self.ring:
            i = index.get(minute)
            if i is None:
                continue
            for kind, count in bucket.items():
                series.setdefault(kind, [0] * len(starts))[i] += count
        return dict(sorted(series.items()))

    def oom_kills_per_minute(self) -> List[int]:
        return self.per_minute().get(OOM_KILL, [0] * self.minutes)

    def oom_kills_last_hour(self) -> int:
        return sum(self.oom_kills_per_minute())

    def uptime(self) -> float:
        return self.clock.seconds() - self.started
