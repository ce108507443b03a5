"""Tests for cadvisor_events.specs: the spec cache, its requests, bounds and metrics.

Most tests ask the simulator's spec API through the real client over
treq's StubTreq; the ones about concurrency and ordering use a client whose
requests wait for the test to answer them (from the simulator's answers).
Time is a task.Clock.
"""

from __future__ import annotations

import json
from typing import List, Tuple

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet import defer, task
from twisted.trial import unittest
from twisted.web import resource, server

from cadvisor_events.cadvisor import CAdvisorClient, UnknownContainer, UpstreamError, parse_target
from cadvisor_events.gate import ConnectGate
from cadvisor_events.identity import UNKNOWN, Identity
from cadvisor_events.simulator import Simulator
from cadvisor_events.simulator.cluster import SimContainer
from cadvisor_events.specs import SpecStore

START = 1_764_000_000
TARGET = parse_target("node1:8080")
OTHER = parse_target("node2:8080")


def make_simulator(seed: int = 1, containers: int = 30) -> Simulator:
    clock = task.Clock()
    clock.advance(START)
    return Simulator(clock=clock, seed=seed, containers=containers)


class SimulatorOverStub:
    """The real client against a simulator's resource, in memory: requests are answered on flush()."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.stub = StubTreq(sim.resource)
        self.client = CAdvisorClient(sim.clock, http=self.stub)


class ManualClient:
    """A spec client whose requests wait: ``calls`` holds (host, name, recursive, Deferred)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.calls: List[Tuple[str, str, bool, defer.Deferred]] = []

    def spec(self, target, name="/", recursive=False, *, timeout=10.0) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.calls.append((target.name, name, recursive, d))
        return d

    def in_flight(self, host=None) -> int:
        return sum(1 for h, _, _, d in self.calls if not d.called and (host is None or h == host))

    def answer(self, index: int = 0) -> None:
        """Answer the index-th unanswered call from the simulator's spec API."""
        _, name, recursive, d = [c for c in self.calls if not c[3].called][index]
        status, body = self.sim.cluster.spec_answer(name, recursive)
        if status == 200:
            d.callback(json.loads(body))
        else:
            d.errback(UnknownContainer("unknown_container", body.decode()))


class Held(resource.Resource):
    """A cAdvisor that never answers."""

    isLeaf = True

    def render_GET(self, request):
        return server.NOT_DONE_YET


def kubernetes_containers(sim: Simulator) -> List[str]:
    return [name for name, c in sim.cluster.known.items() if c.kind in ("docker", "containerd") and c.pod_cgroup]


