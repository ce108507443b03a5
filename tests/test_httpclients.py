"""Tests for cadvisor_events.streaming's endpoint choice (TLS and keepalive: test_tls.py)."""

from __future__ import annotations

from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest
from twisted.web.client import URI

from cadvisor_events.streaming import KeepAliveEndpointFactory


class EndpointChoiceTests(unittest.TestCase):
    def endpoint(self, url: bytes):
        return KeepAliveEndpointFactory(MemoryReactorClock()).endpointForURI(URI.fromBytes(url))._endpoint

    def test_address_literals_connect_without_resolving(self):
        v4 = self.endpoint(b"http://127.0.3.7:8080/api")
        self.assertIsInstance(v4, TCP4ClientEndpoint)
        self.assertEqual((v4._host, v4._port), ("127.0.3.7", 8080))
        v6 = self.endpoint(b"http://[::1]:8080/api")
        self.assertIsInstance(v6, TCP6ClientEndpoint)
        self.assertEqual((v6._host, v6._port), ("::1", 8080))

    def test_names_are_resolved(self):
        self.assertIsInstance(self.endpoint(b"http://node7.example:8080/api"), HostnameEndpoint)

    def test_tls_wraps_either(self):
        for url in (b"https://127.0.0.1:8443/", b"https://node7.example:8443/"):
            self.assertEqual(type(self.endpoint(url)).__name__, "_WrapperEndpoint")
