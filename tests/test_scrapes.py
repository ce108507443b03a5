"""Tests for cadvisor_events.scrapes: rounds of shared bodies, sending in slices, the answer limit."""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.trial import unittest

from cadvisor_events.scrapes import PIECE_BYTES, AnswerLimit, BodySender, RenderedBody, SharedBodies


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
        self.assertEqual((len(request.written), request.finished, sender.body.size), (1, False, 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class Turns(task.Clock):
    """A clock whose :meth:`turn` runs what was due when it began, as one reactor iteration
    does (a ``callLater(0)`` made meanwhile waits for the next one; ``task.Clock.advance``
    would run it at once)."""

    def turn(self) -> None:
        due = [call for call in self.getDelayedCalls() if call.getTime() <= self.seconds()]
        for call in sorted(due, key=lambda call: call.getTime()):
            if call.active():
                self.calls.remove(call)
                call.called = True
                call.func(*call.args, **call.kw)


class RenderedBodyTests(unittest.TestCase):
    """A big body is rendered one batch per reactor turn, as its readers need it, and shared."""

    LINE = b"x" * 99 + b"\n"

    def setUp(self):
        self.clock = Turns()
        self.rendered: list = []  # (turn, piece index) as pieces are made
        self.turn = 0

    def pieces(self, count: int, lines: int = 1000):
        """A render of ``count`` pieces of ``lines`` 100-byte lines each, noting when each is made."""
        for index in range(count):
            self.rendered.append((self.turn, index))
            yield [b"%09d" % index + self.LINE[9:]] * lines

    def expected(self, count: int, lines: int = 1000) -> bytes:
        return b"".join(b"%09d" % index + self.LINE[9:] for index in range(count) for _ in range(lines))

    def advance(self) -> None:
        """One reactor turn."""
        self.turn += 1
        self.clock.turn()

    def sender(self, body: RenderedBody, buffer_size: int = 1 << 30) -> FakeRequest:
        request = FakeRequest(buffer_size)
        BodySender(request, body, slice_size=1 << 20, clock=self.clock).start()
        return request

    def test_one_batch_per_turn_while_requests_are_served_between(self):
        count = 3 * PIECE_BYTES // 100_000 + 5  # 100 kB pieces: a few turns' worth
        body = RenderedBody(self.pieces(count), clock=self.clock)
        request = self.sender(body)
        self.assertLessEqual(len(self.rendered), PIECE_BYTES // 100_000 + 1)  # only the first batch now
        self.assertFalse(request.finished)
        turns = 0
        while not request.finished:
            self.advance()
            turns += 1
            self.assertLess(turns, 100)
        per_turn = {}
        for turn, _ in self.rendered:
            per_turn[turn] = per_turn.get(turn, 0) + 1
        self.assertGreaterEqual(len(per_turn), 4, per_turn)
        self.assertLessEqual(max(per_turn.values()), PIECE_BYTES // 100_000 + 1)  # <= one batch a turn
        self.assertEqual(b"".join(request.written), self.expected(count))
        self.assertEqual(body.size, count * 100_000)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_answers_of_a_round_share_one_render_and_passed_batches_go(self):
        bodies = SharedBodies(compress=lambda body: defer.succeed(body), gzip_inline=bytes, inline_limit=0,
                              clock=self.clock)
        renders = []

        def render():
            renders.append(1)
            return self.pieces(100)  # 10 MB: three batches

        fast = self.sender(bodies.sliced("text", render))
        slow = self.sender(bodies.sliced("text", render), buffer_size=1)  # takes one slice per drain
        self.assertEqual(len(renders), 1)
        body = bodies.sliced("text", render)
        while not fast.finished:
            self.advance()
        self.assertEqual(len(renders), 1)
        self.assertIsNot(bodies.sliced("text", render), body)  # a new round, a new render
        self.assertEqual(len(renders), 2)
        self.assertTrue(body.done)
        self.assertEqual(body.batches[0] is None, False)  # the slow answer still needs it
        while not slow.finished:
            slow.drain()
            self.advance()
        self.assertEqual(b"".join(fast.written), self.expected(100))
        self.assertEqual(b"".join(slow.written), self.expected(100))
        self.assertEqual(body.batches, [None] * len(body.batches))  # every batch passed: none kept

    def test_a_small_body_is_whole_after_start(self):
        body = RenderedBody(self.pieces(3, lines=10), clock=self.clock)
        body.start()
        self.assertEqual((body.done, body.size), (True, 3000))
        request = self.sender(body)
        self.assertTrue(request.finished)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_whole_during_its_round_for_answers_that_need_it_whole(self):
        bodies = SharedBodies(compress=lambda body: defer.succeed(body), gzip_inline=bytes, inline_limit=0,
                              clock=self.clock)
        render = lambda: self.pieces(100)  # noqa: E731
        plain = self.sender(bodies.sliced("text", render))
        self.assertFalse(plain.finished)
        self.assertEqual(bodies.identity("text", render), self.expected(100))  # rendered to the end now
        self.assertEqual(bodies.renders, 1)
        self.advance()
        self.assertEqual(b"".join(plain.written), self.expected(100))

    def test_a_render_failing_part_way_cuts_its_answers(self):
        def render():
            yield from self.pieces(60)
            raise MemoryError("no more")

        body = RenderedBody(render(), clock=self.clock)
        request = self.sender(body)
        for _ in range(5):
            self.advance()
        self.assertTrue(request.aborted)
        self.assertFalse(request.finished)
        self.assertEqual(len(self.flushLoggedErrors(MemoryError)), 1)

    def test_a_failure_in_the_first_batch_is_raised(self):
        def render():
            raise ValueError("bad")
            yield []

        self.assertRaises(ValueError, RenderedBody(render(), clock=self.clock).start)

    def test_nothing_more_is_rendered_once_every_answer_left(self):
        body = RenderedBody(self.pieces(200), clock=self.clock)
        body.close_round()
        request = self.sender(body)
        made = len(self.rendered)
        request.lose()
        for _ in range(5):
            self.advance()
        self.assertEqual(len(self.rendered), made)
        self.assertEqual(body.batches, [None] * len(body.batches))


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

    def test_a_body_already_sent_is_whole_for_the_rest_of_its_round(self):
        request = FakeRequest(buffer_size=1 << 20)
        BodySender(request, self.bodies.sliced("text", self.render()), slice_size=4096, clock=self.clock).start()
        self.assertTrue(request.finished)
        self.assertEqual(self.bodies.identity("text", self.render()), b"1" * 20)  # a HEAD, a gzip
        self.assertEqual(self.bodies.renders, 1)

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
