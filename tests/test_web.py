"""Tests for cadvisor_events.web: the resource tree as a client sees it."""

import gzip
import json
import os
import shutil
import socket
import subprocess

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet import abstract, defer, reactor, tcp
from twisted.internet.protocol import Protocol
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyRequest
from twisted.web.server import NOT_DONE_YET

from cadvisor_events import __version__
from cadvisor_events.clienttls import client_tls_policy
from cadvisor_events.event import Event, EventData, OomKill
from cadvisor_events.exposition import TEXT_CONTENT_TYPE
from cadvisor_events.oomkills import OomKills, RecentKill
from cadvisor_events.selfmetrics import FleetMetrics
from cadvisor_events.web import (
    GZIP_INLINE_LIMIT, SCRAPE_SEND_LIMIT, Dashes, MetricsResource, Root, StatusPage, accepts_gzip, build_root,
    build_site, offer_large_writes, redact_uri,
)

from .support import FakeFleet, Leaf, WebFixture, self_signed, server_options, until


class WebTests(WebFixture):

    def test_metrics_text(self):
        response, body = self.get("/metrics")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["text/plain; version=0.0.4; charset=utf-8"]
        )
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        (sample,) = families["cadvisor_container_events"].samples
        self.assertEqual(
            sample.labels,
            {"host": "a:1", "cluster": "eu", "event_type": "oomKill", "id": "/docker/1", "oom_process": 'ja"va'},
        )
        up = {s.labels["host"]: s.value for s in families["cadvisor_events_target_up"].samples}
        self.assertEqual(up, {"a:1": 1.0, "b:1": 0.0})
        failures = {
            (s.labels["host"], s.labels["reason"]): s.value
            for s in families["cadvisor_events_stream_failures"].samples
        }
        self.assertEqual(failures, {("b:1", "eof"): 2.0, ("b:1", "refused"): 1.0})
        for name, value in [
            ("cadvisor_events_series", 1.0),
            ("cadvisor_events_targets", 2.0),
            ("cadvisor_events_config_last_reload_successful", 0.0),
        ]:
            self.assertEqual(families[name].samples[0].value, value)
        self.assertIn("cadvisor_events_proxy_requests", families)
        self.assertNotIn(b"pw", body)

    def test_metrics_openmetrics(self):
        response, body = self.get(
            "/metrics", headers={"Accept": ["application/openmetrics-text; version=1.0.0"]}
        )
        self.assertTrue(
            response.headers.getRawHeaders("content-type")[0].startswith("application/openmetrics-text")
        )
        self.assertTrue(body.endswith(b"# EOF\n"))
        self.assertEqual(body.count(b"# EOF"), 1)
        families = {f.name: f for f in om_families(body.decode())}
        self.assertEqual(families["cadvisor_container_events"].samples[0].value, 1.0)
        self.assertEqual(families["cadvisor_events_received"].type, "counter")

    def test_targets_json(self):
        response, body = self.get("/targets")
        self.assertEqual(response.code, 200)
        targets = {t["host"]: t for t in json.loads(body)["targets"]}
        self.assertEqual(set(targets), {"a:1", "b:1"})
        self.assertEqual(targets["a:1"]["labels"], {"cluster": "eu"})
        self.assertTrue(targets["a:1"]["up"])
        self.assertEqual(targets["b:1"]["last_error"], "http://b:1: connection refused")
        self.assertEqual((targets["b:1"]["gaps"], targets["b:1"]["future_events"]), (2, 0))
        self.assertNotIn(b"pw", body)

    def test_status_page(self):
        response, body = self.get("/")
        self.assertEqual(response.code, 200)
        self.assertIn(b"1 of 2 targets up", body)
        self.assertIn(b"https://a:1", body)
        self.assertIn(b"connection refused", body)
        self.assertNotIn(b"pw", body)

    def test_status_page_shows_the_version_escaped(self):
        body = self.get("/")[1].decode()
        self.assertIn(f"<footer><p>cadvisor-events {__version__} (Twisted ", body)
        self.patch(StatusPage, "identity", "cadvisor-events <b>1&2</b>")
        body = self.get("/")[1].decode()
        self.assertIn("<footer><p>cadvisor-events &lt;b&gt;1&amp;2&lt;/b&gt;</p></footer>", body)
        self.assertNotIn("<b>", body)

    def test_metrics_has_build_info(self):
        families = {f.name: f for f in text_string_to_metric_families(self.get("/metrics")[1].decode())}
        (sample,) = families["cadvisor_events_build_info"].samples
        self.assertEqual((sample.labels["version"], sample.value), (__version__, 1.0))

    def test_health(self):
        self.assertEqual(self.get("/-/healthy")[0].code, 200)
        self.assertEqual(self.get("/-/ready")[0].code, 200)
        self.fleet.followers["b:1"].tried = False
        response, body = self.get("/-/ready")
        self.assertEqual(response.code, 503)
        self.assertIn(b"1 target(s) not tried", body)

    def test_ready_waits_for_every_target_source(self):
        class Source:
            reason = "DNS name(s) not looked up yet: cadvisor.test"

            def not_ready(self):
                return self.reason

        source = Source()
        self.patch(self.root.getChild(b"-", None).ready, "sources", [source])
        response, body = self.get("/-/ready")
        self.assertEqual((response.code, body), (503, b"not ready: DNS name(s) not looked up yet: cadvisor.test\n"))
        source.reason = None
        self.assertEqual(self.get("/-/ready")[0].code, 200)

    def test_unknown_paths_are_plain_404(self):
        for path in ["/nope", "/-/", "/-/nope", "/x/y", "//"]:
            response, body = self.get(path)
            self.assertEqual(response.code, 404, path)
            self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/plain; charset=utf-8"])
            self.assertIn(b"/metrics", body)

    def test_methods(self):
        for path in ["/metrics", "/targets", "/", "/-/ready"]:
            response, body = self.get(path, method="POST")
            self.assertEqual(response.code, 405, path)
            self.assertIn(b"use GET or HEAD", body)
        response, body = self.get("/metrics", method="HEAD")
        self.assertEqual((response.code, body), (200, b""))

    def test_proxy_is_mounted(self):
        self.assertEqual(self.get("/proxy/a:1")[1], b"proxy here")


