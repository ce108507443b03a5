"""Who the counted events belong to: the counting layer between a host's follower and its series.

A :class:`HostEnricher` is the sink a follower counts into. It passes every
event on to the host's :class:`~cadvisor_events.counters.HostCounters` and
:class:`~cadvisor_events.oomkills.HostOomKills`, and adds three things:

* **Labels fixed at birth.** A series' labels (``namespace``, ``pod``,
  ``container``, ``image``, ``name``, ``container_label_*``) are rendered
  once, when the series is born, from what the host's
  :class:`~cadvisor_events.specs.HostSpecs` knows then. So that this is the
  final word, an event that would give birth to a series of a container
  whose spec is being fetched (a ``containerCreation`` starts that fetch; a
  listing after a reconnect covers every container it does not know) waits
  for the fetch, which always ends within its timeout; later events of the
  same container queue behind it, so their order is kept. Counters commute,
  so waiting changes no count and nothing of the follower's
  de-duplication. A spec that arrives later changes no series.
* **OOM attribution.** cAdvisor sends a kernel OOM as ``oom`` (the killed
  task's cgroup) and ``oomKill`` (the cgroup whose limit was hit, perhaps the
  pod's) with one timestamp, back to back; histories may list them the other
  way round. The two are paired here, so a kill is attributed to the
  container that lost the process; an ``oomKill`` on a pod-level cgroup is
  counted in a series labelled with the victim (two victims of one pod: two
  series with different labels, never two with the same). A kill whose limit
  was ``/`` is a node OOM.
* **Spec bookkeeping.** ``containerDeletion`` is passed to the specs (kept
  for the retention) after it is counted; containers learned from specs get
  their OOM kill series at 0.

Without specs (``--no-enrich``) it adds no label and waits for nothing; it
still pairs OOMs for the OOM kill families. It never does I/O itself.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from twisted.internet import defer
from twisted.logger import Logger

from .counters import CREATION, DELETION, EventCounters, HostCounters, SeriesKey
from .event import Event, InvalidEvent, counting_key, timestamp_ns
from .exposition import escape_label_value
from .identity import Identity, cgroup_ids
from .oomkills import ContainerKey, HostOomKills, OomKills, RecentKill

if TYPE_CHECKING:
    from .specs import HostSpecs, SpecStore
    from .targets import TargetSpec

__all__ = ["Enrichment", "HostEnricher", "render_identity", "MAX_WAITING"]

log = Logger()

OOM = "oom"
OOM_KILL = "oomKill"
#: A kubelet pod's sandbox container (no workload runs there): no OOM kill series at 0.
SANDBOX = "POD"
#: Events of one host waiting for specs at once; beyond, an event counts with what is known.
MAX_WAITING = 10_000
#: Victims of kills on another cgroup (pod-level limits) whose labels are remembered per host.
MAX_VICTIMS = 4096


_CONTAINER_NAMES: Dict[str, bool] = {}


def _is_container(cgroup: str) -> bool:
    """Whether a cgroup's name holds a runtime's container ID (remembered: a regular expression
    per creation would be a tenth of a creation-heavy stream's cost)."""
    known = _CONTAINER_NAMES.get(cgroup)
    if known is None:
        if len(_CONTAINER_NAMES) >= 4096:
            _CONTAINER_NAMES.clear()
        known = _CONTAINER_NAMES[cgroup] = bool(cgroup_ids(cgroup)[1])
    return known


def _ignore(cgroup: str) -> None:
    pass


def render_identity(identity: Identity) -> str:
    """``namespace="..",pod="..",container="..",image="..",name="..",`` then the
    ``container_label_*`` pairs: the labels a series of this container is born with."""
    parts = [
        f'namespace="{escape_label_value(identity.namespace)}",pod="{escape_label_value(identity.pod)}",'
        f'container="{escape_label_value(identity.container)}",image="{escape_label_value(identity.image)}",'
        f'name="{escape_label_value(identity.name)}",'
    ]
    parts += [f'{label}="{escape_label_value(value)}",' for label, value in identity.extra]
    return "".join(parts)


class HostEnricher:
    """One host's counting layer (see the module docstring): an ``EventSink`` for its follower,
    and the follower's way to the host's specs (:meth:`listing`, :meth:`created`)."""

    __slots__ = ("host", "counters", "kills", "specs", "max_waiting", "waiting", "waiting_events",
                 "_clock", "_last_oom", "_held", "_held_call", "_listing", "_victims", "_closed",
                 "_learned_meanwhile", "created")

    def __init__(self, counters: HostCounters, kills: HostOomKills, specs: Optional["HostSpecs"], clock,
                 *, max_waiting: int = MAX_WAITING) -> None:
        self.host = counters.name
        self.counters = counters
        self.kills = kills
        self.specs = specs
        self.max_waiting = max_waiting
        #: cgroup -> its events waiting for a spec, in arrival order, each with its OOM victim
        #: (None until one waits: a fleet has thousands of hosts).
        self.waiting: Optional[Dict[str, List[Tuple[Event, Optional[str]]]]] = None
        self.waiting_events = 0
        kills.deletions = counters.deleted  # one record of deletions for both (see HostOomKills)
        self._clock = clock
        self._last_oom: Optional[Event] = None  # the last ``oom`` counted, until its kill pairs
        self._held: Optional[Event] = None  # an ``oomKill`` waiting for its ``oom`` (history order)
        self._held_call = None
        self._listing: Optional[defer.Deferred] = None
        #: victim cgroup -> labels its kills on another cgroup are counted with ("": not split);
        #: made on first use.
        self._victims: "Optional[OrderedDict[str, str]]" = None
        self._closed = False
        #: Containers learned while a listing and its backfill run, made known after it.
        self._learned_meanwhile: Optional[List[Tuple[str, Identity]]] = None
        #: The follower's call for each ``containerCreation`` on the stream: fetch its spec now,
        #: before it is gone. The specs' own ``fetch`` (coalesced there), called without a hop
        #: through this class: a stream announces creations by the thousand. Nothing without
        #: specs or once closed.
        self.created: Callable[[str], None] = _ignore if specs is None else specs.fetch
        if specs is not None:
            counters.label_source = self._series_labels
            specs.on_learned = self._learned

    # -- the follower's side ------------------------------------------------------------

    def listing(self) -> defer.Deferred:
        """Ask the host's specs for every container (after a stream opened); fires with None
        when done, never with a failure. Meanwhile, a series of a container without a spec
        waits for it."""
        if self.specs is None or self._closed:
            return defer.succeed(None)
        if self._learned_meanwhile is None:
            self._learned_meanwhile = []
        listing = self._listing = self.specs.listing()

        def done(result: object) -> None:
            if self._listing is listing:
                self._listing = None

        listing.addBoth(done)
        return listing

    def caught_up(self) -> None:
        """The backfill after a listing is counted (or there is none): the containers learned
        meanwhile get their OOM kill series now. Before, a series born at 0 from the listing
        could be scraped just before the history's kills came back into it after a restart,
        and 0 then 1 reads as a new kill."""
        if self._held is not None:  # the backfill's last kill: no ``oom`` of it follows now
            self._release_held(None)
        self.kills.ready()
        learned, self._learned_meanwhile = self._learned_meanwhile, None
        for cgroup, identity in learned or ():
            self._learned(cgroup, identity)

    @property
    def fetches_specs(self) -> bool:
        """Whether :attr:`created` does anything (not without specs): a follower asks once."""
        return self.specs is not None

    def count(self, event: Event) -> None:
        """Count one accepted event (in the follower's order; once per event: keep it lean)."""
        paired = self._held is not None and self._release_held(event)
        kind = event.event_type
        if kind == OOM_KILL:
            last = self._last_oom
            if last is not None and last.timestamp == event.timestamp:
                self._last_oom = None
                victim = last.container_name
                if not self.waiting and (self.specs is None or (
                        victim == event.container_name and counting_key(event) in self.counters.series)):
                    self._kill(event, victim)  # nothing to wait for (see :meth:`_blocker`)
                else:
                    self._route(event, victim)
            else:
                self._hold(event)
            return
        if kind == OOM and not paired:
            self._last_oom = event
        specs = self.specs
        if specs is not None:
            # Nothing waits and the series has its labels already: count now.
            if not self.waiting and self.counters.count_key(counting_key(event), new=False):
                if kind == DELETION:
                    specs.deleted(event.container_name)
                return
            self._route(event, None)
            return
        # Without specs nothing waits: :meth:`_apply`, inlined for the hot path.
        self.counters.count_key(counting_key(event))  # notes deletions for the OOM kill series too
        if kind == CREATION:
            cgroup = event.container_name
            if cgroup not in self.kills.cgroups and _is_container(cgroup):  # :meth:`_learn_created`
                self.kills.learned(cgroup, ("", "", cgroup))

    def count_many(self, events: List[Event]) -> None:
        """:meth:`count` of each of ``events`` in turn (a history's accepted events).

        An event of a series that exists already, with no kill held and nothing waiting,
        only adds one to that series' value and marks it updated: those values are
        gathered and added once per series at the end (:meth:`HostCounters.add_counts`),
        and their creations and deletions are noted before the next event that takes the
        whole way (an OOM, a series' first event), which may read them. Everything else
        goes through :meth:`count` in its turn, so births, pairings and waits happen in
        the same order. Near the series cap, where a birth could evict a series whose
        value waits to be added, every event goes through :meth:`count`.
        """
        counters = self.counters
        if not counters.has_room(len(events)):
            for event in events:
                self.count(event)
            return
        slots: List[int] = []
        noted: List[Event] = []  # creations and deletions not yet noted
        ticks = counters.ticks
        for event in events:
            kind = event.event_type
            if kind != OOM and kind != OOM_KILL and self._held is None and not self.waiting:
                slot = counters.series.get(counting_key(event))
                if slot is not None:
                    slots.append(slot)
                    counters.stamps[slot] = next(ticks)  # updated in this order, as one by one
                    if kind == DELETION or kind == CREATION:
                        noted.append(event)
                    continue
            if noted:
                self._note(noted)
                noted = []
            self.count(event)
        if noted:
            self._note(noted)
        if slots:
            counters.add_counts(slots)

    def _note(self, events: List[Event]) -> None:
        """What :meth:`count` does besides counting for creations and deletions of existing
        series: the container's deletion record, the specs' retention, the kill series of a
        container created (without specs)."""
        deleted = self.counters.deleted
        now = self._clock.seconds()
        specs = self.specs
        for event in events:
            name = event.container_name
            if event.event_type == DELETION:
                deleted[name] = now
                if specs is not None:
                    specs.deleted(name)
            else:
                if deleted:
                    deleted.pop(name, None)
                if specs is None:
                    self._learn_created(name)

    def close(self) -> None:
        """The host is no longer followed: count nothing more."""
        self._closed = True
        self.created = _ignore
        if self._held_call is not None and self._held_call.active():
            self._held_call.cancel()
        self._held = self._held_call = None
        self.waiting = None
        self.waiting_events = 0
        if self.specs is not None and self.specs.on_learned == self._learned:
            self.specs.on_learned = None

    # -- pairing ------------------------------------------------------------------------

    def _hold(self, kill: Event) -> None:
        """An ``oomKill`` without its ``oom`` yet: the next event may be it (a history lists
        events of one timestamp in any order); at the latest, decided once this turn ends."""
        self._held = kill
        if self._held_call is None:
            self._held_call = self._clock.callLater(0, self._held_overdue)

    def _held_overdue(self) -> None:
        self._held_call = None
        if self._held is not None and not self._closed:
            self._release_held(None)

    def _release_held(self, next_event: Optional[Event]) -> bool:
        """Route the held kill, with ``next_event`` as its ``oom`` if it is; True if it was."""
        kill, self._held = self._held, None
        if kill is None:
            return False
        if next_event is not None and next_event.event_type == OOM and next_event.timestamp == kill.timestamp:
            self._route(kill, next_event.container_name)
            return True
        self._route(kill, None)
        return False

    # -- waiting for specs --------------------------------------------------------------

    def _route(self, event: Event, victim: Optional[str]) -> None:
        """Count now, or queue behind the spec fetch this event's series must wait for."""
        cgroup = event.container_name
        waiting = self.waiting
        if waiting:
            queue = waiting.get(cgroup)
            if queue is not None and self.waiting_events < self.max_waiting:
                queue.append((event, victim))
                self.waiting_events += 1
                return
        if self.specs is not None and self.waiting_events < self.max_waiting:
            blocker = self._blocker(event, cgroup, victim)
            if blocker is not None:
                if waiting is None:
                    waiting = self.waiting = {}
                waiting[cgroup] = [(event, victim)]
                self.waiting_events += 1
                blocker.addBoth(self._flush, cgroup)
                return
        self._apply(event, victim)

    def _blocker(self, event: Event, cgroup: str, victim: Optional[str]) -> Optional[defer.Deferred]:
        """The fetch whose answer gives labels to the series ``event`` would give birth to."""
        specs = self.specs
        assert specs is not None
        if victim is None or victim == cgroup:
            if counting_key(event) in self.counters.series:
                return None  # labels fixed long ago
            cgroups: Tuple[str, ...] = (cgroup,)
        else:
            cgroups = (victim, cgroup)
        for each in cgroups:
            pending = specs.pending(each)
            if pending is None and self._listing is not None and not specs.has_spec(each):
                pending = self._listing
            if pending is not None:
                return pending
        return None

    def _flush(self, result: object, cgroup: str) -> None:
        """The fetch ended (answer, failure or timeout): count what waited, in order, without
        waiting again."""
        queue = None if self.waiting is None else self.waiting.pop(cgroup, None)
        if queue is None:
            return
        self.waiting_events -= len(queue)
        if self._closed:
            return
        for event, victim in queue:
            try:
                self._apply(event, victim)
            except Exception:
                log.failure("counting an event of {host} failed", host=self.host)

    # -- counting -----------------------------------------------------------------------

    def _apply(self, event: Event, victim: Optional[str]) -> None:
        kind = event.event_type
        cgroup = event.container_name
        if kind == OOM_KILL:
            self._kill(event, victim or cgroup)
            return
        self.counters.count_key(counting_key(event))
        if kind == DELETION:
            if self.specs is not None:
                self.specs.deleted(cgroup)
        elif kind == CREATION and self.specs is None:
            self._learn_created(cgroup)

    def _learn_created(self, cgroup: str) -> None:
        """Without specs, a container (a runtime's ID in its name) is known from its creation."""
        if cgroup not in self.kills.cgroups and _is_container(cgroup):
            self.kills.learned(cgroup, ("", "", cgroup))

    def _kill(self, event: Event, victim: str) -> None:
        """Count an ``oomKill`` whose killed task lived in ``victim``."""
        cgroup = event.container_name
        split = self._victim_labels(victim, cgroup) if victim != cgroup and self.specs is not None else ""
        if split:
            self.counters.count_key(counting_key(event) + (split,))
        else:
            self.counters.count(event)
        try:
            ns = timestamp_ns(event.timestamp)
        except InvalidEvent:
            ns = 0
        oom = event.event_data.oom if event.event_data is not None else None
        key: Optional[ContainerKey] = None
        if victim != "/":
            key = self.kills.key_of(victim) or self._container_key(victim)
        kill = RecentKill(
            ns=ns, timestamp=event.timestamp, host=self.host,
            namespace=key[0] if key else "", pod=key[1] if key else "", container=key[2] if key else "",
            cgroup=victim, limit_cgroup=cgroup,
            process=oom.process_name if oom is not None else "", pid=oom.pid if oom is not None else 0,
        )
        self.kills.killed(kill, None if key is None else victim, key)

    def _victim_labels(self, victim: str, cgroup: str) -> str:
        """Labels of the series counting kills on ``cgroup`` of tasks in ``victim``, or ``""``
        to count them in ``cgroup``'s own series: only a victim known as a container, under a
        limit cgroup that is none (a pod's). Decided once per victim, so a spec that
        arrives later cannot split its kills over two series."""
        victims = self._victims
        if victims is None:
            victims = self._victims = OrderedDict()
        labels = victims.get(victim)
        if labels is None:
            assert self.specs is not None
            identity = self.specs.identity(victim)
            labels = ""
            if identity.container and not self.specs.identity(cgroup).container:
                labels = render_identity(identity)
            victims[victim] = labels
            if len(victims) > MAX_VICTIMS:
                victims.popitem(last=False)
        return labels

    def _container_key(self, cgroup: str) -> ContainerKey:
        """(namespace, pod, container) of a cgroup for the OOM kill family: its identity, or
        the cgroup's name as the container when it has none (raw cgroups, no specs)."""
        if self.specs is None:
            return ("", "", cgroup)
        identity = self.specs.identity(cgroup)
        return (identity.namespace, identity.pod, identity.container or cgroup)

    def _series_labels(self, key: SeriesKey) -> str:
        """``HostCounters.label_source``: the labels a new series is born with."""
        if len(key) > 3:
            return key[3]
        assert self.specs is not None
        return render_identity(self.specs.identity(key[0]))

    def _learned(self, cgroup: str, identity: Identity) -> None:
        """``HostSpecs.on_learned``: a container with a name gets its OOM kill series (at 0)."""
        if self._closed or cgroup == "/" or not identity.container or identity.container == SANDBOX:
            return
        if self._learned_meanwhile is not None:
            self._learned_meanwhile.append((cgroup, identity))
            return
        self.kills.learned(cgroup, (identity.namespace, identity.pod, identity.container))


class _TextFamilies:
    """A renderer of text families (``render_into(list of str, openmetrics)``) as bytes parts."""

    def __init__(self, source) -> None:
        self.source = source

    def render_into(self, parts: List[bytes], openmetrics: bool = False) -> None:
        out: List[str] = []
        self.source.render_into(out, openmetrics)
        parts.append("".join(out).encode())


class Enrichment:
    """The fleet's enrichers: one per followed host, over the event counters, the OOM kill
    families and (unless ``--no-enrich``) the spec store, kept and removed together."""

    def __init__(self, counters: EventCounters, kills: OomKills, specs: Optional["SpecStore"], clock,
                 *, max_waiting: int = MAX_WAITING) -> None:
        self.counters = counters
        self.kills = kills
        self.specs = specs
        self.clock = clock
        self.max_waiting = max_waiting
        self.hosts: Dict[str, HostEnricher] = {}
        if kills not in counters.families_after:
            counters.families_after.append(kills)
        if specs is not None:
            counters.families_after.append(_TextFamilies(specs))

    def host(self, spec: "TargetSpec") -> HostEnricher:
        """The enricher of ``spec``'s target: a fresh one (its follower is new)."""
        name = spec.target.name
        old = self.hosts.pop(name, None)
        if old is not None:
            old.close()
        enricher = self.hosts[name] = HostEnricher(
            self.counters.host(name, spec.labels), self.kills.host(name, spec.labels),
            None if self.specs is None else self.specs.host(spec.target), self.clock,
            max_waiting=self.max_waiting)
        return enricher

    def remove_host(self, name: str) -> None:
        """A target is no longer followed: its series, OOM kill series and specs go."""
        enricher = self.hosts.pop(name, None)
        if enricher is not None:
            enricher.close()
        self.counters.remove_host(name)
        self.kills.remove_host(name)
        if self.specs is not None:
            self.specs.remove_host(name)

    def expire(self) -> None:
        """The periodic housekeeping: series and specs past ``--series-ttl`` (the OOM kill series
        first: they read the deletions the event counters forget as they expire)."""
        self.kills.expire()
        self.counters.expire()
        if self.specs is not None:
            self.specs.expire()
