"""The fake cAdvisor itself: what it emitted, what it holds, who is watching.

:class:`Simulator` keeps history like cAdvisor's event manager (per event
type, newest ``event_limit``, at most ``age_limit`` seconds), streams events
to watches registered before they happen, restarts like cAdvisor (streams
cut, history lost, OOMs replayed from the kernel log with the new run's
clock error), and knows the ground truth of what it emitted so tests and
benchmarks can check a follower's counts. It must never answer differently
from a real cAdvisor where the real one is defined (CADVISOR-API.md,
cAdvisor's ``events/handler.go``), never block the reactor with sleeps, and
never read the wall clock except through the injected clock.
"""

from __future__ import annotations

import collections
import random
from typing import Iterable, Optional, Sequence, Union, cast

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET, Request

from .api import CadvisorResource
from .burst import Burst
from .cluster import Cluster, SimContainer, make_containers, make_pod
from .generate import RANDOM_TYPES, RANDOM_WEIGHTS, RandomEmitter, container_names, random_event_details
from .golang import GO_ZERO_TIME_NS, NS_PER_SECOND
from .query import EVENT_TYPES, EventQuery
from .store import EventStore, SimulatedEvent, timestamp_of

__all__ = ["OOM_TYPES", "Simulator"]

log = Logger()

#: The types a kernel OOM produces: dated from the kernel log and replayed after a restart.
OOM_TYPES = frozenset(("oom", "oomKill"))
#: Entries of :attr:`Simulator.served` kept (10 MB at most).
SERVED_LOG = 100_000
#: History answers kept encoded per history version (distinct queries: time bounds, types).
ANSWERS_CACHED = 64


@attrs.define
class _Watch:
    query: EventQuery
    request: Request


