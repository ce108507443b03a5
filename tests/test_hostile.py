"""Hostile and broken cAdvisors against the real follower, client, counters and /metrics.

Each hostile host is a small Twisted server on 127.0.0.1 that writes raw
bytes (:class:`RawHost`): bad lines, a 4 MiB line, HTTP errors, a redirect
loop, a JSON array instead of a stream, broken chunking, a reset inside the
headers, silence, a flood. It is followed at the same time as a healthy
simulator host, by the real fleet, followers and stream client in this
process (:class:`Rig`), and every test checks the same things: the healthy
host is counted exactly (== ``sim.ground_truth()``), a real ``GET /metrics``
answers well under a second throughout, the hostile host is marked down with
a reason and retried with backoff (or, for bad input, keeps streaming), the
exporter's buffers stay bounded, and nothing is logged as an unhandled error
(trial fails a test that logs one). The property tests at the end add what
tests/test_protocol.py and tests/test_event.py do not cover yet.

Longer than ~400 lines on purpose: the raw servers and the scenarios share
one set of helpers, kept next to the scenarios that use them (the rig and the
healthy host, which tests/test_soak.py uses too, are in tests/support.py).
Waiting is always for real I/O (a bounded poll); where time must pass
(backoff) the followers run on a ``task.Clock`` while their I/O stays real.
"""

from __future__ import annotations

import collections
import json
import time
from typing import List, Optional

import msgspec
from hypothesis import given, settings, strategies as st
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.interfaces import IPushProducer
from twisted.trial import unittest
from zope.interface import implementer

from cadvisor_events.cadvisor import parse_target
from cadvisor_events.counters import EventCounters
from cadvisor_events.event import parse_history
from cadvisor_events.ledger import MAX_FUTURE, MAX_OOMS, MAX_WINDOW_EVENTS
from cadvisor_events.event import InvalidEvent, decode_event, timestamp_ns
from cadvisor_events.follower import Follower
from cadvisor_events.protocol import MAX_LINE
from cadvisor_events.selfmetrics import FleetMetrics
from cadvisor_events.simulator import rfc3339nano
from cadvisor_events.testing import FakeClient

from .support import (
    SCRAPE_BUDGET, A, B, C, D, E, F, G, FakeFleet, FollowerTestCase, Healthy, Rig, before, counted,
    event as good_event, figures, rss, track, ts, until,
)

MiB = 1024 * 1024


# -- raw hosts ----------------------------------------------------------------------------


def head(status: bytes = b"200 OK", *headers: bytes) -> bytes:
    """A status line and headers, as raw bytes."""
    return b"\r\n".join((b"HTTP/1.1 " + status,) + headers) + b"\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


STREAM_HEAD = head(b"200 OK", b"Transfer-Encoding: chunked", b"Date: Mon, 24 Nov 2026 17:25:55 GMT")


def whole(status: bytes, body: bytes, content_type: bytes = b"application/json") -> bytes:
    """A complete response with a Content-Length body."""
    return head(status, b"Content-Type: " + content_type, b"Content-Length: %d" % len(body)) + body


EMPTY_HISTORY = whole(b"200 OK", b"[]")


class RawConnection(protocol.Protocol):
    """One accepted connection: reads the request head, then lets the host's script answer."""

    def __init__(self, host: "RawHost") -> None:
        self.host = host
        self._head = b""
        self.target: Optional[str] = None

    def dataReceived(self, data: bytes) -> None:
        if self.target is not None:
            return
        self._head += data
        if b"\r\n\r\n" in self._head:
            self.target = self._head.split(b" ", 2)[1].decode("latin-1")
            self.host.requests.append((self.host.clock.seconds(), self.target))
            self.host.script(self, self.target)

    @property
    def stream(self) -> bool:
        """Whether this request asks for the event stream (else history or anything else)."""
        return "stream=true" in (self.target or "")

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def finish(self, data: bytes = b"") -> None:
        """Write ``data`` and close (the client asked for ``Connection: close``)."""
        if data:
            self.transport.write(data)
        self.transport.loseConnection()


class RawHost(protocol.Factory):
    """A loopback "cAdvisor" whose ``script(connection, target)`` writes whatever bytes it likes.

    Counts accepted connections and records every request (clock time and
    target), so tests can see how often a follower comes back.
    """

    def __init__(self, test: unittest.TestCase, script, clock=reactor) -> None:
        self.script = script
        self.clock = clock
        self.accepted: List[float] = []
        self.requests: List[tuple] = []
        self.connections: List[RawConnection] = []
        track(self, test)
        self.port = reactor.listenTCP(0, self, interface="127.0.0.1")
        test.addCleanup(self.port.stopListening)
        self.name = f"127.0.0.1:{self.port.getHost().port}"

    def buildProtocol(self, addr):
        self.accepted.append(self.clock.seconds())
        connection = RawConnection(self)
        self.connections.append(connection)
        return connection

    def stream_requests(self) -> List[float]:
        return [when for when, target in self.requests if "stream=true" in target]


