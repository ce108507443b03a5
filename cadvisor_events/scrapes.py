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
* :class:`RenderedBody` is a round's plain body rendered a piece at a time
  as its answers need it, a batch of a few megabytes per reactor turn: a
  render yields lists of byte strings (a few hosts' lines), never joined
  whole, and a batch every answer has sent is dropped (a slow scraper
  holds what it has not taken yet, no more), so a scrape of a million
  series never holds the reactor for more than a batch. Requests keep being served
  between the batches; a host's lines are as of the turn they were rendered.
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

from typing import Callable, Dict, Hashable, Iterable, Iterator, List, Optional, Tuple, Union

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
#: What a render gives: the whole body, or its pieces in order, each a list of byte strings
#: cheap to make (the body is their concatenation); made as they are asked for.
Rendered = Union[bytes, Iterable[List[bytes]]]
Render = Callable[[], Rendered]

#: Bytes a :class:`RenderedBody` renders per reactor turn (at least one piece): one slice,
#: as much as one write of a /metrics connection hands the kernel.
PIECE_BYTES = 4 << 20


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


class RenderedBody:
    """A body rendered a piece at a time as its readers ask for it; shared by a round's answers.

    ``batches`` are what each turn rendered: lists of byte strings, in order
    (never joined here); ``size`` their length so far; ``done`` once the render
    ended. :meth:`start` renders the first :data:`PIECE_BYTES` at once (a small
    body is then whole, and its length known before anything is sent); after
    that a reader that caught up calls :meth:`wait` and the next batch is
    rendered in a later reactor turn, so requests keep being served in between.
    Once the round is over (:meth:`close_round`), a batch every reader has
    passed is dropped. A render that fails part way leaves ``failure`` set
    and the body ``done``: its readers must abort their connections (the
    status line went out long ago).
    """

    def __init__(self, rendered: Rendered, *, clock, piece_bytes: int = PIECE_BYTES) -> None:
        self.batches: List[Optional[List[bytes]]] = []
        self.size = 0
        self.done = False
        self.failure: Optional[Failure] = None
        self._clock = clock
        self._piece_bytes = piece_bytes
        self._pieces: Optional[Iterator[List[bytes]]] = None
        self._round_open = True
        if isinstance(rendered, bytes):
            self.batches, self.size, self.done = [[rendered]], len(rendered), True
        else:
            self._pieces = iter(rendered)
        self._started = False
        self._waiting: List[Callable[[], None]] = []
        self._next_turn: Optional[object] = None
        self._ahead = False
        #: reader -> the batch it is in; batches before every reader's are dropped.
        self._readers: Dict[object, int] = {}
        self._dropped = 0

    def start(self) -> None:
        """Render the first batch now (once; later calls do nothing). A failure here is raised."""
        if not self._started:
            self._started = True
            self.render_some(raise_failure=True)

    def render_some(self, raise_failure: bool = False) -> None:
        """Render one batch: pieces until :data:`PIECE_BYTES` bytes, or the end."""
        if self.done or self._pieces is None:
            return
        batch: List[bytes] = []
        size = 0
        try:
            while size < self._piece_bytes:
                piece = next(self._pieces, None)
                if piece is None:
                    self.done, self._pieces = True, None
                    break
                batch += piece
                for part in piece:
                    size += len(part)
        except Exception:
            self.failure = Failure()
            self.done, self._pieces = True, None
            if raise_failure:
                raise
            log.failure("rendering /metrics failed part way; its answers are cut", self.failure)
        finally:
            if batch:
                self.batches.append(batch)
                self.size += size

    def complete(self) -> bytes:
        """Render whatever is left now and return the whole body joined (a copy, for answers
        that need it whole such as a compression; only while the round is open)."""
        self.start()
        while not self.done:
            self.render_some(raise_failure=True)
        if self.failure is not None:
            self.failure.raiseException()
        if self._dropped:
            raise RuntimeError("this body was partly sent and dropped: it cannot be joined any more")
        parts = [part for batch in self.batches if batch is not None for part in batch]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def wait(self, more: Callable[[], None]) -> None:
        """Call ``more()`` once the next batch is rendered, in a later reactor turn."""
        self._waiting.append(more)
        if self._next_turn is None:
            self._next_turn = self._clock.callLater(0, self._turn)

    def prefetch(self) -> None:
        """Render the next batch in a later reactor turn even if no reader waits for it yet
        (one reached the last batch rendered): it is ready when the connection drained."""
        if not self.done and self._next_turn is None:
            self._ahead = True
            self._next_turn = self._clock.callLater(0, self._turn)

    def _turn(self) -> None:
        self._next_turn = None
        ahead, self._ahead = self._ahead, False
        if not self._waiting and not (ahead and self._readers):
            return  # every reader left: render no further
        self.render_some()
        waiting, self._waiting = self._waiting, []
        for more in waiting:
            more()

    def reading(self, reader: object, batch: int) -> None:
        """``reader`` is at ``batch`` now (it needs nothing before it)."""
        self._readers[reader] = batch
        self._drop()

    def leave(self, reader: object, more: Optional[Callable[[], None]] = None) -> None:
        """``reader`` needs nothing more (done, or its scraper left)."""
        self._readers.pop(reader, None)
        if more is not None and more in self._waiting:
            self._waiting.remove(more)
        self._drop()

    def close_round(self) -> None:
        """No new reader will come: batches every reader passed can go."""
        self._round_open = False
        self._drop()

    def _drop(self) -> None:
        if self._round_open:
            return
        low = min(self._readers.values(), default=len(self.batches))
        while self._dropped < low:
            self.batches[self._dropped] = None
            self._dropped += 1


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
        #: kind -> this round's identity body, and joined, once something needed it whole.
        self._plain: Dict[Hashable, RenderedBody] = {}
        self._joined: Dict[Hashable, bytes] = {}
        self._round_ends: Optional[object] = None
        #: kind -> the compression running (for this or an earlier round).
        self._compressing: Dict[Hashable, _Shared] = {}
        #: kind -> answers that arrived after that compression's render: the next round's.
        self._next: Dict[Hashable, _Shared] = {}
        self.renders = 0

    def sliced(self, kind: Hashable, render: Render) -> RenderedBody:
        """This round's identity body of ``kind``, rendered piece by piece as its readers go
        (``render()`` is called now if it is the round's first)."""
        body = self._plain.get(kind)
        if body is None:
            if self._round_ends is None:
                self._round_ends = self._clock.callLater(0, self._end_round)
            self.renders += 1
            body = self._plain[kind] = RenderedBody(render(), clock=self._clock)
        return body

    def identity(self, kind: Hashable, render: Render) -> bytes:
        """This round's identity body of ``kind`` whole (rendered to its end now, joined once
        per round): for answers that need it whole (``HEAD``, a compression)."""
        whole = self._joined.get(kind)
        if whole is None:
            whole = self._joined[kind] = self.sliced(kind, render).complete()
        return whole

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
        for body in self._plain.values():
            body.close_round()
        self._plain = {}
        self._round = {}
        self._joined = {}


@implementer(IPushProducer)
class BodySender:
    """Writes ``body`` to ``request`` in slices of ``slice_size`` as the connection drains, then finishes.

    A push producer on the request: Twisted pauses it when the connection's
    buffer is full and resumes it once everything written was handed to the
    kernel, so at most one slice per answer is ever copied out of the shared
    body. ``body`` is bytes or a :class:`RenderedBody`, whose pieces are asked
    for as the answer reaches them (rendered in later reactor turns). The
    request is finished only after the last slice drained (a remainder under
    Twisted's buffer size finishes at once). An answer that makes no progress
    for ``idle_timeout`` seconds is aborted, and so is one whose render failed
    part way.
    """

    def __init__(self, request, body: Union[bytes, RenderedBody], *, slice_size: int, clock,
                 idle_timeout: float = SEND_IDLE_TIMEOUT) -> None:
        self.request = request
        self._alone = not isinstance(body, RenderedBody)  # this answer's body, no round's
        self.body: RenderedBody = RenderedBody(body, clock=clock) if isinstance(body, bytes) else body
        self.slice_size = slice_size
        #: Where the next slice starts: a batch of the body, a part in it, an offset in that.
        self.batch = 0
        self.index = 0
        self.offset = 0
        self.paused = False
        self.done = False
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._idle = None
        self._waiting = False

    def start(self) -> None:
        self.request.notifyFinish().addErrback(lambda _: self._stop())
        self._idle = self._clock.callLater(self._idle_timeout, self._abort)
        self.request.registerProducer(self, True)
        self.body.reading(self, 0)
        if self._alone:
            self.body.close_round()
        self.body.start()
        self._pump()

    def _pump(self) -> None:
        while not self.paused and not self.done:
            chunk = self._next_slice()
            if chunk is None:
                body = self.body
                if body.failure is not None:
                    self._abort("rendering failed part way")
                elif body.done:
                    self._finish()
                elif not self._waiting:
                    self._waiting = True
                    body.wait(self._rendered)
                return
            self.request.write(chunk)

    def _next_slice(self) -> Optional[bytes]:
        """The next slice of at most ``slice_size`` bytes rendered so far (None: none yet).
        A slice that is one whole part is that part, not a copy."""
        batches = self.body.batches
        batch_index, index, offset, room = self.batch, self.index, self.offset, self.slice_size
        pieces: List[bytes] = []
        while room > 0 and batch_index < len(batches):
            batch = batches[batch_index]
            assert batch is not None, "a batch still to send was dropped"
            count = len(batch)
            while room > 0 and index < count:
                part = batch[index]
                left = len(part) - offset
                if left <= room:
                    pieces.append(part[offset:] if offset else part)
                    room -= left
                    index, offset = index + 1, 0
                else:
                    pieces.append(part[offset:offset + room])
                    offset += room
                    room = 0
            if index >= count:
                batch_index, index = batch_index + 1, 0
        if batch_index != self.batch:
            self.batch = batch_index
            self.body.reading(self, batch_index)
        if batch_index >= len(batches) - 1:
            self.body.prefetch()
        self.index, self.offset = index, offset
        if not pieces:
            return None
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _rendered(self) -> None:
        self._waiting = False
        if not self.done:
            self._pump()

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
            self.body.leave(self, self._rendered if self._waiting else None)
            self.body = _SENT
            if self._idle is not None and self._idle.active():
                self._idle.cancel()

    def _abort(self, why: Optional[str] = None) -> None:
        if why is None:
            self._idle = None
        if not self.done:
            log.info("aborting an answer to {path}: {why}",
                     path=getattr(self.request, "path", b"?").decode("ascii", "replace"),
                     why=why or f"the client took nothing for {self._idle_timeout} s")
            self._stop()
            transport = getattr(self.request, "transport", None)
            if transport is not None:
                transport.abortConnection()


#: What a finished :class:`BodySender` holds instead of its body (so the body can go).
_SENT = RenderedBody(b"", clock=None)
