"""A fake cAdvisor that serves the events API exactly as a real one does.

It keeps history like cAdvisor's event manager (per event type, newest
``event_limit``, at most ``age_limit`` seconds), streams events to watches
registered before they happen, and knows the ground truth of what it emitted
so tests and benchmarks can check a follower's counts. It must never answer
differently from a real cAdvisor where the real one is defined (see
CADVISOR-API.md and cAdvisor's ``events/handler.go``,
``utils/timed_store.go``, ``cmd/internal/api``), never block the reactor with
sleeps, and never read the wall clock except through the injected clock.
Go-compatible byte encoding and request parsing live in :mod:`simulator_json`.

Longer than ~400 lines on purpose: the store, the HTTP layer, the streams,
the ground truth, the generators and the benchmark burst (:class:`Burst`,
served by :class:`ControlResource` only when asked for) share the simulator's
private state, and the project gives the simulator these two modules only.
"""

from __future__ import annotations

import bisect
import collections
import random
import uuid
from typing import Iterable, Optional, Sequence, Union

import json
from urllib.parse import parse_qs

import attrs
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from cadvisor_events.simulator_json import (
    EVENT_TYPES, GO_ZERO_TIME_NS, NS_PER_SECOND, ApiError, EventQuery, decode_url_path,
    events_container, go_json_string, parse_go_query, rfc3339nano,
)

__all__ = ["Burst", "ControlResource", "EventQuery", "EventStore", "RandomEmitter", "SimulatedEvent", "Simulator",
           "container_names"]

log = Logger()

OOM_TYPES = frozenset(("oom", "oomKill"))
#: Per draw; an "oom" draw is an OOM pair (oom + oomKill), so events come 40/40/10/10 %.
_RANDOM_TYPE_WEIGHTS = (("containerCreation", 40), ("containerDeletion", 40), ("oom", 10))
COMMON_PROCESS_NAMES = ("java", "node", "python3", "postgres", "nginx", "ruby", "php-fpm", "dotnet",
                        "nginx: worker process", "kube-apiserver")
HOSTILE_PROCESS_NAMES = ('sh -c "sleep 1"', "C:\\app\\run.exe", "<script>&amp;</script>", "café-crème",
                         "进程-worker", "🐳 whale", "tab\tnew\nline", "ctl\x01\x08\x0c\x1f\x7f",
                         "sep\u2028\u2029", 'back\\slash "quote"', "", " java ")


class GoPanic(Exception):
    """Where cAdvisor's Go code would panic (it closes the connection unanswered)."""


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
            self._events = sorted(self._events[self._start:] + list(events), key=_timestamp_of)
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


def _timestamp_of(event: SimulatedEvent) -> int:
    return event.timestamp_ns


class CadvisorResource(Resource):
    """``/healthz`` and ``/api/...`` answered the way cAdvisor's mux and handlers do."""

    isLeaf = True

    def __init__(self, simulator: "Simulator") -> None:
        super().__init__()
        self._simulator = simulator

    def render(self, request: Request):
        request.responseHeaders.removeHeader(b"server")  # Go sends none
        path = decode_url_path(request.path)
        if path == "/healthz":
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"ok"
        if path != "/api" and not path.startswith("/api/"):
            return _plain_error(request, 404, "404 page not found")
        try:
            args = parse_go_query(request.uri.partition(b"?")[2])
            query = EventQuery.from_args(args, events_container(path, args))
            if not query.stream:
                events = self._simulator.history(query)
                request.setHeader(b"content-type", b"application/json")
                return b"[" + b",".join([event.json for event in events]) + b"]"
            if query.start_ns is not None or query.end_ns is not None:
                raise ApiError(500, "for a call to watch, request.StartTime and request.EndTime must be uninitialized")
            return self._simulator._open_stream(request, query)
        except ApiError as error:
            return _plain_error(request, error.code, error.message)
        except GoPanic as panic:
            log.error("http: panic serving {peer}: {panic}", peer=request.getClientAddress(), panic=panic)
            request.channel.loseConnection()
            return NOT_DONE_YET


