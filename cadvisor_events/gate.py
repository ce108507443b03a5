"""How many cAdvisor requests are being set up at once, streams before histories.

Every (re)connect costs two requests: the stream, then the history that
backfills it. When thousands of hosts connect at once (a start, a network
blip) the exporter is CPU-bound on setting them up. A stream opened early
loses nothing (it buffers until its backfill), while a host whose stream is
not open yet can miss events, so :class:`ConnectGate` bounds requests in
flight and hands a free slot to a waiting stream before any waiting
history. It never times anything and never orders requests of one kind.
"""

from __future__ import annotations

from collections import deque

from twisted.internet import defer

__all__ = ["ConnectGate"]


class ConnectGate:
    """A semaphore of ``limit`` slots with two queues: streams first, then histories.

    :meth:`acquire` returns a Deferred that fires (with the gate) once a slot
    is the caller's; cancelling it gives up the wait. Each fired acquire must
    be matched by one :meth:`release`.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a gate needs at least one slot")
        self.limit = limit
        self.held = 0
        self._streams: deque = deque()
        self._histories: deque = deque()

    @property
    def waiting(self) -> int:
        """Acquires queued (cancelled ones included until they are passed over)."""
        return len(self._streams) + len(self._histories)

    def acquire(self, stream: bool = True) -> defer.Deferred:
        """A slot for a stream request (``stream=True``) or a history request."""
        wait: defer.Deferred = defer.Deferred()  # a cancelled wait is skipped at release
        if self.held < self.limit and not self._streams and (stream or not self._histories):
            self.held += 1
            wait.callback(self)
        else:
            (self._streams if stream else self._histories).append(wait)
        return wait

    def release(self) -> None:
        """Give a slot back: to the oldest waiting stream, else the oldest waiting history."""
        if self.held < 1:
            raise RuntimeError("released more slots than were acquired")
        self.held -= 1
        for queue in (self._streams, self._histories):
            while queue:
                wait = queue.popleft()
                if not wait.called:  # else cancelled while waiting
                    self.held += 1
                    wait.callback(self)
                    return
