"""The event counters of every followed host: series, retention and fast rendering.

A series is one ``cadvisor_container_events_total`` sample: (host, container,
event type, oom process) plus the host's file_sd labels and, when a host's
counters have a :attr:`HostCounters.label_source`, the labels saying who the
container is (rendered once, when the series is born, and never changed: a
series keeps one label set for its whole life). Counts only grow
while the process lives. A container's series outlive the container (the OOM
that killed it must stay visible) until ``series_ttl`` seconds after its
deletion event; ``max_series`` bounds memory by evicting the least recently
updated series. This module never does I/O and never calls prometheus_client
on the hot path: :meth:`HostCounters.count` is called once per event.
"""

from __future__ import annotations

from collections import OrderedDict
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from twisted.logger import Logger

from .event import CountingKey, Event, counting_key
from .exposition import escape_label_value, format_value, series_prefix

log = Logger()

DELETION = "containerDeletion"
CREATION = "containerCreation"
#: The labels this exporter sets (event series, the OOM kill families); a target's file_sd
#: labels may not use these names.
RESERVED_LABELS = frozenset({"host", "id", "event_type", "oom_process",
                             "namespace", "pod", "container", "image", "name"})

#: A series key: the Go seed's counting key, or, for an ``oomKill`` whose killed task lived in
#: another cgroup than the one whose limit was hit, that key plus the victim's rendered labels
#: (see :mod:`cadvisor_events.enrich`).
SeriesKey = Tuple[str, ...]

#: What a host's ``series`` and ``lines`` are until its first series (read-only).
_EMPTY: Any = MappingProxyType({})
_NO_LINES: Any = ()


class Series:
    """One counter: its value and where its exposition line is.

    ``host.lines[index]`` is ``name{labels} value\n`` as of ``rendered`` (the
    count it shows); its first ``cut`` bytes, the label part, are rendered once.
    ``tallied`` is the count as of the last :meth:`EventCounters.counted`.
    """

    __slots__ = ("count", "rendered", "tallied", "cut", "index", "host", "key")

    def __init__(self, host: "HostCounters", key: SeriesKey, cut: int, index: int) -> None:
        self.count = 0
        self.rendered = 0
        self.tallied = 0
        self.cut = cut
        self.index = index
        self.host = host
        self.key = key


def value_bytes(count: int) -> bytes:
    """A counter value as the Go seed writes it (``format_value``), as bytes."""
    return b"%d" % count if count < 1_000_000 else format_value(count).encode()


class RenderedLines:
    """A host's exposition lines, kept rendered: a series' line is made once, when the
    series is born, and only its value is re-rendered, at the next scrape after it changed.
    A forgotten series' slot is blanked and reused by the next one born.

    A base for per-host series stores (the event counters, the OOM kill series), whose
    series have ``count``, ``rendered``, ``cut`` and ``index``; a series counted since the
    last scrape is appended to ``dirty`` by its store.
    """

    __slots__ = ("lines", "dirty", "free")

    def __init__(self) -> None:
        #: Every series' exposition line (b"" in the slots of forgotten series, listed in
        #: ``free``); a shared empty until the first series (a fleet has thousands of hosts).
        self.lines: List[bytes] = _NO_LINES
        #: Series counted since their line was last rendered (each listed once), and the slots
        #: of forgotten series: None while empty.
        self.dirty: Optional[list] = None
        self.free: Optional[List[int]] = None

    def render_lines(self) -> List[bytes]:
        """This host's exposition lines, the changed ones rendered again first. A scrape of
        a big fleet so costs only the series counted since the last one, and a copy."""
        dirty = self.dirty
        if dirty:
            lines = self.lines
            for series in dirty:
                index = series.index
                if index >= 0:  # else forgotten meanwhile
                    count = series.rendered = series.count
                    lines[index] = lines[index][: series.cut] + value_bytes(count) + b"\n"
            self.dirty = None
        return self.lines

    def _place(self, line: bytes) -> int:
        """A slot for a new series' ``line``: a free one, else a new one at the end."""
        if self.free:
            index = self.free.pop()
            self.lines[index] = line
            return index
        if self.lines is _NO_LINES:
            self.lines = []
        self.lines.append(line)
        return len(self.lines) - 1

    def _release(self, series) -> None:
        """Blank ``series``' line and keep its slot for the next series born."""
        self.lines[series.index] = b""
        if self.free is None:
            self.free = []
        self.free.append(series.index)
        series.index = -1


