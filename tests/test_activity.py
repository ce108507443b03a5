"""The ring of per-minute counts by event type, the rate, and the bounded state history."""

from twisted.internet.task import Clock
from twisted.trial import unittest

from cadvisor_events.activity import MINUTES, STATE_CHANGES, Activity, note_state_change
from cadvisor_events.counters import EventCounters
from cadvisor_events.event import Event


def counted(counters: EventCounters, kind: str, n: int = 1, container: str = "/docker/a") -> None:
    host = counters.host("h:1")
    for _ in range(n):
        host.count(Event(container_name=container, timestamp="2026-11-24T17:25:55Z", event_type=kind))


class ActivityTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_800_000_000)  # a whole minute: 30,000,000 minutes
        self.counters = EventCounters(self.clock)
        self.activity = Activity(self.counters.counted, self.clock)

    def test_counting_feeds_the_totals_by_type(self):
        counted(self.counters, "oomKill", 3)
        counted(self.counters, "containerCreation", 2)
        self.assertEqual(self.counters.counted(), {"oomKill": 3, "containerCreation": 2})

    def test_events_land_in_the_minute_they_were_sampled(self):
        counted(self.counters, "oomKill", 2)
        self.activity.sample()
        self.clock.advance(60)
        counted(self.counters, "oomKill", 5)
        counted(self.counters, "oom", 1)
        per_minute = self.activity.per_minute()
        self.assertEqual(set(per_minute), {"oom", "oomKill"})
        self.assertEqual(len(per_minute["oomKill"]), MINUTES)
        self.assertEqual(per_minute["oomKill"][-2:], [2, 5])
        self.assertEqual(per_minute["oom"][-2:], [0, 1])
        self.assertEqual(sum(per_minute["oomKill"][:-2]), 0)
        self.assertEqual(self.activity.oom_kills_last_hour(), 7)
        self.assertEqual(self.activity.oom_kills_per_minute()[-1], 5)

    def test_the_ring_is_bounded_to_the_hour(self):
        for minute in range(3 * MINUTES):
            counted(self.counters, "oomKill", 1)
            self.activity.sample()
            self.clock.advance(60)
        self.assertEqual(len(self.activity.ring), MINUTES)
        self.assertEqual(self.activity.oom_kills_last_hour(), MINUTES - 1)  # this minute: none yet
        self.clock.advance(3 * 3600)  # an idle stretch: everything ages out
        self.assertEqual(self.activity.oom_kills_last_hour(), 0)
        self.assertNotIn("oomKill", self.activity.per_minute())  # no line for a type not seen this hour

    def test_samples_every_few_seconds_sum_into_one_minute(self):
        for _ in range(12):
            counted(self.counters, "containerCreation", 10)
            self.clock.advance(5)
            self.activity.sample()
        per_minute = self.activity.per_minute()["containerCreation"]
        self.assertEqual(sum(per_minute), 120)
        self.assertEqual(per_minute[-1] + per_minute[-2], 120)

    def test_events_per_second_over_the_last_minute(self):
        self.assertEqual(self.activity.events_per_second(), 0.0)
        for _ in range(24):  # two minutes at 20 events/s, then it stops
            counted(self.counters, "oom", 100)
            self.clock.advance(5)
            self.activity.sample()
        self.assertAlmostEqual(self.activity.events_per_second(), 20.0, delta=2.0)
        for _ in range(13):
            self.clock.advance(5)
            self.activity.sample()
        self.assertEqual(self.activity.events_per_second(), 0.0)

    def test_reading_often_keeps_the_sample_list_bounded(self):
        for _ in range(10_000):
            self.clock.advance(0.1)
            self.activity.events_per_second()
        self.assertLessEqual(len(self.activity.samples), self.activity.samples.maxlen)

    def test_uptime(self):
        self.clock.advance(90)
        self.assertEqual(self.activity.uptime(), 90)


class StateChangesTests(unittest.TestCase):
    def test_the_last_changes_are_kept_in_order(self):
        changes: list = []
        for i in range(STATE_CHANGES + 7):
            note_state_change(changes, float(i), "down" if i % 2 else "up", f"why {i}" if i % 2 else None)
        self.assertEqual(len(changes), STATE_CHANGES)
        self.assertEqual(changes[0], (7.0, "down", "why 7"))
        self.assertEqual(changes[-1], (STATE_CHANGES + 6.0, "up", None))