class Events:
    """Valid event lines with strictly increasing timestamps (1 µs apart from now), and what they count."""

    def __init__(self, container: str = "/docker/hostile") -> None:
        self.ns = time.time_ns()
        self.container = container
        self.made: collections.Counter = collections.Counter()

    def line(self, event_type: str = "containerCreation", container: Optional[str] = None) -> bytes:
        self.ns += 1000
        name = container or self.container
        self.made[(name, event_type, "")] += 1
        return msgspec.json.encode({"container_name": name, "timestamp": rfc3339nano(self.ns, 0),
                                    "event_type": event_type, "event_data": {}})


# -- a round on the healthy host ----------------------------------------------------------


@defer.inlineCallbacks
def healthy_round(test: unittest.TestCase, rig: Rig, healthy: Healthy, events: int = 5):
    """Emit on the healthy host, wait until it is all counted, scrape /metrics; return the families."""
    healthy.sim.emit_random(events)
    yield until(counted(rig, healthy), "the healthy host counted exactly")
    families = yield rig.scrape()
    test.assertLess(rig.latencies[-1], SCRAPE_BUDGET)
    return families


# -- bad input ------------------------------------------------------------------------------


#: Lines that are not events: each must be counted in invalid_lines and skipped.
BAD_LINES = [
    b"not json at all",
    b"<html><body>502 Bad Gateway</body></html>",
    b"{",
    b'{"container_name":"/docker/x","timestamp":',
    b"[1, 2, 3]",
    b'"a string"',
    b"42",
    b"true",
    b"null",
    b"{}",
    b'{"timestamp":"2026-11-24T17:25:55Z","event_type":"oom"}',
    b'{"container_name":"/","event_type":"oom"}',
    b'{"container_name":"/","timestamp":"2026-11-24T17:25:55Z"}',
    b'{"container_name":7,"timestamp":"2026-11-24T17:25:55Z","event_type":"oom"}',
    b'{"container_name":"/","timestamp":1764005155,"event_type":"oom"}',
    b'{"container_name":"/","timestamp":"2026-11-24T17:25:55Z","event_type":null}',
    b'{"container_name":"/","timestamp":"2026-11-24T17:25:55Z","event_type":"oom","event_data":[]}',
    b'{"container_name":"/","timestamp":"2026-11-24T17:25:55Z","event_type":"oomKill",'
    b'"event_data":{"oom":{"pid":"1","process_name":"java"}}}',
    b'{"container_name":"/","timestamp":"yesterday","event_type":"oom"}',  # decodes; its time does not
    b'{"container_name":"/","timestamp":"2026-11-24T17:25:55.1234567890Z","event_type":"oom"}',
    b'{"container_name":"/\xff\xfe","timestamp":"2026-11-24T17:25:55Z","event_type":"oom"}',
    b"\xc3\x28\xa0\xa1",
    b'{"container_name":"/\\ud800","timestamp":"2026-11-24T17:25:55Z","event_type":"oom"}',
    b"\x00\x00\x00\x00",
]


