"""One cAdvisor followed for good: its event stream, reconnects, backfill and de-duplication.

A :class:`Follower` keeps one stream open to one cAdvisor and counts every
event it emits exactly once, through any number of breaks, as long as
cAdvisor's history still holds what happened while the stream was down. It
opens the stream first, then fetches history (the full history on a first
connect when seeding, else from a little before the newest counted event),
buffers the stream meanwhile, merges both through its
:class:`~cadvisor_events.ledger.Ledger` (which decides what was counted
already) and only then counts the stream live. With a ``specs`` hook (see
:mod:`cadvisor_events.enrich`) it also lists the host's containers after
every stream opens (before the backfill, through the connect gate) and asks
for the spec of every container the stream announces, as soon as it arrives.
Its statistics are plain attributes read at scrape time. It
must never let input kill or stall it, never reconnect in a tight loop, never
log credentials, and never read time except through the injected clock.
"""

from __future__ import annotations

import datetime
from functools import partial
from types import MappingProxyType
from typing import Any, Callable, Iterator, Optional, Protocol

from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed

from .activity import note_state_change
from .backfills import BackfillQueue
from .cadvisor import Target, UpstreamError, describe_failure, timed_out
from .event import Event, InvalidEvent, parse_history, timestamp_ns
from .ledger import EventFingerprints, Ledger, merge_backfill_steps
from .gate import ConnectGate
from .interfaces import EventSink, EventSource
from .protocol import EventStreamProtocol

__all__ = ["Follower", "MAX_BUFFERED"]

log = Logger()

#: Stream events held while a backfill runs; beyond this the attempt fails (``overflow``).
MAX_BUFFERED = 100_000
#: How long stopService waits for a stream's connection to close.
STOP_TIMEOUT = 10.0
#: How long an ``oom`` that may be a replay waits on a stream for its ``oomKill``
#: (cAdvisor sends the two back to back); without it, it is judged alone.
PARTNER_WAIT = 1.0

STATES = ("idle", "connecting", "backfilling", "up", "down", "stopped")
#: Every follower's ``failures`` until its first (read-only: a fleet has thousands of hosts).
_NO_FAILURES: Any = MappingProxyType({})
CREATION = "containerCreation"


class SpecHooks(Protocol):
    """What a follower asks of the host's container specs (an enricher's side)."""

    def listing(self) -> defer.Deferred:
        """List every container; fires (never fails) when done."""

    def created(self, cgroup: str) -> None:
        """A creation arrived on the stream: fetch that container's spec now (called only when
        the hooks have no ``fetches_specs`` attribute, or a true one)."""

    def caught_up(self) -> None:
        """What happened before the listing is counted (the backfill merged, or none)."""


def _ignore(*args) -> None:
    pass


