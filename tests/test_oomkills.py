"""Tests for cadvisor_events.oomkills: series at 0, kills, retention, rendering, recent kills."""

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial import unittest

from cadvisor_events.oomkills import OomKills, RecentKill

CHECKOUT = ("payments", "checkout-7d9f", "api")


def kill(ns=1, host="h:1", cgroup="/c1", limit=None, process="java", pid=7, key=("", "", "")):
    return RecentKill(ns=ns * 10**9, timestamp=f"2026-11-24T17:00:{ns % 60:02d}Z", host=host,
                      namespace=key[0], pod=key[1], container=key[2], cgroup=cgroup,
                      limit_cgroup=limit or cgroup, process=process, pid=pid)


def samples(kills, openmetrics=False):
    text = kills.render(openmetrics).decode() + ("# EOF\n" if openmetrics else "")
    if openmetrics:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse
    else:
        parse = text_string_to_metric_families
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parse(text)
        for s in family.samples
    }


class SeriesTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.kills = OomKills(self.clock, series_ttl=100)
        self.host = self.kills.host("h:1", (("cluster", "eu"),))

    def test_a_learned_container_is_at_zero_then_counts_its_kills(self):
        self.host.learned("/c1", CHECKOUT)
        self.assertEqual(self.host.values(), {CHECKOUT: 0})
        labels = (("cluster", "eu"), ("container", "api"), ("host", "h:1"), ("namespace", "payments"),
                  ("pod", "checkout-7d9f"))
        self.assertEqual(samples(self.kills)[("cadvisor_container_oom_kills_total", labels)], 0)
        self.host.killed(kill(cgroup="/c1"), "/c1", ("ignored", "", ""))  # its learned key wins
        self.host.killed(kill(ns=2, cgroup="/c1"), "/c1", CHECKOUT)
        self.assertEqual(samples(self.kills)[("cadvisor_container_oom_kills_total", labels)], 2)
        self.assertEqual([k.container for k in self.kills.recent()], ["api", "api"])

    def test_a_node_series_at_zero_for_every_host_once_its_history_is_counted(self):
        other = self.kills.host("h:2")
        self.assertNotIn(b"cadvisor_node_oom_kills_total{", self.kills.render())
        self.host.killed(kill(cgroup="/", limit="/"), None, None)  # from the history
        self.host.ready()
        other.ready()
        found = {labels: value for (name, labels), value in samples(self.kills).items()
                 if name == "cadvisor_node_oom_kills_total"}
        self.assertEqual(found, {(("cluster", "eu"), ("host", "h:1")): 1, (("host", "h:2"),): 0})
        self.assertEqual(other.values(), {})
        self.assertTrue(self.kills.recent()[0].node_oom)

    def test_a_restarted_container_continues_the_series(self):
        self.host.learned("/pod1/c-first", CHECKOUT)
        self.host.killed(kill(cgroup="/pod1/c-first"), "/pod1/c-first", CHECKOUT)
        self.host.deleted("/pod1/c-first")
        self.host.learned("/pod1/c-second", CHECKOUT)  # the kubelet restarted it: same labels
        self.host.killed(kill(ns=5, cgroup="/pod1/c-second"), "/pod1/c-second", CHECKOUT)
        self.assertEqual(self.host.values(), {CHECKOUT: 2})
        self.clock.advance(1000)
        self.assertEqual(self.kills.expire(), 0)  # the second lives on
        self.assertEqual(self.host.values(), {CHECKOUT: 2})

    def test_the_series_goes_ttl_after_its_last_container_is_deleted(self):
        self.host.learned("/a", CHECKOUT)
        self.host.learned("/b", CHECKOUT)
        self.host.deleted("/a")
        self.clock.advance(50)
        self.host.deleted("/b")
        self.clock.advance(99)
        self.assertEqual(self.kills.expire(), 0)
        self.clock.advance(1)
        self.assertEqual(self.kills.expire(), 1)
        self.assertEqual((self.host.values(), self.kills.series_count), ({}, 0))
        self.assertNotIn(b"checkout", self.kills.render())

    def test_a_late_kill_of_a_deleted_container_counts_in_its_series(self):
        self.host.learned("/a", CHECKOUT)
        self.host.deleted("/a")
        self.host.killed(kill(cgroup="/a"), "/a", ("other", "", ""))
        self.assertEqual(self.host.values(), {CHECKOUT: 1})

    def test_a_kill_after_expiry_brings_the_series_back_until_the_ttl(self):
        self.host.learned("/a", CHECKOUT)
        self.host.deleted("/a")
        self.clock.advance(100)
        self.kills.expire()
        self.host.killed(kill(cgroup="/raw"), "/raw", ("", "", "/raw"))  # never learned: born at 1
        self.assertEqual(self.host.values(), {("", "", "/raw"): 1})
        self.assertEqual(self.host.keys, [("", "", "/raw")])  # the slot was reused

    def test_a_recreated_cgroup_keeps_its_key(self):
        self.host.learned("/a", CHECKOUT)
        self.host.deleted("/a")
        self.host.learned("/a", ("x", "y", "z"))  # docker restart: the same container
        self.assertEqual(self.host.values(), {CHECKOUT: 0})
        self.clock.advance(1000)
        self.assertEqual(self.kills.expire(), 0)

    def test_changed_labels_give_a_fresh_host_and_removal_drops_it(self):
        self.host.learned("/a", CHECKOUT)
        fresh = self.kills.host("h:1", (("cluster", "us"),))
        self.assertIsNot(fresh, self.host)
        self.assertEqual((fresh.values(), self.kills.series_count), ({}, 0))
        self.kills.remove_host("h:1")
        self.assertEqual(self.kills.render().count(b"\n"), 4)  # the two headers only

    def test_hostile_values_render_validly_in_both_formats(self):
        hostile = ('ns"\\', "pod\n", "c <&> \u00e9")
        self.host.learned("/a", hostile)
        for openmetrics in (False, True):
            found = samples(self.kills, openmetrics)
            ((labels, value),) = [(labels, value) for (name, labels), value in found.items()
                                  if name == "cadvisor_container_oom_kills_total"]
            self.assertEqual(dict(labels)["namespace"], 'ns"\\')
            self.assertEqual(dict(labels)["pod"], "pod\n")
            self.assertEqual(dict(labels)["container"], "c <&> \u00e9")

    def test_only_moved_lines_are_rendered_again(self):
        self.host.learned("/a", CHECKOUT)
        self.host.learned("/b", ("payments", "checkout-7d9f", "sidecar"))
        self.kills.render()
        first = list(self.host.parts)
        self.assertIs(first[0], first[3])  # the host's labels: one piece for all its series
        self.host.killed(kill(cgroup="/b"), "/b", ("payments", "checkout-7d9f", "sidecar"))
        self.assertEqual(self.host.touched, [1])
        parts = self.host.render_lines()
        self.assertEqual([a is b for a, b in zip(first, parts)], [True] * 5 + [False])
        self.assertEqual(parts[-1], b"1\n")

    def test_rendered_in_chunks_as_at_once(self):
        for n in range(40):
            self.kills.host(f"n:{n}").learned("/a", CHECKOUT)
            self.kills.host(f"n:{n}").ready()
        chunks = list(self.kills.render_chunks(True, 500))
        self.assertGreater(len(chunks), 3)
        self.assertEqual(b"".join(b"".join(chunk) for chunk in chunks), self.kills.render(True))
        self.assertEqual(len(samples(self.kills, True)), 40 + 40)  # container and node series


