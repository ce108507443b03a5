"""Tests for cadvisor_events.dnsclient: --dns-server values, and lookups over TCP against a real
DNS server (dnsmasq) on loopback."""

import ipaddress

from twisted.internet import defer, error as internet_error, reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.names import dns, error
from twisted.trial import unittest

from cadvisor_events.dnsclient import make_resolver, parse_dns_server

from .support import Dnsmasq, connections_to, free_port, until


class ParseServerTests(unittest.TestCase):
    def test_servers(self):
        self.assertEqual(parse_dns_server("10.96.0.10"), ("10.96.0.10", 53))
        self.assertEqual(parse_dns_server(" 127.0.0.1:5353 "), ("127.0.0.1", 5353))
        self.assertEqual(parse_dns_server("[::1]:5353"), ("::1", 5353))
        self.assertEqual(parse_dns_server("[fd00::a]"), ("fd00::a", 53))
        self.assertEqual(parse_dns_server("fd00::a"), ("fd00::a", 53))

    def test_bad_servers(self):
        for text, words in [("kube-dns:53", "not an IP address"), ("kube-dns", "not an IP address"),
                            ("127.0.0.1:0", "not a port"), ("127.0.0.1:65536", "not a port"),
                            ("127.0.0.1:x", "not a port"), ("[::1]x", "ADDRESS[:PORT]"),
                            ("[::1", "ADDRESS[:PORT]")]:
            with self.assertRaises(ValueError, msg=text) as e:
                parse_dns_server(text)
            self.assertIn(words, str(e.exception), text)


def addresses(answer):
    answers, _, _ = answer
    return sorted(str(ipaddress.ip_address(record.payload.address))
                  for record in answers if record.type in (dns.A, dns.AAAA))


class TcpLookupTests(unittest.TestCase):
    """Twisted's client over TCP against dnsmasq: answers, errors, one connection per refresh."""

    timeout = 60

    def resolver(self, server, address="127.0.0.1", timeout=2.0):
        resolver = make_resolver([(address, server.port)], reactor, timeout=timeout)
        self.addCleanup(until, lambda: not connections_to(server), "the DNS connection to close")
        self.addCleanup(resolver.close)
        return resolver

    @defer.inlineCallbacks
    def test_answers_share_one_connection_until_closed(self):
        name = "_cadvisor._tcp.svc.test"
        server = Dnsmasq(self, "10.0.0.1 cadvisor.test\n10.0.0.2 cadvisor.test\nfd00::1 cadvisor.test\n",
                         f"{name},cadvisor.test,8080")
        yield until(lambda: "read " in server.log(), "dnsmasq to read its hosts file")
        resolver = self.resolver(server)
        a, aaaa, srv = yield defer.gatherResults([
            resolver.lookupAddress("cadvisor.test"), resolver.lookupIPV6Address("cadvisor.test"),
            resolver.lookupService(name)])
        self.assertEqual(addresses(a), ["10.0.0.1", "10.0.0.2"])
        self.assertEqual(addresses(aaaa), ["fd00::1"])
        self.assertEqual([(r.payload.target.name, r.payload.port) for r in srv[0]], [(b"cadvisor.test", 8080)])
        self.assertEqual(len(connections_to(server)), 1)  # three queries, one connection
        with self.assertRaises(error.DNSNameError):
            yield resolver.lookupAddress("nope.test")
        # A new connection after close() sees what the server holds now.
        server.set_hosts("10.0.0.3 cadvisor.test\n")
        yield until(lambda: server.log().count("read ") >= 2, "dnsmasq to re-read its hosts file")
        resolver.close()
        yield until(lambda: not connections_to(server), "the DNS connection to close")
        a = yield resolver.lookupAddress("cadvisor.test")
        self.assertEqual(addresses(a), ["10.0.0.3"])

    @defer.inlineCallbacks
    def test_an_ipv6_server(self):
        server = Dnsmasq(self, "fd00::7 cadvisor.test\n", listen="::1")
        yield until(lambda: "read " in server.log(), "dnsmasq to read its hosts file")
        resolver = self.resolver(server, address="::1")
        aaaa = yield resolver.lookupIPV6Address("cadvisor.test")
        self.assertEqual(addresses(aaaa), ["fd00::7"])

    @defer.inlineCallbacks
    def test_a_server_that_does_not_answer_times_out(self):
        server = Dnsmasq(self, "10.0.0.1 cadvisor.test\n")
        yield until(lambda: "read " in server.log(), "dnsmasq to read its hosts file")
        server.pause()
        resolver = self.resolver(server, timeout=0.3)
        with self.assertRaises(defer.TimeoutError):
            yield resolver.lookupAddress("cadvisor.test")
        resolver.close()
        server.resume()

    @defer.inlineCallbacks
    def test_a_refused_connection_fails_every_query_of_the_refresh(self):
        resolver = make_resolver([("127.0.0.1", free_port())], reactor, timeout=2.0)
        results = yield defer.DeferredList([resolver.lookupAddress("a.test"), resolver.lookupService("b.test")],
                                           consumeErrors=True)
        self.assertEqual([ok for ok, _ in results], [False, False])
        for _, failure in results:
            failure.trap(internet_error.ConnectionRefusedError)
        resolver.close()


class CloseWhileConnectingTests(unittest.TestCase):
    """Stopping while the refresh's connection is still being made (a service stopped mid-refresh)."""

    def test_close_from_a_failing_query_while_connecting(self):
        clock = MemoryReactorClock()
        resolver = make_resolver([("127.0.0.1", 53)], clock, timeout=2.0)
        query = resolver.lookupAddress("cadvisor.test")
        self.assertEqual(len(clock.tcpClients), 1)
        seen = []

        def close_again(failure):
            seen.append(failure.type)
            resolver.close()  # the errback of a cancelled query may close again

        query.addErrback(close_again)
        resolver.close()
        self.assertEqual(seen, [internet_error.ConnectingCancelledError])
        # the next refresh connects anew
        resolver.lookupAddress("cadvisor.test").addErrback(lambda failure: None)
        self.assertEqual(len(clock.tcpClients), 2)
        resolver.close()
