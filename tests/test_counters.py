"""Tests for cadvisor_events.counters: counting, retention, the cap, rendering."""

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial import unittest

from cadvisor_events.counters import EventCounters
from cadvisor_events.event import Event, EventData, OomKill
from cadvisor_events.exposition import family_header


def event(container, event_type, process=None, ts="2026-11-24T17:25:55.1Z"):
    data = EventData(oom=OomKill(pid=1, process_name=process)) if process is not None else EventData()
    return Event(container_name=container, timestamp=ts, event_type=event_type, event_data=data)


def parse(counters):
    text = family_header().decode() + counters.render()
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class CountingTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.counters = EventCounters(self.clock, series_ttl=100, max_series=10)

    def test_counts_by_seed_key_per_host(self):
        a = self.counters.host("a:8080")
        b = self.counters.host("b:8080", labels=(("cluster", "prod"),))
        a.count(event("/docker/1", "oomKill", "java"))
        a.count(event("/docker/1", "oomKill", "java"))
        a.count(event("/docker/1", "oomKill", "node"))
        b.count(event("/docker/1", "oom"))
        self.assertEqual(
            self.counters.snapshot(),
            {
                ("a:8080", "/docker/1", "oomKill", "java"): 2,
                ("a:8080", "/docker/1", "oomKill", "node"): 1,
                ("b:8080", "/docker/1", "oom", ""): 1,
            },
        )
        parsed = parse(self.counters)
        self.assertEqual(
            parsed[(("cluster", "prod"), ("event_type", "oom"), ("host", "b:8080"),
                    ("id", "/docker/1"), ("oom_process", ""))],
            1.0,
        )
        self.assertEqual(len(parsed), 3)

    def test_hostile_label_values_render_validly(self):
        host = self.counters.host("h:1", labels=(("note", 'say "hi"\\\n'),))
        host.count(event('/a"b\\c\nd', "oomKill", '<&> "x" \\ \u00e9'))
        (labels,) = parse(self.counters)
        self.assertIn(("oom_process", '<&> "x" \\ \u00e9'), labels)
        self.assertIn(("id", '/a"b\\c\nd'), labels)
        self.assertIn(("note", 'say "hi"\\\n'), labels)

    def test_reserved_label_refused(self):
        with self.assertRaises(ValueError):
            self.counters.host("h:1", labels=(("id", "x"),))

    def test_series_outlive_deletion_until_ttl(self):
        host = self.counters.host("h:1")
        host.count(event("/docker/1", "oomKill", "java"))
        host.count(event("/docker/1", "containerDeletion"))
        host.count(event("/docker/2", "containerCreation"))
        self.clock.advance(99)
        self.assertEqual(self.counters.expire(), 0)
        self.assertEqual(self.counters.series_count, 3)
        self.clock.advance(1)
        self.assertEqual(self.counters.expire(), 2)
        self.assertEqual(self.counters.snapshot(), {("h:1", "/docker/2", "containerCreation", ""): 1})
        self.assertEqual(self.counters.evicted["ttl"], 2)

    def test_recreated_container_is_not_expired(self):
        host = self.counters.host("h:1")
        host.count(event("/docker/1", "containerDeletion"))
        host.count(event("/docker/1", "containerCreation"))
        self.clock.advance(1000)
        self.assertEqual(self.counters.expire(), 0)

    def test_ttl_zero_keeps_everything(self):
        counters = EventCounters(self.clock, series_ttl=0)
        host = counters.host("h:1")
        host.count(event("/docker/1", "containerDeletion"))
        self.clock.advance(10**9)
        self.assertEqual(counters.expire(), 0)
        self.assertEqual(counters.series_count, 1)

    def test_cap_evicts_least_recently_updated(self):
        host = self.counters.host("h:1")
        for i in range(10):
            host.count(event(f"/docker/{i}", "containerCreation"))
        host.count(event("/docker/0", "containerCreation"))  # 0 is now the freshest
        host.count(event("/docker/new", "containerCreation"))
        self.assertEqual(self.counters.series_count, 10)
        keys = {k[1] for k in self.counters.snapshot()}
        self.assertNotIn("/docker/1", keys)
        self.assertIn("/docker/0", keys)
        self.assertIn("/docker/new", keys)
        self.assertEqual(self.counters.evicted["max_series"], 1)

    def test_remove_host_drops_its_series(self):
        self.counters.host("a:1").count(event("/docker/1", "oom"))
        self.counters.host("b:1").count(event("/docker/1", "oom"))
        self.counters.remove_host("a:1")
        self.assertEqual(list(self.counters.snapshot()), [("b:1", "/docker/1", "oom", "")])
        self.assertEqual(self.counters.evicted["target_removed"], 1)
        self.assertEqual(self.counters.series_count, 1)

    def test_label_change_gives_fresh_series(self):
        self.counters.host("a:1", labels=(("x", "1"),)).count(event("/docker/1", "oom"))
        fresh = self.counters.host("a:1", labels=(("x", "2"),))
        self.assertEqual(fresh.values(), {})
        self.assertEqual(self.counters.series_count, 0)

    def test_big_values_render_like_go(self):
        host = self.counters.host("h:1")
        host.count(event("/docker/1", "oom"))
        next(iter(host.series.values())).count = 1_234_567
        self.assertIn("} 1.234567e+06\n", self.counters.render())

    def test_empty_render(self):
        self.assertEqual(self.counters.render(), "")