def _plain_error(request: Request, code: int, message: str) -> bytes:
    """Go's ``http.Error``: plain text, nosniff, message plus newline."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"x-content-type-options", b"nosniff")
    return (message + "\n").encode("utf-8", "surrogateescape")


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
            from twisted.internet import reactor as clock  # type: ignore[no-redef]
        if not -1440 < tz_offset_minutes < 1440:
            raise ValueError("tz_offset_minutes must be within a day, not %r" % (tz_offset_minutes,))
        self.clock = clock
        self.tz_offset_minutes = tz_offset_minutes
        self.event_limit, self.age_limit = event_limit, age_limit
        self.deletion_exit_codes = deletion_exit_codes
        self.seed = seed
        self.rng = random.Random(seed)
        self.container_pool = container_names(containers, self.rng)
        self.emitted: list[SimulatedEvent] = []
        self.replayed: list[SimulatedEvent] = []
        self._run_errors = random.Random(f"oom-clock-{seed}")
        #: Seconds this run dates every OOM early (cAdvisor's boot-time error).
        self.oom_clock_error = self._run_errors.random() if oom_clock_error is None else oom_clock_error
        #: The kernel's ring buffer: (true time ns, OOM event as first emitted or None if not yet).
        self._kernel_log: list[tuple[int, SimulatedEvent, bool]] = []
        self.resource = CadvisorResource(self)
        self._stores: dict[str, EventStore] = {}
        self._watches: dict[int, _Watch] = {}
        self._watch_ids = iter(range(1, 1 << 62))
        self._last_timestamp_ns = GO_ZERO_TIME_NS
        self._emitter: Optional[RandomEmitter] = None
        self._pending_replay = None
        self.burst: Optional["Burst"] = None

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
            timestamp_ns = max(int(self.clock.seconds() * NS_PER_SECOND), self._last_timestamp_ns + 1)
            self._last_timestamp_ns = timestamp_ns
            if oom:
                timestamp_ns -= self._oom_error_ns
        else:
            self._last_timestamp_ns = max(self._last_timestamp_ns, timestamp_ns)
        event = SimulatedEvent.create(container_name, event_type, timestamp_ns, self.tz_offset_minutes,
                                      process_name, pid, constraint, exit_code)
        if oom:
            self._kernel_log.append((timestamp_ns + self._oom_error_ns, event, True))
        self.emitted.append(event)
        self._add(event)
        return event

    @property
    def _oom_error_ns(self) -> int:
        return int(self.oom_clock_error * NS_PER_SECOND)

    def kernel_oom(self, container_name: str, process_name: str, pid: int, *,
                   victim_container: Optional[str] = None, constraint: Optional[str] = None) -> None:
        """An OOM the kernel logs while cAdvisor is down: no event now; the next
        :meth:`restart` reads it from the kernel log and emits it, a new OOM (ground truth)."""
        true_ns = max(int(self.clock.seconds() * NS_PER_SECOND), self._last_timestamp_ns + 1)
        self._last_timestamp_ns = true_ns
        for name, event_type, extra in ((container_name, "oom", {}),
                                        (victim_container or container_name, "oomKill",
                                         {"process_name": process_name, "pid": pid, "constraint": constraint})):
            event = SimulatedEvent.create(name, event_type, true_ns, self.tz_offset_minutes, **extra)
            self._kernel_log.append((true_ns, event, False))

    def emit_oom(self, container_name: str, process_name: str, pid: int, *,
                 victim_container: Optional[str] = None, constraint: Optional[str] = None) -> tuple[SimulatedEvent, SimulatedEvent]:
        """One kernel OOM: ``oom`` on the killed task's cgroup, then ``oomKill`` on the cgroup whose
        limit was hit, back to back with the same timestamp (cAdvisor's ``oom.go``)."""
        oom = self.emit(container_name, "oom")
        kill = self.emit(victim_container or container_name, "oomKill", timestamp_ns=oom.timestamp_ns,
                         process_name=process_name, pid=pid, constraint=constraint)
        return oom, kill

    def emit_random(self, n: int, rng: Optional[random.Random] = None) -> list[SimulatedEvent]:
        """``n`` events of mixed types (40/40/10/10 %) over the container pool, timestamped now;
        OOMs come as ``oom``/``oomKill`` pairs (a last lone one becomes a creation)."""
        rng = rng or self.rng
        types, weights = zip(*_RANDOM_TYPE_WEIGHTS)
        events: list[SimulatedEvent] = []
        for event_type in rng.choices(types, weights, k=n):
            if len(events) >= n:
                break
            container = rng.choice(self.container_pool)
            if event_type in OOM_TYPES and len(events) + 2 <= n:
                details = self._random_details(rng, "oomKill")
                victim = container if rng.random() < 0.8 else rng.choice(self.container_pool)
                events.extend(self.emit_oom(container, details["process_name"], details["pid"],
                                            victim_container=victim, constraint=details["constraint"]))
            else:
                event_type = "containerCreation" if event_type in OOM_TYPES else event_type
                events.append(self.emit(container, event_type, **self._random_details(rng, event_type)))
        return events

    def fill_history(self, n: int, containers: Union[None, int, Sequence[str]] = None,
                     rng: Optional[random.Random] = None) -> list[SimulatedEvent]:
        """Pre-fill history with ``n`` events spread over the past hour (no stream sees them).

        ``containers``: a number of fresh names to spread over, names to use, or the pool.
        """
        rng = rng or self.rng
        names = container_names(containers, rng) if isinstance(containers, int) else list(containers or self.container_pool)
        span = 3600 * NS_PER_SECOND
        first = int(self.clock.seconds() * NS_PER_SECOND) - span
        types, weights = zip(*_RANDOM_TYPE_WEIGHTS)
        by_type: dict[str, list[SimulatedEvent]] = collections.defaultdict(list)
        events = []
        kill_details = None
        for index, (offset, event_type) in enumerate(zip(sorted(rng.sample(range(span), n)),
                                                         rng.choices(types, weights, k=n))):
            if kill_details is not None:  # the second of an OOM pair: oomKill, same time
                event = SimulatedEvent.create(names[index % len(names)], "oomKill", events[-1].timestamp_ns,
                                              self.tz_offset_minutes, **kill_details)
                kill_details = None
            else:
                if event_type in OOM_TYPES:
                    event_type = "oom" if index + 1 < n else "containerCreation"
                if event_type == "oom":
                    kill_details = self._random_details(rng, "oomKill")
                event = SimulatedEvent.create(names[index % len(names)], event_type, first + offset,
                                              self.tz_offset_minutes, **self._random_details(rng, event_type))
            if event.event_type in OOM_TYPES:
                self._kernel_log.append((event.timestamp_ns + self._oom_error_ns, event, True))
            events.append(event)
            by_type[event.event_type].append(event)
        self.emitted.extend(events)
        if events:
            self._last_timestamp_ns = max(self._last_timestamp_ns, events[-1].timestamp_ns)
        for event_type, typed in by_type.items():
            store = self._store_for(event_type)
            if store is not None:
                store.add_sorted(typed)
        return events

    def _random_details(self, rng: random.Random, event_type: str) -> dict:
        if event_type == "oomKill":
            names = HOSTILE_PROCESS_NAMES if rng.random() < 0.3 else COMMON_PROCESS_NAMES
            return {"process_name": rng.choice(names), "pid": rng.randrange(2, 4_194_304),
                    "constraint": "CONSTRAINT_MEMCG" if rng.random() < 0.5 else None}
        if event_type == "containerDeletion" and self.deletion_exit_codes:
            return {"exit_code": rng.choice((0, 0, 0, 1, 137, 143, -1))}
        return {}

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
        line = event.json + b"\n"  # json.Encoder.Encode
        for watch in list(self._watches.values()):
            if watch.query.selects(event):
                watch.request.write(line)

    # -- reading ------------------------------------------------------------------------

    def history(self, query: EventQuery = EventQuery(event_types=frozenset(EVENT_TYPES), subcontainers=True, max_events=-1)) -> list[SimulatedEvent]:
        """cAdvisor's ``GetEvents``, oldest first (default: everything held).

        :raises GoPanic: where cAdvisor's Go code panics.
        """
        selected = []
        for event_type in query.event_types:
            store = self._stores.get(event_type)
            if store is not None:
                selected.extend(e for e in store.in_time_range(query.start_ns, query.end_ns, query.max_events)
                                if query.selects(e))
        selected.sort(key=_timestamp_of)
        return selected[-query.max_events:] if 0 < query.max_events < len(selected) else selected

    def ground_truth(self, oom_only: bool = False) -> collections.Counter:
        """Counts by the Go seed's key over everything ever emitted (replays excluded)."""
        return _count(self.emitted, oom_only)

    def history_counts(self, oom_only: bool = False) -> collections.Counter:
        """Counts by the Go seed's key over what history still holds."""
        return _count((e for store in self._stores.values() for e in store), oom_only)

    # -- streams ------------------------------------------------------------------------

    def _open_stream(self, request: Request, query: EventQuery):
        """Register a watch and flush the headers at once, as cAdvisor's ``streamResults``."""
        request.defaultContentType = None  # Go sets no Content-Type on a stream
        request.write(b"")  # sends the status line and headers
        watch_id = next(self._watch_ids)
        self._watches[watch_id] = _Watch(query, request)
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
            watch.request.transport.abortConnection()

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


class RandomEmitter(Service):
    """Emits about ``rate`` random events per second on the given clock, as a service."""

    def __init__(self, simulator: Simulator, rate: float, clock: Optional[IReactorTime] = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive, not %r" % (rate,))
        self.simulator, self.rate = simulator, rate
        self.clock = clock or simulator.clock
        self._loop: Optional[LoopingCall] = None

    def startService(self) -> None:
        super().startService()
        self._last, self._carry = self.clock.seconds(), 0.0
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(min(0.1, 1.0 / self.rate), now=False).addErrback(
            lambda failure: log.failure("random emitter stopped", failure))

    def _tick(self) -> None:
        now = self.clock.seconds()
        self._carry += self.rate * (now - self._last)
        self._last = now
        due = int(self._carry)
        if due:
            self._carry -= due
            self.simulator.emit_random(due)

    def stopService(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return super().stopService()


#: Template types in turn: 40 % creations, 40 % deletions, 20 % OOM pairs, the random mix's shares.
_BURST_TYPES = ("containerCreation", "containerDeletion") * 4 + ("oom", "oomKill")


class Burst:
    """A benchmark load: ``events`` events written to each open stream as fast as it reads them.

    Not something cAdvisor does, and only for benchmarks: the events go to the
    streams open when the burst starts and nowhere else (not into history, not
    into :attr:`Simulator.emitted`: a million events would not fit the point of
    a bounded simulator). They are pre-encoded from ``keys`` templates (distinct
    counting keys: every event type in the random mix's shares, realistic and
    hostile names) with
    increasing timestamps, ``step_ns`` apart, starting after every event emitted
    so far; event ``i`` of a stream uses the ``i``-th template of those its query
    selects, cyclically. As from a kernel, an ``oomKill`` shares the timestamp of
    the ``oom`` before it and kills a new pid each time (pids are not reused
    within seconds). The templates depend only on the simulator's seed, so
    every burst with the same ``keys`` counts into the same series. Each
    stream gets its own writer, a push producer
    registered with the stream's request: it writes ``batch`` events (one HTTP
    chunk each) at a time while the transport accepts them and pauses when the
    transport's buffer is full, so the simulator's memory stays bounded whatever
    the reader's pace. ``rate`` > 0 paces each stream at about that many events
    per second instead.

    Ground truth: :meth:`counts` (counting key -> events per stream for a query)
    and :attr:`written` per stream.
    """

    #: Seconds between two writes of a paced burst.
    TICK = 0.05

    def __init__(self, simulator: "Simulator", events: int, keys: int = 64, rate: float = 0.0,
                 batch: int = 256, step_ns: int = 997) -> None:
        if events < 0 or keys < 1 or rate < 0 or batch < 1 or step_ns < 1:
            raise ValueError("events >= 0, keys >= 1, rate >= 0, batch >= 1 and step_ns >= 1, please")
        self.simulator, self.events, self.rate, self.batch, self.step_ns = simulator, events, rate, batch, step_ns
        self.clock = simulator.clock
        offset = simulator.tz_offset_minutes
        self.first_ns = max(int(self.clock.seconds() * NS_PER_SECOND), simulator._last_timestamp_ns + 1) + step_ns
        simulator._last_timestamp_ns = max(simulator._last_timestamp_ns, self.first_ns + events * step_ns)
        names = container_names((keys + 1) // 2, random.Random(f"burst-{simulator.seed}"))
        processes = COMMON_PROCESS_NAMES + HOSTILE_PROCESS_NAMES
        self.templates: list[SimulatedEvent] = []
        #: Per template: the bytes before the timestamp, after it (up to the pid for a kill),
        #: and after the pid (None: no pid).
        self._parts: list[tuple[bytes, bytes, Optional[bytes]]] = []
        for index in range(keys):
            event_type = _BURST_TYPES[index % len(_BURST_TYPES)]
            extra = {"process_name": processes[(index // 2) % len(processes)], "pid": 1} \
                if event_type == "oomKill" else {}
            event = SimulatedEvent.create(names[index // 2], event_type, self.first_ns, offset, **extra)
            head, stamp, tail = event.json.partition(b'"timestamp":"' + event.timestamp.encode() + b'"')
            self.templates.append(event)
            if event_type == "oomKill":
                before_pid, _, after_pid = tail.partition(b'"pid":1')
                self._parts.append((head + b'"timestamp":"', b'"' + before_pid + b'"pid":', after_pid + b"\n"))
            else:
                self._parts.append((head + b'"timestamp":"', b'"' + tail + b"\n", None))
        self._zone = rfc3339nano(0, offset)[19:].encode()
        self._second = -1
        self._second_text = b""
        self.writers: list[_BurstWriter] = []
        self.done: defer.Deferred = defer.Deferred()
        self._loop: Optional[LoopingCall] = None

    def start(self, streams: list) -> None:
        """Start writing to ``streams``, ``(request, query)`` pairs; each gets what its query selects."""
        for request, query in streams:
            selected = [i for i, t in enumerate(self.templates) if query.selects(t)]
            if selected:
                self.writers.append(_BurstWriter(self, request, selected))
        log.info("burst of {events} events to each of {n} streams", events=self.events, n=len(self.writers))
        for writer in self.writers:
            writer.start()
        if self.rate > 0:
            self._loop = LoopingCall.withCount(self._tick)
            self._loop.clock = self.clock
            self._loop.start(self.TICK, now=False)
        self._check_done()

    @property
    def running(self) -> bool:
        return not self.done.called

    @property
    def written(self) -> list[int]:
        """Events written so far to each stream."""
        return [writer.written for writer in self.writers]

    def counts(self, query: Optional[EventQuery] = None) -> collections.Counter:
        """Counting key -> events a stream with ``query`` gets (default: one that selects everything)."""
        selected = [t for t in self.templates if query is None or query.selects(t)]
        counts: collections.Counter = collections.Counter()
        if selected:
            rounds, rest = divmod(self.events, len(selected))
            for index, template in enumerate(selected):
                counts[template.counting_key] += rounds + (1 if index < rest else 0)
        return counts

    def stop(self) -> None:
        """Stop writing (the streams stay open)."""
        for writer in self.writers:
            writer.finish()
        self._check_done()

    def encode(self, selected: list[int], first: int, count: int) -> bytes:
        """Events ``first .. first+count-1`` of a stream as HTTP chunks, one per event."""
        parts, zone, step = self._parts, self._zone, self.step_ns
        chunks = []
        ns = self.first_ns + first * step
        n_selected = len(selected)
        for index in range(first, first + count):
            head, tail, after_pid = parts[selected[index % n_selected]]
            stamp_ns = ns if after_pid is None else ns - step  # a kill: its oom's timestamp
            seconds, nanos = divmod(stamp_ns, NS_PER_SECOND)
            if seconds != self._second:
                self._second = seconds
                self._second_text = rfc3339nano(seconds * NS_PER_SECOND, self.simulator.tz_offset_minutes)[:19].encode()
            stamp = self._second_text + (b".%09d" % nanos).rstrip(b"0") + zone if nanos else self._second_text + zone
            if after_pid is None:
                line = head + stamp + tail
            else:
                line = head + stamp + tail + b"%d" % (2 + index % 4_194_000) + after_pid
            chunks.append(b"%x\r\n%s\r\n" % (len(line), line))
            ns += step
        return b"".join(chunks)

    def _tick(self, intervals: int) -> None:
        due = self.rate * self.TICK * intervals
        for writer in self.writers:
            writer.allow(due)

    def _check_done(self) -> None:
        if not self.done.called and all(writer.finished for writer in self.writers):
            if self._loop is not None and self._loop.running:
                self._loop.stop()
            log.info("burst done: {written} events written", written=sum(self.written))
            self.done.callback(self)


@implementer(IPushProducer)
class _BurstWriter:
    """Writes one stream's share of a :class:`Burst`; the stream's transport pauses and resumes it."""

    def __init__(self, burst: Burst, request: Request, selected: list[int]) -> None:
        self.burst, self.request, self.selected = burst, request, selected
        self.written = 0
        self.finished = False
        self._paused = False
        self._writing = False
        self._allowance = float(burst.events) if burst.rate <= 0 else 0.0

    def start(self) -> None:
        self.request.notifyFinish().addBoth(lambda _: self.finish())
        if self.finished:
            return
        self.request.registerProducer(self, True)
        self.burst.clock.callLater(0, self._write)

    def allow(self, events: float) -> None:
        """Paced mode: ``events`` more may be written (a paused stream does not save them up)."""
        if not self._paused:
            self._allowance = min(self._allowance + events, self.burst.batch * 4.0)
            self._write()

    def _write(self) -> None:
        if self._writing or self.finished:
            return
        self._writing = True
        try:
            burst, channel = self.burst, self.request.channel
            while not self._paused and not self.finished and self.written < burst.events:
                count = min(burst.batch, burst.events - self.written, int(self._allowance + 1e-9))
                if count <= 0:
                    return
                self._allowance -= count
                first, self.written = self.written, self.written + count
                channel.write(burst.encode(self.selected, first, count))  # may pause us at once
            if self.written >= burst.events:
                self.finish()
        finally:
            self._writing = False

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.request.producer is self:
            self.request.unregisterProducer()
        self.burst._check_done()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._write()

    def stopProducing(self) -> None:
        self.finish()


class ControlResource(Resource):
    """``/_simulator/burst``, for benchmarks in another process (``--control``; cAdvisor has no such path).

    ``POST /_simulator/burst?events=N[&keys=K][&rate=R]`` starts a :class:`Burst`
    on every open stream and answers its ground truth as JSON: ``streams``,
    ``events_per_stream``, ``first_timestamp`` and ``counts`` (``[id,
    event_type, oom_process, count]`` per key, for a stream selecting every
    event). ``GET`` answers its progress (``running``, ``written`` per stream);
    ``POST /_simulator/burst?stop=1`` stops it. ``GET /_simulator/status``
    answers ``open_streams`` and ``emitted``.
    """

    isLeaf = True

    def __init__(self, simulator: Simulator) -> None:
        super().__init__()
        self._simulator = simulator

    def render(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        if request.path.rstrip(b"/") == b"/_simulator/status":
            return json.dumps({"open_streams": self._simulator.open_streams,
                               "emitted": len(self._simulator.emitted)}).encode()
        if request.path.rstrip(b"/") != b"/_simulator/burst":
            return _plain_error(request, 404, "404 page not found")
        args = {k.decode(): v[0].decode() for k, v in parse_qs(request.uri.partition(b"?")[2]).items()}
        burst = self._simulator.burst
        try:
            if request.method == b"POST" and args.get("stop"):
                if burst is not None:
                    burst.stop()
            elif request.method == b"POST":
                burst = self._simulator.start_burst(int(args.get("events", "0")), keys=int(args.get("keys", "64")),
                                                    rate=float(args.get("rate", "0")),
                                                    batch=int(args.get("batch", "256")))
            elif request.method != b"GET":
                return _plain_error(request, 405, "GET or POST")
        except ValueError as error:
            return _plain_error(request, 400, str(error))
        if burst is None:
            return json.dumps({"running": False, "streams": 0}).encode()
        answer = {"running": burst.running, "streams": len(burst.writers), "events_per_stream": burst.events,
                  "written": burst.written, "first_timestamp_ns": burst.first_ns}
        if request.method == b"POST" and not args.get("stop"):
            answer["counts"] = [[*key, n] for key, n in sorted(burst.counts().items())]
        return json.dumps(answer).encode()


class ControlledSite(Resource):
    """The simulator's API plus :class:`ControlResource` under ``/_simulator/``."""

    isLeaf = True

    def __init__(self, simulator: Simulator) -> None:
        super().__init__()
        self._api = simulator.resource
        self._control = ControlResource(simulator)

    def render(self, request: Request):
        if request.path.startswith(b"/_simulator/"):
            return self._control.render(request)
        return self._api.render(request)


def container_names(count: int, rng: random.Random) -> list[str]:
    """``count`` realistic cgroup names (docker, systemd, kubepods in both cgroup
    drivers, pod cgroups with their containers), deterministic for an ``rng``."""
    names: list[str] = []

    def hex_id() -> str:
        return "%064x" % rng.getrandbits(256)

    while len(names) < count:
        kind = rng.random()
        if kind < 0.25:
            names.append("/docker/" + hex_id())
        elif kind < 0.35:
            names.append("/system.slice/docker-%s.scope" % hex_id())
        else:
            qos = rng.choice(("burstable", "burstable", "besteffort", "guaranteed"))
            uid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            if kind < 0.65:  # cgroupfs driver
                pod = "/kubepods/pod" + uid if qos == "guaranteed" else "/kubepods/%s/pod%s" % (qos, uid)
                template = pod + "/%s"
            else:  # systemd driver
                underscored = uid.replace("-", "_")
                pod = ("/kubepods.slice/kubepods-pod%s.slice" % underscored if qos == "guaranteed" else
                       "/kubepods.slice/kubepods-{0}.slice/kubepods-{0}-pod{1}.slice".format(qos, underscored))
                template = pod + "/cri-containerd-%s.scope"
            names.append(pod)
            names.extend(template % hex_id() for _ in range(rng.randint(1, 3)))
    return names[:count]
