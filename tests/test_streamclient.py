"""The lean stream GET: framing, early bytes, ends and cuts, bad responses, cancelling, and a
real loopback server (keepalive, a chunked stream, a request the server sees)."""

from __future__ import annotations

import socket

from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web import resource, server
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived, readBody
from twisted.web.http import PotentialDataLoss

from cadvisor_events.streamclient import MAX_HEADER_BYTES, BadResponse, StreamClient, StreamConnection

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
EVENTS = [b'{"a":1}\n', b'{"b":22}\n', b'{"c":333}\n']


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


class Body(Protocol):
    """Records what a body protocol is given."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []
        self.ended: list[Failure] = []

    def dataReceived(self, data: bytes) -> None:
        self.calls.append(data)

    def connectionLost(self, reason=None) -> None:
        self.ended.append(reason)


class Connected:
    """A StreamConnection on a StringTransport; ``response`` once its head is in."""

    def __init__(self, case: unittest.TestCase, deliver: bool = True) -> None:
        self.ready: defer.Deferred = defer.Deferred()
        self.connection = StreamConnection(b"GET / HTTP/1.1\r\n\r\n", self.ready)
        self.transport = StringTransport()
        self.body = Body()
        if deliver:
            self.ready.addCallback(lambda response: response.deliverBody(self.body) or response)
        self.connection.makeConnection(self.transport)

    def feed(self, data: bytes, step: int = 0) -> None:
        if not step:
            self.connection.dataReceived(data)
            return
        for i in range(0, len(data), step):
            self.connection.dataReceived(data[i:i + step])


class FramingTests(unittest.TestCase):
    def test_request_is_written_on_connect(self):
        c = Connected(self)
        self.assertEqual(c.transport.value(), b"GET / HTTP/1.1\r\n\r\n")

    def test_one_chunk_per_event_arrives_as_one_call(self):
        c = Connected(self)
        c.feed(HEAD + chunked(*EVENTS))
        response = self.successResultOf(c.ready)
        self.assertEqual((response.code, response.phrase), (200, b"OK"))
        self.assertEqual(c.body.calls, EVENTS)
        self.assertTrue(c.body.ended[0].check(ResponseDone))
        self.assertTrue(c.transport.disconnecting)

    def test_any_split_gives_the_same_bytes(self):
        stream = HEAD + chunked(*EVENTS) + b"extra after the end is ignored"
        for step in (1, 2, 3, 5, 7, 13, 64):
            c = Connected(self)
            c.feed(stream, step)
            self.assertEqual(b"".join(c.body.calls), b"".join(EVENTS), step)
            self.assertEqual(len(c.body.ended), 1, step)
            self.assertTrue(c.body.ended[0].check(ResponseDone), step)

    def test_chunk_extensions_and_trailers(self):
        c = Connected(self)
        c.feed(HEAD + b"8;name=value\r\n" + EVENTS[0] + b"\r\n0\r\nX-Trailer: 1\r\n\r\n")
        self.assertEqual(c.body.calls, [EVENTS[0]])
        self.assertTrue(c.body.ended[0].check(ResponseDone))

    def test_content_length(self):
        c = Connected(self)
        c.feed(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot here!and more")
        self.assertEqual(self.successResultOf(c.ready).code, 404)
        self.assertEqual(c.body.calls, [b"not here!"])
        self.assertTrue(c.body.ended[0].check(ResponseDone))
        self.assertTrue(c.transport.disconnecting)

    def test_empty_bodies(self):
        for head in (b"HTTP/1.1 204 No Content\r\n\r\n", b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"):
            c = Connected(self)
            c.feed(head)
            self.assertEqual(c.body.calls, [])
            self.assertTrue(c.body.ended[0].check(ResponseDone))

    def test_body_ended_by_close_may_have_lost_data(self):
        c = Connected(self)
        c.feed(b"HTTP/1.1 200 OK\r\n\r\nsome")
        c.connection.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(c.body.calls, [b"some"])
        self.assertTrue(c.body.ended[0].check(PotentialDataLoss))

    def test_cut_inside_a_chunk(self):
        c = Connected(self)
        c.feed(HEAD + b"10\r\n" + b"12345")
        c.connection.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(c.body.calls, [b"12345"])
        self.assertTrue(c.body.ended[0].check(ResponseFailed))
        self.assertTrue(c.body.ended[0].value.reasons[0].check(ConnectionLost))

    def test_bytes_before_deliver_body_are_kept(self):
        c = Connected(self, deliver=False)
        c.feed(HEAD + chunked(*EVENTS))
        response = self.successResultOf(c.ready)
        response.deliverBody(c.body)
        self.assertEqual(c.body.calls, EVENTS)
        self.assertTrue(c.body.ended[0].check(ResponseDone))
        self.assertIs(c.body.transport, response)

    def test_producer_calls_reach_the_socket(self):
        c = Connected(self)
        c.feed(HEAD)
        c.body.transport.pauseProducing()
        self.assertEqual(c.transport.producerState, "paused")
        c.body.transport.resumeProducing()
        self.assertEqual(c.transport.producerState, "producing")
        c.body.transport.stopProducing()
        self.assertTrue(c.transport.disconnecting)  # StringTransport's abortConnection
        c.connection.connectionLost(Failure(ConnectionAborted()))
        self.assertTrue(c.body.ended[0].check(ResponseFailed))


class BadResponseTests(unittest.TestCase):
    def assertNeverReceived(self, c: Connected, words: str) -> None:
        failure = self.failureResultOf(c.ready, ResponseNeverReceived)
        inner = failure.value.reasons[0]
        self.assertTrue(inner.check(BadResponse))
        self.assertIn(words, str(inner.value))
        self.assertTrue(c.transport.disconnecting)

    def test_not_http(self):
        c = Connected(self)
        c.feed(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        self.assertNeverReceived(c, "not an HTTP/1.x status line")

    def test_headers_too_long(self):
        c = Connected(self)
        c.feed(b"HTTP/1.1 200 OK\r\nX: " + b"y" * MAX_HEADER_BYTES)
        self.assertNeverReceived(c, "longer than")

    def test_malformed_header(self):
        c = Connected(self)
        c.feed(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n")
        self.assertNeverReceived(c, "malformed response header")

    def test_bad_content_length(self):
        c = Connected(self)
        c.feed(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n")
        self.assertNeverReceived(c, "bad Content-Length")

    def test_bad_chunk_size_cuts_the_body(self):
        for bad in (b"zz\r\n", b"\r\n", b"1" * 2000):
            c = Connected(self)
            c.feed(HEAD + chunked(EVENTS[0])[:-5] + bad)
            self.assertEqual(c.body.calls, [EVENTS[0]])
            self.assertTrue(c.body.ended[0].check(ResponseFailed), bad)
            self.assertTrue(c.body.ended[0].value.reasons[0].check(BadResponse), bad)
            self.assertTrue(c.transport.disconnecting)

    def test_chunk_without_crlf_after_it(self):
        c = Connected(self)
        c.feed(HEAD + b"2\r\nabXY")
        self.assertIn("CRLF", str(c.body.ended[0].value.reasons[0].value))

    def test_lost_before_the_head(self):
        c = Connected(self)
        c.feed(b"HTTP/1.1 200")
        c.connection.connectionLost(Failure(ConnectionLost()))
        failure = self.failureResultOf(c.ready, ResponseNeverReceived)
        self.assertTrue(failure.value.reasons[0].check(ConnectionLost))


class Stream(resource.Resource):
    """Writes the given events as chunks, then holds the stream open; records requests."""

    isLeaf = True

    def __init__(self, events=()) -> None:
        super().__init__()
        self.requests: list = []
        self.events = list(events)
        self.gone: defer.Deferred = defer.Deferred()

    def render_GET(self, request):
        self.requests.append(request)
        request.notifyFinish().addBoth(lambda _: self.gone.callback(None))
        request.setHeader(b"content-type", b"application/json")
        for event in self.events:
            request.write(event)
        return server.NOT_DONE_YET


class LoopbackTests(unittest.TestCase):
    def serve(self, res) -> str:
        port = reactor.listenTCP(0, server.Site(res), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}/api/v1.3/events?stream=true"

    @defer.inlineCallbacks
    def test_stream_from_a_real_server(self):
        res = Stream(EVENTS)
        response = yield StreamClient(reactor).get(self.serve(res), [(b"Accept", b"application/json")])
        self.assertEqual(response.code, 200)
        self.assertTrue(response.transport.getHandle().getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
        body = Body()
        got: defer.Deferred = defer.Deferred()
        body.dataReceived = lambda data: (body.calls.append(data),
                                          len(body.calls) == len(EVENTS) and got.callback(None))
        response.deliverBody(body)
        yield got
        self.assertEqual(body.calls, EVENTS)
        request = res.requests[0]
        self.assertEqual(request.uri, b"/api/v1.3/events?stream=true")
        self.assertEqual(request.getHeader(b"accept"), b"application/json")
        self.assertEqual(request.getHeader(b"connection"), b"close")
        response.stopProducing()
        yield res.gone  # the server saw the connection go

    @defer.inlineCallbacks
    def test_whole_body(self):
        class Fixed(resource.Resource):
            isLeaf = True

            def render_GET(self, request):
                return b"[]"

        response = yield StreamClient(reactor).get(self.serve(Fixed()))
        self.assertEqual((yield readBody(response)), b"[]")

    @defer.inlineCallbacks
    def test_cancel_while_waiting_for_the_head_drops_the_connection(self):
        class Silent(Stream):
            def render_GET(self, request):
                self.requests.append(request)
                request.notifyFinish().addBoth(lambda _: self.gone.callback(None))
                return server.NOT_DONE_YET  # no head written until the first byte

        res = Silent()
        d = StreamClient(reactor).get(self.serve(res))
        while not res.requests:
            yield deferLater(reactor, 0.01, lambda: None)
        d.cancel()
        yield self.assertFailure(d, defer.CancelledError)
        yield res.gone

    @defer.inlineCallbacks
    def test_refused(self):
        probe = reactor.listenTCP(0, server.Site(resource.Resource()), interface="127.0.0.1")
        port = probe.getHost().port
        yield probe.stopListening()
        d = StreamClient(reactor).get(f"http://127.0.0.1:{port}/")
        failure = yield self.assertFailure(d, Exception)
        self.assertIn("refused", str(failure).lower())

