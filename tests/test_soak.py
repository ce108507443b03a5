"""Faults: the gaps metric, a chaos soak against the simulator, and slow or many scrapers.

``GapTests`` drive one follower with a fake client (time from ``task.Clock``).
``SoakTests`` run the chaos engine that ``benchmarks/soak.py`` runs for
minutes, here for ~15 s in-process: 10 simulator hosts, random stream cuts and
ends, simulator restarts with history kept and lost, and at the end the
counters equal ground truth for every host without gaps, and for hosts with
gaps the shortfall is only events the simulator's history no longer held.
``ScraperTests`` hold 20 concurrent /metrics clients that read slowly or not
at all while events flow. Waiting is for real I/O (bounded polls).
"""

from __future__ import annotations

import collections
import random
import socket
import struct
from typing import Dict, List, Optional

from twisted.application.internet import backoffPolicy
from twisted.internet import defer, protocol, reactor, task
from twisted.logger import Logger, globalLogPublisher
from twisted.trial import unittest

from cadvisor_events.cadvisor import CAdvisorClient, Target, parse_target
from cadvisor_events.counters import EventCounters
from cadvisor_events.event import Event
from cadvisor_events.fleet import FleetService
from cadvisor_events.follower import Follower
from cadvisor_events.ledger import MAX_OOMS, MAX_WINDOW_EVENTS
from cadvisor_events.selfmetrics import FleetMetrics
from cadvisor_events.httpclients import stream_http_client
from cadvisor_events.targets import TargetSpec

from .support import before
from .test_end_to_end import Hosts, wait_for
from .test_follower import NO_JITTER, FakeClient, event, key, ts
from .test_hostile import SCRAPE_BUDGET, Healthy, Rig, counted, figures, rss, transport_of, until

log = Logger()

# -- the chaos engine (benchmarks/soak.py runs it too) ---------------------------------------

OOM_TYPES = frozenset(("oom", "oomKill"))  # a restarted cAdvisor re-adds these from the kernel log
#: An exporter that reports a host "up" this long after its last break has noticed that break
#: and synced again since (state "up" only follows a complete backfill).
GRACE = 0.3
#: Events emitted this long before a break may still have been in flight (lost with the stream).
IN_FLIGHT = 0.25
KINDS = {"cut": 30, "end": 20, "restart_kept": 15, "restart_lost": 10, "cut_then_restart_lost": 25}
LOSSY = frozenset(("restart_lost", "cut_then_restart_lost"))
#: Hosts are dealt these fates in turn: never a history-losing restart (must end exact, with no
#: gap), exactly one lossy episode (so a loss without a gap cannot hide behind another gap), any.
FATES = ("no_loss", "one_loss", "any")


#: How far out of time order the simulator emits: OOMs are dated up to a second early.
DISORDER_NS = 1_000_000_000


def emitted_since(events, timestamp_ns: int):
    """The events dated at or after ``timestamp_ns``, of events emitted in time order
    but for OOMs dated up to :data:`DISORDER_NS` early (scanned from the newest)."""
    since = []
    for emitted_event in reversed(events):
        if emitted_event.timestamp_ns >= timestamp_ns:
            since.append(emitted_event)
        elif emitted_event.timestamp_ns < timestamp_ns - DISORDER_NS:
            break
    return since


class ChaosHost:
    """One simulator host under chaos and what the final check needs to know about it.

    ``window_start`` (ns) is the start of the events the exporter may not have
    counted yet: the last break it was seen to have recovered from (less
    :data:`IN_FLIGHT`). A history-losing restart makes every non-OOM event of
    that window up to the restart a *loss candidate*: no longer in history, so
    not recoverable, and the only events a host with gaps may be short of.
    """

    def __init__(self, name: str, sim, fate: str = "any") -> None:
        self.name, self.sim, self.fate = name, sim, fate
        self.kinds: collections.Counter = collections.Counter()
        self.last_break: Optional[float] = None
        self.recovered = True  # the first connect is its own sync
        self.window_start: Optional[int] = None
        self.candidates: collections.Counter = collections.Counter()

    def broken(self, now: float) -> None:
        if self.recovered:
            self.window_start = int((now - IN_FLIGHT) * 1e9)
        self.recovered = False
        self.last_break = now

    def history_lost(self, now: float) -> None:
        """The simulator is about to forget its history: record what that makes unrecoverable."""
        self.broken(now)  # the restart cuts the stream first
        for emitted_event in emitted_since(self.sim.emitted, self.window_start):
            if emitted_event.event_type not in OOM_TYPES:
                self.candidates[emitted_event.counting_key] += 1
        self.window_start = int(now * 1e9)  # those are counted as candidates once