class BadInputTests(unittest.TestCase):
    """Bad lines and a 4 MiB line: counted, skipped, and the stream goes on (no reconnect)."""

    timeout = 60

    @defer.inlineCallbacks
    def test_bad_lines_are_counted_and_skipped_and_good_lines_around_them_counted(self):
        events = Events()
        script_lines: List[bytes] = []
        for bad in BAD_LINES:
            script_lines += [events.line(), bad, events.line("containerDeletion")]

        def script(connection, target):
            if not connection.stream:
                return connection.finish(EMPTY_HISTORY)
            connection.write(STREAM_HEAD)
            # One line per chunk (cAdvisor's way), then several per chunk, then split mid-line.
            third = len(script_lines) // 3
            for line in script_lines[:third]:
                connection.write(chunk(line + b"\n"))
            connection.write(chunk(b"\r\n".join(script_lines[third:2 * third]) + b"\r\n"))
            rest = b"\n".join(script_lines[2 * third:]) + b"\n"
            for start in range(0, len(rest), 37):
                connection.write(chunk(rest[start:start + 37]))

        healthy = Healthy(self)
        hostile = RawHost(self, script)
        rig = Rig(self)
        rig.follow(healthy.name, hostile.name)
        rig.start_scraping()
        yield until(lambda: rig[hostile.name].invalid_lines == len(BAD_LINES)
                    and rig.counts(hostile.name) == dict(events.made), "every line of the hostile host")
        for _ in range(5):
            families = yield healthy_round(self, rig, healthy)
        f = rig[hostile.name]
        self.assertEqual(rig.sample(families, "cadvisor_events_invalid_lines", hostile.name), len(BAD_LINES))
        self.assertEqual(rig.sample(families, "cadvisor_events_received", hostile.name),
                         2 * len(BAD_LINES))
        self.assertEqual((f.state, f.connects, f.failures), ("up", 1, {}))
        self.assertEqual(len(hostile.accepted), 2)  # the stream and one history request
        self.assertEqual(rig.counts(healthy.name), dict(healthy.sim.ground_truth()))
        yield rig.stop_scraping()
        self.assertLess(max(rig.latencies), SCRAPE_BUDGET)

    @defer.inlineCallbacks
    def test_four_mib_line_is_dropped_without_buffering_and_the_stream_carries_on(self):
        events = Events()
        before, after, last = events.line(), events.line("containerDeletion"), events.line("oom")
        samples: List[tuple] = []
        rig: Rig
        hostile: RawHost

        def buffers():
            """What the exporter holds of the hostile stream right now: (line buffer, HTTP decoder)."""
            f = rig[hostile.name]
            line = f._protocol.buffered if f._protocol is not None else 0
            decoder = 0
            try:  # the HTTP client's chunk decoder, behind the body's producer
                parser = f._protocol.transport._producer.protocol._parser
                decoder = len(getattr(parser.bodyDecoder, "_buffer", b"")) + len(parser._buffer)
            except AttributeError:
                pass
            return line, decoder

        @defer.inlineCallbacks
        def send_in_pieces(connection, pieces):
            for piece in pieces:  # a generator: no piece is held after it is sent
                connection.write(piece)
                yield task.deferLater(reactor, 0.002, lambda: None)  # let the exporter read it
                samples.append(buffers())

        def first_long_line():  # 4 MiB with no newline as 64 chunks of 64 KiB...
            yield chunk(b'{"container_name":"' + b"x" * (64 * 1024 - 19))
            for _ in range(63):
                yield chunk(b"y" * 64 * 1024)

        def second_long_line():  # ...and 4 MiB more declared as ONE chunk, sent in 64 KiB pieces
            yield b"%x\r\n" % (4 * MiB + 1) + b"z" * 64 * 1024
            for _ in range(63):
                yield b"z" * 64 * 1024

        @defer.inlineCallbacks
        def stream(connection):
            connection.write(STREAM_HEAD + chunk(before + b"\n"))
            yield until(lambda: rig[hostile.name].state == "up", "the stream up")
            start_rss = rss()
            yield send_in_pieces(connection, first_long_line())
            connection.write(chunk(b'"}\n' + after + b"\n"))
            yield send_in_pieces(connection, second_long_line())
            connection.write(b"\n\r\n" + chunk(last + b"\n"))
            self.rss_growth = None if start_rss is None else rss() - start_rss

        def script(connection, target):
            if not connection.stream:
                return connection.finish(EMPTY_HISTORY)
            self.sender = stream(connection)

        healthy = Healthy(self)
        hostile = RawHost(self, script)
        rig = Rig(self)
        rig.follow(healthy.name, hostile.name)
        rig.start_scraping()
        healthy.sim.start_emitting(100)
        yield until(lambda: rig.counts(hostile.name) == dict(events.made), "the events around the long lines")
        yield self.sender
        healthy.sim.stop_emitting()
        yield rig.stop_scraping()
        yield healthy_round(self, rig, healthy)
        f = rig[hostile.name]
        self.assertEqual(f.invalid_lines, 2)
        self.assertEqual((f.connects, f.failures, f.state), (1, {}, "up"))  # no reconnect
        self.assertEqual(len(hostile.accepted), 2)
        self.assertEqual(len(samples), 64 + 64)
        line_peak = max(line for line, _ in samples)
        decoder_peak = max(decoder for _, decoder in samples)
        # The partial line is dropped at 1 MiB and nothing is kept after that (discard mode).
        self.assertLessEqual(line_peak, MAX_LINE)
        self.assertEqual([line for line, _ in samples[20:64]], [0] * 44)
        self.assertLess(decoder_peak, 64 * 1024)
        figures(self, line_buffer_peak=line_peak, decoder_buffer_peak=decoder_peak, rss_growth=self.rss_growth,
                max_scrape=max(rig.latencies), scrapes=len(rig.latencies))
        if self.rss_growth is not None:
            self.assertLess(self.rss_growth, 4 * MiB, "memory grew with the long lines")
        self.assertEqual(rig.counts(healthy.name), dict(healthy.sim.ground_truth()))
        self.assertLess(max(rig.latencies), SCRAPE_BUDGET)


# -- broken HTTP ----------------------------------------------------------------------------


HTML_500 = whole(
    b"500 Internal Server Error",
    b"<html><head><title>500 Internal Server Error</title></head><body><h1>Internal Server Error</h1>"
    + b"<p>The upstream cAdvisor exploded.</p>" * 40 + b"</body></html>",
    b"text/html; charset=utf-8")
NOT_FOUND = whole(b"404 Not Found", b"404 page not found\n", b"text/plain; charset=utf-8")


def answer(response: bytes):
    """A script answering every request with the same complete response."""
    return lambda connection, target: connection.finish(response)


def redirect_loop(connection, target):
    """302 to /redirected..., which 302s back: a loop, on every request."""
    if target.startswith("/redirected"):
        location = b"/api/v1.3/events?stream=true&subcontainers=true&all_events=true&looped=1"
    else:
        location = b"/redirected" + target.encode("latin-1")
    connection.finish(head(b"302 Found", b"Location: " + location, b"Content-Length: 0"))


