"""Tests for cadvisor_events.selfmetrics: the ``cadvisor_events_*`` families of a fleet.

Most tests render a fleet view of fake followers (``FakeFleet`` of
``FakeFollower`` values, as ``interfaces.FleetView`` and ``HostStatus``
describe them) with real counters, and read the output back through
prometheus_client's parsers; the last ones render real followers driven by
the fake client of ``cadvisor_events.testing``.
"""

from __future__ import annotations

import platform

import twisted
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial import unittest

from cadvisor_events import BuildInfo, __version__
from cadvisor_events.cadvisor import Target
from cadvisor_events.counters import EventCounters
from cadvisor_events.event import Event, decode_event, timestamp_ns
from cadvisor_events.selfmetrics import FleetMetrics

from .support import A, FakeFleet, FakeFollower, FakeWatcher, FollowerTestCase, event

#: Every family as the text format names it (counters with ``_total``), and its type.
FAMILIES = {
    "cadvisor_events_build_info": "gauge",
    "cadvisor_events_target_up": "gauge",
    "cadvisor_events_received_total": "counter",
    "cadvisor_events_invalid_lines_total": "counter",
    "cadvisor_events_stream_connects_total": "counter",
    "cadvisor_events_backfilled_total": "counter",
    "cadvisor_events_duplicates_dropped_total": "counter",
    "cadvisor_events_gaps_total": "counter",
    "cadvisor_events_future_events_total": "counter",
    "cadvisor_events_stream_failures_total": "counter",
    "cadvisor_events_dedup_evicted_total": "counter",
    "cadvisor_events_last_event_timestamp_seconds": "gauge",
    "cadvisor_events_series": "gauge",
    "cadvisor_events_series_evicted_total": "counter",
    "cadvisor_events_targets": "gauge",
}
#: The families of the targets-file watcher, only there when there is one.
WATCHER_FAMILIES = {
    "cadvisor_events_config_last_reload_successful": "gauge",
    "cadvisor_events_config_last_reload_success_timestamp_seconds": "gauge",
}


def declared(test: unittest.TestCase, text: str) -> dict:
    """``{family: (type, help, [sample names])}`` in the order written, checking that every
    family opens with its HELP line then its TYPE line, and that no sample comes before them."""
    families: dict = {}
    name = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, help_text = line[len("# HELP "):].split(" ", 1)
            test.assertNotIn(name, families)
            families[name] = [None, help_text, []]
        elif line.startswith("# TYPE "):
            typed, kind = line[len("# TYPE "):].split(" ")
            test.assertEqual((typed, families[name][0]), (name, None), line)  # right after its HELP
            families[name][0] = kind
        else:
            test.assertIsNotNone(name and families[name][0], line)
            families[name][2].append(line.split("{")[0].split(" ")[0])
    return {name: tuple(value) for name, value in families.items()}


def samples(text: str, openmetrics: bool = False) -> dict:
    """``{(sample name, labels as sorted pairs): value}`` as prometheus_client parses ``text``."""
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in parse(text) for s in f.samples}


