"""Helpers shared by the test modules (no test module imports another)."""

from __future__ import annotations

from cadvisor_events.event import format_timestamp, timestamp_ns


def before(timestamp: str, seconds: float) -> str:
    """The ``start_time`` a backfill sends: ``seconds`` before ``timestamp``, in UTC."""
    return format_timestamp(timestamp_ns(timestamp) - int(seconds * 1e9))