def json_array(connection, target):
    """A 200 with a Content-Length JSON array of valid events, for every request (a proxy or a
    wrong API path answering history to the stream request)."""
    events = Events("/docker/array")
    body = b"[" + b",".join(events.line() for _ in range(3)) + b"]"
    connection.finish(whole(b"200 OK", body))


def broken_chunking(connection, target):
    """A stream whose chunked encoding breaks after one good event."""
    if not connection.stream:
        return connection.finish(EMPTY_HISTORY)
    connection.write(STREAM_HEAD + chunk(Events("/docker/chunky").line() + b"\n") + b"zz\r\nnot a chunk\r\n")


def reset_in_headers(connection, target):
    """Half a header block, then a TCP reset."""
    connection.transport.getHandle().send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chun")
    connection.transport.abortConnection()


def silent(connection, target):
    """Accepts, reads the request, never answers."""


class BrokenHttpTests(unittest.TestCase):
    """Hosts that answer badly or not at all: down with a reason, retried with the real backoff."""

    timeout = 60

    @defer.inlineCallbacks
    def test_broken_hosts_are_marked_down_with_a_reason_and_retried_with_backoff(self):
        clock = task.Clock()  # the followers' timers: 60 s of backoff pass in a few real seconds
        scripts = {
            "status_500_html": (answer(HTML_500), "status"),
            "status_404": (answer(NOT_FOUND), "status"),
            "json_array": (json_array, "eof"),
            "broken_chunking": (broken_chunking, "cut"),
            "reset_in_headers": (reset_in_headers, "reset"),
            "silent": (silent, "timeout"),
        }
        hosts = {kind: RawHost(self, script, clock) for kind, (script, _) in scripts.items()}
        healthy = Healthy(self)
        rig = Rig(self, clock=clock, connect_timeout=10.0)  # the follower's default backoff policy
        rig.follow(healthy.name, *(host.name for host in hosts.values()))

        def settled():
            """Every attempt the clock started has reached its host and, unless only the clock
            can end it (the silent host's timeout), has ended."""
            for host in hosts.values():
                f = rig[host.name]
                if f.state in ("connecting", "backfilling", "idle"):
                    attempts = sum(f.failures.values()) + 1
                    if host is not hosts["silent"] or len(host.stream_requests()) < attempts:
                        return False
            return rig[healthy.name].state == "up"

        step, window = 0.5, 60.0
        for _ in range(int(window / step)):
            clock.advance(step)
            yield until(settled, f"every attempt settled at t={clock.seconds()}")
            healthy.sim.emit_random(2)
            yield until(counted(rig, healthy), "the healthy host counted exactly")
            yield rig.scrape(parse=False)
        families = yield rig.scrape()

        attempts = {}
        for kind, host in hosts.items():
            f = rig[host.name]
            reason = scripts[kind][1]
            starts = host.stream_requests()
            attempts[kind] = len(starts)
            in_flight = 1 if f.state == "connecting" and kind == "silent" else 0  # may be waiting now
            self.assertEqual((f.up, f.state), (False, "connecting" if in_flight else "down"), kind)
            self.assertEqual(f.failures, {reason: len(starts) - in_flight}, kind)
            self.assertTrue(f.last_error, kind)
            self.assertEqual(rig.sample(families, "cadvisor_events_target_up", host.name), 0, kind)
            self.assertEqual(rig.sample(families, "cadvisor_events_stream_failures", host.name, reason=reason),
                             len(starts) - in_flight, kind)
            # Real default policy: 1 s doubling (plus up to 1 s jitter): at most 6 attempts in 60 s,
            # each wait at least the policy's (less one clock step of quantisation).
            self.assertLessEqual(len(starts), 6, (kind, starts))
            self.assertGreaterEqual(len(starts), 4, (kind, starts))
            for k, (a, b) in enumerate(zip(starts, starts[1:])):
                self.assertGreaterEqual(b - a, min(2 ** k, 30) - step, (kind, starts))
            self.assertLessEqual(len(host.accepted), 2 * len(starts), kind)  # stream (+ history)
        self.assertIn("HTTP 500", rig[hosts["status_500_html"].name].last_error)
        self.assertIn("Internal Server Error", rig[hosts["status_500_html"].name].last_error)
        self.assertIn("HTTP 404", rig[hosts["status_404"].name].last_error)
        self.assertEqual(rig.counts(healthy.name), dict(healthy.sim.ground_truth()))
        self.assertEqual(rig[healthy.name].connects, 1)
        self.assertLess(max(rig.latencies), SCRAPE_BUDGET)
        figures(self, attempts_in_60s=attempts, max_scrape=max(rig.latencies), scrapes=len(rig.latencies),
                healthy_events=len(healthy.sim.emitted),
                last_errors={kind: rig[host.name].last_error for kind, host in hosts.items()})

    @defer.inlineCallbacks
    def test_redirect_is_a_status_failure_and_is_not_followed(self):
        clock = task.Clock()
        host = RawHost(self, redirect_loop, clock)
        healthy = Healthy(self)
        rig = Rig(self, clock=clock)
        rig.follow(healthy.name, host.name)
        for _ in range(20):  # 10 s of backoff: attempts at ~0, ~1.5, ~4, ~8.5
            clock.advance(0.5)
            yield until(lambda: rig[host.name].state == "down" and rig[healthy.name].state == "up",
                        "the redirect answered")
            yield healthy_round(self, rig, healthy, events=1)
        f = rig[host.name]
        redirected = [target for _, target in host.requests if target.startswith("/redirected")]
        self.assertEqual(redirected, [], "a redirect was followed")
        self.assertEqual(f.failures, {"status": len(host.requests)})
        self.assertIn("HTTP 302", f.last_error)
        self.assertLessEqual(len(host.accepted), 4)