class HostCounters(RenderedLines):
    """The series of one host; the sink a follower counts accepted events into."""

    __slots__ = ("name", "labels", "series", "deleted", "label_source", "_store",
                 "_label_prefix", "_clock", "_lru")

    def __init__(self, store: "EventCounters", name: str, labels: Sequence[Tuple[str, str]]) -> None:
        super().__init__()
        self.name = name
        self.labels = tuple(labels)
        # ``series`` and ``lines`` start as shared read-only empties, made real on the first
        # series (a fleet has thousands of hosts, many quiet).
        self.series: Dict[SeriesKey, Series] = _EMPTY
        #: container name -> clock seconds of its deletion event (for the TTL).
        self.deleted: Dict[str, float] = {}
        #: Who a series' container is, as rendered labels (``name="value",`` pairs), asked once
        #: when a series is born: ``label_source(key)``. None: no such labels (the Go seed's).
        self.label_source: Optional[Callable[[SeriesKey], str]] = None
        self._store = store
        self._clock = store.clock
        self._lru = store._lru  # the store's, for the per-event path
        pairs = [("host", name), *self.labels]
        self._label_prefix = "".join(f'{label}="{escape_label_value(value)}",' for label, value in pairs)

    def count(self, event: Event) -> None:
        """Count one accepted event (called once per event: keep it lean)."""
        self.count_key(counting_key(event))

    def count_key(self, key: SeriesKey, new: bool = True) -> bool:
        """Count one accepted event under ``key`` (its counting key, or a longer series key).

        With ``new`` false, count only into an existing series and say whether there was one
        (a caller that must decide before a series is born so asks once, not twice per event).
        """
        series = self.series.get(key)
        if series is None:
            if not new:
                return False
            series = self._store._add(self, key)
        else:
            self._lru.move_to_end(series)
        if series.count == series.rendered:
            dirty = self.dirty
            if dirty is None:
                self.dirty = [series]
            else:
                dirty.append(series)
        series.count += 1
        event_type = key[1]
        if event_type == DELETION:
            self.deleted[key[0]] = self._clock.seconds()
        elif event_type == CREATION and self.deleted:
            # ``docker restart`` deletes and re-creates the same cgroup name.
            self.deleted.pop(key[0], None)
        return True

    def render_prefix(self, key: SeriesKey) -> bytes:
        """A new series' line up to its value; its labels are fixed from here on."""
        source = self.label_source
        counting = (key[0], key[1], key[2])
        if source is None:
            return series_prefix(counting, self._label_prefix).encode()
        return series_prefix(counting, self._label_prefix + source(key)).encode()

    def _forget(self, series: Series) -> None:
        """Drop ``series`` from this host's lines (its slot is reused)."""
        self._store._tally(series)
        del self.series[series.key]
        self._release(series)

    def values(self) -> Dict[CountingKey, int]:
        """A snapshot ``{counting key: count}`` (tests, /targets); series split by OOM
        victim are summed under their counting key, as cAdvisor's history counts them."""
        values: Dict[CountingKey, int] = {}
        for key, series in self.series.items():
            counting = (key[0], key[1], key[2])
            values[counting] = values.get(counting, 0) + series.count
        return values


