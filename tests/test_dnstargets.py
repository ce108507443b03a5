"""Tests for cadvisor_events.dnstargets: parsing, refreshes on a clock with a fake resolver, and
lookups against a real DNS server (dnsmasq) on loopback whose records change."""

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, task
from twisted.names import dns, error
from twisted.trial import unittest
from twisted.web.server import Site

from cadvisor_events import tap
from cadvisor_events.dnsclient import make_resolver
from cadvisor_events.dnstargets import DnsMetrics, DnsName, DnsTargets, parse_dns_name
from cadvisor_events.simulator import Simulator
from cadvisor_events.targets import TargetsWatcher

from .support import Dnsmasq, connections_to, http_client, until


# -- parsing --------------------------------------------------------------------------------


class ParseTests(unittest.TestCase):
    def test_name_and_port(self):
        self.assertEqual(parse_dns_name("cadvisor.monitoring.svc.cluster.local"),
                         DnsName("cadvisor.monitoring.svc.cluster.local", 8080))
        self.assertEqual(parse_dns_name(" Cadvisor.Example.COM.:9090 "), DnsName("cadvisor.example.com", 9090))

    def test_scheme_and_credentials_apply_to_every_target(self):
        name = parse_dns_name("https://user:s3cret@cadvisor.example:8443")
        self.assertEqual((name.name, name.port, name.scheme, name.username, name.password),
                         ("cadvisor.example", 8443, "https", "user", "s3cret"))
        self.assertNotIn("s3cret", repr(name))
        spec = name.spec("10.0.0.1", 8443)
        self.assertEqual((spec.name, spec.target.scheme, spec.target.password),
                         ("10.0.0.1:8443", "https", "s3cret"))
        self.assertEqual(DnsName("x", 8080).spec("fd00::1", 8080).name, "[fd00::1]:8080")

    def test_srv_names_take_their_ports_from_the_records(self):
        name = parse_dns_name("_http._tcp.cadvisor.monitoring.svc.cluster.local")
        self.assertEqual((name.name, name.port, name.is_srv),
                         ("_http._tcp.cadvisor.monitoring.svc.cluster.local", None, True))
        self.assertFalse(parse_dns_name("_http.example.com").is_srv)

    def test_bad_names(self):
        for text, words in [
            ("_http._tcp.cadvisor.example:8080", "leave out :PORT"),
            ("10.0.0.1", "not a DNS name (give it with --target)"),
            ("[fd00::1]:8080", "is an address"),
            ("cadvisor.example:99999", "out of range"),
            ("ftp://cadvisor.example", "scheme"),
            ("", "empty"),
            ("bad..name", "not a DNS name"),
            ("bad_$name.example", "not a DNS name"),
            ("x" * 64 + ".example", "not a DNS name"),
        ]:
            with self.assertRaises(ValueError, msg=text) as e:
                parse_dns_name(text)
            self.assertIn(words, str(e.exception), text)


# -- a fake resolver on a clock -------------------------------------------------------------


def a(name, address):
    return dns.RRHeader(name, dns.A, payload=dns.Record_A(address))


def aaaa(name, address):
    return dns.RRHeader(name, dns.AAAA, payload=dns.Record_AAAA(address))


def srv(name, target, port):
    return dns.RRHeader(name, dns.SRV, payload=dns.Record_SRV(0, 0, port, target))


class FakeResolver:
    """Answers from ``records[(name, type)]``: a list of records, an exception, or a Deferred."""

    def __init__(self):
        self.records = {}
        self.queries = []

    def _answer(self, name, kind):
        self.queries.append((name, kind))
        answer = self.records.get((name, kind))
        if answer is None:
            known = any(n == name for n, _ in self.records)
            return defer.succeed(([], [], [])) if known else defer.fail(error.DNSNameError(name))
        if isinstance(answer, Exception):
            return defer.fail(answer)
        if isinstance(answer, defer.Deferred):
            return answer
        return defer.succeed((list(answer), [], []))

    def lookupAddress(self, name):
        return self._answer(name, dns.A)

    def lookupIPV6Address(self, name):
        return self._answer(name, dns.AAAA)

    def lookupService(self, name):
        return self._answer(name, dns.SRV)

    def set(self, name, *records):
        """``name``'s records, replacing what it had (no records: the name exists, empty)."""
        for key in [k for k in self.records if k[0] == name]:
            del self.records[key]
        self.records[(name, dns.A)] = [r for r in records if r.type == dns.A]
        self.records[(name, dns.AAAA)] = [r for r in records if r.type == dns.AAAA]
        self.records[(name, dns.SRV)] = [r for r in records if r.type == dns.SRV]


class RefreshTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.resolver = FakeResolver()
        self.reports = []

    def start(self, *names, refresh=30.0):
        source = DnsTargets([parse_dns_name(n) for n in names], self.resolver, self.reports.append,
                            clock=self.clock, refresh=refresh)
        source.startService()
        self.addCleanup(source.stopService)
        return source

    def last(self):
        return [spec.name for spec in self.reports[-1]]

    def test_every_address_is_a_target_and_changes_are_seen_on_the_next_refresh(self):
        self.resolver.set("cadvisor.test", a("cadvisor.test", "10.0.0.10"), a("cadvisor.test", "10.0.0.2"),
                          aaaa("cadvisor.test", "fd00::1"))
        source = self.start("cadvisor.test")
        self.assertEqual(self.last(), ["10.0.0.2:8080", "10.0.0.10:8080", "[fd00::1]:8080"])
        self.resolver.set("cadvisor.test", a("cadvisor.test", "10.0.0.2"), a("cadvisor.test", "10.0.0.3"))
        self.clock.advance(29)
        self.assertEqual(len(self.reports), 1)
        self.clock.advance(1)
        self.assertEqual(self.last(), ["10.0.0.2:8080", "10.0.0.3:8080"])
        self.clock.advance(30)  # nothing changed: nothing reported
        self.assertEqual(len(self.reports), 2)
        self.assertEqual(source.lookups[("cadvisor.test", "success")], 3)
        self.assertEqual(len(self.resolver.queries), 6)  # A and AAAA each time

    def test_not_ready_until_every_name_was_looked_up_once_whatever_the_outcome(self):
        answer = defer.Deferred()
        self.resolver.lookupAddress = lambda name: answer
        self.resolver.records[("b.test", dns.A)] = error.DNSQueryTimeoutError(1)
        source = self.start("a.test", "b.test")
        # one refresh applies every name's outcome at once, b's timeout included
        self.assertEqual(source.not_ready(), "DNS name(s) not looked up yet: a.test, b.test")
        answer.callback(([], [], []))
        self.assertIsNone(source.not_ready())

    def test_a_failed_lookup_keeps_the_last_good_set_and_is_counted(self):
        self.resolver.set("cadvisor.test", a("cadvisor.test", "10.0.0.1"))
        source = self.start("cadvisor.test")
        for failure, result in [(error.DNSQueryTimeoutError(1), "timeout"),
                                (error.DNSServerError("x"), "servfail"),
                                (error.DNSQueryRefusedError("x"), "refused"),
                                (error.DNSFormatError("x"), "error")]:
            self.resolver.records[("cadvisor.test", dns.A)] = failure
            self.clock.advance(30)
            self.assertEqual(source.lookups[("cadvisor.test", result)], 1, result)
            self.assertEqual(self.last(), ["10.0.0.1:8080"], result)
            self.assertEqual(len(self.reports), 1, result)
        # AAAA failing while A answers is a failure too: half an answer is not the set.
        self.resolver.set("cadvisor.test", a("cadvisor.test", "10.0.0.5"))
        self.resolver.records[("cadvisor.test", dns.AAAA)] = error.DNSQueryTimeoutError(2)
        self.clock.advance(30)
        self.assertEqual(self.last(), ["10.0.0.1:8080"])
        self.assertEqual(source.lookups[("cadvisor.test", "timeout")], 2)
        self.resolver.set("cadvisor.test", a("cadvisor.test", "10.0.0.5"))
        self.clock.advance(30)
        self.assertEqual(self.last(), ["10.0.0.5:8080"])

    def test_nxdomain_and_an_empty_answer_mean_no_targets_once_the_next_lookup_agrees(self):
        self.resolver.set("cadvisor.test", a("cadvisor.test", "10.0.0.1"))
        source = self.start("cadvisor.test")
        for key in [k for k in self.resolver.records if k[0] == "cadvisor.test"]:
            del self.resolver.records[key]
        self.clock.advance(30)
        self.assertEqual(self.last(), ["10.0.0.1:8080"])  # one NXDOMAIN may be spurious
        self.clock.advance(30)
        self.assertEqual(self.last(), [])
        self.assertEqual(source.lookups[("cadvisor.test", "nxdomain")], 2)
        self.resolver.set("cadvisor.test", a("cadvisor.test", "10.0.0.2"))
        self.clock.advance(30)
        self.assertEqual(self.last(), ["10.0.0.2:8080"])  # addresses apply at once
        self.resolver.set("cadvisor.test")  # the name exists, with no address (NODATA)
        self.clock.advance(30)
        self.assertEqual(self.last(), ["10.0.0.2:8080"])
        self.clock.advance(30)
        self.assertEqual(self.last(), [])
        self.assertEqual(source.lookups[("cadvisor.test", "success")], 4)

    def test_a_single_empty_answer_between_good_ones_changes_nothing(self):
        self.resolver.set("cadvisor.test", a("cadvisor.test", "10.0.0.1"))
        self.start("cadvisor.test")
        self.resolver.records[("cadvisor.test", dns.A)] = error.DNSNameError("cadvisor.test")
        self.resolver.records[("cadvisor.test", dns.AAAA)] = error.DNSNameError("cadvisor.test")
        self.clock.advance(30)
        self.resolver.set("cadvisor.test", a("cadvisor.test", "10.0.0.1"))
        self.clock.advance(30)
        self.resolver.records[("cadvisor.test", dns.A)] = error.DNSNameError("cadvisor.test")
        self.resolver.records[("cadvisor.test", dns.AAAA)] = error.DNSNameError("cadvisor.test")
        self.clock.advance(30)  # not the second empty answer in a row: the first of a new run
        self.assertEqual(len(self.reports), 1)
        self.assertEqual(self.last(), ["10.0.0.1:8080"])

    def test_a_name_that_never_resolved_adds_nothing(self):
        self.resolver.records[("down.test", dns.A)] = error.DNSQueryTimeoutError(1)
        self.resolver.set("up.test", a("up.test", "10.0.0.1"))
        source = self.start("down.test", "up.test:9000")
        self.assertEqual(self.last(), ["10.0.0.1:9000"])
        self.assertEqual(source.found, {"up.test": source.found["up.test"]})

    def test_names_merge_in_order_and_an_address_found_twice_is_one_target(self):
        self.resolver.set("one.test", a("one.test", "10.0.0.2"), a("one.test", "10.0.0.1"))
        self.resolver.set("two.test", a("two.test", "10.0.0.1"), a("two.test", "10.0.0.3"))
        self.start("one.test", "two.test")
        self.assertEqual(self.last(), ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"])

    def test_srv_records_give_hosts_and_ports(self):
        name = "_http._tcp.cadvisor.test"
        self.resolver.set(name, srv(name, "pod-a.test", 8080), srv(name, "pod-b.test", 9090),
                          srv(name, "gone.test", 8080), srv(name, "", 1))
        self.resolver.set("pod-a.test", a("pod-a.test", "10.0.0.1"), aaaa("pod-a.test", "fd00::1"))
        self.resolver.set("pod-b.test", a("pod-b.test", "10.0.0.2"))
        source = self.start(name)
        self.assertEqual(self.last(), ["10.0.0.1:8080", "10.0.0.2:9090", "[fd00::1]:8080"])
        # A host gone between the SRV answer and its address lookup adds nothing; a host
        # whose lookup fails makes the whole name fail (its last set stays).
        self.resolver.records[("pod-b.test", dns.AAAA)] = error.DNSServerError("x")
        self.clock.advance(30)
        self.assertEqual(source.lookups[(name, "servfail")], 1)
        self.assertEqual(len(self.reports), 1)
        self.resolver.set("pod-b.test", a("pod-b.test", "10.0.0.2"))
        self.resolver.set(name, srv(name, "pod-b.test", 9091))
        self.clock.advance(30)
        self.assertEqual(self.last(), ["10.0.0.2:9091"])
        self.resolver.records[(name, dns.SRV)] = error.DNSNameError(name)
        self.clock.advance(30)
        self.clock.advance(30)
        self.assertEqual(self.last(), [])
        self.assertEqual(source.lookups[(name, "nxdomain")], 2)

    def test_refreshes_never_overlap(self):
        pending = defer.Deferred()
        self.resolver.set("slow.test")
        self.resolver.records[("slow.test", dns.A)] = pending
        source = self.start("slow.test")
        self.clock.advance(30)
        self.clock.advance(30)
        waiting = source.refresh()  # joins the running refresh instead of starting one
        self.assertEqual(self.resolver.queries, [("slow.test", dns.A), ("slow.test", dns.AAAA)])
        self.assertNoResult(waiting)
        pending.callback(([a("slow.test", "10.0.0.1")], [], []))
        self.successResultOf(waiting)
        self.assertEqual(self.last(), ["10.0.0.1:8080"])
        self.resolver.records[("slow.test", dns.A)] = [a("slow.test", "10.0.0.1")]
        self.clock.advance(30)
        self.assertEqual(len(self.resolver.queries), 4)

    def test_answers_after_stop_change_nothing(self):
        pending = defer.Deferred()
        self.resolver.set("slow.test")
        self.resolver.records[("slow.test", dns.A)] = pending
        source = self.start("slow.test")
        source.stopService()
        pending.callback(([a("slow.test", "10.0.0.1")], [], []))
        self.assertEqual(self.reports, [])
        self.clock.advance(300)
        self.assertEqual(len(self.resolver.queries), 2)

    def test_queries_in_flight_are_bounded(self):
        name = "_http._tcp.big.test"
        hosts = [f"pod-{i}.test" for i in range(200)]
        self.resolver.set(name, *[srv(name, host, 8080) for host in hosts])
        gates = {(host, kind): defer.Deferred() for host in hosts for kind in (dns.A, dns.AAAA)}
        self.resolver.records.update(gates)
        self.start(name)
        self.assertEqual(len(self.resolver.queries), 1 + 64)  # the SRV query, then 64 at a time
        answered = 0
        while answered < len(self.resolver.queries) - 1:  # answer in the order asked, as a server would
            host, kind = self.resolver.queries[1 + answered]
            address = f"10.0.0.{hosts.index(host) + 1}"
            gates[(host, kind)].callback(([a(host, address)] if kind == dns.A else [], [], []))
            answered += 1
            in_flight = len(self.resolver.queries) - 1 - answered
            self.assertEqual(in_flight, min(64, 400 - answered))
        self.assertEqual(answered, 400)
        self.assertEqual(len(self.reports[-1]), 200)

    def test_metrics(self):
        self.resolver.set("cadvisor.test", a("cadvisor.test", "10.0.0.1"), a("cadvisor.test", "10.0.0.2"))
        self.resolver.records[("other.test", dns.A)] = error.DNSQueryTimeoutError(1)
        source = self.start("cadvisor.test", "other.test")
        registry = CollectorRegistry()
        registry.register(DnsMetrics(source))
        families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
        lookups = {(s.labels["name"], s.labels["result"]): s.value
                   for s in families["cadvisor_events_dns_lookups"].samples if s.name.endswith("_total")}
        self.assertEqual(lookups[("cadvisor.test", "success")], 1)
        self.assertEqual(lookups[("other.test", "timeout")], 1)
        self.assertEqual(lookups[("other.test", "nxdomain")], 0)  # every result exists from the start
        self.assertEqual(len(lookups), 12)
        targets = {s.labels["name"]: s.value for s in families["cadvisor_events_dns_targets"].samples}
        self.assertEqual(targets, {"cadvisor.test": 2, "other.test": 0})


# -- a real DNS server: dnsmasq on loopback -------------------------------------------------


class RealServerTests(unittest.TestCase):
    """Twisted's own client against dnsmasq: the records change, the targets follow."""

    timeout = 60

    @defer.inlineCallbacks
    def started(self, server, *names, timeout=2.0, address="127.0.0.1"):
        self.reports = []
        resolver = make_resolver([(address, server.port)], reactor, timeout=timeout)
        self.addCleanup(until, lambda: not connections_to(server), "the DNS connection to close")
        # The loop's timer on a Clock (refreshes are called explicitly), the queries on the real reactor.
        source = DnsTargets([parse_dns_name(n) for n in names], resolver, self.reports.append,
                            clock=task.Clock())
        yield until(lambda: "read " in server.log(), "dnsmasq to read its hosts file",
                    detail=server.log)
        source.startService()
        self.addCleanup(source.stopService)
        yield source.refresh()
        return source

    def names(self):
        return [spec.name for spec in self.reports[-1]] if self.reports else None

    @defer.inlineCallbacks
    def test_addresses_follow_the_records(self):
        server = Dnsmasq(self, "10.0.0.1 cadvisor.test\n10.0.0.2 cadvisor.test\nfd00::1 cadvisor.test\n")
        source = yield self.started(server, "cadvisor.test")
        self.assertEqual(self.names(), ["10.0.0.1:8080", "10.0.0.2:8080", "[fd00::1]:8080"], server.log())
        server.set_hosts("10.0.0.2 cadvisor.test\n10.0.0.3 cadvisor.test\n")
        yield until(lambda: server.log().count("read ") >= 2, "dnsmasq to re-read its hosts file")
        yield source.refresh()
        self.assertEqual(self.names(), ["10.0.0.2:8080", "10.0.0.3:8080"])
        server.set_hosts("10.9.9.9 other.test\n")  # cadvisor.test no longer exists: NXDOMAIN
        yield until(lambda: server.log().count("read ") >= 3, "dnsmasq to re-read its hosts file")
        yield source.refresh()
        self.assertEqual(self.names(), ["10.0.0.2:8080", "10.0.0.3:8080"])  # until the next lookup agrees
        yield source.refresh()
        self.assertEqual(self.names(), [])
        self.assertEqual(source.lookups[("cadvisor.test", "nxdomain")], 2)
        self.assertEqual(source.lookups[("cadvisor.test", "success")], 2)

    @defer.inlineCallbacks
    def test_a_server_that_stops_answering_keeps_the_last_set(self):
        server = Dnsmasq(self, "10.0.0.1 cadvisor.test\n")
        source = yield self.started(server, "cadvisor.test", timeout=0.5)
        self.assertEqual(self.names(), ["10.0.0.1:8080"])
        server.pause()
        server.set_hosts("10.0.0.7 cadvisor.test\n")  # read when it resumes
        yield source.refresh()
        self.assertEqual(source.lookups[("cadvisor.test", "timeout")], 1)
        self.assertEqual(self.names(), ["10.0.0.1:8080"])
        self.assertEqual(len(self.reports), 1)
        server.resume()
        yield until(lambda: server.log().count("read ") >= 2, "dnsmasq to re-read its hosts file")
        yield source.refresh()
        self.assertEqual(self.names(), ["10.0.0.7:8080"])

    @defer.inlineCallbacks
    def test_srv_records_and_their_hosts(self):
        name = "_cadvisor._tcp.svc.test"
        server = Dnsmasq(
            self, "10.1.0.1 pod-a.test\nfd00::a pod-a.test\n10.1.0.2 pod-b.test\n",
            f"{name},pod-a.test,8080", f"{name},pod-b.test,9090", f"{name},pod-c.test,8080",
        )
        source = yield self.started(server, name)
        # pod-c.test has no address (NXDOMAIN): the pod is gone, it adds nothing.
        self.assertEqual(self.names(), ["10.1.0.1:8080", "10.1.0.2:9090", "[fd00::a]:8080"], server.log())
        server.set_hosts("10.1.0.2 pod-b.test\n10.1.0.3 pod-c.test\n")
        yield until(lambda: server.log().count("read ") >= 2, "dnsmasq to re-read its hosts file")
        yield source.refresh()
        self.assertEqual(self.names(), ["10.1.0.2:9090", "10.1.0.3:8080"])
        self.assertEqual(source.lookups[(name, "success")], 2)

    @defer.inlineCallbacks
    def test_the_running_exporter_follows_what_dns_says(self):
        """``twistd cadvisor-events --target-dns`` as makeService wires it: two simulators on
        127.0.0.1 and 127.0.0.2 behind one name; one leaves the name, its follower stops."""
        sims, port = [], None
        for attempt in range(20):
            first = reactor.listenTCP(0, Site(Simulator(clock=reactor, seed=1).resource), interface="127.0.0.1")
            port = first.getHost().port
            try:
                second = reactor.listenTCP(port, Site(Simulator(clock=reactor, seed=2).resource),
                                           interface="127.0.0.2")
            except Exception:
                yield first.stopListening()
                continue
            sims = [first, second]
            break
        for listening in sims:
            self.addCleanup(listening.stopListening)
        server = Dnsmasq(self, "127.0.0.1 cadvisor.test\n127.0.0.2 cadvisor.test\n")
        yield until(lambda: "read " in server.log(), "dnsmasq to read its hosts file")
        options = tap.Options()
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", "--no-proxy",
                              "--target-dns", f"cadvisor.test:{port}",
                              "--dns-server", f"127.0.0.1:{server.port}", "--dns-refresh", "200ms"])
        service = tap.makeService(options, reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        (listener,) = [s for s in service if hasattr(s, "endpoint")]
        ports = []
        listener._waitingForPort.addCallback(lambda port: ports.append(port) or port)  # stopService needs it
        (listening,) = ports  # a loopback listen happens at once

        @defer.inlineCallbacks
        def metrics():
            response = yield http_client().get(f"http://127.0.0.1:{listening.getHost().port}/metrics")
            body = yield response.text()
            return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                    for family in text_string_to_metric_families(body) for sample in family.samples}

        def up(host):
            return (("cadvisor_events_target_up", (("host", host),)))

        yield until(lambda: metrics().addCallback(
            lambda m: m.get(up(f"127.0.0.1:{port}")) == 1 and m.get(up(f"127.0.0.2:{port}")) == 1),
            "both simulators followed")
        server.set_hosts("127.0.0.1 cadvisor.test\n")
        yield until(lambda: metrics().addCallback(
            lambda m: up(f"127.0.0.2:{port}") not in m and m.get(up(f"127.0.0.1:{port}")) == 1),
            "the follower of the address that left the name stopped")
        found = yield metrics()
        self.assertEqual(found[("cadvisor_events_dns_targets", (("name", "cadvisor.test"),))], 1)
        self.assertGreaterEqual(
            found[("cadvisor_events_dns_lookups_total", (("name", "cadvisor.test"), ("result", "success")))], 2)
        self.assertEqual(found[("cadvisor_events_targets", ())], 1)


class WatcherSourceTests(unittest.TestCase):
    def test_dns_targets_merge_after_static_ones(self):
        reports = []
        clock = task.Clock()
        static = [parse_dns_name("x.test").spec("10.0.0.1", 8080)]
        watcher = TargetsWatcher(static, None, reports.append, clock=clock)
        watcher.start()
        resolver = FakeResolver()
        resolver.set("cadvisor.test", a("cadvisor.test", "10.0.0.1"), a("cadvisor.test", "10.0.0.2"))
        source = DnsTargets([parse_dns_name("cadvisor.test")], resolver,
                            lambda specs: watcher.set_source("dns", specs), clock=clock)
        source.startService()
        self.addCleanup(source.stopService)
        self.assertEqual([s.name for s in reports[-1]], ["10.0.0.1:8080", "10.0.0.2:8080"])
        resolver.set("cadvisor.test", a("cadvisor.test", "10.0.0.1"))
        clock.advance(30)
        self.assertEqual([s.name for s in reports[-1]], ["10.0.0.1:8080"])