# -- floods ---------------------------------------------------------------------------------


@implementer(IPushProducer)
class Flood:
    """Writes valid events into a stream as fast as the connection takes them.

    A streaming producer on the server's transport: when the exporter reads
    slower than this writes, TCP fills up and the transport pauses it (counted
    in ``pauses``), so neither side buffers more than a socket's worth.
    ``same_timestamp``: every event shares one nanosecond (distinct pids).
    """

    BATCH = 500

    def __init__(self, connection: RawConnection, *, same_timestamp: bool = False) -> None:
        self.transport = connection.transport
        self.same_timestamp = same_timestamp
        self.paused = self.stopped = False
        self.pauses = self.written = self.events = 0
        self.ns = time.time_ns()
        self._second, self._prefix = None, ""
        self.transport.registerProducer(self, True)
        self.transport.write(STREAM_HEAD)
        self.resumeProducing()

    def _batch(self) -> bytes:
        lines = []
        for _ in range(self.BATCH):
            if not self.same_timestamp:
                self.ns += 1
            second, nanos = divmod(self.ns, 1_000_000_000)
            if second != self._second:
                self._second, self._prefix = second, rfc3339nano(second * 1_000_000_000, 0)[:-1]
            pid = self.events
            self.events += 1
            lines.append(b'{"container_name":"/docker/flood%d","timestamp":"%s.%09dZ","event_type":"oomKill",'
                         b'"event_data":{"oom":{"pid":%d,"process_name":"java"}}}'
                         % (pid % 20, self._prefix.encode(), nanos, pid))
        lines.append(b"")
        return chunk(b"\n".join(lines))

    def unsent(self) -> int:
        """Bytes written but still in this server's user-space buffer."""
        return len(self.transport.dataBuffer) + self.transport._tempDataLen

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and not self.stopped:
            data = self._batch()
            self.written += len(data)
            self.transport.write(data)

    def stopProducing(self) -> None:
        self.stopped = True

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.transport.unregisterProducer()


def stream_buffers(follower: Follower) -> tuple:
    """(partial-line bytes, HTTP decoder bytes) the exporter holds of a follower's stream now."""
    proto = follower._protocol
    if proto is None:
        return 0, 0
    try:
        parser = proto.transport._producer.protocol._parser
        decoder = len(getattr(parser.bodyDecoder, "_buffer", b"")) + len(parser._buffer)
    except AttributeError:
        decoder = 0
    return proto.buffered, decoder


