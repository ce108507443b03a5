"""Concurrent ``/metrics`` scrapes: one body per round, sent in slices, a cap on answers in flight.

A big fleet's ``/metrics`` is tens of megabytes. Rendering it once per
scraper (several Prometheus replicas, federation, a dashboard) would spend
CPU on identical copies, and handing each scraper's whole body to Twisted's
send buffer would hold a full copy per slow reader. So:

* :class:`SharedBodies` renders a body at most once per *round* and variant
  (text or OpenMetrics, gzipped or not): every scrape read in the same
  reactor iteration as the render shares it, so no body is older than the
  request it answers. A gzipped body that is still being compressed in a
  thread is not given to scrapes that arrived after its render; they wait
  for the next round, which starts when that compression ends (so at most
  one compression per variant runs, however many scrapers wait).
* :class:`BodySender` writes one shared body to one answer, a slice at a
  time and only when the connection's buffer has drained: per answer, the
  only copy is the slice in the write buffer. A scraper that takes nothing
  for :data:`SEND_IDLE_TIMEOUT` seconds is disconnected.
* :class:`AnswerLimit` counts answers from their arrival until their body
  is in the kernel's socket buffer (or the scraper left), the measure of
  ``--web-max-requests``.

This module never renders exposition text itself (that is the caller's
``render``) and never touches the event counters.
"""

from __future__ import annotations

from typing import Callable, Dict, Hashable, List, Optional, Tuple, Union

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger()

#: An answer whose connection took nothing for this long is aborted: a scraper
#: that stopped reading would otherwise hold its place under the limit forever.
SEND_IDLE_TIMEOUT = 60.0

#: The variants of a body: (its kind, such as its content type; gzipped).
Variant = Tuple[Hashable, bool]
Render = Callable[[], bytes]


class AnswerLimit:
    """At most ``maximum`` answers in flight (``0``: unlimited); counts what it answered."""

    def __init__(self, maximum: int) -> None:
        if maximum < 0:
            raise ValueError(f"the limit of answers in flight must be 0 (none) or more, not {maximum}")
        self.maximum = maximum
        self.in_flight = 0
        #: Answers by HTTP status code, for ``promhttp_metric_handler_requests_total``.
        self.codes: Dict[int, int] = {}

    def take(self) -> bool:
        """Count one more answer in flight; ``False`` (nothing counted) when the limit is reached."""
        if self.maximum and self.in_flight >= self.maximum:
            return False
        self.in_flight += 1
        return True

    def release(self, _: object = None) -> None:
        """One answer is done (sent, failed or abandoned). Usable as a callback."""
        self.in_flight -= 1

    def answered(self, code: int) -> None:
        """Count one answer with HTTP status ``code``."""
        self.codes[code] = self.codes.get(code, 0) + 1


class _Shared:
    """One result many answers wait for. An answer that leaves only stops waiting: the
    work (a compression in a thread) cannot be stopped, and its result is dropped."""

    def __init__(self) -> None:
        self._waiting: List[defer.Deferred] = []
        self._result: Optional[Union[bytes, Failure]] = None

    @property
    def wanted(self) -> bool:
        """Whether an answer still waits for the result."""
        return bool(self._waiting)

    def follow(self) -> defer.Deferred:
        """A Deferred of the result; cancelling it detaches this one answer."""
        if isinstance(self._result, bytes):
            return defer.succeed(self._result)
        if self._result is not None:
            return defer.fail(self._result)
        waiter: defer.Deferred = defer.Deferred(self._waiting.remove)
        self._waiting.append(waiter)
        return waiter

    def fire(self, result: Union[bytes, Failure]) -> None:
        """Give ``result`` to every answer waiting and to every later :meth:`follow`."""
        self._result = result
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)


