"""The event counters of every followed host: series, retention and fast rendering.

A series is one ``cadvisor_container_events_total`` sample: (host, container,
event type, oom process) plus the host's file_sd labels. Counts only grow
while the process lives. A container's series outlive the container (the OOM
that killed it must stay visible) until ``series_ttl`` seconds after its
deletion event; ``max_series`` bounds memory by evicting the least recently
updated series. This module never does I/O and never calls prometheus_client
on the hot path: :meth:`HostCounters.count` is called once per event.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Iterator, Optional, Sequence, Tuple

from twisted.logger import Logger

from .event import CountingKey, Event
from .exposition import EVENTS_METRIC, escape_label_value, format_value

log = Logger()

DELETION = "containerDeletion"
CREATION = "containerCreation"
RESERVED_LABELS = frozenset({"host", "id", "event_type", "oom_process"})


class Series:
    """One counter: its value and its pre-rendered ``name{labels} `` prefix."""

    __slots__ = ("count", "prefix", "host", "key")

    def __init__(self, host: "HostCounters", key: CountingKey, prefix: str) -> None:
        self.count = 0
        self.prefix = prefix
        self.host = host
        self.key = key


class HostCounters:
    """The series of one host; the sink a follower counts accepted events into."""

    __slots__ = ("name", "labels", "series", "deleted", "_store", "_label_prefix", "_clock")

    def __init__(self, store: "EventCounters", name: str, labels: Sequence[Tuple[str, str]]) -> None:
        self.name = name
        self.labels = tuple(labels)
        self.series: Dict[CountingKey, Series] = {}
        #: container name -> clock seconds of its deletion event (for the TTL).
        self.deleted: Dict[str, float] = {}
        self._store = store
        self._clock = store.clock
        pairs = [("host", name), *self.labels]
        self._label_prefix = EVENTS_METRIC + "{" + "".join(
            f'{label}="{escape_label_value(value)}",' for label, value in pairs
        )

    def count(self, event: Event) -> None:
        """Count one accepted event (called once per event: keep it lean)."""
        data = event.event_data
        oom = data.oom if data is not None else None
        key = (event.container_name, event.event_type, oom.process_name if oom is not None else "")
        series = self.series.get(key)
        if series is None:
            series = self._store._add(self, key)
        else:
            self._store._lru.move_to_end(series)
        series.count += 1
        event_type = key[1]
        if event_type == DELETION:
            self.deleted[key[0]] = self._clock.seconds()
        elif event_type == CREATION and self.deleted:
            # ``docker restart`` deletes and re-creates the same cgroup name.
            self.deleted.pop(key[0], None)

    def render_prefix(self, key: CountingKey) -> str:
        container_name, event_type, oom_process = key
        return (
            f'{self._label_prefix}event_type="{escape_label_value(event_type)}",'
            f'id="{escape_label_value(container_name)}",'
            f'oom_process="{escape_label_value(oom_process)}"}} '
        )

    def values(self) -> Dict[CountingKey, int]:
        """A snapshot ``{key: count}`` (tests, /targets)."""
        return {key: s.count for key, s in self.series.items()}


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
        self.evicted: Dict[str, int] = {"ttl": 0, "max_series": 0, "target_removed": 0}
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
            del self._lru[series]
        self.evicted["target_removed"] += len(counters.series)
        counters.series.clear()

    @property
    def series_count(self) -> int:
        return len(self._lru)

    def _add(self, host: HostCounters, key: CountingKey) -> Series:
        if len(self._lru) >= self.max_series:
            oldest, _ = self._lru.popitem(last=False)
            del oldest.host.series[oldest.key]
            self.evicted["max_series"] += 1
            if self.evicted["max_series"] in (1, 1000) or self.evicted["max_series"] % 100_000 == 0:
                log.warn(
                    "series cap {cap} reached: evicting least recently updated series "
                    "({n} so far); raise --max-series if this is a real fleet",
                    cap=self.max_series,
                    n=self.evicted["max_series"],
                )
        series = Series(host, key, host.render_prefix(key))
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
            for key in [key for key in counters.series if key[0] in expired]:
                series = counters.series.pop(key)
                del self._lru[series]
                forgotten += 1
        self.evicted["ttl"] += forgotten
        return forgotten

    def iter_lines(self) -> Iterator[str]:
        """``name{labels} value`` for every series, grouped by host."""
        for counters in self.hosts.values():
            for series in counters.series.values():
                count = series.count
                yield series.prefix + (str(count) if count < 1_000_000 else format_value(count))

    def render(self) -> str:
        """All series lines joined, each ending in a newline ("" when there are none)."""
        lines = list(self.iter_lines())
        if not lines:
            return ""
        lines.append("")
        return "\n".join(lines)

    def snapshot(self, host: Optional[str] = None) -> Dict[Tuple[str, str, str, str], int]:
        """``{(host, container, type, oom_process): count}`` (tests and tools)."""
        return {
            (name, *key): s.count
            for name, counters in self.hosts.items()
            if host is None or name == host
            for key, s in counters.series.items()
        }