class FloodTests(unittest.TestCase):
    """A host that streams valid events faster than the exporter can take them."""

    timeout = 120

    @defer.inlineCallbacks
    def flood(self, events_wanted: int, same_timestamp: bool = False):
        floods: List[Flood] = []

        def script(connection, target):
            if not connection.stream:
                return connection.finish(EMPTY_HISTORY)
            floods.append(Flood(connection, same_timestamp=same_timestamp))

        healthy = Healthy(self)
        hostile = RawHost(self, script)
        rig = Rig(self)
        rig.follow(healthy.name, hostile.name)
        yield until(lambda: floods and rig[hostile.name].state == "up" and rig[healthy.name].state == "up",
                    "both streams up")
        flood, f = floods[0], rig[hostile.name]
        start_rss, started, start_received = rss(), time.monotonic(), f.received
        peaks = collections.Counter()
        lag = []
        rounds = 0
        while f.received < events_wanted and rounds < 5000:
            rounds += 1
            emitted = time.monotonic()
            yield healthy_round(self, rig, healthy, events=3)
            lag.append(time.monotonic() - emitted)  # emit -> counted -> scraped
            line, decoder = stream_buffers(f)
            for name, value in (("line", line), ("decoder", decoder), ("dedup_state", len(f._ledger)),
                                ("server_unsent", flood.unsent()),
                                ("in_flight_events", flood.events - f.received),
                                ("rss_growth", (rss() or 0) - (start_rss or 0))):
                peaks[name] = max(peaks[name], value)
            self.assertIsNone(f._buffer)
        elapsed = time.monotonic() - started
        rate = (f.received - start_received) / elapsed
        flood.stop()
        yield until(lambda: f.received == flood.events, "the flood drained")
        self.assertEqual(sum(rig.counts(hostile.name).values()), flood.events - f.duplicates_dropped)
        self.assertEqual((f.connects, f.failures, f.state), (1, {}, "up"))
        self.assertEqual(rig.counts(healthy.name), dict(healthy.sim.ground_truth()))
        self.assertLess(max(rig.latencies), SCRAPE_BUDGET)
        self.assertGreater(flood.pauses, 0)  # TCP pushed back: the exporter did not take everything
        self.assertLessEqual(peaks["line"], MAX_LINE)
        self.assertLess(peaks["decoder"], 64 * 1024)
        self.assertLess(peaks["server_unsent"], 2 * MiB)
        return dict(rate=rate, seconds=elapsed, events=flood.events, pauses=flood.pauses, rounds=rounds,
                    max_scrape=max(rig.latencies), max_healthy_lag=max(lag), dedup_state_peak=peaks["dedup_state"],
                    line_peak=peaks["line"], decoder_peak=peaks["decoder"],
                    server_unsent_peak=peaks["server_unsent"], in_flight_peak=peaks["in_flight_events"],
                    rss_growth_peak=peaks["rss_growth"], dupes=f.duplicates_dropped), f

    @defer.inlineCallbacks
    def test_flood_is_backpressured_and_bounded_while_the_healthy_host_and_metrics_are_served(self):
        result, f = yield self.flood(200_000)
        figures(self, **result)
        self.assertLessEqual(result["dedup_state_peak"], MAX_OOMS)  # every event an OOM kill: capped
        self.assertEqual(result["dupes"], 0)
        self.assertLess(result["rss_growth_peak"], 32 * MiB)

    @defer.inlineCallbacks
    def test_flood_of_one_timestamp_keeps_dedup_state_bounded(self):
        # Distinct events (pids) all at one nanosecond: every one is counted, and the
        # de-duplication state stops growing at its cap.
        result, f = yield self.flood(100_000, same_timestamp=True)
        figures(self, **result)
        self.assertLessEqual(result["dedup_state_peak"], MAX_OOMS)
        self.assertEqual(result["dupes"], 0)
        self.assertLess(result["rss_growth_peak"], 32 * MiB)

    @defer.inlineCallbacks
    def test_flood_while_the_history_never_comes_overflows_at_the_bound_and_backs_off(self):
        clock = task.Clock()
        floods: List[Flood] = []

        def script(connection, target):
            if connection.stream:
                floods.append(Flood(connection))
            # History requests are read and never answered: the backfill waits, the stream floods.

        healthy = Healthy(self)
        hostile = RawHost(self, script, clock)
        rig = Rig(self, clock=clock, history_timeout=1000.0)
        rig.follow(healthy.name, hostile.name)
        f = rig[hostile.name]
        start_rss = rss()
        buffered_peak = rss_peak = 0

        def attempt_over():  # each attempt: buffer until the overflow ends it (sampled meanwhile)
            nonlocal buffered_peak, rss_peak
            buffered_peak = max(buffered_peak, len(f._buffer or ()))
            rss_peak = max(rss_peak, (rss() or 0) - (start_rss or 0))
            return f.state != "backfilling"

        for _ in range(16):  # 8 s on the followers' clock: attempts at ~0, ~1.5, ~4 (then ~8.5)
            clock.advance(0.5)
            yield until(attempt_over, "the overflow to end the attempt", interval=0.002)
            yield healthy_round(self, rig, healthy, events=2)
        attempts = len(hostile.stream_requests())
        self.assertEqual(f.failures, {"overflow": attempts})
        self.assertIn(attempts, (3, 4))
        self.assertLessEqual(buffered_peak, f.max_buffered)
        self.assertEqual(rig.counts(hostile.name), {})  # nothing from an attempt that never synced
        self.assertEqual(rig.counts(healthy.name), dict(healthy.sim.ground_truth()))
        self.assertLess(max(rig.latencies), SCRAPE_BUDGET)
        figures(self, attempts=attempts, buffered_peak=buffered_peak, max_buffered=f.max_buffered,
                rss_growth_peak=rss_peak, max_scrape=max(rig.latencies),
                events_flooded=sum(flood.events for flood in floods))


# -- property tests -------------------------------------------------------------------------
# tests/test_protocol.py covers arbitrary bytes and any chunking through the line protocol
# alone, tests/test_event.py arbitrary bytes through decode_event. Missing, and here: JSON
# documents of every shape (not just bytes), the history parser, and the protocol wired to a
# real follower, whose de-duplication and counters then render /metrics.

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
hostile_timestamps = st.one_of(
    st.text(max_size=40),
    st.builds(lambda s, frac, zone: "2026-11-24T17:25:%02d%s%s" % (s, frac, zone), st.integers(0, 99),
              st.sampled_from(["", ".", ".1", ".123456789", ".1234567890", ".٣", "." + "9" * 30]),
              st.sampled_from(["Z", "z", "-03:00", "+99:99", "+05", "", "Z\x00", "\u2028"])))