class Chaos:
    """Random cuts, ends and restarts (history kept or lost) of simulator hosts, and the check.

    ``observe(states, now)`` must be fed the exporter's view of each host
    (``name -> state``) regularly; ``strike()`` breaks one random host.
    """

    def __init__(self, sims: Dict[str, object], clock, rng: random.Random,
                 restart_delay=(0.1, 0.8)) -> None:
        self.hosts = {name: ChaosHost(name, sim, FATES[i % len(FATES)])
                      for i, (name, sim) in enumerate(sorted(sims.items()))}
        self.clock, self.rng = clock, rng
        self.restart_delay = restart_delay
        self.pending: List = []

    def observe(self, states: Dict[str, str], now: float) -> None:
        for name, state in states.items():
            host = self.hosts[name]
            if state == "up" and (host.last_break is None or now >= host.last_break + GRACE):
                host.recovered = True

    def strike(self, name: Optional[str] = None, kind: Optional[str] = None) -> str:
        host = self.hosts[name or self.rng.choice(sorted(self.hosts))]
        while kind is None:
            kind = self.rng.choices(list(KINDS), list(KINDS.values()))[0]
            lossy_before = sum(host.kinds[k] for k in LOSSY)
            if kind in LOSSY and (host.fate == "no_loss" or (host.fate == "one_loss" and lossy_before)):
                kind = None
        host.kinds[kind] += 1
        now = self.clock.seconds()
        if kind == "cut":
            host.broken(now)
            host.sim.cut_streams()
        elif kind == "end":
            host.broken(now)
            host.sim.end_streams()
        elif kind == "restart_kept":
            host.broken(now)
            host.sim.restart(keep_history=True)
        elif kind == "restart_lost":
            host.history_lost(now)
            host.sim.restart(keep_history=False)
        else:  # a cut, then a history-losing restart while the exporter is still away
            host.broken(now)
            host.sim.cut_streams()
            self.pending.append(self.clock.callLater(self.rng.uniform(*self.restart_delay),
                                                     self._restart_lost, host))
        return kind

    def _restart_lost(self, host: ChaosHost) -> None:
        host.history_lost(self.clock.seconds())
        host.sim.restart(keep_history=False)

    def stop(self) -> None:
        for call in self.pending:
            if call.active():
                call.cancel()
        self.pending = []

    def check(self, counted: Dict[str, collections.Counter], gaps: Dict[str, int]) -> dict:
        """Compare the exporter's counts with ground truth; returns figures and ``problems``.

        Every host: nothing counted twice (no key above ground truth). A host
        whose ``gaps`` stayed 0: counts equal ground truth exactly. A host with
        gaps: what it is short of is made only of its loss candidates. A host
        whose history was never lost: no gap either (no false alarm).
        """
        problems: List[str] = []
        short_total = candidates_total = 0
        for name, host in sorted(self.hosts.items()):
            truth = host.sim.ground_truth()
            got = counted.get(name, collections.Counter())
            over = got - truth
            short = truth - got
            short_total += sum(short.values())
            candidates_total += sum(host.candidates.values())
            if over:
                problems.append(f"{name}: counted twice: {dict(over)}")
            if gaps.get(name) and not any(host.kinds[k] for k in LOSSY):
                problems.append(f"{name}: {gaps[name]} gaps, but its history was never lost")
            if short and not gaps.get(name):
                problems.append(f"{name}: short of {sum(short.values())} events with no gap: {dict(short)}")
            elif short - host.candidates:
                problems.append(f"{name}: short of events that were not loss candidates: "
                                f"{dict(short - host.candidates)}")
        kinds = sum((h.kinds for h in self.hosts.values()), collections.Counter())
        return {"problems": problems, "emitted": sum(len(h.sim.emitted) for h in self.hosts.values()),
                "counted": sum(sum(c.values()) for c in counted.values()), "short": short_total,
                "loss_candidates": candidates_total, "gaps": sum(gaps.values()),
                "hosts_with_gaps": sum(1 for n in gaps.values() if n), "kinds": dict(kinds),
                "hosts_short": sum(1 for h in self.hosts.values() if h.sim.ground_truth() - counted.get(h.name, {}))}


A = event("/docker/a", "containerCreation", ts(1))
B = event("/docker/a", "oom", ts(2, 500))
C = event("/docker/a", "oomKill", ts(2, 500), "java", 42)
D = event("/docker/b", "containerDeletion", ts(3, 123456789))
E = event("/docker/b", "containerCreation", ts(4, 1))
TARGET = Target("cadvisor.example", 8080)


