"""OOM kills per container and per node, alert-ready, and the fleet's most recent kills.

``cadvisor_container_events_total{event_type="oomKill"}`` is born at 1
on a container's first kill, so ``increase()`` never sees that kill. This
module keeps a second family, ``cadvisor_container_oom_kills_total{host,
namespace, pod, container, <file_sd labels>}``, whose series exist at 0 from
the moment a container is learned (a spec listing, a creation), grow by one per
kill attributed to the container that lost the process, continue across
restarts of the same container of a pod (same labels, same series) and go
``series_ttl`` seconds after the last container with those labels was deleted.
``cadvisor_node_oom_kills_total{host, <file_sd labels>}`` counts global
(non-cgroup) OOM kills, at 0 for every followed host once its history is counted. The last
:data:`RECENT_KILLS` kills of the fleet (by their time) are kept for ``/`` and
``/oom-kills``.

Who a container is, and which cgroup lost the process, is decided by the
caller (:mod:`cadvisor_events.enrich`); this module never does I/O, never
reads a spec and keeps its series as :mod:`cadvisor_events.counters` keeps its own
(slots of label pieces, values rendered again only when a count moved).
"""

from __future__ import annotations

from bisect import insort
from types import MappingProxyType
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from .exposition import escape_label_value, family_header
from .counters import CHUNK_BYTES, SeriesSlots, host_chunks, value_bytes

__all__ = ["OomKills", "HostOomKills", "RecentKill", "CONTAINER_METRIC", "NODE_METRIC", "RECENT_KILLS"]

CONTAINER_METRIC = "cadvisor_container_oom_kills_total"
CONTAINER_HELP = ("Processes OOM-killed in a container (the cgroup of the killed task), by Kubernetes "
                  "namespace, pod and container; 0 from when the container is known.")
NODE_METRIC = "cadvisor_node_oom_kills_total"
NODE_HELP = "Global (not cgroup-limited) OOM kills of the host."
#: OOM kills kept for the status page and /oom-kills.
RECENT_KILLS = 100

#: (namespace, pod, container): one series of the container family per host.
ContainerKey = Tuple[str, str, str]
#: What a host's lazily made maps are until first written (read-only).
_EMPTY: Any = MappingProxyType({})


class RecentKill(NamedTuple):
    """One OOM kill as the status page and ``/oom-kills`` show it (a tuple: one per kill is made,
    and a stream in an OOM storm makes many)."""

    ns: int  # the event's time, nanoseconds since the epoch (sort key)
    timestamp: str  # as cAdvisor wrote it
    host: str
    namespace: str
    pod: str
    container: str
    cgroup: str  # the killed task's cgroup
    limit_cgroup: str  # the cgroup whose limit was hit (``/``: a node OOM)
    process: str
    pid: int

    @property
    def node_oom(self) -> bool:
        return self.limit_cgroup == "/"

    def as_json(self) -> Dict[str, Any]:
        return {
            "time": self.timestamp, "timestamp_seconds": self.ns / 1e9, "host": self.host,
            "namespace": self.namespace, "pod": self.pod, "container": self.container,
            "cgroup": self.cgroup, "limit_cgroup": self.limit_cgroup, "node_oom": self.node_oom,
            "process": self.process, "pid": self.pid,
        }