event_like = st.fixed_dictionaries(
    {"container_name": st.one_of(st.text(max_size=30), json_values),
     "timestamp": st.one_of(hostile_timestamps, json_values),
     "event_type": st.one_of(st.sampled_from(["oom", "oomKill", "containerCreation", "x"]), st.text(max_size=10),
                             json_values)},
    optional={"event_data": st.one_of(json_values, st.fixed_dictionaries(
        {"oom": st.one_of(json_values, st.fixed_dictionaries(
            {"pid": st.one_of(st.integers(-(2 ** 70), 2 ** 70), json_values),
             "process_name": st.one_of(st.text(max_size=20), json_values)}))})),
        "extra": json_values})
documents = st.one_of(json_values, event_like).map(lambda doc: json.dumps(doc, ensure_ascii=False).encode())


class PropertyTests(unittest.TestCase):
    @settings(max_examples=400, deadline=None)
    @given(documents)
    def test_any_json_document_decodes_to_an_event_or_raises_invalid_event(self, line):
        try:
            event = decode_event(line)
        except InvalidEvent:
            return
        self.assertIsInstance(event.container_name, str)
        self.assertIsInstance(event.timestamp, str)
        self.assertIsInstance(event.event_type, str)
        self.assertIsInstance(event.oom_process, str)
        hash(event)  # usable as a de-duplication key

    @settings(max_examples=300, deadline=None)
    @given(st.one_of(st.binary(max_size=300),
                     st.lists(documents, max_size=8).map(lambda docs: b"[" + b",".join(docs) + b"]")))
    def test_history_parser_returns_sorted_events_and_counts_the_rest_or_raises_invalid_event(self, body):
        try:
            timed, invalid = parse_history(body)
        except InvalidEvent:
            return
        elements = json.loads(body)
        self.assertIsInstance(elements, list)
        self.assertEqual(len(timed) + invalid, len(elements))
        self.assertEqual([ns for _, ns in timed], sorted(ns for _, ns in timed))

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.one_of(documents, st.binary(max_size=60)), max_size=12),
           st.lists(st.integers(0, 10 ** 6), max_size=8),
           st.lists(st.one_of(documents, st.binary(max_size=60)), max_size=12),
           st.booleans())
    def test_arbitrary_input_through_a_real_follower_never_raises_and_metrics_still_render(
            self, live_lines, cuts, backfill_lines, history_ok):
        clock = task.Clock()
        client = FakeClient()
        counters = EventCounters(clock)
        f = Follower(parse_target("hostile:8080"), client=client, counters=counters.host("hostile:8080"),
                     clock=clock, settle_seconds=5, backoff=lambda retries: 1.0)
        fleet = FakeFleet([f])
        f.startService()
        try:
            clock.advance(0)
            response = client.accept()
            client.answer_history(good_event("/docker/a", "oom", ts(1)))
            data = b"\n".join(live_lines) + b"\n"
            points = sorted({c % (len(data) + 1) for c in cuts})
            for a, b in zip([0] + points, points + [len(data)]):  # the live path, any chunking
                response.protocol.dataReceived(data[a:b])
            response.cut()
            clock.advance(1)
            response = client.accept()
            response.protocol.dataReceived(b"\n".join(backfill_lines) + b"\n")  # buffered
            if history_ok:
                client.answer_history(*[line for line in backfill_lines if line.startswith(b"{")][:3])
            else:
                client.histories[-1][1].callback(b"<html>not history</html>")
            if f.state == "up":
                response.protocol.dataReceived(b"\n".join(live_lines) + b"\n")  # settling: repeats
                clock.advance(5)
                response.protocol.dataReceived(b"\n".join(reversed(live_lines)) + b"\n")  # live again
            self.assertIn(f.state, ("up", "down"))
            self.assertLessEqual(sum(counters.hosts["hostile:8080"].values().values()), f.received)
            self.assertLessEqual(len(f._ledger), MAX_OOMS + 2 * MAX_WINDOW_EVENTS + MAX_FUTURE)
            # Whatever was counted renders as valid exposition that parses back to the same counts.
            text = counters.render().decode() + FleetMetrics(fleet, counters).render()
            parsed = {}
            for family in text_string_to_metric_families("# TYPE cadvisor_container_events_total counter\n" + text):
                if family.name == "cadvisor_container_events":
                    for s in family.samples:
                        key = (s.labels["id"], s.labels["event_type"], s.labels["oom_process"])
                        parsed[key] = s.value
            self.assertEqual(parsed, counters.hosts["hostile:8080"].values())
        finally:
            f.stopService()
            for response in client.responses:
                if response.protocol is not None and not response.protocol.ended:
                    response.reset()