class LargeWritesTests(WebFixture):
    """A /metrics connection offers the kernel megabytes per write: with Twisted's 128 KiB
    per reactor iteration, a scrape starves while ingest keeps the reactor busy."""

    def test_the_innermost_transport_is_raised_through_wrappers(self):
        tcp = abstract.FileDescriptor(reactor)

        class Wrapper:  # as TLSMemoryBIOProtocol wraps the TCP connection
            transport = tcp

        class Channel:
            transport = Wrapper()

        offer_large_writes(Channel())
        self.assertEqual(tcp.SEND_LIMIT, SCRAPE_SEND_LIMIT)
        self.assertEqual(abstract.FileDescriptor.SEND_LIMIT, 128 * 1024)  # only that connection
        offer_large_writes(object())  # no transport at all: nothing to do, no error

    def test_twisted_still_honours_SEND_LIMIT(self):
        # SEND_LIMIT is not documented API: should a Twisted release drop or stop
        # reading it, offer_large_writes would silently do nothing. Pin it: the
        # class attribute exists and a TCP transport sends at most that per write.
        self.assertIn("SEND_LIMIT", vars(abstract.FileDescriptor))
        ours, theirs = socket.socketpair()
        self.addCleanup(theirs.close)
        transport = tcp.Connection(ours, Protocol(), reactor)
        self.addCleanup(ours.close)
        transport.SEND_LIMIT = 7
        self.assertEqual(transport.writeSomeData(b"x" * 100), 7)
        self.assertEqual(theirs.recv(100), b"x" * 7)

    @defer.inlineCallbacks
    def test_a_metrics_connection_over_loopback(self):
        site = build_site(self.root)
        channels = []
        build = site.buildProtocol
        site.buildProtocol = lambda addr: channels.append(build(addr)) or channels[-1]
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
        base = f"http://127.0.0.1:{port.getHost().port}"
        for path in ("/targets", "/metrics"):
            response = yield http.get(base + path)
            yield response.content()
        targets, metrics = (channel._channel for channel in channels)  # the HTTP/1.1 channels
        self.assertEqual(targets.transport.SEND_LIMIT, 128 * 1024)
        self.assertEqual(metrics.transport.SEND_LIMIT, SCRAPE_SEND_LIMIT)


