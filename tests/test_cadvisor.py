"""Tests for cadvisor_events.cadvisor: targets, URLs, and the history/stream/spec client."""

from urllib.parse import parse_qsl, urlsplit

import base64
from treq.client import HTTPClient
from twisted.internet import defer, reactor
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from twisted.web import resource, server
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from treq.testing import StubTreq

from cadvisor_events.cadvisor import (
    CAdvisorClient,
    LimitedBodyReader,
    TargetError,
    UnknownContainer,
    UpstreamError,
    history_url,
    parse_target,
    request_url,
    spec_url,
    stream_url,
)
from cadvisor_events.httpclients import stream_http_client


class ParseTargetTests(unittest.TestCase):
    def test_forms(self):
        cases = {
            "10.0.0.5": ("http", "10.0.0.5", 8080),
            "10.0.0.5:9000": ("http", "10.0.0.5", 9000),
            "node7": ("http", "node7", 8080),
            "http://node7:81/": ("http", "node7", 81),
            "https://node7:8443": ("https", "node7", 8443),
            "https://node7": ("https", "node7", 443),
            "[::1]:8080": ("http", "::1", 8080),
            "http://[::1]": ("http", "::1", 8080),
            "HTTP://Node7:1/x?y=z": ("http", "node7", 1),
        }
        for text, (scheme, host, port) in cases.items():
            target = parse_target(text)
            self.assertEqual((target.scheme, target.host, target.port), (scheme, host, port), text)

    def test_names(self):
        self.assertEqual(parse_target("node7").name, "node7:8080")
        self.assertEqual(parse_target("[::1]:9").name, "[::1]:9")
        self.assertEqual(parse_target("https://n:1").base_url, "https://n:1")

    def test_credentials_hidden(self):
        target = parse_target("https://user:s3cret@node7:8443")
        self.assertEqual((target.username, target.password), ("user", "s3cret"))
        self.assertNotIn("s3cret", repr(target))
        self.assertNotIn("s3cret", target.base_url)
        self.assertNotIn("s3cret", target.name)

    def test_errors(self):
        for bad in ["", "   ", "http://", "ftp://x", "x:99999", "x:port", "http://a b", "x:0"]:
            with self.assertRaises(TargetError, msg=bad):
                parse_target(bad)

    def test_error_message_hides_password(self):
        with self.assertRaises(TargetError) as e:
            parse_target("http://u:pw@host:notaport")
        self.assertNotIn("pw", str(e.exception))


class UrlTests(unittest.TestCase):
    target = parse_target("h:1")

    def query(self, url):
        parts = urlsplit(url)
        self.assertEqual(parts.path, "/api/v1.3/events")
        return dict(parse_qsl(parts.query))

    def test_history_like_go_seed(self):
        self.assertEqual(
            self.query(history_url(self.target, oom_only=False)),
            {"subcontainers": "true", "max_events": "-1", "all_events": "true"},
        )
        self.assertEqual(
            self.query(history_url(self.target, oom_only=True)),
            {"subcontainers": "true", "max_events": "-1", "oom_events": "true", "oom_kill_events": "true"},
        )

    def test_start_time_passed_verbatim(self):
        ts = "2026-11-24T17:25:55.873677656+03:00"
        url = history_url(self.target, oom_only=False, start_time=ts)
        self.assertIn("start_time=2026-11-24T17%3A25%3A55.873677656%2B03%3A00", url)
        self.assertEqual(self.query(url)["start_time"], ts)

    def test_stream(self):
        self.assertEqual(
            self.query(stream_url(self.target, oom_only=False)),
            {"stream": "true", "subcontainers": "true", "all_events": "true"},
        )


class Fixed(resource.Resource):
    isLeaf = True

    def __init__(self, code=200, body=b"[]"):
        super().__init__()
        self.code, self.body, self.requests = code, body, []

    def render_GET(self, request):
        self.requests.append(request)
        request.setResponseCode(self.code)
        return self.body