class GapTests(unittest.TestCase):
    """``gaps``: a reconnect's history (from the mark, inclusive) lacks the events counted at the mark."""

    def make(self, **kwargs) -> Follower:
        self.clock = task.Clock()
        self.client = FakeClient()
        self.counters = EventCounters(self.clock)
        self.follower = f = Follower(TARGET, client=self.client, counters=self.counters.host(TARGET.name),
                                     clock=self.clock, backoff=NO_JITTER, **kwargs)
        f.startService()
        self.addCleanup(self._stop)
        return f

    def _stop(self):
        d = self.follower.stopService()
        for response in self.client.responses:
            if response.protocol is not None and not response.protocol.ended:
                response.reset()
        return d

    def counts(self):
        return collections.Counter(self.counters.hosts[TARGET.name].values())

    def reconnect(self, *history):
        """Break the current stream, reconnect after the backoff, answer the backfill with ``history``."""
        self.client.responses[-1].cut()
        self.clock.advance(1)
        response = self.client.accept()
        self.client.answer_history(*history)
        self.assertEqual(self.follower.state, "up")
        return response

    def test_history_that_still_holds_the_boundary_is_no_gap(self):
        f = self.make()
        self.clock.advance(0)
        self.client.accept()
        self.client.answer_history(A, B, C, D)
        self.assertEqual(f.gaps, 0)  # a first connect (the seed) is never a gap
        self.reconnect(D, E)
        self.assertEqual(self.client.last_start_time, before(ts(3, 123456789), 1))
        self.assertEqual((f.gaps, self.counts()), (0, collections.Counter(map(key, [A, B, C, D, E]))))

    def test_empty_history_after_a_restart_is_a_gap_and_logged(self):
        f = self.make()
        self.clock.advance(0)
        response = self.client.accept()
        self.client.answer_history(A)
        response.send(D)
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        self.reconnect()  # cAdvisor restarted: nothing in history
        self.assertEqual(f.gaps, 1)
        (gap,) = [e for e in logged if "gap in the history" in e.get("log_format", "")]
        self.assertEqual((gap["host"], gap["since"]), (TARGET.name, before(ts(3, 123456789), 1)))
        self.assertEqual(gap["log_level"].name, "warn")

    def test_history_that_begins_after_the_mark_is_a_gap(self):
        f = self.make()
        self.clock.advance(0)
        self.client.accept()
        self.client.answer_history(A, B, C)
        self.reconnect(D, E)  # B and C aged out (and whatever came between them and D)
        self.assertEqual(f.gaps, 1)
        self.assertEqual(self.counts(), collections.Counter(map(key, [A, B, C, D, E])))
        self.reconnect(D, E)  # this one still holds what was counted since a second before the newest
        self.assertEqual(f.gaps, 1)

    def test_one_of_two_boundary_events_missing_is_a_gap(self):
        f = self.make()
        self.clock.advance(0)
        self.client.accept()
        created = event("/docker/z", "containerCreation", ts(3, 123456789))
        self.client.answer_history(A, D, created)  # two events at the mark
        self.reconnect(created, E)  # cAdvisor stores each type apart: the deletion store lost D
        self.assertEqual(f.gaps, 1)

    def test_no_seed_and_first_connects_are_never_gaps(self):
        f = self.make(seed_history=False)
        self.clock.advance(0)
        self.client.accept()
        self.reconnect()  # nothing counted yet: no boundary to miss
        self.assertEqual(f.gaps, 0)

    def test_replayed_oom_boundary_does_not_hide_a_restart(self):
        """When the events counted at the mark are OOMs, a restarted cAdvisor re-adds them to
        its history from the kernel log, so finding them proves nothing: the backfill asks from
        the newest other event counted (A here) and that one must still be there."""
        f = self.make()
        self.clock.advance(0)
        self.client.accept()
        self.client.answer_history(A, B, C)
        self.reconnect(A, B, C, E)  # history kept: no gap
        self.assertEqual((self.client.last_start_time, f.gaps), (before(ts(1), 1), 0))
        self.assertEqual(f.duplicates_dropped, 3)
        response = self.client.responses[-1]
        response.send(F := event("/docker/c", "oom", ts(5)), G := event("/docker/c", "oomKill", ts(5), "node", 7))
        self.reconnect(F, G)  # restarted: only the replayed OOMs (whatever came after E is gone)
        self.assertEqual((self.client.last_start_time, f.gaps), (before(ts(4, 1), 1), 1))

    def test_oom_only_following_has_no_anchor_and_replays_lose_nothing(self):
        f = self.make(oom_only=True)
        self.clock.advance(0)
        self.client.accept()
        self.client.answer_history(B, C)
        self.reconnect(B, C)  # every event is an OOM: a restart re-adds them all
        self.assertEqual((self.client.last_start_time, f.gaps), (before(ts(2, 500), 1), 0))

    def test_gaps_in_self_metrics(self):
        f = self.make()
        self.clock.advance(0)
        self.client.accept()
        self.client.answer_history(A)
        self.reconnect()
        fleet = type("Fleet", (), {"followers": {TARGET.name: f}})()
        text = FleetMetrics(fleet, self.counters).render()
        self.assertIn("# TYPE cadvisor_events_gaps_total counter\n", text)
        self.assertIn('cadvisor_events_gaps_total{host="cadvisor.example:8080"} 1\n', text)
        self.assertEqual(self.follower.__class__.__slots__.count("gaps"), 1)


