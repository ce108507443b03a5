"""Tests for cadvisor_events.enrich: labels fixed at birth, waiting for specs, OOM attribution.

The host's specs are a double (:class:`SpecsDouble`) whose fetches the tests answer by hand,
so every interleaving of events and spec answers is chosen here.
"""

from __future__ import annotations

import collections
import random

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from cadvisor_events.counters import EventCounters
from cadvisor_events.enrich import Enrichment, HostEnricher, render_identity
from cadvisor_events.event import Event, EventData, OomKill
from cadvisor_events.exposition import family_header
from cadvisor_events.identity import UNKNOWN, Identity
from cadvisor_events.oomkills import OomKills

from .support import spec, ts

POD = "/kubepods/burstable/pod0b6c1f2e-0000-4000-8000-000000000001"
API = POD + "/" + "a" * 64
SIDECAR = POD + "/" + "b" * 64
API_AGAIN = POD + "/" + "c" * 64  # the same container of the pod, restarted by the kubelet
RAW = "/system.slice/sshd.service"

API_ID = Identity("payments", "checkout-7d9f", "api", "registry/api:1.2", "k8s_api_checkout", "uid1",
                  (("container_label_team", "pay"),))
SIDECAR_ID = API_ID._replace(container="envoy", image="envoy:1.30", name="k8s_envoy_checkout")
POD_ID = Identity("payments", "checkout-7d9f", "", "", "", "uid1", (("container_label_team", ""),))
NOBODY = UNKNOWN._replace(extra=(("container_label_team", ""),))


def ev(container, event_type, second=1, process=None, pid=1):
    data = EventData(oom=OomKill(pid=pid, process_name=process)) if process is not None else EventData()
    return Event(container_name=container, timestamp=ts(second), event_type=event_type, event_data=data)


class SpecsDouble:
    """A host's specs: ``identities`` known now, fetches and listings answered by the test."""

    def __init__(self):
        self.identities = {}
        self.fetches = {}
        self.listings = []
        self.deletions = []
        self.on_learned = None

    def identity(self, cgroup):
        return self.identities.get(cgroup, NOBODY)

    def has_spec(self, cgroup):
        return cgroup in self.identities

    def fetch(self, cgroup):
        self.created(cgroup)

    def created(self, cgroup):
        if cgroup in self.identities:
            return defer.succeed(self.identities[cgroup])
        waiters = self.fetches.setdefault(cgroup, [])
        waiter = defer.Deferred()
        waiters.append(waiter)
        return waiter

    def pending(self, cgroup):
        if cgroup not in self.fetches:
            return None
        waiter = defer.Deferred()
        self.fetches[cgroup].append(waiter)
        return waiter

    def answer(self, cgroup, identity=None):
        """The fetch of ``cgroup`` ends: with ``identity`` learned, or failed (None)."""
        if identity is not None:
            self.learn(cgroup, identity)
        for waiter in self.fetches.pop(cgroup):
            waiter.callback(self.identity(cgroup))

    def learn(self, cgroup, identity):
        self.identities[cgroup] = identity
        if self.on_learned is not None and identity.pod_uid + identity.container:
            self.on_learned(cgroup, identity)

    def listing(self):
        d = defer.Deferred()
        self.listings.append(d)
        return d

    def deleted(self, cgroup):
        self.deletions.append(cgroup)