class Hang(resource.Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests = []

    def render_GET(self, request):
        self.requests.append(request)
        return server.NOT_DONE_YET


def serve(case: unittest.TestCase, res: resource.Resource):
    """A target (with credentials) on a loopback server of ``res``, closed after ``case``."""
    port = reactor.listenTCP(0, server.Site(res), interface="127.0.0.1")
    case.addCleanup(port.stopListening)
    return parse_target(f"http://user:pw@127.0.0.1:{port.getHost().port}")


class ClientTests(unittest.TestCase):
    target = parse_target("https://user:pw@h:1")

    def fetch(self, res, clock=None, **kw):
        stub = StubTreq(res)
        client = CAdvisorClient(clock or Clock(), http=stub)
        d = client.fetch_history(self.target, oom_only=False, **kw)
        stub.flush()
        return d

    def test_history_body(self):
        res = Fixed(body=b"[1]")
        self.assertEqual(self.successResultOf(self.fetch(res)), b"[1]")
        auth = res.requests[0].getHeader(b"authorization")
        self.assertEqual(auth, b"Basic dXNlcjpwdw==")

    def test_non_200_gives_status_error_with_excerpt(self):
        failure = self.failureResultOf(self.fetch(Fixed(500, b"<html>boom</html>")), UpstreamError)
        self.assertEqual(failure.value.reason, "status")
        self.assertIn("HTTP 500", failure.value.message)
        self.assertIn("boom", failure.value.message)
        self.assertNotIn("pw", failure.value.message)

    def test_too_large(self):
        failure = self.failureResultOf(self.fetch(Fixed(body=b"x" * 100), max_bytes=10), UpstreamError)
        self.assertEqual(failure.value.reason, "too_large")

    def test_timeout(self):
        clock = Clock()
        d = self.fetch(Hang(), clock=clock, timeout=5)
        self.assertNoResult(d)
        clock.advance(5)
        failure = self.failureResultOf(d, UpstreamError)
        self.assertEqual(failure.value.reason, "timeout")
        self.assertNotIn("pw", failure.value.message)

    @defer.inlineCallbacks
    def test_stream_non_200(self):
        target = serve(self, Fixed(404, b"not here"))
        failure = yield self.assertFailure(
            CAdvisorClient(reactor).open_stream(target, oom_only=True, timeout=10), UpstreamError)
        self.assertEqual(failure.reason, "status")
        self.assertIn("404", str(failure))
        self.assertNotIn("pw", str(failure))

    def check_excerpt(self, failure: UpstreamError) -> None:
        self.assertEqual(failure.reason, "status")
        self.assertIn("HTTP 503: <p>busy</p>xxx", failure.message)
        self.assertTrue(failure.message.endswith("..."))
        self.assertLess(len(failure.message), 400)

    def test_error_bodies_are_read_only_up_to_an_excerpt(self):
        stub = StubTreq(Fixed(503, b"<p>busy</p>" + b"x" * 1_000_000))
        history = CAdvisorClient(Clock(), http=stub).fetch_history(self.target, oom_only=False)
        stub.flush()
        self.check_excerpt(self.failureResultOf(history, UpstreamError).value)

    @defer.inlineCallbacks
    def test_stream_error_bodies_are_read_only_up_to_an_excerpt(self):
        big = Fixed(503, b"<p>busy</p>" + b"x" * 1_000_000)
        stream = CAdvisorClient(reactor).open_stream(serve(self, big), oom_only=False, timeout=10)
        self.check_excerpt((yield self.assertFailure(stream, UpstreamError)))

    def test_truncating_reader_keeps_the_first_bytes(self):
        d = defer.Deferred()
        reader = LimitedBodyReader(d, 10, truncate=True)
        reader.makeConnection(StringTransport())
        reader.dataReceived(b"12345678")
        self.assertNoResult(d)
        reader.dataReceived(b"abcdef")
        self.assertEqual(self.successResultOf(d), b"12345678ab")
        self.assertEqual(reader.transport.producerState, "stopped")

    @defer.inlineCallbacks
    def test_stream_200_gives_response(self):
        res = Fixed(200, b"{}\n")
        response = yield CAdvisorClient(reactor).open_stream(serve(self, res), oom_only=True, timeout=10)
        self.assertEqual(response.code, 200)
        self.assertEqual((yield readBody(response)), b"{}\n")
        request = res.requests[0]
        self.assertEqual(request.getHeader(b"authorization"), b"Basic " + base64.b64encode(b"user:pw"))
        self.assertEqual(request.getHeader(b"accept"), b"application/json")
        self.assertEqual(request.args[b"stream"], [b"true"])


class SpecClientTests(unittest.TestCase):
    """``CAdvisorClient.spec``: URL, decoding, cAdvisor's unknown-container 500, bounds."""

    target = parse_target("http://user:pw@h:1")

    def spec(self, res, clock=None, **kw):
        stub = StubTreq(res)
        d = CAdvisorClient(clock or Clock(), http=stub).spec(self.target, **kw)
        stub.flush()
        return d

    def test_url(self):
        target = parse_target("h:1")
        self.assertEqual(spec_url(target), "http://h:1/api/v2.0/spec/?type=name")
        self.assertEqual(spec_url(target, "/", recursive=True), "http://h:1/api/v2.0/spec/?type=name&recursive=true")
        self.assertEqual(spec_url(target, "/kubepods/burstable/pod1/ab c"),
                         "http://h:1/api/v2.0/spec/kubepods/burstable/pod1/ab%20c?type=name")
        self.assertEqual(spec_url(target, "system.slice"), "http://h:1/api/v2.0/spec/system.slice?type=name")

    def test_answer_is_decoded_and_the_request_is_authenticated(self):
        res = Fixed(body=b'{"/docker/a":{"aliases":["web","a"],"labels":{"k":"v"},"has_cpu":true}}')
        answer = self.successResultOf(self.spec(res, name="/docker/a", recursive=True))
        self.assertEqual(answer, {"/docker/a": {"aliases": ["web", "a"], "labels": {"k": "v"}, "has_cpu": True}})
        request = res.requests[0]
        self.assertEqual(request.uri, b"/api/v2.0/spec/docker/a?type=name&recursive=true")
        self.assertEqual(request.getHeader(b"authorization"), b"Basic dXNlcjpwdw==")

    def test_unknown_container_is_its_own_error(self):
        for body in (b'unknown container "/docker/gone"\n', b'unknown container: "/docker/gone"\n',
                     b'partial failures: ["/x": GetInfo: unknown container "/x"]\n'):
            failure = self.failureResultOf(self.spec(Fixed(500, body), name="/docker/gone"), UnknownContainer)
            self.assertEqual(failure.value.reason, "unknown_container")
            self.assertIn("/docker/gone" if b"gone" in body else "/x", failure.value.message)

    def test_other_errors(self):
        failure = self.failureResultOf(self.spec(Fixed(500, b"boom")), UpstreamError)
        self.assertEqual(failure.value.reason, "status")
        self.assertNotIsInstance(failure.value, UnknownContainer)
        self.assertEqual(self.failureResultOf(self.spec(Fixed(404, b'unknown container "/"')),
                                              UpstreamError).value.reason, "status")
        for body in (b"[]", b'{"/": 1}', b"{", b'{"/": {}} trailing', b"\xff"):
            failure = self.failureResultOf(self.spec(Fixed(200, body)), UpstreamError)
            self.assertEqual(failure.value.reason, "body", body)
            self.assertNotIn("pw", failure.value.message)

    def test_bounded_body_and_timeout(self):
        failure = self.failureResultOf(self.spec(Fixed(body=b"{}" + b" " * 100), max_bytes=10), UpstreamError)
        self.assertEqual(failure.value.reason, "too_large")
        self.assertNotIn("--max-history-bytes", failure.value.message)
        clock = Clock()
        d = self.spec(Hang(), clock=clock, timeout=3)
        self.assertNoResult(d)
        clock.advance(3)
        self.assertEqual(self.failureResultOf(d, UpstreamError).value.reason, "timeout")


class Redirect(resource.Resource):
    """302 to another path on the same host, recording every request."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.paths = []

    def render_GET(self, request):
        self.paths.append(request.path)
        request.setResponseCode(302)
        request.setHeader(b"Location", b"/elsewhere" + request.uri)
        return b"moved"


class RedirectTests(unittest.TestCase):
    """A 3xx is a ``status`` failure; the redirect is never followed (it could lead anywhere)."""

    def check(self, failure, res):
        self.assertEqual(failure.reason, "status")
        self.assertIn("HTTP 302", failure.message)
        self.assertEqual(res.paths, [b"/api/v1.3/events"])

    def test_history(self):
        res = Redirect()
        stub = StubTreq(res)
        d = CAdvisorClient(Clock(), http=stub).fetch_history(parse_target("h:1"), oom_only=False)
        stub.flush()
        self.check(self.failureResultOf(d, UpstreamError).value, res)

    @defer.inlineCallbacks
    def test_stream(self):
        res = Redirect()
        d = CAdvisorClient(reactor).open_stream(serve(self, res), oom_only=False, timeout=10)
        self.check((yield self.assertFailure(d, UpstreamError)), res)


class IPv6Tests(unittest.TestCase):
    """IPv6 literal targets reach treq intact (hyperlink's ``to_uri`` cannot IDNA-encode ``::1``)."""

    def test_url_kept_as_built(self):
        target = parse_target("[::1]:8080")
        url = request_url(history_url(target, oom_only=False, start_time="2026-11-24T17:25:55.1+03:00"))
        self.assertEqual(url.to_uri().to_text(), history_url(
            target, oom_only=False, start_time="2026-11-24T17:25:55.1+03:00"))
        self.assertTrue(url.to_text().startswith("http://[::1]:8080/api/v1.3/events?"))

    def test_stub_sees_the_v6_host(self):
        res = Fixed(body=b"[]")
        stub = StubTreq(res)
        d = CAdvisorClient(Clock(), http=stub).fetch_history(parse_target("[::1]:8080"), oom_only=False)
        stub.flush()
        self.assertEqual(self.successResultOf(d), b"[]")
        self.assertEqual(res.requests[0].getHeader(b"host"), b"[::1]:8080")

    @defer.inlineCallbacks
    def test_real_v6_loopback(self):
        try:
            port = reactor.listenTCP(0, server.Site(Fixed(body=b"[]")), interface="::1")
        except CannotListenError:
            raise unittest.SkipTest("no IPv6 loopback on this machine")
        self.addCleanup(port.stopListening)
        target = parse_target(f"[::1]:{port.getHost().port}")
        plain = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
        for http in (plain, stream_http_client(reactor)):
            client = CAdvisorClient(reactor, http=http)
            body = yield client.fetch_history(target, oom_only=False, timeout=10)
            self.assertEqual(body, b"[]")
            response = yield client.open_stream(target, oom_only=False, timeout=10)
            self.assertEqual(response.code, 200)
            self.assertEqual((yield readBody(response)), b"[]")