class Simulator:
    """The fake cAdvisor: history, watches, ground truth, and the knobs tests turn.

    ``clock`` (an ``IReactorTime``; the global reactor if ``None``) gives event
    times; a strictly increasing nanosecond counter on top keeps automatic
    timestamps unique. ``deletion_exit_codes`` makes random deletions carry
    ``container_deletion`` data like newer cAdvisors. Unlike cAdvisor, whose
    10-event watch channel blocks on a slow reader, streams here are buffered
    by the transport without limit.

    OOMs are dated as cAdvisor dates kernel-log records: boot time, computed
    once per run from whole-second uptime, plus the record's offset. So every
    OOM of one run is dated early by the same :attr:`oom_clock_error`, drawn
    per run from ``[0, 1)`` seconds (seeded; pass ``oom_clock_error`` to fix
    the first run's), and :meth:`restart` re-adds every OOM of the kernel log
    dated with the new run's error: shifted by less than a second.
    """

    def __init__(self, clock: Optional[IReactorTime] = None, tz_offset_minutes: int = -180,
                 event_limit: int = 100_000, age_limit: float = 86400, seed: int = 0,
                 containers: int = 50, deletion_exit_codes: bool = False,
                 oom_clock_error: Optional[float] = None) -> None:
        if clock is None:
            from twisted.internet import reactor
            clock = cast(IReactorTime, reactor)
        if not -1440 < tz_offset_minutes < 1440:
            raise ValueError("tz_offset_minutes must be within a day, not %r" % (tz_offset_minutes,))
        self.clock: IReactorTime = clock
        self.tz_offset_minutes = tz_offset_minutes
        self.event_limit, self.age_limit = event_limit, age_limit
        self.deletion_exit_codes = deletion_exit_codes
        self.seed = seed
        self.rng = random.Random(seed)
        #: The containers it tracks (all alive at first, created an hour before the clock's
        #: start) and their specs, served on ``/api/v2.0/spec``.
        self.cluster = Cluster(make_containers(containers, self.rng),
                               int((clock.seconds() - 3600) * NS_PER_SECOND), tz_offset_minutes)
        self.container_pool = list(self.cluster.known)
        self.emitted: list[SimulatedEvent] = []
        self.replayed: list[SimulatedEvent] = []
        self._run_errors = random.Random(f"oom-clock-{seed}")
        #: Seconds this run dates every OOM early (cAdvisor's boot-time error).
        self.oom_clock_error = self._run_errors.random() if oom_clock_error is None else oom_clock_error
        #: The kernel's ring buffer: (true time ns, OOM event, whether it was emitted; False:
        #: logged while cAdvisor was down, emitted by the next replay).
        self._kernel_log: list[tuple[int, SimulatedEvent, bool]] = []
        self.resource = CadvisorResource(self)
        self._stores: dict[str, EventStore] = {}
        self._watches: dict[int, _Watch] = {}
        self._watch_ids = iter(range(1, 1 << 62))
        self._last_timestamp_ns = GO_ZERO_TIME_NS
        self._emitter: Optional[RandomEmitter] = None
        self._pending_replay: Optional[IDelayedCall] = None
        self.burst: Optional["Burst"] = None
        #: Bumped whenever history changes: cached history answers older than it are stale.
        self._history_version = 0
        #: query -> (history version, encoded answer): a fleet of hosts asking the same
        #: simulator for the same history gets one encoding, not one per request.
        self._answers: dict[EventQuery, tuple[int, bytes]] = {}
        #: What was served, newest last: ``(kind, clock seconds, body bytes)`` with kind
        #: ``history`` (an answer written) or ``stream`` (a stream opened); for benchmarks
        #: timing the phases of a fleet's start (bounded: the oldest are dropped).
        self.served: collections.deque = collections.deque(maxlen=SERVED_LOG)
        #: kind -> how many were served since start (not bounded like :attr:`served`).
        self.served_counts: collections.Counter = collections.Counter()

    # -- emitting -------------------------------------------------------------------

    def emit(self, container_name: str, event_type: str, *, timestamp_ns: Optional[int] = None,
             process_name: Optional[str] = None, pid: Optional[int] = None,
             constraint: Optional[str] = None, exit_code: Optional[int] = None) -> SimulatedEvent:
        """Record one event in history and send it to every matching open stream now.

        An OOM type without ``timestamp_ns`` is dated early by :attr:`oom_clock_error`, and
        every OOM type goes into the kernel log that :meth:`restart` replays.
        """
        oom = event_type in OOM_TYPES
        if timestamp_ns is None:
            timestamp_ns = self.next_timestamp_ns()
            self.reserve_timestamps_through(timestamp_ns)
            if oom:
                timestamp_ns -= self._oom_error_ns
        else:
            self.reserve_timestamps_through(timestamp_ns)
        event = SimulatedEvent.create(container_name, event_type, timestamp_ns, self.tz_offset_minutes,
                                      process_name, pid, constraint, exit_code)
        # cAdvisor stores a new container before it emits the creation, and forgets one before
        # it emits the deletion: the spec API answers accordingly by the time a client reads the event.
        if event_type == "containerCreation":
            self.cluster.created(container_name, timestamp_ns)
        elif event_type == "containerDeletion":
            self.cluster.deleted(container_name)
        if oom:
            self._kernel_log.append((timestamp_ns + self._oom_error_ns, event, True))
        self.emitted.append(event)
        self._add(event)
        return event

    @property
    def _oom_error_ns(self) -> int:
        return int(self.oom_clock_error * NS_PER_SECOND)

    def next_timestamp_ns(self) -> int:
        """The next automatic timestamp: now on the clock, or just after the newest
        timestamp used so far if that is later, so automatic timestamps never repeat."""
        return max(int(self.clock.seconds() * NS_PER_SECOND), self._last_timestamp_ns + 1)

    def reserve_timestamps_through(self, last_ns: int) -> None:
        """Make automatic timestamps from now on come after ``last_ns``: for events
        dated by their caller, or a range written elsewhere (a :class:`~.burst.Burst`)."""
        self._last_timestamp_ns = max(self._last_timestamp_ns, last_ns)

    def kernel_oom(self, container_name: str, process_name: str, pid: int, *,
                   victim_container: Optional[str] = None, constraint: Optional[str] = None) -> None:
        """An OOM the kernel logs while cAdvisor is down: no event now; the next
        :meth:`restart` reads it from the kernel log and emits it, a new OOM (ground truth)."""
        true_ns = self.next_timestamp_ns()
        self.reserve_timestamps_through(true_ns)
        oom = SimulatedEvent.create(container_name, "oom", true_ns, self.tz_offset_minutes)
        kill = SimulatedEvent.create(victim_container or container_name, "oomKill", true_ns, self.tz_offset_minutes,
                                     process_name=process_name, pid=pid, constraint=constraint)
        self._kernel_log += [(true_ns, oom, False), (true_ns, kill, False)]

    def emit_oom(self, container_name: str, process_name: str, pid: int, *,
                 victim_container: Optional[str] = None, constraint: Optional[str] = None) -> tuple[SimulatedEvent, SimulatedEvent]:
        """One kernel OOM: ``oom`` on the killed task's cgroup (``container_name``), then ``oomKill``
        on the cgroup whose limit was hit (``victim_container``, default the same; a pod's
        container may hit its pod-level limit), back to back with the same timestamp (cAdvisor's
        ``oom.go``)."""
        oom = self.emit(container_name, "oom")
        kill = self.emit(victim_container or container_name, "oomKill", timestamp_ns=oom.timestamp_ns,
                         process_name=process_name, pid=pid, constraint=constraint)
        return oom, kill

    def start_pod(self, rng: Optional[random.Random] = None, **pod: str) -> list[SimContainer]:
        """A new Kubernetes pod (:func:`~.cluster.make_pod` arguments: ``driver``, ``runtime``,
        ``namespace``, ``app``): its pod-level cgroup, sandbox and containers are created, one
        ``containerCreation`` each. Returns them, the pod-level cgroup first."""
        containers = make_pod(rng or self.rng, **pod)  # type: ignore[arg-type]
        for container in containers:
            self.cluster.known[container.name] = container
            self.emit(container.name, "containerCreation")
        return containers

    def emit_random(self, n: int, rng: Optional[random.Random] = None) -> list[SimulatedEvent]:
        """``n`` events of mixed types (40/40/10/10 %) over the container pool, timestamped now.

        A creation or deletion drawn is whichever the container's life allows (a living
        container is deleted, a dead one created), so specs come and go as on a node. OOMs
        come as ``oom``/``oomKill`` pairs: the kill names the container itself, or one time in
        five its pod-level cgroup (a last lone OOM becomes a creation or deletion)."""
        rng = rng or self.rng
        types, weights = RANDOM_TYPES, RANDOM_WEIGHTS
        events: list[SimulatedEvent] = []
        for event_type in rng.choices(types, weights, k=n):
            if len(events) >= n:
                break
            container = rng.choice(self.container_pool)
            if event_type in OOM_TYPES and len(events) + 2 <= n:
                container = self._task_cgroup(container, rng)
                details = random_event_details(rng, "oomKill", self.deletion_exit_codes)
                victim = container if rng.random() < 0.8 else (self.cluster.pod_cgroup_of(container) or container)
                events.extend(self.emit_oom(container, details["process_name"], details["pid"],
                                            victim_container=victim, constraint=details["constraint"]))
            else:
                event_type = "containerDeletion" if container in self.cluster.alive else "containerCreation"
                events.append(self.emit(container, event_type, **random_event_details(rng, event_type, self.deletion_exit_codes)))
        return events

    def _task_cgroup(self, container: str, rng: random.Random) -> str:
        """A cgroup a killed task can live in: not a pod-level cgroup, which holds only
        its containers' cgroups (cgroup v2's no-internal-process rule), so an ``oom``
        never names one; ``container`` itself when the pool holds nothing else."""
        for _ in range(8):
            known = self.cluster.known.get(container)
            if known is None or known.kind != "pod":
                return container
            container = rng.choice(self.container_pool)
        return container

    def fill_history(self, n: int, containers: Union[None, int, Sequence[str]] = None,
                     rng: Optional[random.Random] = None) -> list[SimulatedEvent]:
        """Pre-fill history with ``n`` events spread over the past hour (no stream sees them).

        ``containers``: a number of fresh names to spread over, names to use, or the pool.
        """
        rng = rng or self.rng
        names = container_names(containers, rng) if isinstance(containers, int) else list(containers or self.container_pool)
        span = 3600 * NS_PER_SECOND
        first = int(self.clock.seconds() * NS_PER_SECOND) - span
        types, weights = RANDOM_TYPES, RANDOM_WEIGHTS
        by_type: dict[str, list[SimulatedEvent]] = collections.defaultdict(list)
        events = []
        kill_details = None
        drawn = -1  # names are used in turn; an oomKill takes its oom's
        for index, (offset, event_type) in enumerate(zip(sorted(rng.sample(range(span), n)),
                                                         rng.choices(types, weights, k=n))):
            if kill_details is not None:  # the second of an OOM pair: oomKill, same time, same cgroup
                event = SimulatedEvent.create(events[-1].container_name, "oomKill", events[-1].timestamp_ns,
                                              self.tz_offset_minutes, **kill_details)
                kill_details = None
            else:
                if event_type in OOM_TYPES:
                    event_type = "oom" if index + 1 < n else "containerCreation"
                if event_type == "oom":
                    kill_details = random_event_details(rng, "oomKill", self.deletion_exit_codes)
                drawn += 1
                event = SimulatedEvent.create(names[drawn % len(names)], event_type, first + offset,
                                              self.tz_offset_minutes, **random_event_details(rng, event_type, self.deletion_exit_codes))
            if event.event_type in OOM_TYPES:
                self._kernel_log.append((event.timestamp_ns + self._oom_error_ns, event, True))
            events.append(event)
            by_type[event.event_type].append(event)
        self.emitted.extend(events)
        if events:
            self.reserve_timestamps_through(events[-1].timestamp_ns)
        for event_type, typed in by_type.items():
            store = self._store_for(event_type)
            if store is not None:
                store.add_sorted(typed)
        self._history_version += 1
        return events

    def _store_for(self, event_type: str) -> Optional[EventStore]:
        store = self._stores.get(event_type)
        if store is None and self.event_limit != 0:  # a limit of 0 disables storage, as in cAdvisor
            store = self._stores[event_type] = EventStore(int(self.age_limit * NS_PER_SECOND), self.event_limit)
        return store

    def _add(self, event: SimulatedEvent) -> None:
        """cAdvisor's ``AddEvent``: store first, then every matching watch."""
        store = self._store_for(event.event_type)
        if store is not None:
            store.add(event)
            self._history_version += 1
        line = event.json + b"\n"  # json.Encoder.Encode
        for watch in list(self._watches.values()):
            if watch.query.selects(event):
                watch.request.write(line)

    # -- reading ------------------------------------------------------------------------

    def history(self, query: EventQuery = EventQuery(event_types=frozenset(EVENT_TYPES), subcontainers=True, max_events=-1)) -> list[SimulatedEvent]:
        """cAdvisor's ``GetEvents``, oldest first (default: everything held).

        :raises GoPanic: where cAdvisor's Go code panics.
        """
        selected: list[SimulatedEvent] = []
        for event_type in query.event_types:
            store = self._stores.get(event_type)
            if store is not None:
                selected.extend(e for e in store.in_time_range(query.start_ns, query.end_ns, query.max_events)
                                if query.selects(e))
        selected.sort(key=timestamp_of)
        return selected[-query.max_events:] if 0 < query.max_events < len(selected) else selected

    def history_answer(self, query: EventQuery) -> bytes:
        """The JSON answer to a history request: :meth:`history` encoded as cAdvisor's
        ``json.Marshal`` of the event list writes it. Encoded once per query until history
        changes, so thousands of hosts asking one simulator cost one encoding.

        :raises GoPanic: where cAdvisor's Go code panics.
        """
        cached = self._answers.get(query)
        if cached is not None and cached[0] == self._history_version:
            body = cached[1]
        else:
            body = b"[" + b",".join([event.json for event in self.history(query)]) + b"]"
            if len(self._answers) >= ANSWERS_CACHED:
                self._answers = {q: a for q, a in self._answers.items() if a[0] == self._history_version}
                if len(self._answers) >= ANSWERS_CACHED:
                    self._answers.clear()
            self._answers[query] = (self._history_version, body)
        self._log_served("history", len(body))
        return body

    def _log_served(self, kind: str, size: int) -> None:
        self.served.append((kind, self.clock.seconds(), size))
        self.served_counts[kind] += 1

    def ground_truth(self, oom_only: bool = False) -> collections.Counter:
        """Counts by the Go seed's key over everything ever emitted (replays excluded)."""
        return _count(self.emitted, oom_only)

    def history_counts(self, oom_only: bool = False) -> collections.Counter:
        """Counts by the Go seed's key over what history still holds."""
        return _count((e for store in self._stores.values() for e in store), oom_only)

    # -- streams ------------------------------------------------------------------------

    def open_stream(self, request: Request, query: EventQuery):
        """Register a watch and flush the headers at once, as cAdvisor's ``streamResults``.

        What :class:`~.api.CadvisorResource` answers a valid ``stream=true``
        request with: from now on every matching event is written to
        ``request``, until the client goes or :meth:`end_streams` /
        :meth:`cut_streams`. Returns ``NOT_DONE_YET``.
        """
        request.defaultContentType = None  # Go sets no Content-Type on a stream
        request.write(b"")  # sends the status line and headers
        watch_id = next(self._watch_ids)
        self._watches[watch_id] = _Watch(query, request)
        self._log_served("stream", 0)
        log.info("stream {watch_id} opened for {container} (subcontainers={sub})",
                 watch_id=watch_id, container=query.container_name, sub=query.subcontainers)

        def closed(result):
            if self._watches.pop(watch_id, None) is not None:
                log.info("stream {watch_id} closed by the client", watch_id=watch_id)

        request.notifyFinish().addBoth(closed)
        return NOT_DONE_YET

    @property
    def open_streams(self) -> int:
        """How many stream responses are open (registered watches)."""
        return len(self._watches)

    def end_streams(self) -> None:
        """Finish every open stream cleanly (the terminating zero-length chunk)."""
        watches, self._watches = self._watches, {}
        for watch in watches.values():
            try:
                watch.request.finish()
            except RuntimeError:  # the client left before we noticed
                pass

    def cut_streams(self) -> None:
        """Abort every open stream's connection: no terminating chunk, like a crash."""
        watches, self._watches = self._watches, {}
        for watch in watches.values():
            cast(ITCPTransport, watch.request.transport).abortConnection()

    def restart(self, keep_history: bool = False, replay_delay: Optional[float] = None,
                oom_clock_error: Optional[float] = None) -> None:
        """Like a cAdvisor restart: cut streams, forget history (unless ``keep_history``),
        start a new run with its own OOM clock error (``oom_clock_error``, else drawn),
        then re-add every OOM of the kernel log dated with that error, as cAdvisor
        does reading ``/dev/kmsg`` again: now, or ``replay_delay`` seconds later
        (so streams opened meanwhile receive the replays). OOMs logged while it was
        down (:meth:`kernel_oom`) are new: they join the ground truth."""
        self.cut_streams()
        if not keep_history:
            self._stores.clear()
            self._history_version += 1
        if self._pending_replay is not None and self._pending_replay.active():
            self._pending_replay.cancel()
        self.oom_clock_error = self._run_errors.random() if oom_clock_error is None else oom_clock_error
        if replay_delay is None:
            self._replay()
        else:
            self._pending_replay = self.clock.callLater(replay_delay, self._replay)

    @property
    def replaying(self) -> bool:
        """Whether a restart's replay of the kernel log is still to come (``replay_delay``)."""
        return self._pending_replay is not None and self._pending_replay.active()

    def _replay(self) -> None:
        error = self._oom_error_ns
        log_, self._kernel_log = self._kernel_log, []
        for true_ns, event, emitted in log_:
            again = SimulatedEvent.create(event.container_name, event.event_type, true_ns - error,
                                          self.tz_offset_minutes, event.process_name, event.pid,
                                          event.constraint, event.exit_code)
            self._kernel_log.append((true_ns, again, True))
            (self.replayed if emitted else self.emitted).append(again)
            self._add(again)

    # -- background emission ------------------------------------------------------

    def start_emitting(self, rate: float, clock: Optional[IReactorTime] = None) -> "RandomEmitter":
        """Emit about ``rate`` random events per second until :meth:`stop_emitting`."""
        self.stop_emitting()
        self._emitter = RandomEmitter(self, rate, clock)
        self._emitter.startService()
        return self._emitter

    def stop_emitting(self) -> None:
        """Stop the random events of :meth:`start_emitting` (no-op if none)."""
        if self._emitter is not None and self._emitter.running:
            self._emitter.stopService()
        self._emitter = None

    # -- benchmark bursts ---------------------------------------------------------------

    def start_burst(self, events: int, keys: int = 64, rate: float = 0.0, batch: int = 256) -> "Burst":
        """Write ``events`` events to every open stream, one HTTP chunk each (see :class:`Burst`).

        :raises ValueError: while another burst still runs, or for bad numbers.
        """
        if self.burst is not None and self.burst.running:
            raise ValueError("a burst is still running")
        self.burst = Burst(self, events, keys=keys, rate=rate, batch=batch)
        self.burst.start([(watch.request, watch.query) for _, watch in sorted(self._watches.items())])
        return self.burst


def _count(events: Iterable[SimulatedEvent], oom_only: bool) -> collections.Counter:
    return collections.Counter(e.counting_key for e in events if not oom_only or e.event_type in OOM_TYPES)
