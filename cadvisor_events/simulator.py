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
the ground truth and the generators share the simulator's private state, and
the project gives the simulator these two modules only.
"""

from __future__ import annotations

import bisect
import collections
import random
import uuid
from typing import Iterable, Optional, Sequence, Union

import attrs
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from cadvisor_events.simulator_json import (
    EVENT_TYPES, GO_ZERO_TIME_NS, NS_PER_SECOND, ApiError, EventQuery, decode_url_path,
    events_container, go_json_string, parse_go_query, rfc3339nano,
)

__all__ = ["EventQuery", "EventStore", "RandomEmitter", "SimulatedEvent", "Simulator", "container_names"]

log = Logger()

OOM_TYPES = frozenset(("oom", "oomKill"))
_RANDOM_TYPE_WEIGHTS = (("containerCreation", 40), ("containerDeletion", 40), ("oom", 10), ("oomKill", 10))
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
    """

    def __init__(self, clock: Optional[IReactorTime] = None, tz_offset_minutes: int = -180,
                 event_limit: int = 100_000, age_limit: float = 86400, seed: int = 0,
                 containers: int = 50, deletion_exit_codes: bool = False) -> None:
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[no-redef]
        if not -1440 < tz_offset_minutes < 1440:
            raise ValueError("tz_offset_minutes must be within a day, not %r" % (tz_offset_minutes,))
        self.clock = clock
        self.tz_offset_minutes = tz_offset_minutes
        self.event_limit, self.age_limit = event_limit, age_limit
        self.deletion_exit_codes = deletion_exit_codes
        self.rng = random.Random(seed)
        self.container_pool = container_names(containers, self.rng)
        self.emitted: list[SimulatedEvent] = []
        self.replayed: list[SimulatedEvent] = []
        self.resource = CadvisorResource(self)
        self._stores: dict[str, EventStore] = {}
        self._watches: dict[int, _Watch] = {}
        self._watch_ids = iter(range(1, 1 << 62))
        self._last_timestamp_ns = GO_ZERO_TIME_NS
        self._emitter: Optional[RandomEmitter] = None
        self._pending_replay = None

    # -- emitting -------------------------------------------------------------------

    def emit(self, container_name: str, event_type: str, *, timestamp_ns: Optional[int] = None,
             process_name: Optional[str] = None, pid: Optional[int] = None,
             constraint: Optional[str] = None, exit_code: Optional[int] = None) -> SimulatedEvent:
        """Record one event in history and send it to every matching open stream now."""
        if timestamp_ns is None:
            timestamp_ns = max(int(self.clock.seconds() * NS_PER_SECOND), self._last_timestamp_ns + 1)
        self._last_timestamp_ns = max(self._last_timestamp_ns, timestamp_ns)
        event = SimulatedEvent.create(container_name, event_type, timestamp_ns, self.tz_offset_minutes,
                                      process_name, pid, constraint, exit_code)
        self.emitted.append(event)
        self._add(event)
        return event

    def emit_oom(self, container_name: str, process_name: str, pid: int, *,
                 victim_container: Optional[str] = None, constraint: Optional[str] = None) -> tuple[SimulatedEvent, SimulatedEvent]:
        """One kernel OOM: ``oom`` on the limited container, ``oomKill`` on the victim's."""
        oom = self.emit(container_name, "oom")
        kill = self.emit(victim_container or container_name, "oomKill", process_name=process_name,
                         pid=pid, constraint=constraint)
        return oom, kill

    def emit_random(self, n: int, rng: Optional[random.Random] = None) -> list[SimulatedEvent]:
        """``n`` events of mixed types (40/40/10/10 %) over the container pool, timestamped now."""
        rng = rng or self.rng
        types, weights = zip(*_RANDOM_TYPE_WEIGHTS)
        return [self.emit(rng.choice(self.container_pool), event_type, **self._random_details(rng, event_type))
                for event_type in rng.choices(types, weights, k=n)]

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
        for index, (offset, event_type) in enumerate(zip(sorted(rng.sample(range(span), n)),
                                                         rng.choices(types, weights, k=n))):
            event = SimulatedEvent.create(names[index % len(names)], event_type, first + offset,
                                          self.tz_offset_minutes, **self._random_details(rng, event_type))
            events.append(event)
            by_type[event_type].append(event)
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

    def restart(self, keep_history: bool = False, replay_delay: Optional[float] = None) -> None:
        """Like a cAdvisor restart: cut streams, forget history (unless ``keep_history``),
        then re-add every OOM ever emitted with its original timestamp, as cAdvisor
        does reading ``/dev/kmsg`` again: now, or ``replay_delay`` seconds later
        (so streams opened meanwhile receive the replays)."""
        self.cut_streams()
        if not keep_history:
            self._stores.clear()
        if self._pending_replay is not None and self._pending_replay.active():
            self._pending_replay.cancel()
        ooms = [event for event in self.emitted if event.event_type in OOM_TYPES]
        if replay_delay is None:
            self._replay(ooms)
        else:
            self._pending_replay = self.clock.callLater(replay_delay, self._replay, ooms)

    def _replay(self, events: Iterable[SimulatedEvent]) -> None:
        for event in events:
            self.replayed.append(event)
            self._add(event)

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
