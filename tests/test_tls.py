"""TLS to cAdvisors (verification by default, ``--ca-file``, ``--insecure-skip-verify``)
and TLS on our own listen endpoints, against real loopback TLS servers.

The certificates are made here, per test run, with ``cryptography``: one
self-signed certificate for ``localhost``/``127.0.0.1``/``::1`` that no system
trust store knows.
"""

from __future__ import annotations

import os
import socket

from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web import resource, server
from twisted.web.client import readBody

from cadvisor_events.cadvisor import CAdvisorClient, UpstreamError, parse_target
from cadvisor_events.clienttls import client_tls_policy, load_ca_file
from cadvisor_events.httpclients import pinned_http_client, stream_http_client
from cadvisor_events.streamclient import StreamClient

from .support import self_signed, server_options

HISTORY = b'[{"container_name":"/a","timestamp":"2026-11-24T17:25:55Z","event_type":"oom","event_data":{}}]'
SECRET = "s3cret-tls"


class History(resource.Resource):
    """A cAdvisor answering one canned history, recording the Authorization headers."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.authorization = []

    def render_GET(self, request):
        self.authorization.append(request.getHeader(b"authorization"))
        request.setHeader(b"Content-Type", b"application/json")
        return HISTORY


class TLSTestCase(unittest.TestCase):
    """A TLS cAdvisor on 127.0.0.1 with a fresh self-signed certificate."""

    timeout = 20

    def setUp(self):
        directory = self.mktemp()
        os.makedirs(directory)
        self.key_path, self.cert_path = self_signed(directory)
        self.cadvisor = History()
        port = reactor.listenSSL(
            0, server.Site(self.cadvisor), server_options(self.key_path, self.cert_path),
            interface="127.0.0.1",
        )
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    def fetch(self, policy, url=None):
        client = CAdvisorClient(reactor, http=stream_http_client(reactor, tls_policy=policy))
        target = parse_target(url or f"https://user:{SECRET}@127.0.0.1:{self.port}")
        return client.fetch_history(target, oom_only=False, timeout=10)


class VerificationTests(TLSTestCase):
    """``https://`` cAdvisors: verified by default, trusted with --ca-file, or explicitly not checked."""

    @defer.inlineCallbacks
    def assertTLSFailure(self, policy, url=None):
        try:
            yield self.fetch(policy, url)
        except UpstreamError as e:
            self.assertIn(e.reason, ("tls", "connect"))
            self.assertNotIn(SECRET, str(e))
            self.assertEqual(self.cadvisor.authorization, [], "credentials sent before verification")
            return e
        self.fail("an unverifiable certificate was accepted")

    @defer.inlineCallbacks
    def test_self_signed_fails_without_ca_file(self):
        error = yield self.assertTLSFailure(client_tls_policy())
        self.assertEqual(error.reason, "tls")
        self.assertIn(f"https://127.0.0.1:{self.port}: TLS handshake failed", error.message)
        self.assertIn("certificate verify failed", error.message)
        self.assertIn("--ca-file", error.message)

    @defer.inlineCallbacks
    def test_ca_file_trusts_it(self):
        body = yield self.fetch(client_tls_policy(ca_file=self.cert_path))
        self.assertEqual(body, HISTORY)
        self.assertEqual(len(self.cadvisor.authorization), 1)

    @defer.inlineCallbacks
    def test_ca_file_still_checks_the_host_name(self):
        directory = self.mktemp()
        os.makedirs(directory)
        _, other_cert = self_signed(directory, names=("elsewhere.test",), addresses=())
        yield self.assertTLSFailure(client_tls_policy(ca_file=other_cert))

    @defer.inlineCallbacks
    def test_ca_file_with_another_ca_fails(self):
        directory = self.mktemp()
        os.makedirs(directory)
        _, other_cert = self_signed(directory)
        yield self.assertTLSFailure(client_tls_policy(ca_file=other_cert))

    @defer.inlineCallbacks
    def test_insecure_skip_verify_accepts_it(self):
        body = yield self.fetch(client_tls_policy(insecure=True))
        self.assertEqual(body, HISTORY)

    @defer.inlineCallbacks
    def test_insecure_skip_verify_by_host_name(self):
        body = yield self.fetch(
            client_tls_policy(insecure=True), f"https://user:{SECRET}@localhost:{self.port}"
        )
        self.assertEqual(body, HISTORY)

    @defer.inlineCallbacks
    def test_stream_over_tls_gets_keepalive(self):
        # A TLS transport wraps the TCP one; keepalive must reach the socket underneath
        # (its wrapper's getHandle is the OpenSSL connection, which has no setsockopt).
        client = CAdvisorClient(
            reactor, streams=StreamClient(reactor, tls_policy=client_tls_policy(ca_file=self.cert_path))
        )
        response = yield client.open_stream(
            parse_target(f"https://127.0.0.1:{self.port}"), oom_only=False, timeout=10
        )
        self.assertEqual(response.code, 200)
        tcp = response.transport.transport  # under the TLS layer
        self.assertTrue(tcp.getHandle().getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
        body = yield readBody(response)
        self.assertEqual(body, HISTORY)


class CAFileTests(unittest.TestCase):
    def test_bundle_of_several(self):
        paths = []
        for _ in range(2):
            directory = self.mktemp()
            os.makedirs(directory)
            paths.append(self_signed(directory)[1])
        bundle = self.mktemp()
        with open(bundle, "wb") as out:
            for path in paths:
                out.write(b"# a comment line\n" + open(path, "rb").read())
        self.assertIsNotNone(load_ca_file(bundle))

    def test_errors_name_the_file(self):
        missing = self.mktemp()
        with self.assertRaises(ValueError) as e:
            load_ca_file(missing)
        self.assertIn(missing, str(e.exception))
        self.assertIn("cannot read", str(e.exception))
        empty = self.mktemp()
        with open(empty, "w") as f:
            f.write("not a certificate\n")
        with self.assertRaises(ValueError) as e:
            client_tls_policy(ca_file=empty)
        self.assertIn("no PEM certificate", str(e.exception))
        broken = self.mktemp()
        with open(broken, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        with self.assertRaises(ValueError) as e:
            load_ca_file(broken)
        self.assertIn("broken certificate", str(e.exception))


class PinnedTLSTests(TLSTestCase):
    """A /proxy fetch pinned to a checked address still verifies the certificate against the name."""

    def pinned(self, url, policy):
        client = CAdvisorClient(reactor, http=pinned_http_client(reactor, policy, ["127.0.0.1"]))
        return client.fetch_history(parse_target(url), oom_only=False, timeout=10)

    @defer.inlineCallbacks
    def test_name_in_the_certificate(self):
        body = yield self.pinned(f"https://localhost:{self.port}", client_tls_policy(ca_file=self.cert_path))
        self.assertEqual(body, HISTORY)

    @defer.inlineCallbacks
    def test_name_not_in_the_certificate(self):
        try:
            yield self.pinned(f"https://rebind.invalid:{self.port}", client_tls_policy(ca_file=self.cert_path))
        except UpstreamError as e:
            self.assertEqual(e.reason, "tls")
        else:
            self.fail("a certificate for localhost was accepted for rebind.invalid")
        self.assertEqual(self.cadvisor.authorization, [])
