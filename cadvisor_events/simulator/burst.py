"""The benchmark burst: pre-encoded events to every open stream as fast as each reads, memory bounded.

Not something cAdvisor does: :class:`Burst` writes a load the benchmarks
count against (with its ground truth), each stream paced by its own
transport through a push producer, and :class:`ControlResource` lets a
benchmark in another process start and watch one over HTTP (``--control``),
served beside the API by :class:`ControlledSite`. It must never touch the
simulator's history or :attr:`~.core.Simulator.emitted` (a burst is too big
for a bounded simulator), nor serve ``/_simulator/`` unless asked for.
"""

from __future__ import annotations

import collections
import json
import random
from typing import TYPE_CHECKING, Optional
from urllib.parse import parse_qs

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer

from .api import plain_error
from .cluster import make_containers
from .generate import COMMON_PROCESS_NAMES, HOSTILE_PROCESS_NAMES
from .golang import NS_PER_SECOND, rfc3339nano
from .query import EventQuery
from .store import SimulatedEvent

if TYPE_CHECKING:
    from .core import Simulator

__all__ = ["Burst", "ControlResource", "ControlledSite"]

log = Logger()


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
    every burst with the same ``keys`` counts into the same series. Its
    containers join the simulator's :class:`~.cluster.Cluster` (alive, with
    their specs, from the burst's start on), as a real cAdvisor knows every
    container it emits events of: a client asking for a spec gets it. Each
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
        self.first_ns = simulator.next_timestamp_ns() + step_ns
        simulator.reserve_timestamps_through(self.first_ns + events * step_ns)
        containers = make_containers((keys + 1) // 2, random.Random(f"burst-{simulator.seed}"))
        names = [container.name for container in containers]
        # As on a node, cAdvisor knows every container it announces (its spec is stored before
        # the creation): the spec API answers for the burst's containers from now on.
        for container in containers:
            simulator.cluster.known.setdefault(container.name, container)
            simulator.cluster.created(container.name, self.first_ns)
        processes = COMMON_PROCESS_NAMES + HOSTILE_PROCESS_NAMES
        self.templates: list[SimulatedEvent] = []
        #: Per template: the bytes before the timestamp, after it (up to the pid for a kill),
        #: and after the pid (None: no pid).
        self._parts: list[tuple[bytes, bytes, Optional[bytes]]] = []
        for index in range(keys):
            event_type = _BURST_TYPES[index % len(_BURST_TYPES)]
            if event_type == "oomKill":
                event = SimulatedEvent.create(names[index // 2], event_type, self.first_ns, offset,
                                              process_name=processes[(index // 2) % len(processes)], pid=1)
            else:
                event = SimulatedEvent.create(names[index // 2], event_type, self.first_ns, offset)
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
    answers ``open_streams``, ``emitted`` and ``served`` (history answers and
    streams opened so far, by kind); ``GET /_simulator/served`` the log of
    them (:attr:`Simulator.served`: ``[kind, clock seconds, body bytes]``).
    """

    isLeaf = True

    def __init__(self, simulator: Simulator) -> None:
        super().__init__()
        self._simulator = simulator

    def render(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        if request.path.rstrip(b"/") == b"/_simulator/status":
            return json.dumps({"open_streams": self._simulator.open_streams,
                               "emitted": len(self._simulator.emitted),
                               "served": dict(self._simulator.served_counts)}).encode()
        if request.path.rstrip(b"/") == b"/_simulator/served":
            return json.dumps([list(entry) for entry in self._simulator.served]).encode()
        if request.path.rstrip(b"/") != b"/_simulator/burst":
            return plain_error(request, 404, "404 page not found")
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
                return plain_error(request, 405, "GET or POST")
        except ValueError as error:
            return plain_error(request, 400, str(error))
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