class EventCounters:
    """Every host's series, with retention (TTL after deletion, a global cap).

    ``evicted`` counts forgotten series by reason (``ttl``, ``max_series``,
    ``target_removed``) for ``cadvisor_events_series_evicted_total``.
    """

    def __init__(self, clock, *, series_ttl: float = 3600.0, max_series: int = 1_000_000) -> None:
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.clock = clock
        self.series_ttl = series_ttl
        self.max_series = max_series
        self.hosts: Dict[str, HostCounters] = {}
        #: Families rendered into /metrics right after this one (``render_into(parts, openmetrics)``),
        #: such as the OOM kill counters: one fast path for every big family.
        self.families_after: List = []
        self.evicted: Dict[str, int] = {"ttl": 0, "max_series": 0, "target_removed": 0}
        #: Events per type of the series as of their last tally, and of forgotten series.
        self._counted: Dict[str, int] = {}
        #: Every series in least-recently-updated-first order (values unused).
        self._lru: "OrderedDict[Series, None]" = OrderedDict()

    def host(self, name: str, labels: Sequence[Tuple[str, str]] = ()) -> HostCounters:
        """The counters of host ``name`` (created on first use).

        A host whose labels changed gets a fresh set: its old series carried
        the old labels and are dropped.
        """
        existing = self.hosts.get(name)
        if existing is not None:
            if existing.labels == tuple(labels):
                return existing
            self.remove_host(name)
        for label, _ in labels:
            if label in RESERVED_LABELS:
                raise ValueError(f"label {label!r} is reserved by cadvisor-events")
        counters = self.hosts[name] = HostCounters(self, name, labels)
        return counters

    def remove_host(self, name: str) -> None:
        """Forget a host that is no longer followed, and all its series."""
        counters = self.hosts.pop(name, None)
        if counters is None:
            return
        for series in counters.series.values():
            self._tally(series)
            del self._lru[series]
        self.evicted["target_removed"] += len(counters.series)
        counters.series = _EMPTY

    def counted(self) -> Dict[str, int]:
        """Events counted per type since start (read by :class:`~cadvisor_events.activity.Activity`
        every few seconds), summed here rather than bumped once per event: the series counted
        since the last call are the newest in the least-recently-updated order, so the walk
        from the newest end stops at the first series with nothing new (older ones have
        nothing new either). Forgotten series were summed as they went."""
        for series in reversed(self._lru):
            if series.count == series.tallied:
                break
            self._tally(series)
        return self._counted

    def _tally(self, series: Series) -> None:
        moved = series.count - series.tallied
        if moved:
            series.tallied = series.count
            kind = series.key[1]
            self._counted[kind] = self._counted.get(kind, 0) + moved

    @property
    def series_count(self) -> int:
        return len(self._lru)

    def _add(self, host: HostCounters, key: SeriesKey) -> Series:
        if len(self._lru) >= self.max_series:
            oldest, _ = self._lru.popitem(last=False)
            oldest.host._forget(oldest)
            self.evicted["max_series"] += 1
            if self.evicted["max_series"] in (1, 1000) or self.evicted["max_series"] % 100_000 == 0:
                log.warn(
                    "series cap {cap} reached: evicting least recently updated series "
                    "({n} so far); raise --max-series if this is a real fleet",
                    cap=self.max_series,
                    n=self.evicted["max_series"],
                )
        prefix = host.render_prefix(key)
        series = Series(host, key, len(prefix), host._place(prefix + b"0\n"))
        if host.series is _EMPTY:
            host.series = {}
        host.series[key] = series
        self._lru[series] = None
        return series

    def expire(self) -> int:
        """Forget the series of containers deleted more than ``series_ttl`` ago.

        Called periodically by one fleet-wide timer; ``series_ttl == 0`` keeps
        everything. Returns how many series were forgotten.
        """
        if not self.series_ttl:
            return 0
        cutoff = self.clock.seconds() - self.series_ttl
        forgotten = 0
        for counters in self.hosts.values():
            expired = {name for name, when in counters.deleted.items() if when <= cutoff}
            if not expired:
                continue
            for name in expired:
                del counters.deleted[name]
            for series in [series for key, series in counters.series.items() if key[0] in expired]:
                counters._forget(series)
                del self._lru[series]
                forgotten += 1
        self.evicted["ttl"] += forgotten
        return forgotten

    def render_into(self, parts: List[bytes], openmetrics: bool = False) -> None:
        """Append every series line to ``parts`` (to be joined once, with whatever surrounds them),
        then the :attr:`families_after`, headers included (in OpenMetrics' form if asked)."""
        for counters in self.hosts.values():
            parts += counters.render_lines()
        for family in self.families_after:
            family.render_into(parts, openmetrics)

    def render(self) -> bytes:
        """Every series line, grouped by host, each ending in a newline (b"" when there are none)."""
        parts: List[bytes] = []
        self.render_into(parts)
        return b"".join(parts)

    def snapshot(self, host: Optional[str] = None) -> Dict[Tuple[str, str, str, str], int]:
        """``{(host, container, type, oom_process): count}`` (tests and tools)."""
        return {
            (name, *key): count
            for name, counters in self.hosts.items()
            if host is None or name == host
            for key, count in counters.values().items()
        }
