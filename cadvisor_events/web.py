"""The HTTP resource tree: /, /metrics, /proxy, /targets, /-/healthy, /-/ready.

Only wiring and presentation: the data comes from the fleet (followers'
plain attributes), the counters and prometheus_client's registry. Rendering
happens in the reactor thread, so nothing here reads state that another
thread mutates. Every error is plain text from :mod:`cadvisor_events.plaintext`.
"""

from __future__ import annotations

import html
import json
import time
from typing import Any, Dict, List, Optional

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from twisted.web import resource

from .exposition import EVENTS_HELP, EVENTS_METRIC, TEXT_CONTENT_TYPE, family_header
from .plaintext import NotFound, PlainTextResource, error_body

OPENMETRICS_EVENTS_HEADER = family_header(EVENTS_METRIC[: -len("_total")], EVENTS_HELP).decode()
TEXT_EVENTS_HEADER = family_header().decode()
EOF_LINE = "# EOF\n"


class MetricsResource(PlainTextResource):
    """``/metrics``: the event counters, self-metrics and prometheus_client's registry.

    Prometheus text 0.0.4 by default, OpenMetrics when the scraper asks for it
    (content negotiation is prometheus_client's ``choose_encoder``).
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry, counters, fleet_metrics) -> None:
        super().__init__()
        self.registry = registry
        self.counters = counters
        self.fleet_metrics = fleet_metrics

    def render_GET(self, request) -> bytes:
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        encoder, content_type = choose_encoder(accept)
        openmetrics = content_type.startswith("application/openmetrics-text")
        registry_text = encoder(self.registry).decode("utf-8")
        if openmetrics and registry_text.endswith(EOF_LINE):
            registry_text = registry_text[: -len(EOF_LINE)]
        parts = [
            OPENMETRICS_EVENTS_HEADER if openmetrics else TEXT_EVENTS_HEADER,
            self.counters.render(),
            self.fleet_metrics.render(openmetrics),
            registry_text,
        ]
        if openmetrics:
            parts.append(EOF_LINE)
        body = "".join(parts).encode("utf-8")
        request.setHeader(
            b"Content-Type", content_type.encode() if openmetrics else TEXT_CONTENT_TYPE
        )
        request.setHeader(b"Content-Length", b"%d" % len(body))
        return body


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
        "last_error": follower.last_error,
    }


def fleet_status(fleet) -> List[Dict[str, Any]]:
    specs = getattr(fleet, "specs", {})
    return [
        follower_status(f, getattr(specs.get(name), "labels", ()))
        for name, f in fleet.followers.items()
    ]


class TargetsResource(PlainTextResource):
    """``/targets``: every followed host's state as JSON."""

    isLeaf = True

    def __init__(self, fleet) -> None:
        super().__init__()
        self.fleet = fleet

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps({"targets": fleet_status(self.fleet)}, indent=1).encode() + b"\n"


def _when(seconds: Optional[float]) -> str:
    if seconds is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


class StatusPage(PlainTextResource):
    """``/``: an HTML page of targets, their state, last event and last error."""

    isLeaf = True

    def __init__(self, fleet) -> None:
        super().__init__()
        self.fleet = fleet

    def render_GET(self, request) -> bytes:
        rows = []
        for status in fleet_status(self.fleet):
            state = "up" if status["up"] else status["state"]
            rows.append(
                "<tr class='{cls}'><td>{host}</td><td>{labels}</td><td>{state}</td><td>{since}</td>"
                "<td>{last}</td><td>{received}</td><td>{error}</td></tr>".format(
                    cls="up" if status["up"] else "down",
                    host=html.escape(status["url"]),
                    labels=html.escape(", ".join(f"{k}={v}" for k, v in status["labels"].items())),
                    state=html.escape(state),
                    since=_when(status["since"]),
                    last=_when(status["last_event_time"]),
                    received=status["received"],
                    error=html.escape(status["last_error"] or ""),
                )
            )
        up = sum(1 for f in self.fleet.followers.values() if f.up)
        page = PAGE.format(
            up=up, total=len(self.fleet.followers), rows="\n".join(rows) or NO_TARGETS
        )
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return page.encode("utf-8")


NO_TARGETS = "<tr><td colspan='7'>no targets (check --target / --targets-file / --shard)</td></tr>"
PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>cadvisor-events</title>
<style>body{{font-family:sans-serif}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}
tr.up td:nth-child(3){{color:#070}} tr.down td:nth-child(3){{color:#a00}}</style></head>
<body><h1>cadvisor-events</h1>
<p>{up} of {total} targets up. <a href="/metrics">/metrics</a> &middot; <a href="/targets">/targets</a>
&middot; <a href="/-/healthy">/-/healthy</a> &middot; <a href="/-/ready">/-/ready</a>
&middot; /proxy/&lt;host:port&gt;</p>
<table><tr><th>target</th><th>labels</th><th>state</th><th>since</th><th>last event</th>
<th>events received</th><th>last error</th></tr>
{rows}
</table></body></html>
"""


class Healthy(PlainTextResource):
    """``/-/healthy``: 200 while the process serves HTTP."""

    isLeaf = True

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"ok\n"


class Ready(PlainTextResource):
    """``/-/ready``: 200 once every target has been tried at least once, else 503."""

    isLeaf = True

    def __init__(self, fleet) -> None:
        super().__init__()
        self.fleet = fleet

    def render_GET(self, request) -> bytes:
        untried = sum(1 for f in self.fleet.followers.values() if not f.tried)
        if untried:
            return error_body(request, 503, f"not ready: {untried} target(s) not tried yet")
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"ready\n"


class Root(PlainTextResource):
    """The tree's root: dispatches the first path segment, 404 for anything else."""

    def __init__(self, children: Dict[bytes, resource.Resource], index: resource.Resource) -> None:
        super().__init__()
        self._children = children
        self._index = index

    def getChild(self, name: bytes, request):
        if name == b"":
            return self._index if not request.postpath else NotFound()
        return self._children.get(name) or NotFound()

    def render_GET(self, request) -> bytes:
        return self._index.render(request)


class Dashes(PlainTextResource):
    """``/-/``: the health endpoints."""

    def __init__(self, fleet) -> None:
        super().__init__()
        self.healthy = Healthy()
        self.ready = Ready(fleet)

    def getChild(self, name: bytes, request):
        return {b"healthy": self.healthy, b"ready": self.ready}.get(name) or NotFound()

    def render_GET(self, request):
        return NotFound().render(request)


def build_root(*, registry, counters, fleet_metrics, fleet, proxy) -> Root:
    """Assemble the tree served by every ``--listen`` endpoint."""
    children = {
        b"metrics": MetricsResource(registry, counters, fleet_metrics),
        b"targets": TargetsResource(fleet),
        b"proxy": proxy,
        b"-": Dashes(fleet),
    }
    return Root(children, StatusPage(fleet))