def by_host(text: str, sample: str, *labels: str) -> dict:
    """One family's values by host (and by ``labels``, in that order)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample:
                host = s.labels["host"]
                found[(host,) + tuple(s.labels[label] for label in labels) if labels else host] = s.value
    return found


class FleetMetricsTests(unittest.TestCase):
    def render(self, *followers, watcher=None, openmetrics: bool = False, counters=None, build=None) -> str:
        fleet = FakeFleet(followers or [FakeFollower("a:1"), FakeFollower("b:1", up=False)])
        return FleetMetrics(fleet, counters or EventCounters(Clock()), watcher, build).render(openmetrics)

    def test_every_family_has_help_and_type_named_as_the_text_format_wants(self):
        families = declared(self, self.render(watcher=FakeWatcher()))
        self.assertEqual({name: kind for name, (kind, _, _) in families.items()}, {**FAMILIES, **WATCHER_FAMILIES})
        for name, (kind, help_text, sample_names) in families.items():
            self.assertTrue(help_text.strip(), name)
            self.assertEqual(set(sample_names) - {name}, set(), name)  # a sample is named as its family

    def test_openmetrics_names_counter_families_without_total_and_their_samples_with_it(self):
        text = self.render(watcher=FakeWatcher())
        families = declared(self, self.render(watcher=FakeWatcher(), openmetrics=True))
        wanted = {name[:-len("_total")] if kind == "counter" else name: kind
                  for name, kind in {**FAMILIES, **WATCHER_FAMILIES}.items()}
        self.assertEqual({name: kind for name, (kind, _, _) in families.items()}, wanted)
        helps = {name: help_text for name, (_, help_text, _) in declared(self, text).items()}
        for name, (kind, help_text, sample_names) in families.items():
            sample_name = name + "_total" if kind == "counter" else name
            self.assertEqual(set(sample_names) - {sample_name}, set(), name)
            self.assertEqual(help_text, helps[sample_name])  # the same HELP in both formats

    def test_per_host_values_come_from_the_followers_attributes(self):
        a = FakeFollower("a:1", received=11, invalid_lines=12, connects=13, backfilled=14,
                         duplicates_dropped=15, gaps=16, future_events=17)
        b = FakeFollower("b:1", up=False)
        text = self.render(a, b)
        values = {name: by_host(text, name) for name in FAMILIES if name not in (
            "cadvisor_events_stream_failures_total", "cadvisor_events_dedup_evicted_total",  # by reason, state
            "cadvisor_events_series", "cadvisor_events_series_evicted_total", "cadvisor_events_targets",
            "cadvisor_events_build_info")}  # fleet-wide
        self.assertEqual(values, {
            "cadvisor_events_target_up": {"a:1": 1, "b:1": 0},
            "cadvisor_events_received_total": {"a:1": 11, "b:1": b.received},
            "cadvisor_events_invalid_lines_total": {"a:1": 12, "b:1": b.invalid_lines},
            "cadvisor_events_stream_connects_total": {"a:1": 13, "b:1": b.connects},
            "cadvisor_events_backfilled_total": {"a:1": 14, "b:1": b.backfilled},
            "cadvisor_events_duplicates_dropped_total": {"a:1": 15, "b:1": b.duplicates_dropped},
            "cadvisor_events_gaps_total": {"a:1": 16, "b:1": b.gaps},
            "cadvisor_events_future_events_total": {"a:1": 17, "b:1": b.future_events},
            "cadvisor_events_last_event_timestamp_seconds": {"a:1": a.last_event_time},
        })
        a.received, a.up = 99, False  # read at every render, never copied
        text = self.render(a, b)
        self.assertEqual(by_host(text, "cadvisor_events_received_total"), {"a:1": 99, "b:1": b.received})
        self.assertEqual(by_host(text, "cadvisor_events_target_up"), {"a:1": 0, "b:1": 0})

    def test_label_values_are_escaped(self):
        host = Target('we"ird\\host\nname', 9)
        reason = 'bad "reason"\\\n'
        odd = FakeFollower("x:1", target=host, failures={reason: 3})
        text = self.render(odd)
        self.assertIn('cadvisor_events_target_up{host="we\\"ird\\\\host\\nname:9"} 1\n', text)
        self.assertIn('reason="bad \\"reason\\"\\\\\\n"} 3\n', text)
        self.assertEqual(by_host(text, "cadvisor_events_stream_failures_total", "reason"), {(host.name, reason): 3})
        self.assertEqual(by_host(text, "cadvisor_events_received_total"), {host.name: odd.received})
        parsed = samples(self.render(odd, openmetrics=True) + "# EOF\n", openmetrics=True)
        self.assertEqual(parsed[("cadvisor_events_stream_failures_total", (("host", host.name), ("reason", reason)))], 3)

    def test_stream_failures_has_one_sample_per_reason(self):
        a = FakeFollower("a:1", up=False, failures={"refused": 1, "eof": 2, "timeout": 5})
        b = FakeFollower("b:1")  # no failure: no sample
        text = self.render(a, b)
        self.assertEqual(by_host(text, "cadvisor_events_stream_failures_total", "reason"),
                         {("a:1", "eof"): 2, ("a:1", "refused"): 1, ("a:1", "timeout"): 5})
        self.assertEqual(text.count("cadvisor_events_stream_failures_total{"), 3)

    def test_dedup_evicted_has_one_sample_per_state(self):
        a = FakeFollower("a:1", dedup_evicted={"window": 3, "oom": 4})
        b = FakeFollower("b:1", dedup_evicted={"window": 0, "oom": 0})
        text = self.render(a, b)
        self.assertEqual(by_host(text, "cadvisor_events_dedup_evicted_total", "state"),
                         {("a:1", "oom"): 4, ("a:1", "window"): 3, ("b:1", "oom"): 0, ("b:1", "window"): 0})
        self.assertEqual(text.count("cadvisor_events_dedup_evicted_total{"), 4)

    def test_last_event_timestamp_is_absent_for_a_host_with_no_event(self):
        a = FakeFollower("a:1", last_event_time=1_764_005_155.123456789)
        b = FakeFollower("b:1", last_event_time=None)
        for openmetrics in (False, True):
            text = self.render(a, b, openmetrics=openmetrics)
            lines = [line for line in text.splitlines() if line.startswith("cadvisor_events_last_event_timestamp")]
            self.assertEqual(len(lines), 1, text)
            self.assertIn('{host="a:1"}', lines[0])
            self.assertIn("# TYPE cadvisor_events_last_event_timestamp_seconds gauge\n", text)
        self.assertEqual(by_host(text, "cadvisor_events_last_event_timestamp_seconds"), {"a:1": a.last_event_time})

    def test_fleet_wide_families_come_from_the_counters_and_the_fleet(self):
        counters = EventCounters(Clock())
        counters.host("a:1").count(Event("/docker/a", "2026-11-24T17:25:55Z", "oom"))
        counters.host("gone:1").count(Event("/docker/g", "2026-11-24T17:25:55Z", "oom"))
        counters.remove_host("gone:1")
        parsed = samples(self.render(FakeFollower("a:1"), FakeFollower("b:1"), counters=counters))
        self.assertEqual(parsed[("cadvisor_events_series", ())], 1)
        self.assertEqual(parsed[("cadvisor_events_targets", ())], 2)
        evicted = {labels: value for (name, labels), value in parsed.items()
                   if name == "cadvisor_events_series_evicted_total"}
        self.assertEqual(evicted, {(("reason", "max_series"),): 0, (("reason", "target_removed"),): 1,
                                   (("reason", "ttl"),): 0})

    def test_build_info_is_one_sample_labeled_with_this_process_versions(self):
        labels = {"version": __version__, "python_version": platform.python_version(),
                  "twisted_version": twisted.__version__}
        for openmetrics in (False, True):
            text = self.render(openmetrics=openmetrics)
            self.assertEqual(text.count("cadvisor_events_build_info"), 3, text)  # HELP, TYPE, one sample
            parsed = samples(text + ("# EOF\n" if openmetrics else ""), openmetrics)
            self.assertEqual(parsed[("cadvisor_events_build_info", tuple(sorted(labels.items())))], 1)
        self.assertIn('cadvisor_events_build_info{version="%(version)s",python_version="%(python_version)s",'
                      'twisted_version="%(twisted_version)s"} 1\n' % labels, text)

    def test_build_info_label_values_are_escaped(self):
        odd = BuildInfo(version='1.0"rc\\1\n', python_version="3.x", twisted_version="t")
        text = self.render(build=odd)
        self.assertIn('cadvisor_events_build_info{version="1.0\\"rc\\\\1\\n",python_version="3.x",'
                      'twisted_version="t"} 1\n', text)
        for openmetrics in (False, True):
            text = self.render(build=odd, openmetrics=openmetrics)
            parsed = samples(text + ("# EOF\n" if openmetrics else ""), openmetrics)
            self.assertEqual(parsed[("cadvisor_events_build_info", tuple(sorted(odd.labels())))], 1)

    def test_reload_families_only_with_a_watcher(self):
        self.assertNotIn("cadvisor_events_config_", self.render())
        parsed = samples(self.render(watcher=FakeWatcher()))
        self.assertEqual(parsed[("cadvisor_events_config_last_reload_successful", ())], 0)
        self.assertEqual(parsed[("cadvisor_events_config_last_reload_success_timestamp_seconds", ())],
                         FakeWatcher.last_reload_success_time)
        never = FakeWatcher()
        never.last_reload_success_time = None
        text = self.render(watcher=never)
        self.assertIn("cadvisor_events_config_last_reload_successful 0\n", text)
        self.assertNotIn("cadvisor_events_config_last_reload_success_timestamp_seconds", text)

    def test_the_output_parses_as_the_text_format_and_as_openmetrics(self):
        followers = [
            FakeFollower("a:1", failures={"eof": 2}, dedup_evicted={"window": 1, "oom": 2}),
            FakeFollower("b:1", up=False, last_event_time=None),
            FakeFollower("x:1", target=Target('q"uo\\te\n', 1), failures={'r"\\\n': 1}),
        ]
        text = self.render(*followers, watcher=FakeWatcher())
        parsed = samples(text)
        self.assertEqual({name for name, _ in parsed}, set(FAMILIES) | set(WATCHER_FAMILIES))
        openmetrics = self.render(*followers, watcher=FakeWatcher(), openmetrics=True)
        self.assertNotIn("# EOF", openmetrics)  # a part of /metrics: MetricsResource ends the document
        self.assertEqual(samples(openmetrics + "# EOF\n", openmetrics=True), parsed)


class FollowerFiguresTests(FollowerTestCase):
    """A real follower's figures reach the self-metrics (the attributes are the ones read)."""

    def test_gaps_in_self_metrics(self):
        f = self.make()
        self.up(A)
        self.client.responses[-1].cut()
        self.clock.advance(1)
        self.client.accept()
        self.client.answer_history()  # cAdvisor restarted: nothing in history
        self.assertEqual(f.state, "up")
        text = FleetMetrics(FakeFleet([f]), EventCounters(self.clock)).render()
        self.assertIn("# TYPE cadvisor_events_gaps_total counter\n", text)
        self.assertIn('cadvisor_events_gaps_total{host="cadvisor.example:8080"} 1\n', text)
        self.assertEqual(self.follower.__class__.__slots__.count("gaps"), 1)

    def test_the_self_metric_reports_future_events(self):
        f = self.make(max_clock_skew=300.0)
        self.clock.advance(timestamp_ns(decode_event(A).timestamp) / 1e9 + 10)  # our clock: just after A
        response = self.up(A)
        response.send(event("/docker/x", "oom", "2099-01-01T00:00:00Z"))
        text = FleetMetrics(FakeFleet([f]), EventCounters(self.clock)).render()
        self.assertIn(f'cadvisor_events_future_events_total{{host="{f.target.name}"}} 1\n', text)
