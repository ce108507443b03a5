"""Which followed targets (and recent OOM kills) a status view shows: the ``state``, ``q``,
``limit`` and ``offset`` filters that ``/``, ``/targets`` and ``/oom-kills`` share.

A target is in one of three state groups (down, connecting, up); a view
lists the matching targets unhealthy first and counts every group of the
whole fleet, so an operator sees both the page and the fleet. Text matches
what an operator would search by: the host, its file_sd labels, its last
error (and, for a kill, who was killed). Only the fleet's plain attributes
are read; nothing here renders HTML or changes anything.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple
from urllib.parse import urlencode

__all__ = ["TargetQuery", "BadQuery", "select_targets", "follower_status", "fleet_status", "kill_matches",
           "group_of", "labels_of", "label_text", "STATE_GROUPS", "DEFAULT_LIMIT", "MAX_LIMIT"]

#: The state groups a target is filtered by, unhealthy first (the order of the list).
STATE_GROUPS = ("down", "connecting", "up")
#: Follower state -> its group.
GROUP_OF = {"down": "down", "stopped": "down", "idle": "connecting", "connecting": "connecting",
            "backfilling": "connecting", "up": "up"}
#: ``state=`` values: a group, ``unhealthy`` (not up) or ``all``.
STATE_FILTERS = STATE_GROUPS + ("unhealthy", "all")
#: Targets shown per page unless ``limit=`` says otherwise, and the most ``limit=`` may ask for.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class BadQuery(ValueError):
    """A filter parameter with a value this page does not understand (a 400 with the reason)."""


class TargetQuery:
    """The filters of ``/``, ``/targets`` and ``/oom-kills``: ``state``, ``q``, ``limit``, ``offset``.

    ``q`` matches case-insensitively as a substring of the host (``host:port``
    and URL), any ``label=value`` of its file_sd labels, or its last error;
    for an OOM kill, also its namespace, pod, container, cgroup and process.
    """

    __slots__ = ("state", "text", "limit", "offset", "given")

    def __init__(self, state: str = "all", text: str = "", limit: int = DEFAULT_LIMIT, offset: int = 0,
                 given: bool = False) -> None:
        self.state = state
        self.text = text.strip().lower()
        self.limit = limit
        self.offset = offset
        #: Whether any filter parameter was given (``/targets`` keeps its old answer otherwise).
        self.given = given

    @classmethod
    def from_args(cls, args: Dict[bytes, List[bytes]]) -> "TargetQuery":
        """The query of a request's arguments; :class:`BadQuery` naming the parameter if one is bad."""

        def one(name: str) -> Optional[str]:
            values = args.get(name.encode())
            return None if not values else values[-1].decode("utf-8", "replace")

        state = one("state") or "all"
        if state not in STATE_FILTERS:
            raise BadQuery(f"state={state!r}: use one of {', '.join(STATE_FILTERS)}")
        limit = _whole(one("limit"), "limit", DEFAULT_LIMIT)
        if not 1 <= limit <= MAX_LIMIT:
            raise BadQuery(f"limit={limit}: use 1 to {MAX_LIMIT}")
        offset = _whole(one("offset"), "offset", 0)
        given = any(name in args for name in (b"state", b"q", b"limit", b"offset"))
        return cls(state, one("q") or "", limit, offset, given)

    def wants_state(self, group: str) -> bool:
        state = self.state
        return state == "all" or state == group or (state == "unhealthy" and group != "up")

    def matches_text(self, *fields: Optional[str]) -> bool:
        text = self.text
        return not text or any(field is not None and text in field.lower() for field in fields)

    def link(self, **changes: Any) -> str:
        """This query as a URL query string (``?...``), with ``changes``; defaults left out."""
        values = {"state": self.state, "q": self.text, "limit": self.limit, "offset": self.offset}
        values.update(changes)
        defaults = {"state": "all", "q": "", "limit": DEFAULT_LIMIT, "offset": 0}
        kept = [(k, v) for k, v in values.items() if v != defaults[k]]
        return "?" + urlencode(kept) if kept else "?"


def _whole(value: Optional[str], name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadQuery(f"{name}={value!r}: not a whole number")
    if number < 0:
        raise BadQuery(f"{name}={number}: not a whole number")
    return number


def labels_of(fleet, name: str) -> Tuple[Tuple[str, str], ...]:
    spec = getattr(fleet, "specs", {}).get(name)
    return tuple(getattr(spec, "labels", ()))


def label_text(labels: Iterable[Tuple[str, str]]) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels)


def select_targets(fleet, query: TargetQuery) -> Tuple[List[Tuple[str, Any]], Dict[str, int]]:
    """The fleet's ``(name, follower)`` pairs that ``query`` matches, unhealthy first (down,
    then connecting, then up; by name within a group), and the count of every group in the
    whole fleet (``total`` too). Pages are cut by the caller."""
    counts = dict.fromkeys(STATE_GROUPS, 0)
    groups: Dict[str, List[Tuple[str, Any]]] = {group: [] for group in STATE_GROUPS}
    text = query.text
    for name, follower in fleet.followers.items():
        group = group_of(follower.state)
        counts[group] += 1
        if not query.wants_state(group):
            continue
        if text and not query.matches_text(name, follower.target.base_url, follower.last_error,
                                           label_text(labels_of(fleet, name))):
            continue
        groups[group].append((name, follower))
    selected: List[Tuple[str, Any]] = []
    for group in STATE_GROUPS:
        selected += sorted(groups[group], key=lambda pair: pair[0])
    counts["total"] = sum(counts[group] for group in STATE_GROUPS)
    return selected, counts


def follower_status(follower, labels=()) -> Dict[str, Any]:
    """What /targets and / show of one follower (never credentials)."""
    return {
        "host": follower.target.name,
        "url": follower.target.base_url,
        "labels": dict(labels),
        "state": follower.state,
        "up": bool(follower.up),
        "since": follower.state_since,
        "last_event_time": follower.last_event_time,
        "received": follower.received,
        "invalid_lines": follower.invalid_lines,
        "connects": follower.connects,
        "failures": dict(follower.failures),
        "backfilled": follower.backfilled,
        "duplicates_dropped": follower.duplicates_dropped,
        "gaps": follower.gaps,
        "future_events": follower.future_events,
        "last_error": follower.last_error,
    }


def fleet_status(fleet) -> List[Dict[str, Any]]:
    """Every follower's status, in the fleet's order (``/targets`` without filters)."""
    return [follower_status(f, labels_of(fleet, name)) for name, f in fleet.followers.items()]


def kill_matches(kill, query: TargetQuery, fleet) -> bool:
    """Whether an OOM kill passes ``query``: its host's state group, and the text in the kill
    (host, namespace, pod, container, cgroup, process) or its host's labels."""
    if query.state != "all":
        follower = fleet.followers.get(kill.host) if fleet is not None else None
        group = group_of(follower.state) if follower is not None else "down"
        if not query.wants_state(group):
            return False
    if not query.text:
        return True
    return query.matches_text(kill.host, kill.namespace, kill.pod, kill.container, kill.cgroup, kill.process,
                              None if fleet is None else label_text(labels_of(fleet, kill.host)))


def group_of(state: str) -> str:
    """The state group (down, connecting, up) of a follower's state."""
    return GROUP_OF.get(state, "connecting")