class ListingTests(unittest.TestCase):
    def setUp(self):
        self.sim = make_simulator()
        self.http = SimulatorOverStub(self.sim)
        self.store = SpecStore(self.http.client, self.sim.clock, container_labels=["app"])
        self.specs = self.store.host(TARGET)
        self.learned: List[Tuple[str, Identity]] = []
        self.specs.on_learned = lambda cgroup, identity: self.learned.append((cgroup, identity))

    def listing(self):
        d = self.specs.listing()
        self.http.stub.flush()
        self.assertIsNone(self.successResultOf(d))

    def test_learns_every_container_but_raw_cgroups(self):
        self.listing()
        cluster = self.sim.cluster
        for name in kubernetes_containers(self.sim):
            labels = dict(cluster.known[name].labels)
            identity = self.specs.identity(name)
            self.assertTrue(self.specs.has_spec(name))
            self.assertEqual((identity.namespace, identity.pod, identity.pod_uid),
                             (labels["io.kubernetes.pod.namespace"], labels["io.kubernetes.pod.name"],
                              labels["io.kubernetes.pod.uid"]))
            self.assertEqual(identity.container, labels.get("io.kubernetes.container.name", "POD"))
            self.assertEqual(identity.image, cluster.known[name].image)
            self.assertEqual(identity.name, cluster.known[name].aliases[0])
            self.assertEqual(identity.extra, (("container_label_app", labels.get("app", "")),))
        for name, container in cluster.known.items():
            if container.kind == "pod" and any(c.pod_cgroup == name for c in cluster.known.values()):
                # no labels: named by the pod UID and a sibling
                identity = self.specs.identity(name)
                self.assertTrue(identity.pod and identity.namespace and identity.pod_uid, name)
                self.assertEqual(identity.container, "")
            if container.kind == "raw":
                self.assertFalse(self.specs.has_spec(name))
                self.assertEqual(self.specs.identity(name), self.store.unknown)
        self.assertFalse(self.specs.has_spec("/"))
        cached = [n for n, c in cluster.known.items() if c.kind != "raw"]
        nameless = [n for n, c in cluster.known.items()  # a pod-level cgroup the pool cut from its pod
                    if c.kind == "pod" and not any(other.pod_cgroup == n for other in cluster.known.values())]
        self.assertEqual(sorted(c for c, _ in self.learned), sorted(set(cached) - set(nameless)))
        self.assertEqual(self.store.entries, len(cached))
        self.assertEqual(self.store.requests, {"ok": 1})

    def test_on_learned_once_per_container(self):
        self.listing()
        first = list(self.learned)
        self.listing()
        self.assertEqual(self.learned, first)
        self.assertEqual(self.store.requests, {"ok": 2})

    def test_concurrent_calls_share_one_listing(self):
        client = ManualClient(self.sim)
        specs = SpecStore(client, self.sim.clock).host(TARGET)
        one, two = specs.listing(), specs.listing()
        self.assertEqual(len(client.calls), 1)
        client.answer()
        self.assertEqual((self.successResultOf(one), self.successResultOf(two)), (None, None))
        self.assertEqual(specs.store.requests, {"ok": 1})

    def test_retried_once_when_a_container_vanishes_mid_listing(self):
        self.sim.cluster.fail_listings = 1
        self.listing()
        self.assertEqual(self.store.requests, {"unknown_container": 1, "ok": 1})
        self.assertTrue(self.learned)

    def test_gives_up_after_the_retry_without_failing(self):
        self.sim.cluster.fail_listings = 5
        self.listing()
        self.assertEqual(self.store.requests, {"unknown_container": 2})
        self.assertEqual(self.store.entries, 0)

    def test_other_failures_are_not_retried(self):
        store = SpecStore(CAdvisorClient(self.sim.clock, http=StubTreq(Held())), self.sim.clock, timeout=5)
        d = store.host(TARGET).listing()
        self.assertNoResult(d)
        self.sim.clock.advance(5)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(store.requests, {"timeout": 1})


class GateTests(unittest.TestCase):
    def test_listing_waits_for_the_gate_as_a_history_request(self):
        sim = make_simulator()
        client = ManualClient(sim)
        gate = ConnectGate(1)
        stream_slot = self.successResultOf(gate.acquire(stream=True))
        store = SpecStore(client, sim.clock, gate=gate)
        d = store.host(TARGET).listing()
        waiting_stream = gate.acquire(stream=True)
        self.assertEqual(client.calls, [])  # the gate's one slot is held
        stream_slot.release()
        self.assertEqual(client.calls, [])  # a waiting stream goes first
        self.successResultOf(waiting_stream).release()
        self.assertEqual([(c[1], c[2]) for c in client.calls], [("/", True)])
        self.assertEqual(gate.held, 1)
        client.answer()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(gate.held, 0)

    def test_retry_goes_through_the_gate_again(self):
        sim = make_simulator()
        sim.cluster.fail_listings = 1
        gate = ConnectGate(1)
        http = SimulatorOverStub(sim)
        store = SpecStore(http.client, sim.clock, gate=gate)
        d = store.host(TARGET).listing()
        http.stub.flush()
        self.successResultOf(d)
        self.assertEqual(gate.held, 0)
        self.assertEqual(store.requests, {"unknown_container": 1, "ok": 1})

    def test_close_while_waiting_for_the_gate(self):
        sim = make_simulator()
        client = ManualClient(sim)
        gate = ConnectGate(1)
        held = self.successResultOf(gate.acquire())
        store = SpecStore(client, sim.clock, gate=gate)
        specs = store.host(TARGET)
        d = specs.listing()
        specs.close()
        self.assertIsNone(self.successResultOf(d))
        held.release()
        self.assertEqual((client.calls, gate.held), ([], 0))


