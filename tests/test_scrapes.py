"""Tests for cadvisor_events.scrapes: rounds of shared bodies, sending in slices, the answer limit."""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.trial import unittest

from cadvisor_events.scrapes import AnswerLimit, BodySender, SharedBodies


class FakeRequest:
    """A request over a connection whose buffer holds ``buffer_size`` bytes before it pauses
    its producer, as twisted.web's channel does; :meth:`drain` empties it as the kernel would."""

    def __init__(self, buffer_size: int) -> None:
        self.buffer_size = buffer_size
        self.buffered = 0
        self.written: list = []
        self.producer = None
        self.finished = False
        self.aborted = False
        self.finish_notices: list = []
        self.transport = self

    def notifyFinish(self) -> defer.Deferred:
        notice: defer.Deferred = defer.Deferred()
        self.finish_notices.append(notice)
        return notice

    def registerProducer(self, producer, streaming: bool) -> None:
        assert streaming and self.producer is None
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        assert not self.finished
        self.written.append(data)
        self.buffered += len(data)
        if self.buffered > self.buffer_size and self.producer is not None:
            self.producer.pauseProducing()

    def finish(self) -> None:
        self.finished = True
        for notice in self.finish_notices:
            notice.callback(None)

    def drain(self) -> None:
        self.buffered = 0
        if self.producer is not None:
            self.producer.resumeProducing()

    def abortConnection(self) -> None:
        self.aborted = True

    def lose(self) -> None:
        """The client left."""
        for notice in self.finish_notices:
            notice.errback(ConnectionError("gone"))


class BodySenderTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.body = bytes(range(256)) * 40  # 10,240 bytes

    def send(self, request: FakeRequest, slice_size: int) -> BodySender:
        sender = BodySender(request, self.body, slice_size=slice_size, clock=self.clock, idle_timeout=60)
        sender.start()
        return sender

    def test_one_slice_per_drain_and_finished_only_once_drained(self):
        request = FakeRequest(buffer_size=100)
        self.send(request, slice_size=4096)
        self.assertEqual([len(w) for w in request.written], [4096])
        request.drain()
        request.drain()
        self.assertEqual([len(w) for w in request.written], [4096, 4096, 2048])
        self.assertFalse(request.finished)  # the last slice is still in the buffer
        request.drain()
        self.assertTrue(request.finished)
        self.assertIsNone(request.producer)
        self.assertEqual(b"".join(request.written), self.body)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_body_in_one_slice_is_not_copied(self):
        request = FakeRequest(buffer_size=1 << 20)
        self.send(request, slice_size=1 << 20)
        self.assertIs(request.written[0], self.body)
        self.assertTrue(request.finished)  # under the buffer size: finished at once

    def test_a_scraper_that_takes_nothing_is_aborted(self):
        request = FakeRequest(buffer_size=100)
        self.send(request, slice_size=4096)
        self.clock.advance(59)
        request.drain()  # progress: the minute starts again
        self.clock.advance(59)
        self.assertFalse(request.aborted)
        self.clock.advance(1)
        self.assertTrue(request.aborted)
        self.assertEqual(len(request.written), 2)
        request.drain()  # whatever Twisted does next, nothing more is written
        self.assertEqual((len(request.written), request.finished), (2, False))

    def test_a_scraper_that_left_gets_nothing_more(self):
        request = FakeRequest(buffer_size=100)
        sender = self.send(request, slice_size=4096)
        request.lose()
        request.drain()
        self.assertEqual((len(request.written), request.finished, sender.body), (1, False, b""))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SharedBodiesTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.compressions: list = []
        self.bodies = SharedBodies(compress=self.compress, gzip_inline=lambda body: b"gz:" + body,
                                   inline_limit=10, clock=self.clock)
        self.made = 0

    def compress(self, body: bytes) -> defer.Deferred:
        self.compressions.append((body, defer.Deferred()))
        return self.compressions[-1][1]

    def render(self, size: int = 20):
        def render() -> bytes:
            self.made += 1
            return b"%d" % self.made * size
        return render

    def test_a_round_lasts_until_the_reactor_turns(self):
        a = self.bodies.identity("text", self.render())
        self.assertIs(self.bodies.identity("text", self.render()), a)
        other = self.bodies.identity("openmetrics", self.render())
        self.assertNotEqual(other, a)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0)
        self.assertNotEqual(self.bodies.identity("text", self.render()), a)
        self.assertEqual(self.bodies.renders, 3)

    def test_small_bodies_are_gzipped_at_once(self):
        self.assertEqual(self.bodies.gzipped("text", self.render(size=5)), b"gz:11111")
        self.assertEqual(self.compressions, [])

    def test_a_failed_compression_fails_every_answer_that_waited(self):
        answers = [self.bodies.gzipped("text", self.render()) for _ in range(2)]
        failures: list = []
        for answer in answers:
            answer.addErrback(failures.append)
        self.compressions[0][1].errback(MemoryError())
        self.assertEqual([f.type for f in failures], [MemoryError, MemoryError])
        self.clock.advance(0)
        later = self.bodies.gzipped("text", self.render())  # a new round compresses again
        self.assertEqual(len(self.compressions), 2)
        self.compressions[1][1].callback(b"ok")
        self.assertEqual(self.successResultOf(later), b"ok")


class AnswerLimitTests(unittest.TestCase):
    def test_limit(self):
        limit = AnswerLimit(2)
        self.assertEqual([limit.take() for _ in range(3)], [True, True, False])
        limit.release()
        self.assertTrue(limit.take())
        self.assertEqual(limit.in_flight, 2)

    def test_zero_is_no_limit_and_negative_an_error(self):
        limit = AnswerLimit(0)
        self.assertTrue(all(limit.take() for _ in range(1000)))
        self.assertRaises(ValueError, AnswerLimit, -1)
