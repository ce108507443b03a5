"""Tests for cadvisor_events.counters: counting, retention, the cap, rendering."""

import random
from collections import OrderedDict

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
    text = (family_header() + counters.render()).decode()
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

    def test_counted_by_type_holds_every_count_read_at_any_time(self):
        rng = random.Random(7)
        truth: dict = {}
        types = ("oom", "oomKill", "containerCreation", "containerDeletion")
        for step in range(3000):
            host = self.counters.host(f"h:{rng.randrange(3)}")
            kind = rng.choice(types)
            host.count(event(f"/docker/{rng.randrange(8)}", kind))  # 96 keys over a cap of 10
            truth[kind] = truth.get(kind, 0) + 1
            if step % 500 == 499:
                self.counters.remove_host("h:2")  # counted just now, then forgotten
            if rng.random() < 0.05:
                self.clock.advance(101)
                self.counters.expire()
            if rng.random() < 0.1:
                self.assertEqual(self.counters.counted(), truth)
        self.assertGreater(self.counters.evicted["max_series"], 0)
        self.assertGreater(self.counters.evicted["ttl"], 0)
        self.assertEqual(self.counters.counted(), truth)

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
        host.counts[next(iter(host.series.values()))] = 1_234_567
        self.assertIn(b"} 1.234567e+06\n", self.counters.render())

    def test_empty_render(self):
        self.assertEqual(self.counters.render(), b"")


class RenderCacheTests(unittest.TestCase):
    """/metrics renders from per-host blocks that must follow every change."""

    def setUp(self):
        self.clock = Clock()
        self.counters = EventCounters(self.clock, series_ttl=100, max_series=3)

    def test_only_changed_lines_are_rendered_again(self):
        host = self.counters.host("a:1")
        host.count(event("/docker/1", "oom"))
        host.count(event("/docker/2", "oom"))
        first = self.counters.render()
        pieces = list(host.render_lines())
        self.assertIsNone(host.touched)  # nothing to render again (no list kept while empty)
        host.count(event("/docker/2", "oom"))
        host.count(event("/docker/2", "oom"))
        self.assertEqual(len(host.touched), 1)  # listed once, however often counted
        again = host.render_lines()
        self.assertEqual([a is b for a, b in zip(pieces, again)], [True] * 9 + [False])
        self.assertEqual(again[-1], b"3\n")
        self.assertEqual(self.counters.render(), first.replace(b"} 1\n", b"} 3\n").replace(
            b'id="/docker/1",oom_process=""} 3', b'id="/docker/1",oom_process=""} 1'))

    def test_a_forgotten_series_slot_is_reused(self):
        host = self.counters.host("a:1")
        host.count(event("/docker/1", "containerDeletion"))
        host.count(event("/docker/2", "oom"))
        self.clock.advance(101)
        self.counters.expire()
        host.count(event("/docker/3", "oom"))
        self.assertEqual(len(host.keys), 2)
        self.assertEqual(self.counters.render().count(b"\n"), 2)

    def test_counts_added_after_a_render_show_in_the_next(self):
        a, b = self.counters.host("a:1"), self.counters.host("b:1")
        a.count(event("/docker/1", "oom"))
        b.count(event("/docker/2", "oom"))
        self.counters.render()
        a.count(event("/docker/1", "oom"))
        a.count(event("/docker/3", "oomKill", "java"))
        self.assertEqual(parse(self.counters), {
            (("event_type", "oom"), ("host", "a:1"), ("id", "/docker/1"), ("oom_process", "")): 2,
            (("event_type", "oomKill"), ("host", "a:1"), ("id", "/docker/3"), ("oom_process", "java")): 1,
            (("event_type", "oom"), ("host", "b:1"), ("id", "/docker/2"), ("oom_process", "")): 1,
        })

    def test_expired_and_evicted_series_leave_the_rendering(self):
        host = self.counters.host("a:1")
        host.count(event("/docker/1", "containerDeletion"))
        host.count(event("/docker/2", "oom"))
        self.assertIn(b'id="/docker/1"', self.counters.render())
        self.clock.advance(101)
        self.counters.expire()
        self.assertNotIn(b'id="/docker/1"', self.counters.render())
        for n in (3, 4, 5):  # the cap is 3: /docker/2 is the least recently updated
            host.count(event(f"/docker/{n}", "oom"))
        text = self.counters.render()
        self.assertNotIn(b'id="/docker/2"', text)
        self.assertEqual(text.count(b"\n"), 3)

    def test_a_removed_host_leaves_the_rendering(self):
        self.counters.host("a:1").count(event("/docker/1", "oom"))
        self.counters.render()
        self.counters.remove_host("a:1")
        self.assertEqual(self.counters.render(), b"")


