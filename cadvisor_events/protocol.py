"""The NDJSON line protocol: a cAdvisor event stream's body in, decoded events out.

One :class:`EventStreamProtocol` receives the body of one stream response
(``response.deliverBody``). It splits bytes on ``\\n`` (``\\r\\n`` tolerated,
blank lines skipped), decodes each line with :func:`~cadvisor_events.event.decode_event`
and hands the result to its callbacks. It must never raise out of
``dataReceived``, never disconnect because of bad input and never hold more
than ``max_line`` bytes of a partial line: an overlong line is counted once as
invalid and skipped in a discard mode that keeps nothing until the next
newline.

It keeps the names of Twisted's ``LineOnlyReceiver`` (``lineReceived``,
``lineLengthExceeded``, ``MAX_LENGTH``) but not its splitting:
``LineOnlyReceiver`` joins its buffer with every chunk (quadratic on a line
spread over many chunks), holds an overlong line whole before it notices,
and disconnects on one; and cAdvisor's usual chunk, exactly one line, is
decoded here without splitting at all.
"""

from __future__ import annotations

from typing import Any, Callable, cast

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

from .event import Event, InvalidEvent, decode_event

__all__ = ["EventStreamProtocol", "MAX_LINE"]

log = Logger()

#: The longest line (bytes between two newlines, a trailing ``\r`` included) we decode.
MAX_LINE = 1024 * 1024
_NO_PARTS: Any = ()


class EventStreamProtocol(Protocol):
    """Decode a stream body of newline-delimited JSON events.

    :param on_event: called with each valid :class:`Event`, in stream order.
    :param on_invalid: called with a short reason for each bad line (not JSON,
        not an event, invalid UTF-8, longer than ``max_line``, or a partial
        line at a cut).
    :param on_end: called once, with the ``connectionLost`` reason:
        ``ResponseDone`` for a clean end, ``PotentialDataLoss`` or
        ``ResponseFailed`` for a cut.

    The callbacks are plain attributes: a follower may swap them at any time
    (for example from buffering to live counting) without a per-line check.
    ``transport`` is the response's producer, so :meth:`pause`/:meth:`resume`
    give brief backpressure and :meth:`close` drops the stream.
    """

    MAX_LENGTH = MAX_LINE

    def __init__(
        self,
        on_event: Callable[[Event], None],
        on_invalid: Callable[[str], None],
        on_end: Callable[[Failure], None],
        max_line: int = MAX_LINE,
    ) -> None:
        self.on_event = on_event
        self.on_invalid = on_invalid
        self.on_end = on_end
        self.MAX_LENGTH = max_line
        #: Pieces of the current partial line, and their total size (<= MAX_LENGTH).
        #: (An empty tuple while no partial line is held: a fleet holds thousands of streams.)
        self._parts: list[bytes] = _NO_PARTS
        self._size = 0
        #: Inside an overlong line: drop bytes until the next newline.
        self._discarding = False
        self.ended = False

    @property
    def buffered(self) -> int:
        """Bytes of a partial line held right now (never more than ``MAX_LENGTH``)."""
        return self._size

    def dataReceived(self, data: bytes) -> None:
        """Split ``data`` into lines and decode them; never raises."""
        newline = data.find(b"\n")
        if newline == len(data) - 1 and newline >= 0 and not self._size and not self._discarding:
            # Fast path: exactly one whole line (how cAdvisor flushes events).
            # JSON allows the trailing "\r\n", so decode the chunk as it is.
            if newline > self.MAX_LENGTH:
                self.lineLengthExceeded(data)
                return
            try:
                event = decode_event(data)
            except Exception as e:  # InvalidEvent, or anything a decoder may raise
                if data.strip():
                    self._invalid(e)
                return
            self._deliver(event)
            return
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        """The general case: partial lines, several lines, discard mode."""
        limit = self.MAX_LENGTH
        if self._discarding:
            newline = data.find(b"\n")
            if newline < 0:
                return
            self._discarding = False
            data = data[newline + 1:]
        elif self._size:
            newline = data.find(b"\n")
            if newline < 0:
                self._size += len(data)
                if self._size > limit:
                    self._parts = _NO_PARTS
                    self._size = 0
                    self._discarding = True
                    self._reject(f"line longer than {limit} bytes dropped")
                else:
                    self._parts.append(data)
                return
            parts, size = self._parts, self._size + newline
            self._parts = _NO_PARTS
            self._size = 0
            if size > limit:
                self._reject(f"line longer than {limit} bytes dropped")
            else:
                parts.append(data[:newline])
                self.lineReceived(b"".join(parts))
            data = data[newline + 1:]
        if not data:
            return
        lines = data.split(b"\n")
        tail = lines.pop()
        for line in lines:
            if len(line) > limit:
                self.lineLengthExceeded(line)
            else:
                self.lineReceived(line)
        if tail:
            if len(tail) > limit:
                self._discarding = True
                self._reject(f"line longer than {limit} bytes dropped")
            else:
                self._parts = [tail]
                self._size = len(tail)

    def lineReceived(self, line: bytes) -> None:
        """Decode one line (without its ``\\n``); blank lines are skipped."""
        try:
            event = decode_event(line)
        except Exception as e:
            if line.strip():
                self._invalid(e)
            return
        self._deliver(event)

    def lineLengthExceeded(self, line: bytes) -> None:
        """A complete line over ``MAX_LENGTH``: count it and go on (no disconnect)."""
        self._reject(f"line longer than {self.MAX_LENGTH} bytes dropped")

    def _deliver(self, event: Event) -> None:
        try:
            self.on_event(event)
        except Exception:
            # A bug downstream must not cut the stream or lose the lines after it.
            log.failure("event handler failed on {event!r}", event=event)

    def _invalid(self, error: Exception) -> None:
        self._reject(str(error) if isinstance(error, InvalidEvent) else f"{error.__class__.__name__}: {error}")

    def _reject(self, reason: str) -> None:
        try:
            self.on_invalid(reason)
        except Exception:
            log.failure("invalid-line handler failed")

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        """End of the body: settle a partial last line, then call ``on_end`` once.

        At a clean end (``ResponseDone``) a last line without newline is
        decoded; at a cut it is counted as invalid (it may be truncated).
        """
        if self.ended:
            return
        self.ended = True
        self._discarding = False
        if self._size:
            line = b"".join(self._parts)
            self._parts = _NO_PARTS
            self._size = 0
            if reason.check(ResponseDone):
                self.lineReceived(line)
            else:
                self._reject("partial line at the end of a cut stream dropped")
        self.on_end(reason)

    def pause(self) -> None:
        """Stop reading the body for a while (keep it brief: cAdvisor's sends block)."""
        if self.transport is not None:
            cast(IPushProducer, self.transport).pauseProducing()

    def resume(self) -> None:
        """Read the body again after :meth:`pause`."""
        if self.transport is not None:
            cast(IPushProducer, self.transport).resumeProducing()

    def close(self) -> None:
        """Drop the stream; ``on_end`` follows when the connection is really gone."""
        if self.transport is not None and not self.ended:
            cast(IPushProducer, self.transport).stopProducing()
