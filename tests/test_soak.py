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

from twisted.internet import task
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from cadvisor_events.cadvisor import Target
from cadvisor_events.counters import EventCounters
from cadvisor_events.follower import Follower
from cadvisor_events.selfmetrics import FleetMetrics

from .test_follower import NO_JITTER, FakeClient, event, key, ts

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
            if response.protocol is not None and not response.protocol._ended:
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
        self.client.answer_history(A, B, C)
        self.assertEqual(f.gaps, 0)  # a first connect (the seed) is never a gap
        self.reconnect(B, C, D)
        self.assertEqual(self.client.last_start_time, ts(2, 500))
        self.assertEqual((f.gaps, self.counts()), (0, collections.Counter(map(key, [A, B, C, D]))))

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
        self.assertEqual((gap["host"], gap["since"]), (TARGET.name, ts(3, 123456789)))
        self.assertEqual(gap["log_level"].name, "warn")

    def test_history_that_begins_after_the_mark_is_a_gap(self):
        f = self.make()
        self.clock.advance(0)
        self.client.accept()
        self.client.answer_history(A, B, C)
        self.reconnect(D, E)  # B and C aged out (and whatever came between them and D)
        self.assertEqual(f.gaps, 1)
        self.assertEqual(self.counts(), collections.Counter(map(key, [A, B, C, D, E])))
        self.reconnect(E)  # this one still holds the new mark
        self.assertEqual(f.gaps, 1)

    def test_one_of_two_boundary_events_missing_is_a_gap(self):
        f = self.make()
        self.clock.advance(0)
        self.client.accept()
        self.client.answer_history(A, B, C)
        self.reconnect(C, D)  # cAdvisor stores each type apart: the oom store lost B
        self.assertEqual(f.gaps, 1)

    def test_no_seed_and_first_connects_are_never_gaps(self):
        f = self.make(seed_history=False)
        self.clock.advance(0)
        self.client.accept()
        self.reconnect()  # nothing counted yet: no boundary to miss
        self.assertEqual(f.gaps, 0)

    def test_replayed_oom_boundary_hides_a_restart(self):
        """The limit of the rule: when the events counted at the mark are OOMs, a restarted
        cAdvisor re-adds them to its history from the kernel log, so the boundary is still
        there although the creation/deletion events after it are gone. Not a gap we can see."""
        f = self.make()
        self.clock.advance(0)
        self.client.accept()
        self.client.answer_history(A, B, C)
        self.reconnect(B, C)  # restarted: only the replayed OOMs (D, say, was lost)
        self.assertEqual(f.gaps, 0)

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
