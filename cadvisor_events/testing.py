"""Test doubles for code that runs a :class:`~cadvisor_events.follower.Follower`.

What a user gets (as ``treq.testing`` gives ``StubTreq``): a
:class:`FakeClient`, an :class:`~cadvisor_events.interfaces.EventSource` whose
stream and history requests wait until the test answers them; the
:class:`FakeResponse` it answers a stream with, whose body the test feeds line
by line and then ends cleanly, cuts or resets, as a real cAdvisor's stream
ends; and a :class:`CountingSink`, an
:class:`~cadvisor_events.interfaces.EventSink` that counts events by the Go
seed's key. No network and no reactor: drive the follower's time with
``task.Clock``::

    from twisted.internet import task
    from cadvisor_events.cadvisor import Target
    from cadvisor_events.follower import Follower
    from cadvisor_events.testing import CountingSink, FakeClient

    clock, client, sink = task.Clock(), FakeClient(), CountingSink()
    follower = Follower(Target("cadvisor.example", 8080), client=client, counters=sink, clock=clock)
    follower.startService()
    clock.advance(0)              # the follower asks for the stream...
    response = client.accept()    # ...gets a 200 and an open body, then asks for the history
    client.answer_history()       # an empty history: the follower is "up"
    response.send(b'{"container_name":"/docker/a","timestamp":"2026-11-24T17:25:55Z","event_type":"oom"}')
    assert sink.counts[("/docker/a", "oom", "")] == 1
    response.cut()                # the stream breaks: the follower reconnects after its backoff

These doubles only record and replay what the test says; they must never
decide anything a real cAdvisor or counter would (the counting rule is
:func:`~cadvisor_events.event.counting_key`'s).
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, List, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IProtocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss

from .cadvisor import Target
from .event import CountingKey, Event, counting_key

if TYPE_CHECKING:
    from .interfaces import EventSink, EventSource

__all__ = ["BodyTransport", "CountingSink", "FakeClient", "FakeResponse", "history_body"]


def history_body(*lines: bytes) -> bytes:
    """A history answer (one JSON array) holding the event documents ``lines``."""
    return b"[" + b",".join(lines) + b"]"


class BodyTransport(StringTransport):
    """A stream body's producer; ``stopped`` tells that the follower closed the stream."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped = False

    def stopProducing(self) -> None:
        super().stopProducing()
        self.stopped = True


class FakeResponse:
    """A 200 answer to a stream request, whose body the test writes and ends."""

    code = 200

    def __init__(self) -> None:
        #: The protocol the follower reads the body with (None until it asks for the body).
        self.protocol: Optional[IProtocol] = None
        self.transport = BodyTransport()

    def deliverBody(self, protocol: IProtocol) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)

    def _reader(self) -> IProtocol:
        if self.protocol is None:
            raise RuntimeError("nothing reads this body yet (deliverBody was not called)")
        return self.protocol

    def send(self, *lines: bytes) -> None:
        """Deliver each of ``lines`` followed by a newline, one write each."""
        reader = self._reader()
        for line in lines:
            reader.dataReceived(line + b"\n")

    def end(self) -> None:
        """End the body cleanly (``ResponseDone``), as a stream cAdvisor closed."""
        self._reader().connectionLost(Failure(ResponseDone()))

    def cut(self) -> None:
        """End the body short (``PotentialDataLoss``), as a connection closed mid-stream."""
        self._reader().connectionLost(Failure(PotentialDataLoss()))

    def reset(self) -> None:
        """End the body with a reset connection (``ResponseFailed``)."""
        self._reader().connectionLost(Failure(ResponseFailed([Failure(ConnectionLost())])))


class FakeClient:
    """An event source whose every request waits for the test to answer it.

    ``streams`` holds the Deferred of each stream request, ``histories`` the
    ``(start_time, Deferred)`` of each history request, oldest first; fire
    them directly (``errback`` for a failure), or with :meth:`accept` and
    :meth:`answer_history`. ``responses`` holds every :class:`FakeResponse`
    that :meth:`accept` made.
    """

    def __init__(self) -> None:
        self.streams: List[Deferred] = []
        self.histories: List[Tuple[Optional[str], Deferred]] = []
        self.responses: List[FakeResponse] = []

    def open_stream(self, target: Target, *, oom_only: bool, timeout: float) -> Deferred:
        d: Deferred = Deferred()
        self.streams.append(d)
        return d

    def fetch_history(self, target: Target, *, oom_only: bool, start_time: Optional[str] = None,
                      timeout: float = 30.0, max_bytes: int = 0) -> Deferred:
        d: Deferred = Deferred()
        self.histories.append((start_time, d))
        return d

    def accept(self) -> FakeResponse:
        """Answer the latest stream request with 200 and an open body; return that response."""
        response = FakeResponse()
        self.responses.append(response)
        self.streams[-1].callback(response)
        return response

    def answer_history(self, *lines: bytes) -> None:
        """Answer the latest history request with the event documents ``lines``."""
        self.histories[-1][1].callback(history_body(*lines))

    @property
    def last_start_time(self) -> Optional[str]:
        """The ``start_time`` of the latest history request (None: the whole history)."""
        return self.histories[-1][0]


class CountingSink:
    """Counts events by the Go seed's key: ``counts[key]``, and ``total`` in all."""

    def __init__(self) -> None:
        self.counts: collections.Counter[CountingKey] = collections.Counter()
        self.total = 0

    def count(self, event: Event) -> None:
        self.counts[counting_key(event)] += 1
        self.total += 1


if TYPE_CHECKING:  # mypy checks that each double fits the seam it stands in for
    _source: EventSource = FakeClient()
    _sink: EventSink = CountingSink()
