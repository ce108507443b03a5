"""Tests for cadvisor_events.exposition: byte-compatibility with the Go seed's output."""

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial import unittest

from cadvisor_events.exposition import (
    escape_label_value,
    format_value,
    render_seed_counts,
)


class FormatValueTests(unittest.TestCase):
    def test_like_go_strconv_g(self):
        # strconv.FormatFloat(v, 'g', -1, 64) as client_golang writes counters.
        cases = {
            0: "0",
            2: "2",
            999_999: "999999",
            1_000_000: "1e+06",
            1_234_567: "1.234567e+06",
            10_000_000: "1e+07",
            100_000_000_000_000_000_000: "1e+20",
        }
        for value, expected in cases.items():
            self.assertEqual(format_value(value), expected)


class RenderTests(unittest.TestCase):
    def test_seed_output_exactly(self):
        body = render_seed_counts(
            {
                ("/docker/b", "oomKill", "node"): 2,
                ("/docker/a", "oom", ""): 1,
                ("/docker/a", "containerCreation", ""): 3,
            }
        )
        self.assertEqual(
            body.decode(),
            "# HELP cadvisor_container_events_total cadvisor events\n"
            "# TYPE cadvisor_container_events_total counter\n"
            'cadvisor_container_events_total{event_type="containerCreation",id="/docker/a",oom_process=""} 3\n'
            'cadvisor_container_events_total{event_type="oom",id="/docker/a",oom_process=""} 1\n'
            'cadvisor_container_events_total{event_type="oomKill",id="/docker/b",oom_process="node"} 2\n',
        )

    def test_empty_history_renders_nothing(self):
        self.assertEqual(render_seed_counts({}), b"")

    def test_hostile_names_round_trip_through_the_parser(self):
        names = ['a "quoted" name', "back\\slash", "new\nline", "<>&", "\u00e9\u65e5 \U0001f600", "a:b c"]
        counts = {(f"/docker/{i}", "oomKill", name): i + 1 for i, name in enumerate(names)}
        text = render_seed_counts(counts).decode()
        parsed = {
            (s.labels["id"], s.labels["event_type"], s.labels["oom_process"]): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        self.assertEqual(parsed, {k: float(v) for k, v in counts.items()})

    def test_escape(self):
        self.assertEqual(escape_label_value('a"b\\c\nd'), 'a\\"b\\\\c\\nd')
        self.assertEqual(escape_label_value("plain"), "plain")