def _rfc3339(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Follower(Service):
    """Follow one cAdvisor's events; count each one exactly once into ``counters``.

    Read by others (plain attributes): ``target``, ``state`` (one of
    :data:`STATES`), ``up``, ``state_since``, ``tried``, ``received``,
    ``invalid_lines``, ``connects``, ``failures`` (reason -> count),
    ``backfilled``, ``duplicates_dropped``, ``gaps``, ``last_event_time``,
    ``last_error``, ``retries``, ``future_events``, ``dedup_evicted``.

    A stream event goes through one of three paths, one per phase of a
    stream, so no per-event check of the phase is needed:
    :meth:`_on_buffered_event` while a backfill runs, :meth:`_on_settling_event`
    for the settle window after it, :meth:`_on_live_event` (the hot path) after
    that. Each asks the ledger whether the event is new.
    """

    __slots__ = (
        "parent", "name", "running",  # IService's attributes, slotted too
        "target", "oom_only", "seed_history", "connect_timeout", "history_timeout",
        "max_history_bytes", "settle_seconds", "first_delay", "max_clock_skew", "backfill_overlap",
        "state", "up", "state_since", "tried", "received", "invalid_lines", "connects",
        "failures", "backfilled", "duplicates_dropped", "gaps", "last_error", "retries", "state_changes",
        "_client", "_counters", "_count", "_count_many", "_specs", "_announce", "_clock", "_backoff", "_gate", "_gate_held", "_gate_wait",
        "_backfills",
        "_attempt", "_timer", "_pending", "_protocol", "_buffer", "_ledger",
        "_recent", "_settle_call", "_synced", "_backfill_from", "_logged_reason",
        "_invalid_logged", "_held", "_held_at", "_held_call", "_after_held_handler",
    )

    #: Stream events buffered during a backfill before the attempt fails with ``overflow``.
    max_buffered = MAX_BUFFERED

    def __init__(
        self,
        target: Target,
        *,
        client: EventSource,
        counters: EventSink,
        clock,
        oom_only: bool = False,
        seed_history: bool = True,
        connect_timeout: float = 30.0,
        history_timeout: float = 120.0,
        max_history_bytes: int = 256 * 1024 * 1024,
        settle_seconds: float = 30.0,
        backoff=backoffPolicy(initialDelay=1.0, maxDelay=30.0, factor=2.0),
        first_delay: float = 0.0,
        connect_gate: Optional[ConnectGate] = None,
        max_clock_skew: Optional[float] = None,
        backfill_overlap: float = 1.0,
        specs: Optional[SpecHooks] = None,
        backfills: Optional[BackfillQueue] = None,
    ) -> None:
        self.parent = None
        self.name = None
        self.running = 0
        self.target = target
        self.oom_only = oom_only
        self.seed_history = seed_history
        self.connect_timeout = connect_timeout
        self.history_timeout = history_timeout
        self.max_history_bytes = max_history_bytes
        self.settle_seconds = settle_seconds
        self.first_delay = first_delay
        self._client = client
        self._counters = counters
        self._count = counters.count
        #: The sink's way to count a history's events at once, if it has one.
        self._count_many = getattr(counters, "count_many", None)
        self._specs = specs
        # Whether creations are announced to ``specs`` (not without specs to fetch: --no-enrich).
        self._announce = specs is not None and bool(getattr(specs, "fetches_specs", True))
        self._clock = clock
        self._backoff = backoff
        self._gate = connect_gate
        self._gate_held = False
        self._gate_wait: Optional[defer.Deferred] = None
        # Where history answers are counted, a slice per reactor turn; None: at once.
        self._backfills = backfills

        self.state = "idle"
        self.up = False
        self.state_since = clock.seconds()
        self.tried = False
        self.received = 0
        self.invalid_lines = 0
        self.connects = 0
        self.failures: dict = _NO_FAILURES  # made on the first failure
        self.backfilled = 0
        self.duplicates_dropped = 0
        self.gaps = 0
        self.last_error: Optional[str] = None
        self.retries = 0
        self.state_changes: list = []  # the last STATE_CHANGES (time, state, reason): the host page

        self._attempt = 0  # bumped at every connect, failure and stop: stale callbacks compare it
        self._timer = None
        self._pending: Optional[defer.Deferred] = None
        self._protocol: Optional[EventStreamProtocol] = None
        # Stream events held while a backfill runs (timed and merged when the history arrives).
        self._buffer: Optional[list] = None
        # With max_clock_skew, an event dated further ahead of our clock is not trusted as the
        # resume point (see Ledger); None trusts every timestamp.
        self.max_clock_skew = max_clock_skew
        # A backfill re-reads this many seconds before the newest counted event (see Ledger).
        self.backfill_overlap = backfill_overlap
        self._ledger = Ledger(backfill_overlap, None if max_clock_skew is None else clock.seconds,
                              max_clock_skew or 0.0, target.name)
        self._recent: Optional[EventFingerprints] = None
        # An ``oom`` waiting for its ``oomKill`` (event, ns), the timer that stops waiting, and
        # the path the stream's events take once it is decided.
        self._held: Optional[tuple] = None
        self._held_at = 0.0
        self._held_call = None
        self._after_held_handler: Optional[Callable[[Event], None]] = None
        self._settle_call = None
        self._synced = False  # a first backfill (or the decision to skip it) is done
        self._backfill_from: Optional[str] = None  # start_time while nothing was counted
        self._logged_reason: Optional[str] = None
        self._invalid_logged = False

    def __repr__(self) -> str:
        return f"<Follower {self.target.name} {self.state}>"

    @property
    def future_events(self) -> int:
        """Events dated over ``max_clock_skew`` ahead of our clock (counted, not the resume point)."""
        return self._ledger.future_counted

    @property
    def dedup_evicted(self) -> dict:
        """Remembered events forgotten early because of a cap, by state (``window``, ``oom``)."""
        return self._ledger.evicted

    @property
    def last_event_time(self) -> Optional[float]:
        """Unix time of the newest event counted, or None."""
        return self._ledger.seconds

    @property
    def last_events(self) -> list:
        """The newest counted events (OOMs aside) its ledger remembers, newest first (the host page)."""
        return self._ledger.newest(20)

    @property
    def backfill_since(self) -> Optional[str]:
        """``start_time`` of the next reconnect's backfill (None: the whole history)."""
        return self._ledger.resume()[0] or self._backfill_from

    # -- service -------------------------------------------------------------------

    def startService(self) -> None:
        Service.startService(self)
        self._timer = self._clock.callLater(self.first_delay, self._connect)

    def stopService(self) -> defer.Deferred:
        """Cancel timers and requests, close the stream; fires once it is really closed."""
        Service.stopService(self)
        self._attempt += 1
        closed: Optional[defer.Deferred] = None
        protocol = self._protocol
        if protocol is not None and not protocol.ended:
            closed = defer.Deferred()

            def ended(reason: Failure) -> None:
                if not closed.called:
                    closed.callback(None)

            protocol.on_end = ended
        self._teardown(keep_on_end=closed is not None)
        self.up = False
        self._set_state("stopped")
        log.info("stopped following {host}", host=self.target.name)
        if closed is None or closed.called:
            return defer.succeed(None)
        closed.addTimeout(STOP_TIMEOUT, self._clock)
        closed.addErrback(lambda _: None)
        return closed

    # -- connecting ----------------------------------------------------------------

    def _connect(self) -> None:
        self._timer = None
        self._attempt += 1
        attempt = self._attempt
        self._set_state("connecting")
        self._through_gate(attempt, True, self._open)

    def _through_gate(self, attempt: int, stream: bool, then, *args) -> None:
        """Call ``then(attempt, *args)`` holding a slot of the connect gate (if any)."""
        if self._gate is None:
            then(attempt, *args)
            return
        wait = self._gate_wait = self._gate.acquire(stream)
        wait.addCallbacks(self._gate_acquired, _ignore, callbackArgs=(attempt, then, args))

    def _gate_acquired(self, _, attempt: int, then, args) -> None:
        self._gate_wait = None
        self._gate_held = True
        if attempt != self._attempt:
            self._release_gate()
            return
        then(attempt, *args)

    def _release_gate(self) -> None:
        if self._gate_held and self._gate is not None:
            self._gate_held = False
            self._gate.release()

    def _open(self, attempt: int) -> None:
        try:
            request = self._client.open_stream(self.target, oom_only=self.oom_only, timeout=self.connect_timeout)
        except Exception as e:
            self._fail(attempt, describe_failure(self.target, e))
            return
        # The client's own timeout runs on its reactor; this one on our clock, and whatever the
        # cancelled request then fails with (a reset, usually), the reason is the timeout.
        request.addTimeout(self.connect_timeout, self._clock,
                           onTimeoutCancel=timed_out(self.target, self.connect_timeout))
        self._pending = request
        request.addCallbacks(self._stream_opened, self._open_failed,
                             callbackArgs=(attempt,), errbackArgs=(attempt,))
        request.addErrback(self._bug, attempt)

    def _open_failed(self, failure: Failure, attempt: int) -> None:
        if attempt == self._attempt:
            self._pending = None
            self._fail(attempt, describe_failure(self.target, failure))

    def _stream_opened(self, response, attempt: int) -> None:
        if attempt != self._attempt:  # stopped or failed meanwhile: drop this stream
            stale = EventStreamProtocol(_ignore, _ignore, _ignore)
            response.deliverBody(stale)
            stale.close()
            return
        self._pending = None
        self._release_gate()
        self.connects += 1
        self.up = True
        self._invalid_logged = False
        protocol = self._protocol = EventStreamProtocol(
            _ignore, self._on_invalid, partial(self._stream_ended, attempt))
        if self._synced or self.seed_history:
            start_time = self.backfill_since if self._synced else None
            self._buffer = []
            protocol.on_event = self._on_buffered_event
            self._set_state("backfilling")
            response.deliverBody(protocol)
            if attempt == self._attempt:
                # After every waiting stream: this one buffers meanwhile, loses nothing. The
                # listing first, so the backfill's series are born knowing their containers.
                then = self._fetch_history if self._specs is None else self._list_specs
                self._through_gate(attempt, False, then, start_time)
        else:
            # Not seeding: count from now on; a later backfill starts here.
            self._synced = True
            self._backfill_from = _rfc3339(self._clock.seconds())
            self._set_path(self._on_live_event)
            self._go_live(None)
            response.deliverBody(protocol)
            if self._specs is not None and attempt == self._attempt:
                self._through_gate(attempt, False, self._list_specs, None, False)

    # -- backfill ------------------------------------------------------------------

    def _list_specs(self, attempt: int, start_time: Optional[str], backfill: bool = True) -> None:
        """List the host's containers holding a gate slot, then backfill (keeping it) if asked."""
        assert self._specs is not None
        # Our own Deferred: a teardown cancels it, not the listing others may wait for.
        listed: defer.Deferred = defer.Deferred()
        self._pending = listed
        self._specs.listing().addBoth(lambda _: None if listed.called else listed.callback(None))
        listed.addCallbacks(self._specs_listed, _ignore, callbackArgs=(attempt, start_time, backfill))
        listed.addErrback(self._bug, attempt)

    def _specs_listed(self, _, attempt: int, start_time: Optional[str], backfill: bool) -> None:
        if attempt != self._attempt:
            return
        self._pending = None
        if backfill:
            self._fetch_history(attempt, start_time)
        else:
            self._release_gate()
            assert self._specs is not None
            self._specs.caught_up()

    def _fetch_history(self, attempt: int, start_time: Optional[str]) -> None:
        try:
            request = self._client.fetch_history(
                self.target, oom_only=self.oom_only, start_time=start_time,
                timeout=self.history_timeout, max_bytes=self.max_history_bytes)
        except Exception as e:
            self._history_failed(Failure(e), attempt)
            return
        request.addTimeout(self.history_timeout, self._clock)
        self._pending = request
        request.addCallbacks(self._history_received, self._history_failed,
                             callbackArgs=(attempt, start_time), errbackArgs=(attempt,))
        request.addErrback(self._bug, attempt)

    def _history_failed(self, failure: Failure, attempt: int) -> None:
        if attempt == self._attempt:
            self._pending = None
            self._release_gate()
            error = describe_failure(self.target, failure)
            self._fail(attempt, UpstreamError("history", f"backfill failed: {error.message}"))

    def _history_received(self, body: bytes, attempt: int, start_time: Optional[str]) -> None:
        if attempt != self._attempt:
            return
        self._pending = None
        steps = self._count_history(body, attempt, start_time)
        if self._backfills is None:
            for _ in steps:
                pass
        else:
            self._backfills.add(steps)

    def _count_history(self, body: bytes, attempt: int, start_time: Optional[str]) -> Iterator[None]:
        """Decode and count a history answer, then go live: the steps of a backfill, which a
        :class:`~cadvisor_events.backfills.BackfillQueue` spreads over reactor turns. The
        stream buffers meanwhile; the connect gate's slot is kept until the end, so the
        fleet's queue of undecoded histories is bounded by the gate."""
        if attempt != self._attempt:
            return  # stopped or failed while queued
        try:
            history, invalid = parse_history(body)
            start_ns = None if start_time is None else timestamp_ns(start_time)
        except InvalidEvent as e:
            self._release_gate()
            self._fail(attempt, UpstreamError("history", f"{self.target.base_url}: bad history: {e}"))
            return
        del body
        self.invalid_lines += invalid
        self.received += len(history)
        self._check_gap(history)
        # From the first event counted, a later backfill must resume from the ledger, even if
        # this one is cut short (a break between two steps): it never starts over.
        self._synced = True
        merging = merge_backfill_steps(self._ledger, start_ns, history, self._take_buffered, self._count,
                                       self._count_many)
        while True:
            yield None
            if attempt != self._attempt:
                return  # stopped or failed meanwhile: what was counted stays in the ledger
            try:
                next(merging)
            except StopIteration as done:
                result = done.value
                break
        del history, merging
        self._release_gate()
        self.backfilled += result.backfilled
        self.duplicates_dropped += result.dropped
        if self._specs is not None:
            self._specs.caught_up()
        if self.settle_seconds > 0 and result.recent:
            self._recent = result.recent
            self._settle_call = self._clock.callLater(self.settle_seconds, self._settled, attempt)
            self._set_path(self._on_settling_event)
        else:
            self._set_path(self._on_live_event)
        self._go_live(result.backfilled + result.from_buffer)

    def _take_buffered(self) -> tuple:
        """The stream events buffered during the backfill, timed, and the oldest one's time;
        from here on the stream's events are not buffered any more."""
        buffered = self._timed(self._buffer or [])
        self._buffer = None
        return buffered, min((ns for _, ns in buffered), default=None)

    def _check_gap(self, history: list) -> None:
        """Count a gap when history (asked from before the newest counted events, inclusive)
        no longer holds them: it may have lost others since (aged out, or cAdvisor restarted)."""
        since, missing = self._ledger.resume()
        for event, _ in history:
            if not missing:
                return
            missing.discard(event)
        if missing:
            self.gaps += 1
            log.warn("gap in the history of {host}: it no longer holds the events counted since {since}; "
                     "whatever it dropped since then is lost", host=self.target.name, since=since)

    def _go_live(self, caught_up: Optional[int]) -> None:
        """The stream is trusted now: healthy, so the backoff starts over."""
        self.retries = 0
        self.tried = True
        self._logged_reason = None
        self._set_state("up")
        log.info("following {host}: stream up{extra}", host=self.target.name,
                 extra="" if caught_up is None else f", {caught_up} events caught up")

    def _settled(self, attempt: int) -> None:
        self._settle_call = None
        self._recent = None
        if attempt == self._attempt and self._protocol is not None:
            self._set_path(self._on_live_event)

    # -- events --------------------------------------------------------------------

    def _set_path(self, handler) -> None:
        """Route the stream's events to ``handler`` (after the held ``oom``, if one waits)."""
        if self._held is not None:
            self._after_held_handler = handler
        elif self._protocol is not None:
            self._protocol.on_event = handler

    def _on_buffered_event(self, event: Event) -> None:
        """While backfilling: hold stream events for the merge (bounded)."""
        buffer = self._buffer
        if buffer is None:  # not backfilling (a stale path): nothing to hold for
            return
        buffer.append(event)
        if self._announce and event.event_type == CREATION:
            self._specs.created(event.container_name)  # type: ignore[union-attr]
        if len(buffer) > self.max_buffered:
            self._overflow()

    def _timed(self, events: list) -> list:
        """``(event, ns)`` for the held ``events``; one with a bad timestamp is an invalid line."""
        timed = []
        for event in events:
            try:
                timed.append((event, timestamp_ns(event.timestamp)))
            except InvalidEvent as e:
                self._on_invalid(str(e))
        self.received += len(timed)
        return timed

    def _on_settling_event(self, event: Event) -> None:
        """Just after a backfill: also drop late repeats of the history's newest events."""
        recent = self._recent
        if recent is not None and event in recent:
            self.received += 1
            self.duplicates_dropped += 1
            return
        self._on_live_event(event)

    def _on_live_event(self, event: Event) -> None:
        """The hot path: one call per live stream event."""
        try:
            ns = timestamp_ns(event.timestamp)
        except InvalidEvent as e:
            self._on_invalid(str(e))
            return
        self.received += 1
        ledger = self._ledger
        if self._announce and event.event_type == CREATION:
            self._specs.created(event.container_name)  # type: ignore[union-attr]
        if event.event_type == "oom" and ledger.needs_partner(event, ns):
            self._hold(event, ns)
        elif ledger.offer(event, ns):
            self._count(event)
        else:
            self.duplicates_dropped += 1

    def _hold(self, event: Event, ns: int) -> None:
        """Keep an ``oom`` that may be a replay until its ``oomKill`` says (the next event)."""
        protocol = self._protocol
        if protocol is None:
            return
        self._held = (event, ns)
        self._held_at = self._clock.seconds()
        self._after_held_handler = protocol.on_event
        protocol.on_event = self._on_event_after_held
        if self._held_call is None:  # one timer at a time, not one per held oom
            self._held_call = self._clock.callLater(PARTNER_WAIT, self._partner_overdue)

    def _partner_overdue(self) -> None:
        self._held_call = None
        if self._held is None:
            return
        waited = self._clock.seconds() - self._held_at
        if waited >= PARTNER_WAIT:
            self._decide_held(None)
        else:
            self._held_call = self._clock.callLater(PARTNER_WAIT - waited, self._partner_overdue)

    def _on_event_after_held(self, event: Event) -> None:
        handler = self._after_held_handler
        self._decide_held(event)
        if handler is not None:
            handler(event)

    def _decide_held(self, next_event: Optional[Event]) -> None:
        """Judge the held ``oom`` with ``next_event`` as its partner if it is one."""
        held, self._held = self._held, None
        if held is None:
            return
        event, ns = held
        if self._protocol is not None and self._after_held_handler is not None:
            self._protocol.on_event = self._after_held_handler
        self._after_held_handler = None
        partner = next_event if (next_event is not None and next_event.event_type == "oomKill"
                                 and next_event.timestamp == event.timestamp) else None
        if self._ledger.offer(event, ns, partner):
            self._count(event)
        else:
            self.duplicates_dropped += 1

    def _on_invalid(self, reason: str) -> None:
        self.invalid_lines += 1
        if not self._invalid_logged:
            self._invalid_logged = True
            log.warn("invalid line from {host} skipped: {reason}", host=self.target.name, reason=reason)

    # -- breaks --------------------------------------------------------------------

    def _stream_ended(self, attempt: int, reason: Failure) -> None:
        if attempt != self._attempt:
            return
        self._protocol = None
        if reason.check(ResponseDone):
            self._fail(attempt, UpstreamError("eof", f"{self.target.base_url}: stream ended by the server"))
            return
        if reason.check(ResponseFailed):
            why = describe_failure(self.target, reason).message
        else:
            why = f"{self.target.base_url}: {reason.getErrorMessage() or reason.type.__name__}"
        self._fail(attempt, UpstreamError("cut", f"stream cut: {why}"))

    def _overflow(self) -> None:
        self._fail(self._attempt, UpstreamError(
            "overflow", f"{self.target.base_url}: over {self.max_buffered} stream events during a backfill"))

    def _bug(self, failure: Failure, attempt: int) -> None:
        log.failure("follower of {host} failed", failure, host=self.target.name)
        self._fail(attempt, UpstreamError("internal", f"internal error: {failure.getErrorMessage()}"))

    def _fail(self, attempt: int, error: UpstreamError) -> None:
        """End this attempt: record why, drop its stream, retry after the backoff."""
        if attempt != self._attempt or not self.running:
            return
        self._attempt += 1
        self._teardown()
        self.up = False
        self.tried = True
        reason = error.reason
        if self.failures is _NO_FAILURES:
            self.failures = {}
        self.failures[reason] = self.failures.get(reason, 0) + 1
        self.last_error = error.message
        delay = self._backoff(self.retries)
        self.retries += 1
        self._set_state("down")
        if reason != self._logged_reason:
            self._logged_reason = reason
            # Once per reason until the stream is up again: a dead host does not flood the log.
            log.warn("stream from {host} down ({reason}): {error}; retrying in {delay:.1f}s",
                     host=self.target.name, reason=reason, error=error.message, delay=delay)
        self._timer = self._clock.callLater(delay, self._connect)

    def _teardown(self, keep_on_end: bool = False) -> None:
        """Cancel whatever the current attempt has in flight and close its stream."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._settle_call is not None and self._settle_call.active():
            self._settle_call.cancel()
        self._settle_call = None
        if self._held_call is not None and self._held_call.active():
            self._held_call.cancel()
        # A held oom is left undecided: the next backfill asks for it again.
        self._held = self._held_call = self._after_held_handler = None
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        wait, self._gate_wait = self._gate_wait, None
        if wait is not None:
            wait.cancel()
        self._release_gate()
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.on_event = protocol.on_invalid = _ignore
            if not keep_on_end:
                protocol.on_end = _ignore
            protocol.close()
        self._buffer = None
        self._recent = None

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.state_since = self._clock.seconds()
            note_state_change(self.state_changes, self.state_since, state, self.last_error if state == "down" else None)