class LabelSourceTests(unittest.TestCase):
    """Labels saying who a container is: asked once, when a series is born, never again."""

    def setUp(self):
        self.clock = Clock()
        self.counters = EventCounters(self.clock, series_ttl=100)
        self.host = self.counters.host("h:1", labels=(("cluster", "eu"),))
        self.asked = []
        self.who = {"/docker/1": 'container="api",'}

        def source(key):
            self.asked.append(key)
            return key[3] if len(key) > 3 else self.who.get(key[0], 'container="",')

        self.host.label_source = source

    def test_labels_are_rendered_at_birth_and_kept(self):
        self.host.count(event("/docker/1", "oom"))
        self.who["/docker/1"] = 'container="renamed",'
        self.host.count(event("/docker/1", "oom"))
        self.assertEqual(self.asked, [("/docker/1", "oom", "")])
        self.assertEqual(parse(self.counters), {
            (("cluster", "eu"), ("container", "api"), ("event_type", "oom"), ("host", "h:1"),
             ("id", "/docker/1"), ("oom_process", "")): 2})

    def test_a_longer_key_is_its_own_series_summed_under_its_counting_key(self):
        self.host.count(event("/pod", "oomKill", "java"))
        self.host.count_key(("/pod", "oomKill", "java", 'container="api",'))
        self.host.count_key(("/pod", "oomKill", "java", 'container="envoy",'))
        self.assertEqual({labels: value for labels, value in parse(self.counters).items()
                          if ("container", "envoy") in labels}.popitem()[1], 1)
        self.assertEqual(len(parse(self.counters)), 3)
        self.assertEqual(self.host.values(), {("/pod", "oomKill", "java"): 3})
        self.assertEqual(self.counters.snapshot(), {("h:1", "/pod", "oomKill", "java"): 3})
        self.host.count(event("/pod", "containerDeletion"))
        self.clock.advance(100)
        self.assertEqual(self.counters.expire(), 4)

    def test_families_after_render_with_their_headers(self):
        rendered = []

        class Family:
            def render_into(self, parts, openmetrics=False):
                rendered.append(openmetrics)
                parts.append(b"# TYPE x counter\nx_total 1\n")

        self.counters.families_after.append(Family())
        self.host.count(event("/docker/1", "oom"))
        parts = []
        self.counters.render_into(parts, True)
        self.assertEqual((rendered, parts[-1]), ([True], b"# TYPE x counter\nx_total 1\n"))
        self.assertTrue(self.counters.render().endswith(b"x_total 1\n"))

    def test_the_labels_this_exporter_sets_are_reserved(self):
        for name in ("namespace", "pod", "container", "image", "name"):
            with self.assertRaises(ValueError):
                self.counters.host("h:2", labels=((name, "x"),))


def fresh(text):
    """An equal string that is another object, as every decoded event's strings are."""
    return text[:1] + text[1:]


class SharedPiecesTests(unittest.TestCase):
    """A series is a slot of label pieces its container's other series share, never a line of its own."""

    def setUp(self):
        self.clock = Clock()
        self.counters = EventCounters(self.clock, series_ttl=100)
        self.host = self.counters.host("h:1", labels=(("cluster", "eu"),))
        self.who = {"/pod/c1": 'namespace="shop",container="api",'}
        self.host.label_source = lambda key: key[3] if len(key) > 3 else self.who.get(key[0], "")

    def test_a_containers_series_share_its_pieces_and_strings(self):
        cgroup = "/pod/c1"
        for kind, process in (("containerCreation", ""), ("oom", ""), ("oomKill", "java"), ("oomKill", "node")):
            self.host.count_key((fresh(cgroup), fresh(kind), fresh(process)))
        keys = list(self.host.series)
        self.assertEqual(len({id(key[0]) for key in keys}), 1)  # one cgroup string for four keys
        parts = self.host.render_lines()
        heads, ids = parts[0::5], parts[2::5]
        self.assertTrue(all(head is heads[0] for head in heads))
        self.assertTrue(all(piece is ids[0] for piece in ids))
        other = self.counters.host("h:2")
        other.count_key((fresh(cgroup), fresh("oomKill"), fresh("java")))
        self.assertIs(other.render_lines()[1], parts[11])  # event type and process: fleet-wide
        self.assertIs(other.render_lines()[3], parts[13])
        self.assertEqual(
            self.counters.render().split(b"\n")[2],
            b'cadvisor_container_events_total{host="h:1",cluster="eu",namespace="shop",container="api",'
            b'event_type="oomKill",id="/pod/c1",oom_process="java"} 1')

    def test_a_later_series_of_a_container_gets_the_labels_known_then(self):
        self.host.count(event("/pod/c1", "containerCreation"))
        self.who["/pod/c1"] = 'namespace="shop",container="renamed",'
        self.host.count(event("/pod/c1", "oom"))
        self.host.count(event("/pod/c1", "containerCreation"))
        text = self.counters.render()
        self.assertIn(b'container="api",event_type="containerCreation",id="/pod/c1",oom_process=""} 2\n', text)
        self.assertIn(b'container="renamed",event_type="oom",id="/pod/c1",oom_process=""} 1\n', text)

    def test_what_a_container_shared_goes_with_its_last_series(self):
        self.host.count(event("/pod/c1", "oom"))
        self.host.count(event("/pod/c1", "containerDeletion"))
        self.host.count(event("/pod/c2", "oom"))
        self.assertEqual(set(self.host._containers), {"/pod/c1", "/pod/c2"})
        self.clock.advance(100)
        self.assertEqual(self.counters.expire(), 2)
        self.assertEqual(set(self.host._containers), {"/pod/c2"})
        capped = EventCounters(self.clock, max_series=1)
        host = capped.host("h:1")
        host.count(event("/pod/c1", "oom"))
        host.count(event("/pod/c2", "oom"))  # evicts /pod/c1's only series
        capped.expire()
        self.assertEqual(set(host._containers), {"/pod/c2"})

    def test_a_deleted_container_is_remembered_by_the_shared_name(self):
        self.host.count(event("/pod/c1", "oom"))
        self.host.count_key((fresh("/pod/c1"), "containerDeletion", ""))
        (name,) = self.host.deleted
        self.assertIs(name, next(iter(self.host.series))[0])