class HostOomKills(SeriesSlots):
    """One host's OOM kill series; its enricher says what was learned, killed and deleted.

    A slot's pieces: ``name{<host labels>`` (one per host), ``namespace="..",pod="..",container=".."} ``
    and its value.
    """

    __slots__ = ("name", "labels", "series", "cgroups", "deletions", "node_kills",
                 "node_line", "node_ready", "_store", "_head")

    width = 3

    def __init__(self, store: "OomKills", name: str, labels: Sequence[Tuple[str, str]]) -> None:
        super().__init__()
        self.name = name
        self.labels = tuple(labels)
        # ``series``, ``cgroups`` and the slots start as shared read-only empties, made real on
        # first write: a fleet has thousands of hosts, many without a container.
        self.series: Dict[ContainerKey, int] = _EMPTY
        #: Cgroup -> the key of its series: every cgroup learned, deleted ones until the TTL.
        self.cgroups: Dict[str, ContainerKey] = _EMPTY
        #: Deleted cgroup -> when; a creation removes it. Its host's event counters keep exactly
        #: that (``HostCounters.deleted``), so an enricher shares theirs instead of keeping
        #: a copy up to date on every creation and deletion.
        self.deletions: Dict[str, float] = {}
        self.node_kills = 0
        self._store = store
        self._head = f"{CONTAINER_METRIC}{{{self._host_labels()}".encode()
        self.node_line = self._node_prefix() + b"0\n"
        #: Whether the node series is shown: once the host's history is counted (see
        #: :meth:`ready`), so a restarted exporter never shows 0 before the seeded value.
        self.node_ready = False

    def ready(self) -> None:
        """The host's history is counted: its node series is shown from now on."""
        self.node_ready = True

    def _host_labels(self) -> str:
        return "".join(f'{label}="{escape_label_value(value)}",' for label, value in (("host", self.name), *self.labels))

    def _node_prefix(self) -> bytes:
        return f"{NODE_METRIC}{{{self._host_labels()[:-1]}}} ".encode()

    def learned(self, cgroup: str, key: ContainerKey) -> None:
        """A container now known (listing, creation): its series exists from now on, at 0 if new.
        A cgroup keeps the key it was first learned with."""
        if cgroup in self.cgroups:
            self.deletions.pop(cgroup, None)  # re-created under the same name (``docker restart``)
        else:
            self._live(cgroup, key)

    def killed(self, kill: RecentKill, cgroup: Optional[str], key: Optional[ContainerKey]) -> None:
        """One OOM kill: +1 on the series of ``cgroup`` (the killed task's; its learned key wins
        over ``key``) unless None, +1 on the node's when the limit was the node's; recorded."""
        if cgroup is not None and key is not None:
            known = self.cgroups.get(cgroup)  # a deleted one's too: a late or replayed kill
            if known is None:
                known = self._live(cgroup, key)
            index = self.series.get(known)
            if index is None:  # its series expired: back, for this kill, until the next expiry
                index = self._add(known)
            count = self.counts[index]
            if count == self.marks[index]:
                if self.touched is None:
                    self.touched = []
                self.touched.append(index)
            self.counts[index] = count + 1
            if (kill.namespace, kill.pod, kill.container) != known:
                kill = kill._replace(namespace=known[0], pod=known[1], container=known[2])
        if kill.node_oom:
            self.node_kills += 1
            self.node_line = self._node_prefix() + value_bytes(self.node_kills) + b"\n"
        self._store.record(kill)

    def key_of(self, cgroup: str) -> Optional[ContainerKey]:
        """The key ``cgroup`` was learned (or first killed) with, if any."""
        return self.cgroups.get(cgroup)

    def deleted(self, cgroup: str) -> None:
        """A container was deleted (when :attr:`deletions` is not shared with event counters that
        note it); its series goes ``series_ttl`` after its last one's deletion (:meth:`expire`)."""
        self.deletions.setdefault(cgroup, self._store.clock.seconds())

    def _live(self, cgroup: str, key: ContainerKey) -> ContainerKey:
        if self.cgroups is _EMPTY:
            self.cgroups = {}
        self.cgroups[cgroup] = key
        if key not in self.series:
            self._add(key)
        return key

    def _add(self, key: ContainerKey) -> int:
        namespace, pod, container = key
        labels = (f'namespace="{escape_label_value(namespace)}",pod="{escape_label_value(pod)}",'
                  f'container="{escape_label_value(container)}"}} ').encode()
        index = self._place(key, [self._head, labels])
        if self.series is _EMPTY:
            self.series = {}
        self.series[key] = index
        self._store.series_count += 1
        return index

    def expire(self, cutoff: float) -> int:
        """Forget containers deleted before ``cutoff``, and the series none of the remaining
        containers has (a series' last container was deleted before ``cutoff``)."""
        cgroups, deletions = self.cgroups, self.deletions
        never = cutoff + 1
        for cgroup in [cgroup for cgroup in cgroups if deletions.get(cgroup, never) <= cutoff]:
            del cgroups[cgroup]
        kept = set(cgroups.values())
        doomed = [key for key in self.series if key not in kept]
        for key in doomed:
            self._forget(key)
        return len(doomed)

    def _forget(self, key: ContainerKey) -> None:
        self._release(self.series.pop(key))
        self._store.series_count -= 1

    def values(self) -> Dict[ContainerKey, int]:
        """``{(namespace, pod, container): kills}`` (tests)."""
        return {key: self.counts[index] for key, index in self.series.items()}


