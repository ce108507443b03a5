"""Faults: the gaps metric, a chaos soak against the simulator, and slow or many scrapers.

``GapTests`` drive one follower with a fake client (time from ``task.Clock``).
``SoakTests`` run the chaos engine (tests/chaos.py) that ``benchmarks/soak.py`` runs for
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

from twisted.application.internet import backoffPolicy
from twisted.internet import defer, protocol, reactor, task
from twisted.logger import Logger, globalLogPublisher
from twisted.trial import unittest

from cadvisor_events.cadvisor import CAdvisorClient, parse_target
from cadvisor_events.counters import EventCounters
from cadvisor_events.event import Event
from cadvisor_events.fleet import FleetService
from cadvisor_events.follower import Follower
from cadvisor_events.ledger import MAX_OOMS, MAX_WINDOW_EVENTS
from cadvisor_events.httpclients import stream_http_client
from cadvisor_events.targets import TargetSpec
from cadvisor_events.testing import FakeClient

from .chaos import KINDS, Chaos
from .support import (
    NO_JITTER, SCRAPE_BUDGET, TARGET, A, B, C, D, E, Healthy, Hosts, Rig, before, counted, event, figures, key,
    rss, transport_of, ts, until,
)

log = Logger()


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
        yield until(lambda: all(f.state == "up" for f in followers.values()), "every stream up")

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
            yield until(back, "every host back", timeout=30)
        except AssertionError:
            self.fail("not back: " + "; ".join(
                f"{name}: {followers[name].state} {followers[name].failures} streams={sim.open_streams}"
                for name, sim in hosts.by_name().items()
                if followers[name].state != "up" or sim.open_streams != 1))
        last = {name: sim.emit_random(3)[-1].timestamp_ns for name, sim in hosts.by_name().items()}
        yield until(lambda: all(followers[name]._ledger.newest_ns >= ns for name, ns in last.items()),
                    "the last events counted live", timeout=30)

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