class RecentTests(unittest.TestCase):
    def test_keeps_the_newest_by_time_newest_first(self):
        kills = OomKills(Clock(), recent=3)
        host = kills.host("h:1")
        for ns in (5, 1, 9, 3, 7):
            host.killed(kill(ns=ns, cgroup="/", limit="/"), None, None)
        self.assertEqual([k.ns // 10**9 for k in kills.recent()], [9, 7, 5])
        host.killed(kill(ns=2, cgroup="/", limit="/"), None, None)  # older than every kept one
        self.assertEqual(len(kills.recent()), 3)

    def test_json_names_who_was_killed(self):
        kills = OomKills(Clock())
        kills.host("h:1").killed(kill(cgroup="/pod/c", limit="/pod", key=CHECKOUT), "/pod/c", CHECKOUT)
        (entry,) = [k.as_json() for k in kills.recent()]
        self.assertEqual(
            {k: entry[k] for k in ("host", "namespace", "pod", "container", "cgroup", "limit_cgroup",
                                   "process", "pid", "node_oom", "time")},
            {"host": "h:1", "namespace": "payments", "pod": "checkout-7d9f", "container": "api",
             "cgroup": "/pod/c", "limit_cgroup": "/pod", "process": "java", "pid": 7, "node_oom": False,
             "time": "2026-11-24T17:00:01Z"})
        self.assertEqual(entry["timestamp_seconds"], 1.0)
