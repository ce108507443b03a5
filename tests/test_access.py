"""Tests for cadvisor_events.access: the --proxy-allow list, resolution and pinned connections."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.error import CannotListenError
from twisted.trial import unittest
from twisted.web import resource, server

from cadvisor_events.access import (
    AllowList,
    ProxyAccess,
    Refused,
    parse_allow,
    resolver,
)
from cadvisor_events.cadvisor import CAdvisorClient, UpstreamError, parse_target
from cadvisor_events.clienttls import client_tls_policy
from cadvisor_events.httpclients import pinned_http_client, proxy_http_client


class ParseAllowTests(unittest.TestCase):
    def test_forms(self):
        allow = parse_allow(["10.0.0.0/8", "192.168.1.5", "fd00::/8", "[::1]", "Node7.Example.com", "cadvisor"])
        self.assertEqual([str(n) for n in allow.networks], ["10.0.0.0/8", "192.168.1.5/32", "fd00::/8", "::1/128"])
        self.assertEqual(allow.names, frozenset({"node7.example.com", "cadvisor"}))
        self.assertFalse(allow.open)
        self.assertTrue(parse_allow([]).open)

    def test_errors_are_readable(self):
        for bad, words in [
            ("10.0.0.0/33", "not a network"),
            ("10.0.0.1/8", "host bits set"),
            ("999.1.1.1", "not a network"),
            ("*.example.com", "wildcards"),
            ("http://x", "not a network"),
            ("a b", "not a CIDR"),
            ("", "not a CIDR"),
        ]:
            with self.assertRaises(ValueError, msg=bad) as e:
                parse_allow([bad])
            self.assertIn(words, str(e.exception), bad)
            self.assertIn("--proxy-allow", str(e.exception))

    def test_addresses(self):
        allow = parse_allow(["10.0.0.0/8", "fd00::/8"])
        for address, allowed in [
            ("10.1.2.3", True), ("11.0.0.1", False), ("fd00::5", True), ("fe80::1", False),
            ("::ffff:10.0.0.1", True), ("::ffff:11.0.0.1", False), ("fd00::1%eth0", True),
        ]:
            self.assertEqual(allow.allows_address(address), allowed, address)


class FakeResolver:
    def __init__(self, answers):
        self.answers = answers
        self.asked = []

    def __call__(self, host, port):
        self.asked.append((host, port))
        return defer.succeed(self.answers.get(host, []))


class AdmitTests(unittest.TestCase):
    def setUp(self):
        self.resolve = FakeResolver({
            "inside": ["10.0.0.1", "10.0.0.2", "10.0.0.1"],
            "mixed": ["10.0.0.1", "169.254.169.254"],
            "v6": ["fd00::1"],
        })
        self.pinned = []
        self.default = CAdvisorClient(reactor)

        def pinned_client(addresses):
            self.pinned.append(addresses)
            return ("pinned", addresses)

        self.access = ProxyAccess(
            parse_allow(["10.0.0.0/8", "fd00::/8", "Named.Host"]),
            resolve=self.resolve, pinned_client=pinned_client,
        )

    def admit(self, text):
        return self.access.admit(parse_target(text), self.default)

    def test_allowed_literals_use_the_default_client(self):
        for text in ["10.9.9.9:8080", "[fd00::2]:1", "http://[::ffff:10.0.0.1]:80"]:
            self.assertIs(self.successResultOf(self.admit(text)), self.default, text)
        self.assertEqual(self.resolve.asked, [])

    def test_allowed_name_is_not_resolved(self):
        self.assertIs(self.successResultOf(self.admit("https://NAMED.host:443")), self.default)
        self.assertEqual(self.resolve.asked, [])

    def test_resolved_name_is_pinned_to_every_checked_address(self):
        self.assertEqual(self.successResultOf(self.admit("inside:8080")), ("pinned", ("10.0.0.1", "10.0.0.2")))
        self.assertEqual(self.successResultOf(self.admit("v6:1")), ("pinned", ("fd00::1",)))
        self.assertEqual(self.resolve.asked, [("inside", 8080), ("v6", 1)])

    def test_refused_literal(self):
        failure = self.failureResultOf(self.admit("http://user:s3cret@127.0.0.1:8080"), Refused)
        self.assertEqual(
            str(failure.value), "http://127.0.0.1:8080 is not allowed: 127.0.0.1 is outside --proxy-allow"
        )

    def test_every_address_must_be_allowed(self):
        failure = self.failureResultOf(self.admit("mixed:80"), Refused)
        self.assertIn("mixed resolves to 169.254.169.254, outside --proxy-allow", str(failure.value))
        self.assertEqual(self.pinned, [])

    def test_unresolvable_name(self):
        failure = self.failureResultOf(self.admit("nowhere:80"), UpstreamError)
        self.assertEqual(failure.value.reason, "dns")

    def test_similar_names_are_not_the_allowed_name(self):
        for text in ["named.host.evil:1", "xnamed.host:1", "named.host.:1"]:
            self.failureResultOf(self.admit(text), UpstreamError)  # resolved (to nothing), not admitted by name

    def test_open_list_admits_anything_unresolved(self):
        access = ProxyAccess(AllowList(), resolve=self.resolve, pinned_client=None)
        self.assertIs(self.successResultOf(access.admit(parse_target("anything:1"), self.default)), self.default)
        self.assertEqual(self.resolve.asked, [])


class Echo(resource.Resource):
    """Answers the Host header it was asked with, as a history body would be answered."""

    isLeaf = True

    def render_GET(self, request):
        return b"host=" + request.getHeader(b"host")


class RealResolutionTests(unittest.TestCase):
    timeout = 20

    def listen(self, interface="127.0.0.1"):
        port = reactor.listenTCP(0, server.Site(Echo()), interface=interface)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @defer.inlineCallbacks
    def test_reactor_resolver_finds_localhost(self):
        addresses = yield resolver(reactor)("localhost", 80)
        self.assertIn("127.0.0.1", addresses)

    @defer.inlineCallbacks
    def test_pinned_client_connects_to_the_checked_address_and_keeps_the_name(self):
        # "rebind.invalid" cannot resolve (RFC 6761): the request can only arrive because the
        # connection went to the checked address, not to a fresh lookup of the name.
        port = self.listen()
        client = CAdvisorClient(reactor, http=pinned_http_client(reactor, client_tls_policy(), ["127.0.0.1"]))
        body = yield client.fetch_history(parse_target(f"rebind.invalid:{port}"), oom_only=False, timeout=10)
        self.assertEqual(body, f"host=rebind.invalid:{port}".encode())

    @defer.inlineCallbacks
    def test_pinned_client_tries_each_address(self):
        try:
            port = self.listen("::1")
        except CannotListenError:
            raise unittest.SkipTest("no IPv6 loopback")
        # Nothing listens on 127.0.0.2 at that port (the server is on ::1 only): refused, then ::1.
        client = CAdvisorClient(
            reactor, http=pinned_http_client(reactor, client_tls_policy(), ["127.0.0.2", "::1"])
        )
        body = yield client.fetch_history(parse_target(f"two.invalid:{port}"), oom_only=False, timeout=10)
        self.assertEqual(body, f"host=two.invalid:{port}".encode())

    @defer.inlineCallbacks
    def test_proxy_client_by_name(self):
        port = self.listen()
        client = CAdvisorClient(reactor, http=proxy_http_client(reactor, client_tls_policy()))
        body = yield client.fetch_history(parse_target(f"127.0.0.1:{port}"), oom_only=False, timeout=10)
        self.assertEqual(body, f"host=127.0.0.1:{port}".encode())