def event_lines(body: bytes) -> list:
    return [line for line in body.split(b"\n") if line.startswith(b"cadvisor_container_events_total{")]


class MetricsRequests(WebFixture):
    """/metrics rendered for DummyRequests (no tests of its own)."""

    def fill(self, series: int) -> None:
        host = self.counters.host("big:1")
        for i in range(series):
            host.count(Event(container_name=f"/kubepods/burstable/pod{i:06d}/{'c' * 64}",
                             timestamp="2026-11-24T17:25:55Z", event_type="oom", event_data=EventData()))

    def resource_with(self, compress=None, **options):
        return MetricsResource(self.registry, self.counters, FleetMetrics(self.fleet, self.counters),
                               compress_in_thread=compress, clock=self.clock, **options)

    def render(self, accept_encoding=b"gzip", method=b"GET", compress=None, resource=None, accept=None):
        """Render /metrics for a request with ``accept_encoding``: (what was sent so far, request).

        Without a ``resource``, each request has its own (so shares no round with another)."""
        request = DummyRequest([b""])
        request.method = method
        request.channel = None
        if accept_encoding is not None:
            request.requestHeaders.setRawHeaders(b"accept-encoding", [accept_encoding])
        if accept is not None:
            request.requestHeaders.setRawHeaders(b"accept", [accept])
        result = (resource or self.resource_with(compress)).render(request)
        if result is NOT_DONE_YET:
            return b"".join(request.written), request
        self.assertTrue(method == b"HEAD" and result == b"" or request.responseCode == 503, result)
        return result, request

    def header(self, request, name):
        return request.responseHeaders.getRawHeaders(name)


class GzipTests(MetricsRequests):
    """/metrics is gzipped when the scraper accepts it (Prometheus sends Accept-Encoding: gzip)."""

    def test_accept_encoding_parsing(self):
        for header, accepted in [
            (None, False), (b"", False), (b"gzip", True), (b"GZIP", True), (b"deflate, gzip;q=0.5", True),
            (b"gzip;q=0", False), (b"gzip; q=0.0, *", False), (b"*", True), (b"*;q=0", False),
            (b"identity", False), (b"br, x-gzip", True), (b"gzip;q=bogus", False),
        ]:
            self.assertEqual(accepts_gzip(header), accepted, header)

    def test_small_body_is_gzipped_at_once(self):
        plain, plain_request = self.render(None)
        body, request = self.render()
        self.assertEqual(self.header(request, b"content-encoding"), [b"gzip"])
        self.assertEqual(self.header(request, b"vary"), [b"Accept-Encoding"])
        self.assertEqual(self.header(request, b"content-length"), [b"%d" % len(body)])
        self.assertEqual(self.header(plain_request, b"content-encoding"), None)
        self.assertEqual(self.header(plain_request, b"vary"), [b"Accept-Encoding"])
        self.assertEqual(event_lines(gzip.decompress(body)), event_lines(plain))
        refused, request = self.render(b"gzip;q=0")
        self.assertEqual((event_lines(refused), self.header(request, b"content-encoding")),
                         (event_lines(plain), None))

    def test_head_is_answered_at_once_with_the_identity_headers(self):
        self.fill(3000)
        body, request = self.render(method=b"HEAD", compress=lambda body: self.fail("compressed a HEAD"))
        self.assertEqual((body, request.finished), (b"", 0))  # twisted.web finishes it: b"" was returned
        self.assertEqual(self.header(request, b"content-encoding"), None)
        plain, _ = self.render(None)
        self.assertEqual(self.header(request, b"content-length"), [b"%d" % len(plain)])
        response, empty = self.get("/metrics", method="HEAD", headers={"Accept-Encoding": "gzip"})
        self.assertEqual((response.code, empty), (200, b""))

    def test_large_body_is_compressed_off_the_reactor_thread_then_sent(self):
        self.fill(3000)
        pending = []
        sent, request = self.render(compress=lambda body: pending.append((body, defer.Deferred())) or pending[-1][1])
        self.assertEqual(sent, b"")  # nothing sent while compressing
        ((body, compressing),) = pending
        self.assertGreater(len(body), GZIP_INLINE_LIMIT)
        compressing.callback(gzip.compress(body))
        self.assertEqual(request.finished, 1)
        self.assertEqual(self.header(request, b"content-encoding"), [b"gzip"])
        self.assertEqual(gzip.decompress(b"".join(request.written)), body)

    def test_a_failed_compression_is_a_plain_500(self):
        self.fill(3000)
        _, request = self.render(compress=lambda body: defer.fail(MemoryError()))
        self.assertEqual((request.responseCode, request.finished), (500, 1))
        self.assertIn(b"compressing /metrics failed", b"".join(request.written))
        self.assertEqual(len(self.flushLoggedErrors(MemoryError)), 1)

    def test_a_scraper_that_leaves_stops_waiting(self):
        self.fill(3000)
        compressing = defer.Deferred()
        resource = self.resource_with(lambda body: compressing)
        sent, request = self.render(resource=resource)
        self.assertEqual(resource.limit.in_flight, 1)
        request.processingFailed(Failure(Exception("scraper left")))
        self.assertEqual(resource.limit.in_flight, 0)
        compressing.callback(b"gzipped")  # a thread cannot be stopped; its result is dropped
        self.assertEqual((request.written, self.flushLoggedErrors()), ([], []))

    @defer.inlineCallbacks
    def test_the_thread_pool_over_loopback(self):
        self.fill(3000)
        port = reactor.listenTCP(0, build_site(self.root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))  # no decoding
        url = f"http://127.0.0.1:{port.getHost().port}/metrics".encode()
        response = yield agent.request(b"GET", url, Headers({b"Accept-Encoding": [b"gzip"]}))
        self.assertEqual(response.headers.getRawHeaders(b"content-encoding"), [b"gzip"])
        body = gzip.decompress((yield readBody(response)))
        plain = yield readBody((yield agent.request(b"GET", url)))
        self.assertEqual(event_lines(body), event_lines(plain))
        self.assertEqual(len(event_lines(body)), 3001)