class SoakTests(unittest.TestCase):
    """The chaos soak, short and in-process: 10 hosts, ~15 s, every kind of break."""

    timeout = 120

    @defer.inlineCallbacks
    def test_ten_hosts_through_cuts_ends_and_restarts_with_and_without_history(self):
        rng = random.Random(20261124)
        hosts = Hosts(10)
        self.addCleanup(hosts.stop)
        for sim in hosts.sims:
            sim.emit_random(20)  # history before the exporter starts: seeded
        counters = EventCounters(reactor)
        client = CAdvisorClient(reactor, http=stream_http_client(reactor))
        # Exponential like the default, faster: a history-losing restart 0.1-0.8 s after a
        # cut usually finds the follower still away, so losses (and gaps) really happen.
        backoff = backoffPolicy(initialDelay=0.3, maxDelay=2.0, factor=2.0, jitter=lambda: rng.random() * 0.2)

        def make_follower(spec, first_delay):
            return Follower(spec.target, client=client, counters=counters.host(spec.name), clock=reactor,
                            backoff=backoff, first_delay=first_delay, connect_timeout=5, history_timeout=5)

        fleet = FleetService(make_follower, clock=reactor)
        fleet.set_targets([TargetSpec(target=parse_target(name)) for name in hosts.names])
        fleet.startService()
        self.addCleanup(fleet.stopService)
        followers = fleet.followers
        yield wait_for(lambda: all(f.state == "up" for f in followers.values()), what="every stream up")

        chaos = Chaos(hosts.by_name(), reactor, rng)
        self.addCleanup(chaos.stop)
        emitting = task.LoopingCall(lambda: [sim.emit_random(rng.randint(0, 4)) for sim in hosts.sims])
        emitting.start(0.01)  # ~200 events per second per host
        self.addCleanup(lambda: emitting.running and emitting.stop())
        for _ in range(150):  # ~15 s of chaos: one break every 0.1 s on a random host
            yield task.deferLater(reactor, 0.1, lambda: None)
            chaos.observe({name: f.state for name, f in followers.items()}, reactor.seconds())
            chaos.strike()
        emitting.stop()
        yield task.deferLater(reactor, max(chaos.restart_delay), lambda: None)  # pending restarts happen
        chaos.stop()
        def back():
            return all(followers[name].state == "up" and sim.open_streams == 1
                       for name, sim in hosts.by_name().items())

        try:
            yield wait_for(back, timeout=30, what="every host back")
        except AssertionError:
            self.fail("not back: " + "; ".join(
                f"{name}: {followers[name].state} {followers[name].failures} streams={sim.open_streams}"
                for name, sim in hosts.by_name().items()
                if followers[name].state != "up" or sim.open_streams != 1))
        last = {name: sim.emit_random(3)[-1].timestamp_ns for name, sim in hosts.by_name().items()}
        yield wait_for(lambda: all(followers[name]._ledger.newest_ns >= ns for name, ns in last.items()),
                       timeout=30, what="the last events counted live")

        result = chaos.check({name: collections.Counter(counters.hosts[name].values()) for name in followers},
                             {name: f.gaps for name, f in followers.items()})
        result.update(duplicates_dropped=sum(f.duplicates_dropped for f in followers.values()),
                      reconnects=sum(f.connects for f in followers.values()) - len(followers))
        log.info("figures soak: {result}", result=result)
        self.assertEqual(result["problems"], [])
        self.assertGreater(result["emitted"], 10 * 1500)
        self.assertGreater(result["gaps"], 0)  # history-losing restarts did cost events, and said so
        self.assertGreater(result["loss_candidates"], 0)
        self.assertEqual(set(result["kinds"]), set(KINDS))
        for f in followers.values():  # and the per-host state is back to small
            self.assertIsNone(f._buffer)
            self.assertLessEqual(len(f._ledger.ooms), MAX_OOMS)  # the OOMs counted, for replays
            self.assertLessEqual(len(f._ledger._window) + len(f._ledger._previous), 2 * MAX_WINDOW_EVENTS)