class ErrorBodyTests(unittest.TestCase):
    """A non-200 answer whose body never ends: only an excerpt is needed for the error message."""

    timeout = 60

    @defer.inlineCallbacks
    def test_an_endless_error_body_is_not_buffered_whole(self):
        clock = task.Clock()  # the header timeout never fires: only the body's size matters here
        sent = []

        @implementer(IPushProducer)
        class Endless:
            def __init__(self, connection):
                self.transport, self.paused, self.stopped = connection.transport, False, False
                self.transport.registerProducer(self, True)
                self.transport.write(head(b"500 Internal Server Error", b"Content-Type: text/html",
                                          b"Transfer-Encoding: chunked"))
                self.resumeProducing()

            def pauseProducing(self):
                self.paused = True

            def stopProducing(self):
                self.stopped = True

            def resumeProducing(self):
                self.paused = False
                while not self.paused and not self.stopped and sum(sent) < 32 * MiB:
                    sent.append(256 * 1024)
                    self.transport.write(chunk(b"<p>error</p>" * (256 * 1024 // 12)))

        hostile = RawHost(self, lambda connection, target: Endless(connection), clock)
        rig = Rig(self, clock=clock, connect_timeout=30.0)
        start_rss = rss()
        rig.follow(hostile.name)
        clock.advance(0)
        yield until(lambda: sum(sent) >= 32 * MiB or rig[hostile.name].state == "down", "the body sent")
        connection = hostile.connections[0]
        yield until(lambda: connection.transport is None or not connection.transport.connected
                    or (not connection.transport.dataBuffer and not connection.transport._tempDataLen),
                    "the exporter to have read what was sent")
        growth = (rss() or 0) - (start_rss or 0)
        figures(self, body_sent=sum(sent), rss_growth=growth, state=rig[hostile.name].state)
        self.assertLess(growth, 8 * MiB, "the exporter holds the error body it does not need")
        self.assertEqual(rig[hostile.name].failures, {"status": 1})


class FutureTimestampTests(FollowerTestCase):
    """One event dated far in the future (a hostile host, or a cAdvisor whose clock jumped ahead
    and back) must not make later breaks lose events silently (``--max-clock-skew``)."""

    SKEW = 300.0

    def make(self, **kwargs) -> Follower:
        kwargs.setdefault("max_clock_skew", self.SKEW)
        f = super().make(**kwargs)
        # Our clock reads the test events' era: just after A.
        self.clock.advance(timestamp_ns(decode_event(A).timestamp) / 1e9 + 10)
        return f

    def test_a_far_future_event_does_not_poison_later_backfills(self):
        f = self.make()
        response = self.up(A)
        future = good_event("/docker/x", "containerCreation", "2099-01-01T00:00:00Z")
        response.send(future, B, C)
        self.assertEqual(f.backfill_since, before(decode_event(A).timestamp, 1))  # B, C are OOMs: the anchor
        response.cut()
        self.clock.advance(1)
        response = self.client.accept()
        response.send(E)  # during the backfill
        since = timestamp_ns(self.client.last_start_time)
        held = [A, B, C, D, E, future]  # D happened during the break
        self.client.answer_history(*[line for line in held if timestamp_ns(decode_event(line).timestamp) >= since])
        response.send(F, G, future)  # just after it, and the future event once more
        self.assertEqual(self.counters.total, 8, f"lost: gaps={f.gaps} dropped={f.duplicates_dropped}")
        self.assertEqual((f.future_events, f.gaps), (1, 0))
        self.assertEqual(f.duplicates_dropped, 6)  # A, B, C, future, E from history/buffer; future live
        self.assertEqual(f.backfill_since, before(decode_event(E).timestamp, 1))  # F, G are OOMs: the anchor

    def test_a_repeat_of_a_future_event_on_the_live_stream_is_dropped(self):
        f = self.make(settle_seconds=0)
        response = self.up(A)
        future = good_event("/docker/x", "oom", "2099-01-01T00:00:00.5Z")
        response.send(future, future, B)
        self.assertEqual(self.counters.total, 3)
        self.assertEqual((f.future_events, f.duplicates_dropped), (1, 1))
        self.assertEqual(f.backfill_since, before(decode_event(A).timestamp, 1))

    def test_a_clock_ahead_within_the_skew_is_trusted(self):
        f = self.make()
        response = self.up(A)
        ahead = good_event("/docker/y", "containerCreation",
                           rfc3339nano(int((self.clock.seconds() + self.SKEW - 1) * 1e9), 0))
        response.send(ahead)
        self.assertEqual((f.future_events, f.backfill_since), (0, before(decode_event(ahead).timestamp, 1)))

    def test_future_state_is_bounded(self):
        f = self.make(settle_seconds=0)
        response = self.up(A)
        floods = [good_event(f"/docker/f{i}", "containerCreation", "2099-01-01T00:00:00Z") for i in range(MAX_FUTURE + 50)]
        response.send(*floods)
        self.assertEqual(self.counters.total, 1 + len(floods))  # all counted
        self.assertEqual(f.future_events, len(floods))
        self.assertLessEqual(len(f._ledger.future), MAX_FUTURE)