class SlicedSendingTests(MetricsRequests):
    """A body of several slices arrives whole to concurrent scrapers, over TLS too (TLS passes
    the pauses of the TCP connection on to the sender)."""

    @defer.inlineCallbacks
    def test_several_slices_over_tls(self):
        self.fill(50_000)
        directory = self.mktemp()
        os.makedirs(directory)
        key, cert = self_signed(directory)
        port = reactor.listenSSL(0, build_site(self.root), server_options(key, cert), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        agent = Agent(reactor, contextFactory=client_tls_policy(cert),
                      pool=HTTPConnectionPool(reactor, persistent=False))
        url = f"https://localhost:{port.getHost().port}/metrics"
        responses = yield defer.gatherResults([HTTPClient(agent).get(url) for _ in range(3)])
        bodies = yield defer.gatherResults([response.content() for response in responses])
        self.assertEqual([r.code for r in responses], [200, 200, 200])
        for body in bodies:  # (the handshakes end in different rounds: each may have its own body)
            self.assertGreater(len(body), SCRAPE_SEND_LIMIT + 1)
            self.assertEqual(len(event_lines(body)), 50_001)
            families = {f.name for f in text_string_to_metric_families(body.decode())}
            self.assertIn("cadvisor_events_metrics_renders", families)  # the tail arrived, parsed


def scrape_samples(body: bytes) -> dict:
    """The samples about /metrics itself in a text body: ``{name or (name, code): value}``."""
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name.startswith(("promhttp_", "cadvisor_events_metrics_")):
                code = sample.labels.get("code")
                samples[(sample.name, code) if code else sample.name] = sample.value
    return samples


class SharedScrapesTests(MetricsRequests):
    """Scrapes of one round share its body; at most --web-max-requests answers are in flight."""

    def test_the_scrapes_of_one_round_share_one_render(self):
        resource = self.resource_with()
        first, _ = self.render(None, resource=resource)
        again, _ = self.render(None, resource=resource)
        openmetrics, _ = self.render(None, resource=resource, accept=b"application/openmetrics-text; version=1.0.0")
        self.assertIs(resource.bodies.identity(TEXT_CONTENT_TYPE.decode(), lambda: self.fail("rendered")),
                      resource.bodies.identity(TEXT_CONTENT_TYPE.decode(), lambda: self.fail("rendered")))
        self.assertEqual(first, again)
        self.assertEqual(resource.bodies.renders, 2)  # text once, OpenMetrics once
        self.assertEqual(scrape_samples(first)["cadvisor_events_metrics_renders_total"], 1)
        self.assertTrue(openmetrics.endswith(b"# EOF\n"))
        gzipped, _ = self.render(resource=resource)  # small: gzipped from this round's text body
        self.assertEqual(gzip.decompress(gzipped), first)
        self.assertEqual(resource.bodies.renders, 2)

        self.clock.advance(0)  # the reactor reads the next batch of requests: a new round
        later, _ = self.render(None, resource=resource)
        self.assertEqual(resource.bodies.renders, 3)
        self.assertEqual(scrape_samples(later)["cadvisor_events_metrics_renders_total"], 3)
        self.assertEqual(scrape_samples(later)[("promhttp_metric_handler_requests_total", "200")], 4)

    def test_a_gzipped_body_is_shared_and_later_scrapes_wait_for_the_next_round(self):
        self.fill(3000)
        compressions = []

        def compress(body):
            compressions.append((body, defer.Deferred()))
            return compressions[-1][1]

        resource = self.resource_with(compress)
        first = [self.render(resource=resource)[1] for _ in range(3)]
        self.assertEqual((len(compressions), resource.bodies.renders), (1, 1))
        self.clock.advance(0)
        self.count(1)  # a series counted after the first round's render
        second = [self.render(resource=resource)[1] for _ in range(2)]
        self.clock.advance(0)
        second.append(self.render(resource=resource)[1])
        # Arrived after the running compression's render: they wait, nothing more is rendered.
        self.assertEqual((len(compressions), resource.bodies.renders), (1, 1))
        self.assertEqual(resource.limit.in_flight, 6)

        body, compressing = compressions[0]
        compressing.callback(gzip.compress(body))
        self.assertEqual([r.finished for r in first], [1, 1, 1])
        self.assertEqual({gzip.decompress(b"".join(r.written)) for r in first}, {body})
        self.assertEqual((len(compressions), resource.bodies.renders), (2, 2))  # one new round for all
        self.assertEqual([r.finished for r in second], [0, 0, 0])
        newer, compressing = compressions[1]
        self.assertEqual(len(event_lines(newer)), len(event_lines(body)) + 1)
        compressing.callback(gzip.compress(newer))
        self.assertEqual({gzip.decompress(b"".join(r.written)) for r in second}, {newer})
        self.assertEqual(resource.limit.in_flight, 0)

    def test_waiters_that_all_left_start_no_round(self):
        self.fill(3000)
        compressions = []
        resource = self.resource_with(lambda body: compressions.append(defer.Deferred()) or compressions[-1])
        self.render(resource=resource)
        self.clock.advance(0)
        _, waiting = self.render(resource=resource)
        waiting.processingFailed(Failure(Exception("scraper left")))
        compressions[0].callback(b"x")
        self.assertEqual((len(compressions), resource.bodies.renders, resource.limit.in_flight), (1, 1, 0))

    def count(self, n: int) -> None:
        host = self.counters.host("late:1")
        for i in range(n):
            host.count(Event(container_name=f"/late/{i}", timestamp="2026-11-24T17:25:55Z",
                             event_type="oom", event_data=EventData()))

    def test_beyond_the_limit_a_503_with_retry_after_and_a_reason(self):
        self.fill(3000)
        pending = []
        resource = self.resource_with(lambda body: pending.append(defer.Deferred()) or pending[-1],
                                      max_requests=2)
        held = [self.render(resource=resource)[1] for _ in range(2)]
        body, refused = self.render(None, resource=resource)
        self.assertEqual(refused.responseCode, 503)
        self.assertEqual(self.header(refused, b"retry-after"), [b"1"])
        self.assertEqual(body, b"/metrics is busy: 2 answers in flight (--web-max-requests 2); retry in a second\n")
        self.assertEqual(resource.limit.in_flight, 2)
        pending[0].callback(b"gzipped")
        self.assertEqual([r.finished for r in held], [1, 1])
        self.clock.advance(0)
        body, answered = self.render(None, resource=resource)
        self.assertIsNone(answered.responseCode)
        samples = scrape_samples(body)
        self.assertEqual(samples["promhttp_metric_handler_requests_in_flight"], 1)
        self.assertEqual(samples[("promhttp_metric_handler_requests_total", "503")], 1)
        self.assertEqual(samples[("promhttp_metric_handler_requests_total", "200")], 2)  # this one: after

    def test_zero_means_no_limit(self):
        resource = self.resource_with(lambda body: defer.Deferred(), max_requests=0)
        self.fill(3000)
        for _ in range(100):
            self.assertIsNone(self.render(resource=resource)[1].responseCode)  # 200, left unset
        self.assertEqual(resource.limit.in_flight, 100)

    def test_head_holds_no_place(self):
        resource = self.resource_with(max_requests=1)
        self.render(method=b"HEAD", resource=resource)
        self.assertEqual(resource.limit.in_flight, 1)  # until twisted.web finishes it
        self.assertEqual(self.get("/metrics", method="HEAD")[0].code, 200)


class PromtoolTests(WebFixture):
    """``promtool check metrics`` (Prometheus' own linter) accepts what we serve."""

    if not shutil.which("promtool"):
        skip = "promtool not installed (Debian: apt-get install prometheus); .ci/run installs it"

    def check(self, body: bytes) -> None:
        result = subprocess.run(
            ["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_metrics_pass_promtool(self):
        host = self.counters.host("b:1", (("note", 'a "b" \\ c\nd'),))
        for i, name in enumerate(["", "sh -c 'x'", "<>&", "\u00e9\u65e5", 'q"uote\\']):
            host.count(
                Event(
                    container_name=f"/kubepods/pod{i}/c\\{i}",
                    timestamp="2026-11-24T17:25:55Z",
                    event_type="oomKill",
                    event_data=EventData(oom=OomKill(pid=i, process_name=name)),
                )
            )
        _, body = self.get("/metrics")
        self.check(body)


class AccessLogTests(unittest.TestCase):
    """The access log (Site's combined log line) never shows a credential from a /proxy URL."""

    def test_redact_uri(self):
        for uri, shown in [
            (b"/proxy/http://user:s3cret@h:1", b"/proxy/http://***@h:1"),
            (b"/proxy/user:s3cret@h:1", b"/proxy/***@h:1"),
            (b"/proxy/http%3A%2F%2Fuser%3As3cret%40h%3A1", b"/proxy/http://***@h:1"),
            (b"/proxy?url=http://user:s3cret@h:1", b"/proxy?url=http://***@h:1"),
            (b"/proxy/?url=user%3As3cret%40h", b"/proxy/***@h"),
            (b"/proxy?url=HTTPS%3A%2F%2Fuser%3As3cret%40h", b"/proxy?url=HTTPS://***@h"),
            (b"/proxy/http://user:s3/cr?et@h:1", b"/proxy/http://***@h:1"),
            (b"/proxy/http://u:s3@cret@h:1", b"/proxy/http://***@h:1"),
            (b"/proxy/http://u:s%0A3@h:1", b"/proxy/http://***@h:1"),
            (b"/metrics", b"/metrics"),
            (b"/proxy/h:1", b"/proxy/h:1"),
        ]:
            self.assertEqual(redact_uri(uri), shown, uri)

    @defer.inlineCallbacks
    def serve_and_get(self, *paths: str, **site_options):
        """GET ``paths`` from a site of a /proxy leaf; return the log events seen meanwhile."""
        root = Root({b"proxy": Leaf(), b"-": Dashes(FakeFleet([]))}, index=Leaf())
        site = build_site(root, **site_options)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        events: list = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        pool = HTTPConnectionPool(reactor, persistent=False)
        http = HTTPClient(Agent(reactor, pool=pool))
        for path in paths:
            response = yield http.get(f"http://127.0.0.1:{port.getHost().port}{path}")
            yield response.content()
        return events

    @defer.inlineCallbacks
    def test_logged_line_hides_the_password(self):
        events = yield self.serve_and_get("/proxy/http://user:s3cret@h:1", access_log=True)
        # The line is written when the request is done.
        yield until(lambda: any("/proxy/" in formatEvent(e) for e in events), "the access log line")
        lines = [formatEvent(e) for e in events]
        self.assertTrue(any('"GET /proxy/http://***@h:1 HTTP/1.1" 200' in line for line in lines), lines)
        self.assertFalse(any("s3cret" in line for line in lines), lines)

    @defer.inlineCallbacks
    def test_no_access_log_by_default(self):
        events = yield self.serve_and_get("/proxy/a", "/nothing", "/proxy/b")
        logged = yield self.serve_and_get("/proxy/c", access_log=True)  # written after its answer
        yield until(lambda: any("/proxy/c" in formatEvent(e) for e in logged), "the access log line")
        lines = [formatEvent(e) for e in events]
        self.assertTrue(any("/proxy/c" in line for line in lines))  # this observer saw it too
        self.assertEqual([line for line in lines if "/proxy/a" in line or "/nothing" in line
                          or "/proxy/b" in line], [], lines)


class OomKillsPageTests(WebFixture):
    """/oom-kills and the status page's recent kills (every value escaped), and both OOM kill
    families in /metrics in either format."""

    def setUp(self):
        super().setUp()
        self.kills = OomKills(self.clock)
        self.counters.families_after.append(self.kills)
        host = self.kills.host("a:1", (("cluster", "eu"),))
        key = ("payments", "checkout-7d9f", "api")
        host.learned("/pod/c1", key)
        host.killed(RecentKill(ns=2 * 10**9, timestamp="2026-11-24T17:00:02Z", host="a:1", namespace=key[0],
                               pod=key[1], container=key[2], cgroup="/pod/c1", limit_cgroup="/pod",
                               process="<script>", pid=7), "/pod/c1", key)
        host.killed(RecentKill(ns=10**9, timestamp="2026-11-24T17:00:01Z", host="a:1", namespace="", pod="",
                               container="", cgroup="/", limit_cgroup="/", process="chrome", pid=8), None, None)
        host.ready()
        self.root = build_root(registry=self.registry, counters=self.counters,
                               fleet_metrics=FleetMetrics(self.fleet, self.counters), fleet=self.fleet,
                               proxy=Leaf(), oom_kills=self.kills)
        self.http = StubTreq(self.root)

    def test_json_lists_the_kills_newest_first(self):
        response, body = self.get("/oom-kills")
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        kills = json.loads(body)["oom_kills"]
        self.assertEqual([(k["container"], k["process"], k["node_oom"]) for k in kills],
                         [("api", "<script>", False), ("", "chrome", True)])

    def test_the_page_shows_them_above_the_targets_escaped(self):
        _, page = self.get("/")
        self.assertIn(b"payments/checkout-7d9f/api", page)
        self.assertIn(b"&lt;script&gt;", page)
        self.assertNotIn(b"<td><script>", page)  # the page's own refresh script is the only one
        self.assertEqual(page.count(b"<script>"), 1)
        self.assertIn(b"/ (node OOM)", page)
        self.assertLess(page.index(b"Recent OOM kills"), page.index(b"<th>target</th>"))

    def test_metrics_carry_both_families_in_both_formats(self):
        _, body = self.get("/metrics")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        (sample,) = families["cadvisor_container_oom_kills"].samples
        self.assertEqual((sample.labels["container"], sample.value), ("api", 1))
        self.assertEqual(families["cadvisor_node_oom_kills"].samples[0].value, 1)
        _, body = self.get("/metrics", headers={"Accept": ["application/openmetrics-text; version=1.0.0"]})
        families = {f.name: f for f in om_families(body.decode())}
        self.assertEqual(families["cadvisor_container_oom_kills"].type, "counter")
        self.assertEqual(families["cadvisor_node_oom_kills"].samples[0].value, 1)