def kernel_send_queue(transport) -> int:
    """Bytes queued in the kernel on a socket, not yet acknowledged by the peer (Linux), else 0."""
    try:
        import fcntl
        import termios

        return struct.unpack("i", fcntl.ioctl(transport.getHandle().fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    except (ImportError, OSError, AttributeError):
        return 0


class SlowScraper(protocol.Protocol):
    """A /metrics client that asks and then reads slowly ("slow": one read per tick) or never."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.received = 0
        self.lost = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.transport.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.transport.pauseProducing()  # reading stops; the request still goes out

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.transport.pauseProducing()

    def tick(self) -> None:
        if self.mode == "slow" and self.transport is not None:
            self.transport.resumeProducing()  # one read (at most 64 KiB), then paused again

    def connectionLost(self, reason) -> None:
        self.lost.callback(None)


class ScraperTests(unittest.TestCase):
    """Slow scrapers and many concurrent /metrics requests do not hold ingest up."""

    timeout = 60

    @defer.inlineCallbacks
    def test_twenty_slow_or_silent_scrapers_while_events_flow(self):
        healthy = Healthy(self)
        rig = Rig(self)
        filler = rig.counters.host("127.0.0.2:8080")  # a /metrics body of ~20,000 series (~2 MiB)
        for i in range(20_000):
            filler.count(Event(f"/kubepods/burstable/pod{i:08d}/container", "2026-11-24T17:25:55Z", "oom"))
        rig.follow(healthy.name)
        yield until(lambda: rig[healthy.name].state == "up", "the healthy stream up")
        healthy.sim.start_emitting(200)
        scrapers = [SlowScraper("slow" if i % 2 else "never") for i in range(20)]
        for scraper in scrapers:  # all twenty connected and asking at once
            yield protocol.ClientCreator(reactor, lambda s=scraper: s).connectTCP(
                "127.0.0.1", rig.web.getHost().port)

        def drop_scrapers():
            for scraper in scrapers:
                if scraper.transport is not None and scraper.transport.connected:
                    scraper.transport.abortConnection()
            return defer.gatherResults([scraper.lost for scraper in scrapers])

        self.addCleanup(drop_scrapers)
        reading = task.LoopingCall(lambda: [scraper.tick() for scraper in scrapers])
        reading.start(0.05)
        self.addCleanup(lambda: reading.running and reading.stop())
        lags = []
        for _ in range(40):  # each round: events counted promptly, and a normal scrape answers
            emitted = reactor.seconds()
            healthy.sim.emit_random(5)
            yield until(counted(rig, healthy), "the healthy host counted exactly")
            lags.append(reactor.seconds() - emitted)
            yield rig.scrape(parse=False)
        transports = [t for t in (transport_of(p) for p, _ in rig.web_connections.values()) if t is not None]
        buffered = sum(len(t.dataBuffer) + t._tempDataLen for t in transports)  # the exporter's memory
        queued = sum(kernel_send_queue(t) for t in transports)  # the kernel's, per socket bounded
        slow = [s.received for s in scrapers if s.mode == "slow"]
        never = [s.received for s in scrapers if s.mode == "never"]
        healthy.sim.stop_emitting()
        yield until(counted(rig, healthy), "the healthy host counted exactly")
        figures(self, max_ingest_lag=max(lags), max_scrape=max(rig.latencies), scrapes=len(rig.latencies),
                slow_read_bytes=sum(slow), never_read_bytes=sum(never), server_buffered_bytes=buffered,
                kernel_queued_bytes=queued, body_bytes=len(rig.counters.render()),
                events=len(healthy.sim.emitted), rss=rss())
        self.assertLess(max(lags), SCRAPE_BUDGET)
        self.assertLess(max(rig.latencies), SCRAPE_BUDGET)
        self.assertEqual(never, [0] * 10)
        self.assertTrue(all(0 < n for n in slow))
        self.assertTrue(all(s.transport.connected for s in scrapers))  # still hanging on
