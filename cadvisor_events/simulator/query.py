"""cAdvisor's events request: which paths it answers and how it reads an events query.

The rules of cAdvisor's ``cmd/internal/api`` (API versions and request
types, the v2 options checked before any handler, ``getEventRequest``) and
of its events filter, in cAdvisor's order of checks and with its error
texts, so the simulator refuses what cAdvisor refuses and selects what it
selects. It must never parse anything itself: every value goes through Go's
rules in :mod:`.golang`.
"""

from __future__ import annotations

import re
from typing import Optional

import attrs

from .golang import GO_ZERO_TIME_NS, clean_go_path, go_duration_error, go_quote, parse_go_bool, parse_go_int, parse_rfc3339

__all__ = ["ApiError", "EVENT_TYPES", "EventQuery", "api_request", "events_container", "spec_request"]

EVENT_TYPES = ("oom", "oomKill", "containerCreation", "containerDeletion")
_TYPE_FLAGS = {"oom_events": "oom", "oom_kill_events": "oomKill",
               "creation_events": "containerCreation", "deletion_events": "containerDeletion"}
_API_VERSIONS = {
    "v1.0": ("containers", "machine"),
    "v1.1": ("containers", "machine", "subcontainers"),
    "v1.2": ("containers", "machine", "subcontainers", "docker"),
    "v1.3": ("containers", "machine", "subcontainers", "docker", "events"),
    "v2.0": ("version", "attributes", "events", "machine", "summary", "stats", "spec", "storage", "ps", "appmetrics"),
}
_API_VERSIONS["v2.1"] = ("machinestats",) + _API_VERSIONS["v2.0"]
_API_PATH = re.compile(r"/api/([^/]+)/?([^/]+)?(.*)")


class ApiError(Exception):
    """An answer cAdvisor gives instead of events: HTTP status and plain-text message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def events_container(path: str, args: dict[str, list[str]]) -> str:
    """The container an ``/api/...`` path asks events for, checked in cAdvisor's order.

    :raises ApiError: what cAdvisor answers for a path that is not an events
        request (unknown version or type, a v2 option it cannot parse); 501 for
        request types cAdvisor has but the simulator does not serve.
    """
    request_type, container = api_request(path, args)
    if request_type != "events":
        raise ApiError(501, "the cAdvisor simulator serves only events and spec, not " + go_quote(request_type))
    return container


def api_request(path: str, args: dict[str, list[str]]) -> tuple[str, str]:
    """(request type, container name) of an ``/api/...`` path, checked in cAdvisor's order.

    :raises ApiError: as :func:`events_container`, but any request type the
        path's API version has is returned.
    """
    if path in ("/api", "/api/"):
        raise ApiError(400, "Supported API versions: " + ",".join(sorted(_API_VERSIONS)))
    match = _API_PATH.search(path)
    if match is None:
        raise ApiError(500, "malformed request " + go_quote(path))
    version, request_type, rest = match.group(1), match.group(2) or "", match.group(3)
    if version not in _API_VERSIONS:
        raise ApiError(500, "unsupported API version " + go_quote(version))
    if not request_type:
        raise ApiError(400, "Supported request types: " + go_quote(",".join(sorted(_API_VERSIONS[version]))))
    if version.startswith("v2."):
        _check_v2_request_options(args)
    if request_type not in _API_VERSIONS[version]:
        raise ApiError(500, "unknown request type " + go_quote(request_type))
    return request_type, clean_go_path("/" + rest)


def _check_v2_request_options(args: dict[str, list[str]]) -> None:
    """The v2 API's ``GetRequestOptions`` runs before any handler and fails on bad values."""
    def first(name: str) -> str:
        return args[name][0] if name in args else ""

    if first("type") and first("type") not in ("name", "docker", "podman"):
        raise ApiError(500, "unknown 'type' " + go_quote(first("type")))
    if first("count"):
        count = parse_go_int(first("count"))
        if count is None:
            raise ApiError(500, "failed to parse 'count' option: " + first("count"))
        if count < -1:
            raise ApiError(500, "invalid 'count' option: only -1 and larger values allowed, not %d" % count)
    duration_error = go_duration_error(first("max_age")) if first("max_age") else None
    if duration_error:
        raise ApiError(500, "failed to parse 'max_age' option: " + duration_error)


@attrs.frozen
class EventQuery:
    """cAdvisor's ``events.Request`` plus the ``stream`` flag; time bounds in ns, ``None`` = unset."""

    container_name: str = "/"
    subcontainers: bool = False
    event_types: frozenset = frozenset()
    stream: bool = False
    max_events: int = 10
    start_ns: Optional[int] = None
    end_ns: Optional[int] = None

    @classmethod
    def from_args(cls, args: dict[str, list[str]], container_name: str) -> "EventQuery":
        """``getEventRequest``: first value of each key; a value Go cannot parse leaves the default."""
        def flag(name: str) -> Optional[bool]:
            return parse_go_bool(args[name][0]) if name in args else None

        def bound(name: str) -> Optional[int]:
            value = parse_rfc3339(args[name][0]) if name in args else None
            return None if value == GO_ZERO_TIME_NS else value  # time.IsZero()

        selected = dict.fromkeys(EVENT_TYPES, False)
        for name, event_type in _TYPE_FLAGS.items():
            value = True if flag("all_events") else flag(name)
            if value is not None:
                selected[event_type] = value
        max_events = parse_go_int(args["max_events"][0]) if "max_events" in args else None
        return cls(container_name=container_name, subcontainers=bool(flag("subcontainers")),
                   event_types=frozenset(t for t, on in selected.items() if on), stream=bool(flag("stream")),
                   max_events=10 if max_events is None else max_events,
                   start_ns=bound("start_time"), end_ns=bound("end_time"))

    def selects(self, event) -> bool:
        """Type and container filter (``checkIfEventSatisfiesRequest`` minus the time bounds)."""
        if event.event_type not in self.event_types:
            return False
        if self.subcontainers:
            return self.container_name == "/" or (event.container_name + "/").startswith(self.container_name + "/")
        return event.container_name == self.container_name


def spec_request(args: dict[str, list[str]]) -> bool:
    """Whether a v2 spec request asks for every container below the named one: cAdvisor's
    ``GetRequestOptions`` sets ``Recursive`` only for exactly ``recursive=true``.

    :raises ApiError: 501 for ``type=docker``/``podman`` (ids the simulator does not keep).
    """
    if args.get("type", [""])[0] not in ("", "name"):
        raise ApiError(501, "the cAdvisor simulator answers specs by name only, not " + go_quote(args["type"][0]))
    return args.get("recursive", [""])[0] == "true"
