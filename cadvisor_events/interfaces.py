"""The seams between modules, as ``typing.Protocol`` classes.

A follower counts into an :class:`EventSink` and talks to cAdvisor through an
:class:`EventSource`; the status page, ``/targets`` and the self-metrics read
a :class:`FleetView` of :class:`HostStatus` values. Naming the seams lets a
test pass its own double (see :mod:`cadvisor_events.testing`) and lets mypy
check both sides, instead of modules probing each other with ``getattr``.
Nothing here runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional

from twisted.internet.defer import Deferred

from .event import Event

if TYPE_CHECKING:
    from typing import Protocol

    from .cadvisor import Target
    from .targets import TargetSpec
else:
    from typing import Protocol

__all__ = ["EventSink", "EventSource", "HostStatus", "FleetView"]


class EventSink(Protocol):
    """Where a follower counts the events it accepted (one host's counters)."""

    def count(self, event: Event) -> None:
        """Count one event; called once per accepted event, so keep it lean."""


class EventSource(Protocol):
    """A cAdvisor's events API as a follower uses it."""

    def open_stream(self, target: "Target", *, oom_only: bool, timeout: float) -> Deferred:
        """Fire with a 200 response whose body is the event stream."""

    def fetch_history(self, target: "Target", *, oom_only: bool, start_time: Optional[str] = None,
                      timeout: float = 30.0, max_bytes: int = 0) -> Deferred:
        """Fire with the history body (bytes), from ``start_time`` inclusive when given."""


class HostStatus(Protocol):
    """What one followed host shows: the status page, ``/targets`` and self-metrics read it."""

    target: "Target"
    state: str
    up: bool
    state_since: float
    received: int
    invalid_lines: int
    connects: int
    failures: Mapping[str, int]
    backfilled: int
    duplicates_dropped: int
    gaps: int
    last_error: Optional[str]

    @property
    def future_events(self) -> int:
        """Events dated too far ahead of this process's clock (counted)."""

    @property
    def dedup_evicted(self) -> Mapping[str, int]:
        """Counted events forgotten early because de-duplication state is capped, by state."""

    @property
    def last_event_time(self) -> Optional[float]:
        """Unix time of the newest event counted, or None."""


class FleetView(Protocol):
    """The followed hosts by name, and the target specs (labels) they were made from."""

    @property
    def followers(self) -> Mapping[str, HostStatus]:
        """Target name -> its follower."""

    @property
    def specs(self) -> Mapping[str, "TargetSpec"]:
        """Target name -> the spec (target, file_sd labels) its follower was made from."""