class EvictionTests(unittest.TestCase):
    """--max-series evicts exactly the least recently updated series, as an ordered dict would."""

    def test_evictions_match_a_least_recently_updated_model(self):
        for seed, cap in ((1, 7), (2, 40), (3, 1500)):
            rng = random.Random(seed)
            clock = Clock()
            counters = EventCounters(clock, series_ttl=50, max_series=cap)
            model = OrderedDict()  # (host, key) -> count, least recently updated first
            evicted = 0
            for step in range(8000):
                name = f"h:{rng.randrange(4)}"
                key = (f"/docker/{rng.randrange(cap // 2 + 3)}", rng.choice(("oom", "containerCreation")), "")
                counters.host(name).count_key(key)
                model[(name, key)] = model.pop((name, key), 0) + 1
                if len(model) > cap:
                    model.popitem(last=False)
                    evicted += 1
                if rng.random() < 0.002:
                    counters.remove_host("h:3")
                    for entry in [entry for entry in model if entry[0] == "h:3"]:
                        del model[entry]
            snapshot = {(name, *key): n for (name, key), n in model.items()}
            self.assertEqual(counters.snapshot(), snapshot, f"seed {seed}")
            self.assertEqual((counters.series_count, counters.evicted["max_series"]), (len(model), evicted))
            self.assertGreater(evicted, 1000)

    def test_a_removed_or_expired_series_is_no_candidate(self):
        clock = Clock()
        counters = EventCounters(clock, series_ttl=10, max_series=3)
        a = counters.host("a:1")
        a.count(event("/docker/1", "containerDeletion"))
        a.count(event("/docker/2", "oom"))
        a.count(event("/docker/3", "oom"))
        a.count(event("/docker/4", "oom"))  # evicts /docker/1, lists the others as candidates
        clock.advance(10)
        counters.expire()
        counters.remove_host("a:1")
        b = counters.host("b:1")
        for n in range(5):
            b.count(event(f"/docker/{n}", "oom"))
        self.assertEqual(sorted(counters.snapshot()),
                         [("b:1", f"/docker/{n}", "oom", "") for n in (2, 3, 4)])
        self.assertEqual(counters.evicted, {"ttl": 0, "max_series": 3, "target_removed": 3})


class RenderChunksTests(unittest.TestCase):
    """/metrics may render a bounded piece per reactor turn."""

    def setUp(self):
        self.clock = Clock()
        self.counters = EventCounters(self.clock)
        for h in range(30):
            host = self.counters.host(f"h:{h}")
            for n in range(20):
                host.count(event(f"/docker/{n}", "oomKill", "java"))

    def test_the_chunks_joined_are_the_render(self):
        class Family:
            def render_into(self, parts, openmetrics=False):
                parts.append(b"x_total %d\n" % openmetrics)

        self.counters.families_after.append(Family())
        chunks = list(self.counters.render_chunks(True, size=10_000))
        self.assertGreater(len(chunks), 5)
        self.assertTrue(all(sum(map(len, chunk)) < 20_000 for chunk in chunks))
        whole = []
        self.counters.render_into(whole, True)
        self.assertEqual(b"".join(b"".join(chunk) for chunk in chunks), b"".join(whole))
        self.assertTrue(b"".join(whole).endswith(b"x_total 1\n"))

    def test_a_chunk_is_a_snapshot_and_later_chunks_follow_the_fleet(self):
        chunks = self.counters.render_chunks(size=1)
        first = next(chunks)
        text = b"".join(first)
        self.counters.host("h:0").count(event("/docker/0", "oomKill", "java"))
        self.counters.remove_host("h:2")
        self.assertEqual(b"".join(first), text)
        rest = b"".join(b"".join(chunk) for chunk in chunks)
        self.assertNotIn(b'host="h:2"', rest)
        self.assertIn(b'host="h:1"', rest)
        self.assertIn(b'host="h:0",event_type="oomKill",id="/docker/0",oom_process="java"} 2\n',
                      self.counters.render())
