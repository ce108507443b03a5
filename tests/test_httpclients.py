"""Tests for cadvisor_events.httpclients: endpoint choice and quiet connections
(TLS and keepalive over real connections: test_tls.py)."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest
from twisted.web import resource, server
from twisted.web.client import URI

from cadvisor_events.addresses import ip_literal, is_ip_literal
from cadvisor_events.clienttls import client_tls_policy
from cadvisor_events.httpclients import (
    HostEndpointFactory,
    PinnedEndpointFactory,
    pinned_http_client,
    proxy_http_client,
    stream_http_client,
)

from .support import until


class AddressTests(unittest.TestCase):
    def test_literals(self):
        for host in ("127.0.0.1", "::1", "[::1]", "fe80::1%eth0"):
            self.assertTrue(is_ip_literal(host), host)
        for host in ("localhost", "node7.example", "[node7]", "", "1.2.3", "[::1"):
            self.assertFalse(is_ip_literal(host), host)
        self.assertEqual(ip_literal("[::1]").version, 6)
        self.assertEqual(ip_literal("10.0.0.1").version, 4)


class EndpointChoiceTests(unittest.TestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()

    def endpoint(self, url: bytes):
        return HostEndpointFactory(self.reactor).endpointForURI(URI.fromBytes(url))

    def connected_to(self, endpoint):
        """Where ``endpoint`` connects (on the memory reactor), and the factory it was given."""
        factory = Factory.forProtocol(Protocol)
        endpoint.connect(factory)
        host, port = self.reactor.tcpClients[-1][:2]
        return (host, port), factory

    def test_address_literals_connect_without_resolving(self):
        self.assertEqual(self.connected_to(self.endpoint(b"http://127.0.3.7:8080/api"))[0], ("127.0.3.7", 8080))
        self.assertEqual(self.connected_to(self.endpoint(b"http://[::1]:8080/api"))[0], ("::1", 8080))

    def test_names_are_resolved(self):
        self.assertIsInstance(self.endpoint(b"http://node7.example:8080/api").wrapped, HostnameEndpoint)

    def test_tls_wraps_either_by_the_url_host(self):
        asked = []

        class Policy:
            def creatorForNetloc(self, hostname, port):
                asked.append((hostname, port))
                return client_tls_policy().creatorForNetloc(hostname, port)

        endpoints = HostEndpointFactory(self.reactor, Policy())
        for url in (b"http://127.0.0.1:8080/", b"https://127.0.0.1:8443/", b"https://node7.example:8443/"):
            endpoints.endpointForURI(URI.fromBytes(url))
        self.assertEqual(asked, [(b"127.0.0.1", 8443), (b"node7.example", 8443)])

    def test_every_connection_factory_is_made_quiet(self):
        _, factory = self.connected_to(self.endpoint(b"http://127.0.0.1:8080/"))
        self.assertFalse(factory.noisy)
        pinned = PinnedEndpointFactory(self.reactor, client_tls_policy(), ["10.0.0.7"])
        where, factory = self.connected_to(pinned.endpointForURI(URI.fromBytes(b"http://node7.example:8080/")))
        self.assertEqual(where, ("10.0.0.7", 8080))
        self.assertFalse(factory.noisy)

    def test_keepalive_only_for_streams(self):
        self.assertFalse(self.endpoint(b"http://127.0.0.1:8080/").keepalive)
        streams = HostEndpointFactory(self.reactor, keepalive=True)
        self.assertTrue(streams.endpointForURI(URI.fromBytes(b"http://127.0.0.1:8080/")).keepalive)

    def test_pinned_addresses_must_be_addresses(self):
        for addresses in ([], ["node7.example"], ["10.0.0.1", "node7.example"]):
            self.assertRaises(ValueError, PinnedEndpointFactory, self.reactor, client_tls_policy(), addresses)


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello"


class QuietLogTests(unittest.TestCase):
    """A connection per request, to thousands of hosts: the log must not get two lines for each."""

    def setUp(self):
        self.port = reactor.listenTCP(0, server.Site(Hello()), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    @staticmethod
    def open_connections() -> set:
        return {d for d in reactor.getReaders() + reactor.getWriters() if ITCPTransport.providedBy(d)}

    def all_closed(self):
        """Wait until every connection this test made is gone, the client's end included."""
        return until(lambda: not self.open_connections(), "every connection closed",
                     detail=lambda: f"connections still open: {self.open_connections()}")

    @defer.inlineCallbacks
    def test_clients_connect_and_disconnect_without_factory_lines(self):
        port = self.port.getHost().port
        for http, url in [
            (stream_http_client(reactor), f"http://127.0.0.1:{port}/"),
            (proxy_http_client(reactor, client_tls_policy()), f"http://localhost:{port}/"),
            (pinned_http_client(reactor, client_tls_policy(), ["127.0.0.1"]), f"http://node7.example:{port}/"),
        ]:
            response = yield http.get(url)
            self.assertEqual((yield response.content()), b"hello")
        yield self.all_closed()
        lines = [formatEvent(e) for e in self.events]
        self.assertEqual([line for line in lines if "factory" in line.lower()], [])