class SharedBodies:
    """Bodies of the current round, by variant; see the module docstring for the rules.

    A body has a ``kind`` (the caller's key: its content type) and is made by
    the ``render`` given with the first request of its round; ``compress(body)``
    returns a Deferred of its gzip (made in a thread); bodies up to
    ``inline_limit`` bytes are gzipped at once with ``gzip_inline(body)``.
    ``clock.callLater(0, ...)`` ends a round: it runs before the reactor
    reads the next batch of requests. ``renders`` counts identity renders.
    """

    def __init__(self, *, compress: Callable[[bytes], defer.Deferred],
                 gzip_inline: Callable[[bytes], bytes], inline_limit: int, clock) -> None:
        self._compress = compress
        self._gzip_inline = gzip_inline
        self._inline_limit = inline_limit
        self._clock = clock
        self._round: Dict[Variant, Union[bytes, _Shared]] = {}
        self._round_ends: Optional[object] = None
        #: kind -> the compression running (for this or an earlier round).
        self._compressing: Dict[Hashable, _Shared] = {}
        #: kind -> answers that arrived after that compression's render: the next round's.
        self._next: Dict[Hashable, _Shared] = {}
        self.renders = 0

    def identity(self, kind: Hashable, render: Render) -> bytes:
        """This round's identity body of ``kind`` (``render()`` now if it is the round's first)."""
        variant = (kind, False)
        body = self._round.get(variant)
        if body is None:
            if self._round_ends is None:
                self._round_ends = self._clock.callLater(0, self._end_round)
            self.renders += 1
            body = self._round[variant] = render()
        assert isinstance(body, bytes)
        return body

    def gzipped(self, kind: Hashable, render: Render) -> Union[bytes, defer.Deferred]:
        """This round's gzipped body: bytes at once, or a Deferred of it (cancel it to leave)."""
        entry = self._round.get((kind, True))
        if entry is None:
            if kind in self._compressing:  # rendered before this answer arrived: wait
                return self._next.setdefault(kind, _Shared()).follow().addCallback(self._then, kind, render)
            entry = self._gzip(kind, render)
        return entry if isinstance(entry, bytes) else entry.follow()

    def _then(self, _: object, kind: Hashable, render: Render) -> Union[bytes, defer.Deferred]:
        """The body of the round that starts when the running compression of ``kind`` ends."""
        entry = self._round.get((kind, True))
        if entry is None:
            if kind in self._compressing:  # another answer of this wait already started the round
                return self._compressing[kind].follow()
            entry = self._gzip(kind, render)
        return entry if isinstance(entry, bytes) else entry.follow()

    def _gzip(self, kind: Hashable, render: Render) -> Union[bytes, _Shared]:
        """Start this round's gzipped body of ``kind``."""
        body = self.identity(kind, render)
        entry: Union[bytes, _Shared]
        if len(body) <= self._inline_limit:
            entry = self._round[(kind, True)] = self._gzip_inline(body)
            return entry
        entry = self._round[(kind, True)] = self._compressing[kind] = _Shared()
        self._compress(body).addBoth(self._compressed, kind, entry)
        return entry

    def _compressed(self, result: Union[bytes, Failure], kind: Hashable, entry: _Shared) -> None:
        """A compression ended: its answers get it; those that waited for the next round go on."""
        del self._compressing[kind]
        entry.fire(result)
        waiting = self._next.pop(kind, None)
        if waiting is not None:
            waiting.fire(b"")  # each waiter starts (or joins) the next round with its own render

    def _end_round(self) -> None:
        self._round_ends = None
        self._round = {}


@implementer(IPushProducer)
class BodySender:
    """Writes ``body`` to ``request`` in slices of ``slice_size`` as the connection drains, then finishes.

    A push producer on the request: Twisted pauses it when the connection's
    buffer is full and resumes it once everything written was handed to the
    kernel, so at most one slice per answer is ever copied out of the shared
    body. The request is finished only after the last slice drained (a
    remainder under Twisted's buffer size finishes at once). An answer that
    makes no progress for ``idle_timeout`` seconds is aborted.
    """

    def __init__(self, request, body: bytes, *, slice_size: int, clock,
                 idle_timeout: float = SEND_IDLE_TIMEOUT) -> None:
        self.request = request
        self.body = body
        self.slice_size = slice_size
        self.offset = 0
        self.paused = False
        self.done = False
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._idle = None

    def start(self) -> None:
        self.request.notifyFinish().addErrback(lambda _: self._stop())
        self._idle = self._clock.callLater(self._idle_timeout, self._abort)
        self.request.registerProducer(self, True)
        self._pump()

    def _pump(self) -> None:
        body, size = self.body, len(self.body)
        while not self.paused and not self.done:
            if self.offset >= size:
                self._finish()
                return
            if self.offset == 0 and size <= self.slice_size:
                chunk = body  # the whole body: no copy of ours
            else:
                chunk = body[self.offset:self.offset + self.slice_size]
            self.offset += len(chunk)
            self.request.write(chunk)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self._idle is not None and self._idle.active():
            self._idle.reset(self._idle_timeout)
        self._pump()

    def stopProducing(self) -> None:
        self._stop()

    def _finish(self) -> None:
        self._stop()
        self.request.unregisterProducer()
        self.request.finish()

    def _stop(self) -> None:
        if not self.done:
            self.done = True
            self.body = b""
            if self._idle is not None and self._idle.active():
                self._idle.cancel()

    def _abort(self) -> None:
        self._idle = None
        if not self.done:
            log.info("aborting a /metrics answer: the scraper took nothing for {seconds} s",
                     seconds=self._idle_timeout)
            self._stop()
            transport = getattr(self.request, "transport", None)
            if transport is not None:
                transport.abortConnection()