class OomKills:
    """Every followed host's OOM kill series, their retention, and the fleet's recent kills."""

    def __init__(self, clock, *, series_ttl: float = 3600.0, recent: int = RECENT_KILLS) -> None:
        self.clock = clock
        self.series_ttl = series_ttl
        self.hosts: Dict[str, HostOomKills] = {}
        self.series_count = 0
        self._recent_max = recent
        #: (ns, sequence, kill), oldest first; at most ``recent``.
        self._recent: List[Tuple[int, int, RecentKill]] = []
        self._sequence = 0

    def host(self, name: str, labels: Sequence[Tuple[str, str]] = ()) -> HostOomKills:
        """The series of host ``name`` (created on first use, fresh when its labels changed)."""
        existing = self.hosts.get(name)
        if existing is not None:
            if existing.labels == tuple(labels):
                return existing
            self.remove_host(name)
        kills = self.hosts[name] = HostOomKills(self, name, labels)
        return kills

    def remove_host(self, name: str) -> None:
        """Forget a host that is no longer followed (its recent kills stay listed)."""
        kills = self.hosts.pop(name, None)
        if kills is not None:
            self.series_count -= len(kills.series)

    def record(self, kill: RecentKill) -> None:
        """Keep ``kill`` if it is among the newest :data:`RECENT_KILLS` seen."""
        recent = self._recent
        if len(recent) >= self._recent_max and kill.ns <= recent[0][0]:
            return
        self._sequence += 1
        insort(recent, (kill.ns, self._sequence, kill))
        if len(recent) > self._recent_max:
            del recent[0]

    def recent(self) -> List[RecentKill]:
        """The kept kills, newest first."""
        return [kill for _, _, kill in reversed(self._recent)]

    def expire(self) -> int:
        """Forget series whose last container was deleted over ``series_ttl`` ago (0: never)."""
        if not self.series_ttl:
            return 0
        cutoff = self.clock.seconds() - self.series_ttl
        return sum(kills.expire(cutoff) for kills in self.hosts.values())

    def render_into(self, parts: List[bytes], openmetrics: bool = False) -> None:
        """Both families, headers included, appended to ``parts``."""
        for chunk in self.render_chunks(openmetrics):
            parts += chunk

    def render_chunks(self, openmetrics: bool = False, size: int = CHUNK_BYTES) -> Iterator[List[bytes]]:
        """Both families as lists of byte strings of about ``size`` bytes in all, host by host
        (see ``EventCounters.render_chunks``); a host removed meanwhile is left out."""
        hosts = self.hosts
        chunk = yield from host_chunks(hosts, [_header(CONTAINER_METRIC, CONTAINER_HELP, openmetrics)], size)
        chunk.append(_header(NODE_METRIC, NODE_HELP, openmetrics))
        chunk += [kills.node_line for kills in hosts.values() if kills.node_ready]
        yield [b"".join(chunk)]

    def render(self, openmetrics: bool = False) -> bytes:
        parts: List[bytes] = []
        self.render_into(parts, openmetrics)
        return b"".join(parts)


def _header(name: str, help_text: str, openmetrics: bool) -> bytes:
    return family_header(name[: -len("_total")] if openmetrics else name, help_text)
