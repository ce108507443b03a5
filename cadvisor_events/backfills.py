"""The fleet's backfills, counted one after another a slice at a time.

A history answer is decoded and counted in the reactor's thread. One is a few
milliseconds; but when an exporter restarts in front of a big fleet, hundreds
of histories finish arriving in the same reactor turn, and counting them all
there would hold ``/-/healthy``, ``/metrics`` and every stream for seconds.
:class:`BackfillQueue` takes each backfill as a generator of steps (decode,
then a slice of events per step: see :func:`~cadvisor_events.ledger.merge_backfill_steps`)
and runs them, first come first served, through a Twisted ``Cooperator`` that
spends at most :data:`SLICE_SECONDS` per reactor turn on them. One backfill
at a time, to its end: the next history stays undecoded bytes until then, so
the queue holds at most one decoded history. A follower keeps its connect
gate slot until its backfill is counted, which bounds the queue by the gate.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Deque, Iterator, Optional

from twisted.internet.task import CooperativeTask, Cooperator
from twisted.logger import Logger

__all__ = ["BackfillQueue", "SLICE_SECONDS"]

log = Logger()

#: Wall seconds of backfill work per reactor turn, at most (a step started is finished).
SLICE_SECONDS = 0.008


class _Deadline:
    """True once ``seconds`` have passed since it was made: a Cooperator's termination predicate."""

    def __init__(self, seconds: float, now: Callable[[], float]) -> None:
        self._end = now() + seconds
        self._now = now

    def __call__(self) -> bool:
        return self._now() >= self._end


class BackfillQueue:
    """Runs backfills (iterators of steps) in order, :data:`SLICE_SECONDS` per reactor turn.

    ``clock`` schedules the turns; ``now`` (wall seconds; tests count steps
    with their own) bounds each. A step that raises is logged and ends its
    backfill only.
    """

    def __init__(self, clock, slice_seconds: float = SLICE_SECONDS,
                 now: Callable[[], float] = time.monotonic) -> None:
        self._jobs: Deque[Iterator[None]] = deque()
        self._cooperator = Cooperator(
            terminationPredicateFactory=lambda: _Deadline(slice_seconds, now),
            scheduler=lambda work: clock.callLater(0, work),
        )
        self._task: Optional[CooperativeTask] = None

    def __len__(self) -> int:
        """Backfills waiting or running."""
        return len(self._jobs)

    def add(self, steps: Iterator[None]) -> None:
        """Run ``steps`` after the backfills added before it."""
        self._jobs.append(steps)
        if self._task is None:
            self._task = self._cooperator.cooperate(self._run())
            self._task.whenDone().addBoth(self._idle)

    def _run(self) -> Iterator[None]:
        jobs = self._jobs
        while jobs:
            try:
                for _ in jobs[0]:
                    yield None
            except Exception:
                log.failure("a backfill failed")
            jobs.popleft()

    def _idle(self, _) -> None:
        self._task = None
        if self._jobs:  # added while the last one finished
            self._task = self._cooperator.cooperate(self._run())
            self._task.whenDone().addBoth(self._idle)