def series(counters, host="h:1"):
    """Every event series as (label dict, value), from the rendered text."""
    text = (family_header() + b"".join(counters.hosts[host].render_lines())).decode()
    return [(s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def assert_one_label_set_per_series(test, counters):
    """Never two series with the same labels; never two for one (host, id, event_type,
    oom_process) unless an OOM victim's labels tell them apart."""
    found = series(counters)
    label_sets = [tuple(sorted(labels.items())) for labels, _ in found]
    test.assertEqual(len(label_sets), len(set(label_sets)), "two series with one label set")
    by_key = collections.defaultdict(list)
    for labels, _ in found:
        by_key[(labels["host"], labels["id"], labels["event_type"], labels["oom_process"])].append(labels)
    for key, each in by_key.items():
        if len(each) > 1:
            test.assertEqual(key[2], "oomKill", key)
            test.assertEqual(len({labels["container"] for labels in each}), len(each), key)


class Fixture(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.counters = EventCounters(self.clock, series_ttl=100)
        self.kills = OomKills(self.clock, series_ttl=100)
        self.specs = SpecsDouble()
        self.enricher = HostEnricher(self.counters.host("h:1"), self.kills.host("h:1"), self.specs, self.clock)

    def count(self, *events):
        for each in events:
            self.enricher.count(each)

    def labels_of(self, cgroup, event_type):
        (labels,) = [labels for labels, _ in series(self.counters)
                     if labels["id"] == cgroup and labels["event_type"] == event_type]
        return labels


class LabelTests(Fixture):
    def test_a_known_container_is_counted_with_its_labels(self):
        self.specs.learn(API, API_ID)
        self.count(ev(API, "oom"))
        self.assertEqual(self.labels_of(API, "oom"), {
            "host": "h:1", "namespace": "payments", "pod": "checkout-7d9f", "container": "api",
            "image": "registry/api:1.2", "name": "k8s_api_checkout", "container_label_team": "pay",
            "event_type": "oom", "id": API, "oom_process": ""})

    def test_render_identity_escapes(self):
        hostile = Identity('n"s', "p\\", "c\n", "", "", "", ())
        self.assertEqual(render_identity(hostile),
                         'namespace="n\\"s",pod="p\\\\",container="c\\n",image="",name="",')

    def test_a_creation_waits_for_its_spec_and_later_events_queue_behind_it(self):
        self.enricher.created(API)
        self.count(ev(API, "containerCreation"), ev(API, "oom", 2), ev(RAW, "oom"))
        self.assertEqual([labels["id"] for labels, _ in series(self.counters)], [RAW])  # not waiting
        self.assertEqual(self.enricher.waiting_events, 2)
        self.specs.answer(API, API_ID)
        self.assertEqual(self.labels_of(API, "containerCreation")["container"], "api")
        self.assertEqual(self.labels_of(API, "oom")["pod"], "checkout-7d9f")
        self.assertEqual((self.enricher.waiting, self.enricher.waiting_events), ({}, 0))
        self.assertEqual(self.kills.hosts["h:1"].values(), {("payments", "checkout-7d9f", "api"): 0})

    def test_order_is_kept_so_a_deletion_after_its_creation_expires(self):
        self.enricher.created(API)
        self.count(ev(API, "containerCreation"), ev(API, "containerDeletion", 2))
        self.assertEqual(self.specs.deletions, [])  # not before the deletion is counted
        self.specs.answer(API, API_ID)
        self.assertEqual(self.specs.deletions, [API])
        self.clock.advance(100)
        self.assertEqual(self.counters.expire(), 2)

    def test_a_failed_fetch_counts_with_what_is_known(self):
        self.enricher.created(API)
        self.count(ev(API, "containerCreation"))
        self.specs.answer(API)
        self.assertEqual(self.labels_of(API, "containerCreation")["namespace"], "")
        self.assertEqual(sum(self.counters.hosts["h:1"].values().values()), 1)

    def test_a_late_spec_never_changes_or_duplicates_a_series(self):
        self.count(ev(API, "oomKill", 1, "java", 1))
        self.clock.advance(0)
        self.specs.learn(API, API_ID)  # the spec arrives after the series was born
        self.count(ev(API, "oomKill", 2, "java", 2), ev(API, "oomKill", 3, "java", 3))
        self.clock.advance(0)
        ((labels, value),) = series(self.counters)
        self.assertEqual((labels["container"], value), ("", 3))
        self.count(ev(API, "containerDeletion", 4))  # a new series: born knowing its container
        self.assertEqual(self.labels_of(API, "containerDeletion")["container"], "api")
        assert_one_label_set_per_series(self, self.counters)

    def test_an_existing_series_never_waits(self):
        self.count(ev(API, "oom"))
        self.specs.fetches[API] = []  # a fetch in flight (a re-created container)
        self.count(ev(API, "oom", 2))
        self.assertEqual(self.counters.hosts["h:1"].values(), {(API, "oom", ""): 2})

    def test_during_a_listing_unknown_containers_wait_for_it(self):
        self.enricher.listing()
        self.specs.learn(RAW, NOBODY)  # has a spec: counted at once
        self.count(ev(API, "oom"), ev(RAW, "oom"))
        self.assertEqual(self.enricher.waiting_events, 1)
        self.specs.learn(API, API_ID)
        self.specs.listings[-1].callback(None)
        self.assertEqual(self.labels_of(API, "oom")["container"], "api")
        self.count(ev(SIDECAR, "oom"))  # the listing is over: nothing to wait for
        self.assertEqual(self.enricher.waiting_events, 0)

    def test_containers_listed_get_their_oom_kill_series_once_the_backfill_is_counted(self):
        self.enricher.listing()
        self.specs.learn(API, API_ID)
        self.specs.learn(SIDECAR, SIDECAR_ID)
        self.specs.listings[-1].callback(None)
        self.assertEqual(self.kills.hosts["h:1"].values(), {})  # not at 0 while history may hold kills
        self.count(ev(API, "oom", 1), ev(API, "oomKill", 1, "java"))  # the backfill: a kill before a restart
        self.enricher.caught_up()
        self.assertEqual(self.kills.hosts["h:1"].values(), {
            ("payments", "checkout-7d9f", "api"): 1, ("payments", "checkout-7d9f", "envoy"): 0})
        self.specs.learn(API_AGAIN, API_ID)  # learned from a creation, not during a listing: at once
        self.assertEqual(self.kills.hosts["h:1"].cgroups[API_AGAIN], ("payments", "checkout-7d9f", "api"))

    def test_waiting_is_bounded(self):
        enricher = HostEnricher(self.counters.host("h:2"), self.kills.host("h:2"), self.specs, self.clock,
                                max_waiting=2)
        self.specs.fetches[API] = []
        for second in range(5):
            enricher.count(ev(API, "oom", second))
        self.assertEqual(enricher.waiting_events, 2)
        self.assertEqual(self.counters.hosts["h:2"].values(), {(API, "oom", ""): 3})
        self.specs.answer(API)
        self.assertEqual(self.counters.hosts["h:2"].values(), {(API, "oom", ""): 5})

    def test_a_closed_enricher_counts_nothing_more(self):
        self.specs.fetches[API] = []
        self.count(ev(API, "oom"), ev(API, "oomKill", 5, "java"))
        self.enricher.close()
        self.specs.answer(API, API_ID)
        self.clock.advance(0)
        self.assertEqual(self.counters.hosts["h:1"].values(), {})
        self.assertIsNone(self.specs.on_learned)


class AttributionTests(Fixture):
    def setUp(self):
        super().setUp()
        for cgroup, identity in ((API, API_ID), (SIDECAR, SIDECAR_ID), (API_AGAIN, API_ID)):
            self.specs.learn(cgroup, identity)

    def oom_kill(self, victim, limit, second, process="java", pid=1):
        return ev(victim, "oom", second), ev(limit, "oomKill", second, process, pid)

    def test_a_pod_level_limit_is_attributed_to_the_container_that_lost_the_process(self):
        self.count(*self.oom_kill(API, POD, 1), *self.oom_kill(SIDECAR, POD, 2), *self.oom_kill(API, POD, 3))
        kills = [labels for labels, _ in series(self.counters) if labels["event_type"] == "oomKill"]
        self.assertEqual(sorted((labels["id"], labels["container"], labels["image"]) for labels in kills),
                         [(POD, "api", "registry/api:1.2"), (POD, "envoy", "envoy:1.30")])
        self.assertEqual(self.kills.hosts["h:1"].values(), {
            ("payments", "checkout-7d9f", "api"): 2, ("payments", "checkout-7d9f", "envoy"): 1})
        self.assertEqual([(k.container, k.cgroup, k.limit_cgroup) for k in self.kills.recent()][0],
                         ("api", API, POD))
        assert_one_label_set_per_series(self, self.counters)
        # Counted as cAdvisor's history counts them.
        self.assertEqual(self.counters.hosts["h:1"].values()[(POD, "oomKill", "java")], 3)

    def test_a_history_listing_the_kill_before_its_oom_pairs_them(self):
        oom, kill = self.oom_kill(SIDECAR, POD, 1)
        self.count(kill, oom)
        self.clock.advance(0)
        self.assertEqual(self.kills.hosts["h:1"].values(), {
            ("payments", "checkout-7d9f", "api"): 0, ("payments", "checkout-7d9f", "envoy"): 1})

    def test_a_kill_without_its_oom_is_its_own_cgroups_once_this_turn_ends(self):
        self.count(ev(API, "oomKill", 1, "java"))
        self.assertEqual(self.counters.hosts["h:1"].values(), {})
        self.clock.advance(0)
        self.assertEqual(self.counters.hosts["h:1"].values(), {(API, "oomKill", "java"): 1})
        self.assertEqual(self.kills.hosts["h:1"].values()[("payments", "checkout-7d9f", "api")], 1)

    def test_a_kill_then_another_event_releases_the_kill(self):
        self.count(ev(API, "oomKill", 1, "java"), ev(SIDECAR, "oom", 2))
        self.assertEqual(self.counters.hosts["h:1"].values(),
                         {(API, "oomKill", "java"): 1, (SIDECAR, "oom", ""): 1})

    def test_restarts_of_one_container_continue_its_oom_kill_series(self):
        self.count(*self.oom_kill(API, API, 1), ev(API, "containerDeletion", 2), *self.oom_kill(API_AGAIN, API_AGAIN, 3))
        self.assertEqual(self.kills.hosts["h:1"].values()[("payments", "checkout-7d9f", "api")], 2)

    def test_a_global_oom_is_a_node_oom(self):
        self.count(*self.oom_kill("/", "/", 1, "chrome"))
        self.enricher.caught_up()
        text = self.kills.render().decode()
        self.assertIn('cadvisor_node_oom_kills_total{host="h:1"} 1\n', text)
        self.assertEqual(self.labels_of("/", "oomKill")["container"], "")
        (recent,) = self.kills.recent()
        self.assertEqual((recent.node_oom, recent.cgroup, recent.process), (True, "/", "chrome"))

    def test_a_global_oom_that_names_its_victim_counts_for_both(self):
        self.count(*self.oom_kill(API, "/", 1))
        self.enricher.caught_up()
        self.assertIn(b'cadvisor_node_oom_kills_total{host="h:1"} 1\n', self.kills.render())
        self.assertEqual(self.kills.hosts["h:1"].values()[("payments", "checkout-7d9f", "api")], 1)

    def test_a_raw_cgroup_is_named_by_its_cgroup(self):
        self.count(*self.oom_kill(RAW, RAW, 1, "sshd"))
        self.assertEqual(self.kills.hosts["h:1"].values()[("", "", RAW)], 1)

    def test_a_kill_waits_for_its_victims_spec(self):
        new = POD + "/" + "d" * 64
        self.enricher.created(new)
        self.count(ev(new, "containerCreation"), *self.oom_kill(new, POD, 2))
        self.assertEqual(self.counters.hosts["h:1"].values(), {})
        self.specs.answer(new, API_ID._replace(container="batch", name="k8s_batch"))
        self.assertEqual(self.kills.hosts["h:1"].values()[("payments", "checkout-7d9f", "batch")], 1)
        kill = [labels for labels, _ in series(self.counters) if labels["event_type"] == "oomKill"]
        self.assertEqual([labels["container"] for labels in kill], ["batch"])

    def test_a_victims_labels_are_decided_once(self):
        unknown = POD + "/" + "e" * 64
        self.count(*self.oom_kill(unknown, POD, 1))  # nobody knows it: the pod's own series
        self.specs.learn(unknown, SIDECAR_ID._replace(name="late"))
        self.count(*self.oom_kill(unknown, POD, 2))  # still there, not in a new series
        kills = [(labels, value) for labels, value in series(self.counters) if labels["event_type"] == "oomKill"]
        self.assertEqual([(labels["container"], value) for labels, value in kills], [("", 2)])
        assert_one_label_set_per_series(self, self.counters)


class NoEnrichTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.plain = EventCounters(self.clock)
        self.counters = EventCounters(self.clock)
        self.kills = OomKills(self.clock)
        self.enricher = HostEnricher(self.counters.host("h:1"), self.kills.host("h:1"), None, self.clock)

    def test_the_event_series_are_the_go_seeds(self):
        events = [ev(API, "containerCreation"), ev(API, "oom", 2), ev(POD, "oomKill", 2, "java"),
                  ev(RAW, "containerCreation", 3), ev(API, "containerDeletion", 4)]
        for each in events:
            self.enricher.count(each)
            self.plain.host("h:1").count(each)
        self.clock.advance(0)
        self.assertEqual(self.counters.render(), self.plain.render())

    def test_oom_kills_name_the_cgroup_and_containers_are_known_from_creation(self):
        for each in (ev(API, "containerCreation"), ev(RAW, "containerCreation"), ev(SIDECAR, "containerCreation"),
                     ev(API, "oom", 2), ev(POD, "oomKill", 2, "java")):
            self.enricher.count(each)
        self.assertEqual(self.kills.hosts["h:1"].values(), {("", "", API): 1, ("", "", SIDECAR): 0})
        self.assertEqual(self.enricher.listing().result, None)


class EnrichmentTests(unittest.TestCase):
    def test_hosts_are_made_replaced_and_removed_together(self):
        clock = Clock()
        counters, kills = EventCounters(clock, series_ttl=10), OomKills(clock, series_ttl=10)
        store = StoreDouble()
        enrichment = Enrichment(counters, kills, store, clock)
        first = enrichment.host(spec("h:1"))
        second = enrichment.host(spec("h:1"))  # a new follower for the same target
        self.assertTrue(first._closed)
        store.hosts["h:1"].learn(API, API_ID)
        second.count(ev(API, "containerDeletion"))
        self.assertIn(b'namespace="payments"', counters.render())
        self.assertIn(b"cadvisor_container_oom_kills_total{", counters.render())
        self.assertIn(b"cadvisor_events_spec_requests_total 0", counters.render())
        clock.advance(10)
        enrichment.expire()
        self.assertEqual((counters.series_count, kills.series_count, store.expired), (0, 0, 1))
        enrichment.remove_host("h:1")
        self.assertTrue(second._closed)
        self.assertEqual((counters.hosts, kills.hosts, store.removed), ({}, {}, ["h:1"]))


class StoreDouble:
    def __init__(self):
        self.hosts = {}
        self.removed = []
        self.expired = 0

    def host(self, target):
        return self.hosts.setdefault(target.name, SpecsDouble())

    def remove_host(self, name):
        self.removed.append(name)

    def expire(self):
        self.expired += 1

    def render_into(self, out, openmetrics=False):
        out.append("# TYPE cadvisor_events_spec_requests_total counter\ncadvisor_events_spec_requests_total 0\n")


class CountManyTests(unittest.TestCase):
    """:meth:`HostEnricher.count_many` leaves everything as :meth:`HostEnricher.count` one by one
    leaves it: series and values, OOM kill series, deletion records, what the specs were told,
    what waits; with or without specs, with spec fetches pending, with the series cap reached."""

    CGROUPS = [API, SIDECAR, API_AGAIN, POD, RAW, "/"]
    KINDS = ["containerCreation", "containerDeletion", "oom", "oomKill", "containerUpdate"]

    def make(self, with_specs, max_series):
        clock = Clock()
        clock.advance(100)
        counters = EventCounters(clock, series_ttl=100, max_series=max_series)
        kills = OomKills(clock, series_ttl=100)
        specs = None
        if with_specs:
            specs = SpecsDouble()
            specs.learn(API, API_ID)
            specs.learn(POD, POD_ID)
            specs.fetches[SIDECAR] = []  # a fetch under way: its first events wait for it
        return HostEnricher(counters.host("h:1"), kills.host("h:1"), specs, clock), counters, kills, specs

    @staticmethod
    def state(enricher, counters, kills, specs):
        host = counters.hosts["h:1"]
        return (counters.render(), sorted(host.values().items()), dict(host.deleted),
                kills.hosts["h:1"].values(), kills.hosts["h:1"].node_kills,
                None if specs is None else list(specs.deletions), enricher.waiting_events,
                enricher._held, enricher._last_oom, counters.evicted)

    def test_same_as_one_by_one(self):
        """Two thousand seeded random histories of a few containers (so that creations,
        deletions and OOMs of one container meet), counted in random chunks."""
        rng = random.Random(20261205)
        for trial in range(2000):
            drawn = sorted((rng.randint(1, 6), rng.randrange(len(self.CGROUPS)), rng.randrange(len(self.KINDS)),
                            rng.choice(["java", "sh"])) for _ in range(rng.randrange(16)))
            events = [ev(self.CGROUPS[cgroup], self.KINDS[kind], second,
                         process if self.KINDS[kind] == "oomKill" else None) for second, cgroup, kind, process in drawn]
            with_specs, max_series = rng.random() < 0.5, rng.choice([10_000, 8])
            chunk, answer = rng.randint(1, 12), rng.random() < 0.5
            one = self.make(with_specs, max_series)
            many = self.make(with_specs, max_series)
            for event in events:
                one[0].count(event)
            for start in range(0, len(events), chunk):
                many[0].count_many(events[start:start + chunk])
            for enricher, counters, kills, specs in (one, many):
                if answer and specs is not None:
                    specs.answer(SIDECAR, SIDECAR_ID)
                enricher.caught_up()
            self.assertEqual(self.state(*many), self.state(*one), f"trial {trial}: {drawn}, specs {with_specs}, "
                             f"cap {max_series}, chunks of {chunk}")