class CreationTests(unittest.TestCase):
    def setUp(self):
        self.sim = make_simulator()
        self.http = SimulatorOverStub(self.sim)
        self.store = SpecStore(self.http.client, self.sim.clock)
        self.specs = self.store.host(TARGET)
        self.learned: List[str] = []
        self.specs.on_learned = lambda cgroup, identity: self.learned.append(cgroup)

    def test_a_new_pods_containers_are_fetched_at_creation(self):
        for runtime in ("docker", "containerd"):
            for driver in ("cgroupfs", "systemd"):
                pod = self.sim.start_pod(runtime=runtime, driver=driver, namespace="payments", app="checkout",
                                         containers=1)
                waits = [self.specs.created(c.name) for c in pod]
                self.http.stub.flush()
                identities = [self.successResultOf(d) for d in waits]
                pod_name = dict(pod[1].labels)["io.kubernetes.pod.name"]
                # The stub answers at once: the pod-level cgroup was answered before its sandbox
                # was asked, so only the cache knows its pod's name.
                self.assertEqual((identities[0].pod, identities[0].pod_uid), ("", identities[1].pod_uid))
                identities[0] = self.specs.identity(pod[0].name)
                self.assertEqual([(i.namespace, i.pod, i.container) for i in identities],
                                 [("payments", pod_name, ""), ("payments", pod_name, "POD"),
                                  ("payments", pod_name, "checkout")])
                self.assertEqual(identities[2].image, "registry.example.com/shop/checkout:7.3.1")
        self.assertEqual(self.store.requests, {"ok": 12})
        self.assertEqual(len(self.learned), 12)

    def test_creations_of_one_cgroup_share_one_request(self):
        client = ManualClient(self.sim)
        specs = SpecStore(client, self.sim.clock).host(TARGET)
        name = self.sim.start_pod(containers=1)[2].name
        self.assertIsNone(specs.pending(name))
        one, two = specs.created(name), specs.created(name)
        pending = specs.pending(name)
        self.assertIsNotNone(pending)
        self.assertEqual(len(client.calls), 1)
        client.answer()
        identity = self.successResultOf(one)  # (reading a result consumes it)
        self.assertEqual((self.successResultOf(two), self.successResultOf(pending)), (identity, identity))
        self.assertTrue(identity.pod)
        self.assertEqual(specs.store.requests, {"ok": 1})
        self.assertIsNone(specs.pending(name))

    def test_a_pod_cgroup_waits_for_its_siblings_spec(self):
        client = ManualClient(self.sim)
        specs = SpecStore(client, self.sim.clock, per_host_concurrency=1).host(TARGET)
        learned = []
        specs.on_learned = lambda cgroup, identity: learned.append((cgroup, identity.pod))
        pod = self.sim.start_pod(containers=1)
        waits = [specs.created(c.name) for c in pod]
        client.answer()  # the pod-level cgroup: no labels
        self.assertNoResult(waits[0])
        self.assertEqual(learned, [])
        client.answer()  # the sandbox names the pod
        pod_name = dict(pod[1].labels)["io.kubernetes.pod.name"]
        self.assertEqual(learned, [(pod[1].name, pod_name), (pod[0].name, pod_name)])
        client.answer()
        self.assertEqual([self.successResultOf(d).pod for d in waits], [pod_name] * 3)

    def test_a_cached_container_needs_no_request(self):
        name = self.sim.start_pod(containers=1)[2].name
        self.specs.created(name)
        self.http.stub.flush()
        identity = self.successResultOf(self.specs.created(name))
        self.assertEqual(identity, self.specs.identity(name))
        self.assertEqual(self.store.requests, {"ok": 1})

    def test_a_vanished_container_gives_what_the_name_says(self):
        pod = self.sim.start_pod(containers=1)
        self.specs.created(pod[1].name)  # the sandbox: names the pod
        self.http.stub.flush()
        gone = pod[2].name
        self.sim.emit(gone, "containerDeletion")  # gone before its spec was asked
        identity = self.successResultOf(self._created(gone))
        self.assertEqual((identity.pod, identity.container, identity.pod_uid),
                         (self.specs.identity(pod[1].name).pod, "", self.specs.identity(pod[1].name).pod_uid))
        self.assertFalse(self.specs.has_spec(gone))
        self.assertEqual(self.store.requests, {"ok": 1, "unknown_container": 1})

    def _created(self, name):
        d = self.specs.created(name)
        self.http.stub.flush()
        return d

    def test_timeout_fires_with_the_fallback_and_is_counted(self):
        clock = self.sim.clock
        store = SpecStore(CAdvisorClient(clock, http=StubTreq(Held())), clock, timeout=4)
        name = f"/kubepods/besteffort/pod{'1' * 8}-1111-4111-8111-{'1' * 12}/{'a' * 64}"
        d = store.host(TARGET).created(name)
        clock.advance(3.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.assertEqual(self.successResultOf(d), UNKNOWN._replace(pod_uid=f"{'1' * 8}-1111-4111-8111-{'1' * 12}"))
        self.assertEqual(store.requests, {"timeout": 1})

    def test_never_errbacks(self):
        class Broken:
            def __init__(self, error):
                self.error = error

            def spec(self, target, name="/", recursive=False, *, timeout=10.0):
                if isinstance(self.error, TypeError):
                    raise self.error
                return defer.fail(self.error)

        for error in (UpstreamError("status", "HTTP 502"), ValueError("bug"), TypeError("bug")):
            store = SpecStore(Broken(error), self.sim.clock, per_host_concurrency=1)
            specs = store.host(TARGET)
            waits = [specs.created("/docker/" + "%064x" % i) for i in range(3)]
            listing = specs.listing()
            self.assertEqual([self.successResultOf(d) for d in waits], [UNKNOWN] * 3)
            self.assertIsNone(self.successResultOf(listing))
            self.assertEqual(store.requests, {"error": 4})
            self.assertEqual(store.active, 0)
        self.flushLoggedErrors(ValueError, TypeError)

    def test_a_restarted_container_keeps_its_spec(self):
        pod = self.sim.start_pod(containers=1)
        names = [pod[0].name, pod[2].name]  # named by its pod UID, by its container ID
        for name in names:
            self._created(name)
        for name in names:
            self.specs.deleted(name)
            self.sim.emit(name, "containerDeletion")
            self.sim.emit(name, "containerCreation")  # docker restart: the same ID, the same spec
            self.assertEqual(self.successResultOf(self._created(name)).pod, pod[1].pod.name)
        self.assertEqual(self.store.requests, {"ok": 2})
        self.sim.clock.advance(7200)
        self.store.expire()
        for name in names:
            self.assertTrue(self.specs.has_spec(name))  # alive again: not forgotten at the old deadline

    def test_a_recreated_cgroup_without_ids_is_fetched_again(self):
        name = "/docker/web"  # a runtime that names cgroups otherwise: the name may be reused
        self.sim.cluster.known[name] = SimContainer(name, "docker", "nginx:1", container="web", cid="1" * 12)
        self.sim.emit(name, "containerCreation")
        self._created(name)
        self.specs.deleted(name)
        self.sim.emit(name, "containerDeletion")
        self.sim.emit(name, "containerCreation")
        self.assertEqual(self.successResultOf(self._created(name)).container, "web")
        self.assertEqual(self.store.requests, {"ok": 2})
        self.sim.clock.advance(7200)
        self.store.expire()
        self.assertTrue(self.specs.has_spec(name))


class ConcurrencyTests(unittest.TestCase):
    def setUp(self):
        self.sim = make_simulator(containers=5)
        self.client = ManualClient(self.sim)
        self.store = SpecStore(self.client, self.sim.clock, per_host_concurrency=2, concurrency=3, burst=100)
        self.names = [c.name for c in self.sim.start_pod(app="api", containers=2)]
        self.names += [c.name for c in self.sim.start_pod(app="api", containers=2)]

    def test_bounded_per_host_and_fleet_wide(self):
        one, two = self.store.host(TARGET), self.store.host(OTHER)
        waits = [specs.created(name) for name in self.names for specs in (one, two)]
        self.assertEqual((self.client.in_flight(TARGET.name), self.client.in_flight(OTHER.name)), (2, 1))
        answered = 0
        while self.client.in_flight():
            self.assertLessEqual(self.client.in_flight(TARGET.name), 2)
            self.assertLessEqual(self.client.in_flight(OTHER.name), 2)
            self.assertLessEqual(self.client.in_flight(), 3)
            self.client.answer()
            answered += 1
        self.assertEqual(answered, 2 * len(self.names))
        self.assertTrue(all(self.successResultOf(d).pod for d in waits))
        self.assertEqual((self.store.active, self.store.requests), (0, {"ok": 2 * len(self.names)}))

    def test_a_burst_of_creations_becomes_one_listing(self):
        store = SpecStore(self.client, self.sim.clock, per_host_concurrency=1, burst=4)
        specs = store.host(TARGET)
        waits = [specs.created(name) for name in self.names]  # 8: the first is asked alone
        self.assertEqual([(c[1], c[2]) for c in self.client.calls], [(self.names[0], False)])
        self.client.answer()
        self.assertEqual([(c[1], c[2]) for c in self.client.calls[1:]], [("/", True)])
        self.client.answer()
        identities = [self.successResultOf(d) for d in waits]
        self.assertTrue(all(i.pod and i.namespace for i in identities))
        self.assertEqual(store.requests, {"ok": 2})

    def test_close_cancels_and_resolves_everything(self):
        specs = self.store.host(TARGET)
        waits = [specs.created(name) for name in self.names]
        specs.close()
        identities = [self.successResultOf(d) for d in waits]
        self.assertTrue(all(i.pod_uid and not i.pod for i in identities))
        self.assertEqual(self.store.requests, {"cancelled": 2})
        self.assertEqual(self.store.active, 0)
        self.assertEqual(self.successResultOf(specs.created(self.names[0])).pod_uid, identities[0].pod_uid)
        self.assertEqual(len(self.client.calls), 2)  # nothing new after close

    def test_a_waiter_may_give_up_alone(self):
        specs = self.store.host(TARGET)
        one, two = specs.created(self.names[1]), specs.created(self.names[1])
        one.cancel()
        self.failureResultOf(one, defer.CancelledError)
        self.client.answer()
        self.assertTrue(self.successResultOf(two).pod)


class RetentionAndBoundsTests(unittest.TestCase):
    def setUp(self):
        self.sim = make_simulator(containers=40)
        self.http = SimulatorOverStub(self.sim)

    def store(self, **kwargs) -> SpecStore:
        store = SpecStore(self.http.client, self.sim.clock, **kwargs)
        for target in (TARGET, OTHER):
            store.host(target).listing()
        self.http.stub.flush()
        return store

    def test_deleted_containers_are_kept_for_the_retention(self):
        store = self.store(retention=600)
        specs = store.host(TARGET)
        name = kubernetes_containers(self.sim)[0]
        before = specs.identity(name)
        self.sim.emit(name, "containerDeletion")
        specs.deleted(name)
        self.sim.clock.advance(599)
        store.expire()
        self.assertEqual(specs.identity(name), before)  # a late OOM still finds its pod
        self.sim.clock.advance(1)
        store.expire()
        self.assertFalse(specs.has_spec(name))
        self.assertEqual(store.evicted, {"retention": 1})
        after = specs.identity(name)  # the name and a sibling still say which pod
        self.assertEqual((after.namespace, after.pod, after.pod_uid, after.container),
                         (before.namespace, before.pod, before.pod_uid, ""))

    def test_a_container_restarted_over_and_over_expires_after_its_last_deletion(self):
        store = self.store(retention=600)
        specs = store.host(TARGET)
        name = kubernetes_containers(self.sim)[0]
        requests = dict(store.requests)
        for _ in range(1000):  # docker restart in a loop: one record kept, no request
            specs.deleted(name)
            specs.created(name)
            self.sim.clock.advance(0.1)
        specs.deleted(name)
        self.assertEqual(len(store._deletions), 1)
        self.sim.clock.advance(599)
        store.expire()
        self.assertTrue(specs.has_spec(name))  # due 600 s after the last deletion, not the first
        self.sim.clock.advance(1)
        store.expire()
        self.assertFalse(specs.has_spec(name))
        self.assertEqual(store.evicted, {"retention": 1})
        self.assertEqual(store.requests, requests)

    def test_a_deletion_while_the_spec_is_read_still_expires(self):
        client = ManualClient(self.sim)
        store = SpecStore(client, self.sim.clock, retention=60)
        specs = store.host(TARGET)
        name = self.sim.start_pod(app="api", containers=1)[2].name
        d = specs.created(name)
        specs.deleted(name)  # before the spec arrived
        client.answer()
        self.assertTrue(self.successResultOf(d).pod)
        self.sim.clock.advance(60)
        store.expire()
        self.assertFalse(specs.has_spec(name))
        self.assertEqual(store.evicted, {"retention": 1})

    def test_deletion_never_asks_cadvisor(self):
        store = self.store()
        requests = dict(store.requests)
        for name in kubernetes_containers(self.sim) + ["/not/known"]:
            store.host(TARGET).deleted(name)
        self.assertEqual(store.requests, requests)

    def test_retention_zero_keeps_deleted_entries(self):
        store = self.store(retention=0)
        name = kubernetes_containers(self.sim)[0]
        store.host(TARGET).deleted(name)
        self.sim.clock.advance(10 ** 7)
        store.expire()
        self.assertTrue(store.host(TARGET).has_spec(name))

    def test_per_host_bound_evicts_deleted_containers_first(self):
        cached = len([c for c in self.sim.cluster.known.values() if c.kind != "raw"])
        unbounded = self.store()
        specs = unbounded.host(TARGET)
        names = kubernetes_containers(self.sim)
        for name in names[:2]:
            specs.deleted(name)
        bound = cached - 3
        store = SpecStore(self.http.client, self.sim.clock, max_per_host=bound)
        host = store.host(TARGET)
        host.listing()
        self.http.stub.flush()
        self.assertEqual(host.entries, bound)
        self.assertEqual(store.evicted, {"max_per_host": 3})
        host.deleted(names[-1])
        pod = self.sim.start_pod(containers=1)
        host.created(pod[2].name)
        self.http.stub.flush()
        self.assertFalse(host.has_spec(names[-1]))  # the deleted one went first
        self.assertTrue(host.has_spec(pod[2].name))
        self.assertEqual(store.evicted, {"max_per_host": 4})

    def test_fleet_bound(self):
        cached = len([c for c in self.sim.cluster.known.values() if c.kind != "raw"])
        store = SpecStore(self.http.client, self.sim.clock, max_total=cached + 5)
        one, two = store.host(TARGET), store.host(OTHER)
        one.listing()
        self.http.stub.flush()
        for name in kubernetes_containers(self.sim)[:3]:
            one.deleted(name)
        two.listing()
        self.http.stub.flush()
        self.assertEqual(store.entries, cached + 5)
        self.assertEqual(store.evicted, {"max_total": cached - 5})
        self.assertEqual(one.entries, cached - 3)  # the fleet's deleted entries went first
        self.assertEqual(two.entries, 8)

    def test_remove_host(self):
        store = self.store()
        before = store.entries
        store.remove_host(OTHER.name)
        self.assertEqual(store.entries, before // 2)
        self.assertEqual(store.evicted, {})
        self.assertIsNot(store.host(OTHER), None)

    def test_bad_bounds(self):
        with self.assertRaises(ValueError):
            SpecStore(self.http.client, self.sim.clock, max_per_host=0)


class SiblingTests(unittest.TestCase):
    def test_a_container_without_spec_is_named_by_a_sibling(self):
        sim = make_simulator(containers=2)
        http = SimulatorOverStub(sim)
        store = SpecStore(http.client, sim.clock)
        specs = store.host(TARGET)
        pod = sim.start_pod(driver="systemd", runtime="containerd", namespace="search", app="api", containers=2)
        specs.created(pod[2].name)
        http.stub.flush()
        missed = pod[3].name  # created and deleted while the stream was down: never fetched
        identity = specs.identity(missed)
        self.assertFalse(specs.has_spec(missed))
        self.assertEqual((identity.namespace, identity.pod, identity.container, identity.pod_uid),
                         ("search", specs.identity(pod[2].name).pod, "", specs.identity(pod[2].name).pod_uid))
        other_pod = f"/kubepods/pod{'2' * 8}-2222-4222-8222-{'2' * 12}/{'b' * 64}"
        self.assertEqual(specs.identity(other_pod), UNKNOWN._replace(pod_uid=f"{'2' * 8}-2222-4222-8222-{'2' * 12}"))
        self.assertEqual(specs.identity("/system.slice/cron.service"), UNKNOWN)

    def test_another_sibling_names_the_pod_when_the_first_is_forgotten(self):
        sim = make_simulator(containers=2)
        http = SimulatorOverStub(sim)
        store = SpecStore(http.client, sim.clock, retention=60)
        specs = store.host(TARGET)
        pod = sim.start_pod(app="api", containers=2)
        for container in pod[1:]:
            specs.created(container.name)
        http.stub.flush()
        pod_name = specs.identity(pod[1].name).pod
        specs.deleted(pod[1].name)  # the sandbox, which named the pod first
        sim.clock.advance(60)
        store.expire()
        self.assertEqual(specs.identity(pod[0].name).pod, pod_name)  # pod-level, never fetched
        for container in pod[2:]:
            specs.deleted(container.name)
        sim.clock.advance(60)
        store.expire()
        self.assertEqual((specs.identity(pod[0].name).pod, store.entries), ("", 0))
        self.assertEqual(store.evicted, {"retention": 3})

    def test_siblings_are_per_host(self):
        sim = make_simulator(containers=2)
        http = SimulatorOverStub(sim)
        store = SpecStore(http.client, sim.clock)
        pod = sim.start_pod(app="api", containers=2)
        store.host(TARGET).created(pod[2].name)
        http.stub.flush()
        self.assertEqual(store.host(OTHER).identity(pod[3].name).pod, "")


class MetricsTests(unittest.TestCase):
    def test_rendered_families(self):
        sim = make_simulator(containers=10)
        http = SimulatorOverStub(sim)
        store = SpecStore(http.client, sim.clock, max_per_host=3)
        store.host(TARGET).listing()
        store.host(TARGET).created("/docker/" + "f" * 64)
        http.stub.flush()
        for openmetrics in (False, True):
            out: List[str] = []
            store.render_into(out, openmetrics)
            text = "".join(out) + ("# EOF\n" if openmetrics else "")
            if openmetrics:
                from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse
            else:
                parse = text_string_to_metric_families
            samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                       for family in parse(text) for s in family.samples}
            self.assertEqual(samples[("cadvisor_events_spec_requests_total", (("result", "ok"),))], 1)
            self.assertEqual(samples[("cadvisor_events_spec_requests_total", (("result", "unknown_container"),))], 1)
            self.assertEqual(samples[("cadvisor_events_spec_cache_entries", ())], 3)
            self.assertGreater(samples[("cadvisor_events_spec_cache_evicted_total", (("reason", "max_per_host"),))], 0)
