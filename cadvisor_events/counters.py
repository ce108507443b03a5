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
on the hot path: :meth:`HostCounters.count_key` is called once per event.

A fleet holds millions of series, so a series is no object of its own: it is
a slot of its host's :class:`SeriesSlots`, an entry in a few lists (count,
last update; lists rather than arrays because the interpreter indexes them
fastest, and this is the per-event path) plus references to label pieces
other series share (one per container, one per event type, one per process
name); its exposition line is those pieces joined at scrape time, never
stored whole.
"""

from __future__ import annotations

from array import array
from collections import Counter
from heapq import nsmallest
from itertools import chain, count as ticker
from types import MappingProxyType
from typing import Any, Callable, Dict, Generator, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from twisted.logger import Logger

from .event import CountingKey, Event, counting_key
from .exposition import EVENTS_METRIC, escape_label_value, format_value

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

#: What a host's maps and lists are until its first series (read-only: a fleet has
#: thousands of hosts, many quiet).
_EMPTY: Any = MappingProxyType({})
_NONE: Any = ()
#: The last-update stamp of a free slot: never among the oldest.
_NEVER = (1 << 63) - 1
#: About how many bytes of exposition one :meth:`EventCounters.render_chunks` piece holds.
CHUNK_BYTES = 4 << 20


def value_bytes(count: int) -> bytes:
    """A counter value as the Go seed writes it (``format_value``), as bytes."""
    return b"%d" % count if count < 1_000_000 else format_value(count).encode()


#: ``value\n`` of the small counts every series starts with, made once and shared.
_VALUES = [b"%d\n" % n for n in range(4096)]


def value_part(count: int) -> bytes:
    """A series' last exposition piece: its value and the line's end."""
    return _VALUES[count] if count < 4096 else value_bytes(count) + b"\n"


class _Pieces:
    """A bounded table of a label value and the exposition piece it renders as, so the fleet's
    series of one event type (or process name) share one string and one piece. Beyond
    ``limit`` distinct values (process names are input), new ones are not remembered."""

    __slots__ = ("table", "render", "limit")

    def __init__(self, render: Callable[[str], bytes], limit: int = 4096) -> None:
        self.table: Dict[str, Tuple[str, bytes]] = {}
        self.render = render
        self.limit = limit

    def __call__(self, value: str) -> Tuple[str, bytes]:
        known = self.table.get(value)
        if known is None:
            known = (value, self.render(value))
            if len(self.table) < self.limit:
                self.table[value] = known
        return known


#: event type -> (the shared string, ``<type>",id="``)
_KINDS = _Pieces(lambda kind: f'{escape_label_value(kind)}",id="'.encode())
#: oom process -> (the shared string, ``<process>"} ``)
_PROCESSES = _Pieces(lambda process: f'{escape_label_value(process)}"}} '.encode())


class SeriesSlots:
    """A host's series as slots: ``width`` exposition pieces each in :attr:`parts` (the
    last one ``value\n``), a count and the count as of the last :meth:`sync`. A series
    counted since is listed once in :attr:`touched`; :meth:`sync` renders the new values
    (at the next scrape, or when totals are read), so a scrape of a big fleet costs only
    the series counted since the last one, and a copy of references. A forgotten series'
    slot is blanked (``b""`` pieces) and reused by the next one born.

    The base of per-host series stores (the event counters, the OOM kill series); a
    subclass sets :attr:`width` and keeps :attr:`keys` (a slot's key, None when free).
    """

    __slots__ = ("parts", "counts", "marks", "keys", "touched", "free", "size")

    width = 1

    def __init__(self) -> None:
        #: ``width`` pieces per slot, joined they are the host's exposition lines; shared
        #: empties until the first series.
        self.parts: List[bytes] = _NONE
        self.counts: List[int] = _NONE
        #: Each slot's count as of the last :meth:`sync` (rendered in :attr:`parts`).
        self.marks: List[int] = _NONE
        self.keys: List[Any] = _NONE
        #: Slots counted since the last :meth:`sync`, each listed once (None while empty).
        self.touched: Optional[List[int]] = None
        self.free: Optional[List[int]] = None
        #: About how many bytes the host's lines take (for slicing a render).
        self.size = 0

    def sync(self) -> None:
        """Render the values of the slots counted since the last call."""
        touched = self.touched
        if touched is None:
            return
        self.touched = None
        parts, counts, marks, keys = self.parts, self.counts, self.marks, self.keys
        last = self.width - 1
        for index in touched:
            if keys[index] is not None:
                count = marks[index] = counts[index]
                parts[index * self.width + last] = _VALUES[count] if count < 4096 else value_part(count)

    def render_lines(self) -> List[bytes]:
        """This host's exposition lines as pieces (joined, they are the lines), values current."""
        self.sync()
        return self.parts

    def _place(self, key: Any, pieces: List[bytes]) -> int:
        """A slot for a new series (a free one, else a new one at the end) holding ``pieces``
        (all but the value, which starts at 0)."""
        width = self.width
        pieces.append(_VALUES[0])
        self.size += sum(map(len, pieces))
        free = self.free
        if free:
            index = free.pop()
            self.parts[index * width:(index + 1) * width] = pieces
            self.keys[index] = key
            return index
        if self.parts is _NONE:
            self.parts, self.counts, self.marks, self.keys = [], [], [], []
        self.parts += pieces
        self.counts.append(0)
        self.marks.append(0)
        self.keys.append(key)
        return len(self.keys) - 1

    def _release(self, index: int) -> None:
        """Blank a forgotten series' slot and keep it for the next series born."""
        width = self.width
        start = index * width
        self.size -= sum(map(len, self.parts[start:start + width]))
        self.parts[start:start + width] = [b""] * width
        self.keys[index] = None
        self.counts[index] = self.marks[index] = 0
        if self.free is None:
            self.free = []
        self.free.append(index)


class HostCounters(SeriesSlots):
    """The series of one host; the sink a follower counts accepted events into.

    A slot's pieces: ``name{<host labels><who the container is>event_type="`` (one per
    container, shared by its series), ``<type>",id="`` (one per event type, fleet-wide),
    ``<id>",oom_process="`` (one per container), ``<process>"} `` (one per process name,
    fleet-wide) and its value.
    """

    __slots__ = ("name", "labels", "series", "deleted", "label_source", "stamps", "_store",
                 "_head", "_leading", "_containers", "_clock", "_ticks")

    width = 5

    def __init__(self, store: "EventCounters", name: str, labels: Sequence[Tuple[str, str]]) -> None:
        super().__init__()
        self.name = name
        self.labels = tuple(labels)
        #: series key -> its slot; a shared read-only empty until the first series.
        self.series: Dict[SeriesKey, int] = _EMPTY
        #: container name -> clock seconds of its deletion event (for the TTL).
        self.deleted: Dict[str, float] = {}
        #: Who a series' container is, as rendered labels (``name="value",`` pairs), asked once
        #: when a series is born: ``label_source(key)``. None: no such labels (the Go seed's).
        self.label_source: Optional[Callable[[SeriesKey], str]] = None
        #: Each slot's last update, from the store's one sequence (the least recently
        #: updated series is the one with the smallest).
        self.stamps: "array[int]" = _NONE
        self._store = store
        self._clock = store.clock
        self._ticks = store._ticks
        pairs = [("host", name), *self.labels]
        self._leading = f"{EVENTS_METRIC}{{" + "".join(
            f'{label}="{escape_label_value(value)}",' for label, value in pairs)
        self._head = (self._leading + 'event_type="').encode()
        #: container name -> (that name as the series keys share it, its first piece, its
        #: third piece): made with its first series, gone with its last.
        self._containers: Dict[str, Tuple[str, bytes, bytes]] = _EMPTY

    def count(self, event: Event) -> None:
        """Count one accepted event."""
        self.count_key(counting_key(event))

    def count_key(self, key: SeriesKey, new: bool = True) -> bool:
        """Count one accepted event under ``key`` (its counting key, or a longer series key).
        Called once per event: keep it lean.

        With ``new`` false, count only into an existing series and say whether there was one
        (a caller that must decide before a series is born so asks once, not twice per event).
        """
        index = self.series.get(key)
        if index is None:
            if not new:
                return False
            index = self._store._add(self, key)
        counts = self.counts
        count = counts[index]
        if count == self.marks[index]:
            touched = self.touched
            if touched is None:
                self.touched = [index]
            else:
                touched.append(index)
        counts[index] = count + 1
        self.stamps[index] = next(self._ticks)
        event_type = key[1]
        if event_type == DELETION:
            self.deleted[key[0]] = self._clock.seconds()  # keeps the name a series' birth put there
        elif event_type == CREATION and self.deleted:
            # ``docker restart`` deletes and re-creates the same cgroup name.
            self.deleted.pop(key[0], None)
        return True

    def has_room(self, births: int) -> bool:
        """Whether the store can take ``births`` new series without evicting one."""
        store = self._store
        return store.series_count + births <= store.max_series

    @property
    def ticks(self) -> Iterator[int]:
        """The store's sequence of updates: ``stamps[slot] = next(ticks)`` marks a series updated."""
        return self._ticks

    def add_counts(self, slots: Iterable[int]) -> None:
        """One event more in each of ``slots`` (existing series; a slot may repeat), as
        :meth:`count_key` counts, without marking them updated in :attr:`stamps` or its
        bookkeeping of deletions and creations (the caller's): one step per series, not
        per event."""
        counts, marks = self.counts, self.marks
        touched = self.touched
        for index, more in Counter(slots).items():
            count = counts[index]
            if count == marks[index]:
                if touched is None:
                    touched = self.touched = []
                touched.append(index)
            counts[index] = count + more

    def sync(self) -> None:
        """Render the values counted since the last call, and add what they moved to the
        store's totals per event type."""
        touched = self.touched
        if touched is None:
            return
        self.touched = None
        parts, counts, marks, keys = self.parts, self.counts, self.marks, self.keys
        counted = self._store._counted
        for index in touched:
            key = keys[index]
            if key is not None:
                count = counts[index]
                moved = count - marks[index]
                if moved:
                    marks[index] = count
                    counted[key[1]] = counted.get(key[1], 0) + moved
                    parts[index * 5 + 4] = _VALUES[count] if count < 4096 else value_part(count)

    def _born(self, key: SeriesKey) -> int:
        """The slot of a new series; its labels are fixed from here on. Its key shares the
        container's, the event type's and the process's strings with the other series."""
        cgroup = key[0]
        containers = self._containers
        container = containers.get(cgroup)
        if container is None:
            container = (cgroup, b"", f'{escape_label_value(cgroup)}",oom_process="'.encode())
        name, first, third = container
        source = self.label_source
        if source is None:
            head = self._head
        else:
            head = (self._leading + source(key) + 'event_type="').encode()
            if head == first:
                head = first
        if head is not first and len(key) == 3:  # a split kill's labels are its own
            if containers is _EMPTY:
                containers = self._containers = {}
            containers[name] = (name, head, third)
        kind, kind_piece = _KINDS(key[1])
        process, process_piece = _PROCESSES(key[2])
        shared = (name, kind, process, *key[3:])
        if kind == DELETION:  # noted under the shared name, which a dict keeps when set again
            self.deleted[name] = self._clock.seconds()
        index = self._place(shared, [head, kind_piece, third, process_piece])
        if self.stamps is _NONE:
            self.stamps = array("q")  # machine words: a list would hold an int object per series
        if index == len(self.stamps):
            self.stamps.append(next(self._ticks))
        else:
            self.stamps[index] = next(self._ticks)
        if self.series is _EMPTY:
            self.series = {}
        self.series[shared] = index
        return index

    def _forget(self, index: int) -> None:
        """Drop the series in slot ``index`` (its slot is reused)."""
        key = self.keys[index]
        self._store._tally(key[1], self.counts[index] - self.marks[index])
        del self.series[key]
        self._release(index)
        self.stamps[index] = _NEVER

    def _forget_containers(self, names: Iterable[str]) -> None:
        """Forget what the series of containers ``names`` shared (they have none left)."""
        if self._containers:
            for name in names:
                self._containers.pop(name, None)

    def values(self) -> Dict[CountingKey, int]:
        """A snapshot ``{counting key: count}`` (tests, /targets); series split by OOM
        victim are summed under their counting key, as cAdvisor's history counts them."""
        values: Dict[CountingKey, int] = {}
        counts = self.counts
        for key, index in self.series.items():
            counting = (key[0], key[1], key[2])
            values[counting] = values.get(counting, 0) + counts[index]
        return values


def host_chunks(hosts: Dict[str, Any], chunk: List[bytes], size: int) -> Generator[List[bytes], None, List[bytes]]:
    """Each host's exposition pieces (synced first), after those ``chunk`` holds, joined into
    lists of one byte string of about ``size`` bytes; returns what is left, not yet joined. A
    host removed from ``hosts`` meanwhile (between two pieces) is left out."""
    held = 0
    for slots in list(hosts.values()):
        still_followed = hosts.get(slots.name) is slots
        if not still_followed:
            continue
        slots.sync()
        chunk += slots.parts
        held += slots.size
        if held >= size:
            yield [b"".join(chunk)]
            chunk, held = [], 0
    return chunk


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
        #: Families rendered into /metrics right after this one (``render_into(parts, openmetrics)``,
        #: and ``render_chunks(openmetrics)`` where they have it), such as the OOM kill counters.
        self.families_after: List = []
        self.evicted: Dict[str, int] = {"ttl": 0, "max_series": 0, "target_removed": 0}
        #: How many series there are.
        self.series_count = 0
        #: Events per type as of each series' last sync, and of forgotten series.
        self._counted: Dict[str, int] = {}
        #: The one sequence every update of every host is stamped from.
        self._ticks = ticker(1)
        #: Eviction candidates: (stamp, host, slot) of the oldest series as of when it was
        #: made, newest first (popped from the end).
        self._oldest: List[Tuple[int, HostCounters, int]] = []
        #: Hosts that lost series to the cap since the last :meth:`expire`, which forgets what
        #: their containers without series left shared.
        self._shrunk: Set[HostCounters] = set()

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
        counters.sync()
        self.series_count -= len(counters.series)
        self.evicted["target_removed"] += len(counters.series)
        counters.series = _EMPTY

    def counted(self) -> Dict[str, int]:
        """Events counted per type since start (read by :class:`~cadvisor_events.activity.Activity`
        every few seconds), summed here rather than bumped once per event: only the series
        counted since the last call (or scrape) are visited. Forgotten series were summed
        as they went."""
        for counters in self.hosts.values():
            if counters.touched is not None:
                counters.sync()
        return self._counted

    def _tally(self, kind: str, moved: int) -> None:
        if moved:
            self._counted[kind] = self._counted.get(kind, 0) + moved

    def _add(self, host: HostCounters, key: SeriesKey) -> int:
        if self.series_count >= self.max_series:
            self._evict_oldest()
            self.evicted["max_series"] += 1
            if self.evicted["max_series"] in (1, 1000) or self.evicted["max_series"] % 100_000 == 0:
                log.warn(
                    "series cap {cap} reached: evicting least recently updated series "
                    "({n} so far); raise --max-series if this is a real fleet",
                    cap=self.max_series,
                    n=self.evicted["max_series"],
                )
        index = host._born(key)
        self.series_count += 1
        return index

    def _evict_oldest(self) -> None:
        """Forget the least recently updated series. The candidates are the oldest as of when
        they were listed: one whose stamp is unchanged is still older than every series not
        listed (their stamps were newer then, and stamps only grow), so the first such one
        is the oldest of all; listed again once every candidate was used or updated."""
        hosts = self.hosts
        for _ in range(2):
            oldest = self._oldest
            if not oldest:
                oldest = self._oldest = self._candidates()
            while oldest:
                stamp, host, index = oldest.pop()
                if hosts.get(host.name) is host and host.stamps[index] == stamp and host.keys[index] is not None:
                    host._forget(index)
                    self.series_count -= 1
                    self._shrunk.add(host)
                    return

    def _candidates(self) -> List[Tuple[int, HostCounters, int]]:
        """(stamp, host, slot) of the oldest sixteenth of the series (at least 1,024), newest
        first: each listing costs a pass over every stamp, once per thousands of evictions."""
        hosts = [host for host in self.hosts.values() if host.stamps]
        wanted = max(1, min(self.series_count, max(1024, self.series_count // 16)))
        smallest = nsmallest(wanted, chain.from_iterable(host.stamps for host in hosts))
        newest = min(smallest[-1], _NEVER - 1) if smallest else 0  # free slots are no candidates
        found = [(stamp, host, index)
                 for host in hosts if min(host.stamps) <= newest
                 for index, stamp in enumerate(host.stamps) if stamp <= newest]
        found.sort(key=lambda entry: entry[0], reverse=True)
        return found

    def expire(self) -> int:
        """Forget the series of containers deleted more than ``series_ttl`` ago.

        Called periodically by one fleet-wide timer; ``series_ttl == 0`` keeps
        everything. Returns how many series were forgotten.
        """
        shrunk, self._shrunk = self._shrunk, set()
        for counters in shrunk:
            live = {key[0] for key in counters.series}
            counters._forget_containers([name for name in counters._containers if name not in live])
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
            for index in [index for key, index in counters.series.items() if key[0] in expired]:
                counters._forget(index)
                forgotten += 1
            counters._forget_containers(expired)
        self.series_count -= forgotten
        self.evicted["ttl"] += forgotten
        return forgotten

    def render_into(self, parts: List[bytes], openmetrics: bool = False) -> None:
        """Append every host's series lines to ``parts`` (to be joined once, with whatever
        surrounds them), then the :attr:`families_after`, headers included (in OpenMetrics'
        form if asked). Each host's pieces are joined here: joining a few hundred pieces at
        a time is twice as fast as joining millions at once (``bytes.join`` keeps a buffer
        descriptor per piece, and a few hundred stay in the CPU's cache)."""
        for counters in self.hosts.values():
            counters.sync()
            parts.append(b"".join(counters.parts))
        for family in self.families_after:
            family.render_into(parts, openmetrics)

    def render_chunks(self, openmetrics: bool = False, size: int = CHUNK_BYTES) -> Iterator[List[bytes]]:
        """What :meth:`render_into` appends, a piece at a time: lists of byte strings (one,
        as a rule) of about ``size`` bytes in all, host by host (a host's lines are of one
        moment), then the :attr:`families_after`; a caller may render one piece per reactor
        turn. A host removed meanwhile is left out; one added meanwhile waits for the next
        render. A piece is joined here, from its hosts' label pieces, once: its reader then
        handles a few large strings, not millions of small ones."""
        chunk = yield from host_chunks(self.hosts, [], size)
        for family in self.families_after:
            many = getattr(family, "render_chunks", None)
            if many is None:
                family.render_into(chunk, openmetrics)
                continue
            for piece in many(openmetrics, size):
                chunk += piece
                yield [b"".join(chunk)]
                chunk = []
        if chunk:
            yield [b"".join(chunk)]

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
