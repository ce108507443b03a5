"""The HTTP resource tree: /, /metrics, /proxy, /targets, /-/healthy, /-/ready,
and the site serving it (behind :mod:`cadvisor_events.authgate`, access log).

Only wiring and presentation: the data comes from the fleet (followers'
plain attributes), the counters and prometheus_client's registry. Rendering
happens in the reactor thread, so nothing here reads state that another
thread mutates. Every error is plain text from :mod:`cadvisor_events.plaintext`,
the 401 of basic auth included. The access log never shows a credential that
a ``/proxy`` URL carries.
"""

from __future__ import annotations

import gzip
import html
import json
import re
import time
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import unquote_to_bytes

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from twisted.internet import abstract, defer, threads
from twisted.logger import Logger
from twisted.web import resource
from twisted.web.http import combinedLogFormatter
from twisted.web.server import NOT_DONE_YET, Site

from . import build_info
from .authgate import AuthGate
from .exposition import EVENTS_HELP, EVENTS_METRIC, TEXT_CONTENT_TYPE, family_header
from .plaintext import NotFound, PlainTextResource, error_body

log = Logger()

OPENMETRICS_EVENTS_HEADER = family_header(EVENTS_METRIC[: -len("_total")], EVENTS_HELP)
TEXT_EVENTS_HEADER = family_header()
EOF_LINE = "# EOF\n"


class MetricsResource(PlainTextResource):
    """``/metrics``: the event counters, self-metrics and prometheus_client's registry.

    Prometheus text 0.0.4 by default, OpenMetrics when the scraper asks for it
    (content negotiation is prometheus_client's ``choose_encoder``), gzipped
    when the scraper accepts it (Prometheus does). A large body is compressed
    in the reactor's thread pool (zlib releases the GIL; the body is an
    immutable bytes object), so ingest goes on meanwhile.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry, counters, fleet_metrics,
                 compress_in_thread: Optional[Callable[[bytes], defer.Deferred]] = None) -> None:
        super().__init__()
        self.registry = registry
        self.counters = counters
        self.fleet_metrics = fleet_metrics
        self.compress_in_thread = compress_in_thread or (lambda body: threads.deferToThread(gzip_bytes, body))

    def render_GET(self, request):
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        encoder, content_type = choose_encoder(accept)
        openmetrics = content_type.startswith("application/openmetrics-text")
        registry_text = encoder(self.registry).decode("utf-8")
        if openmetrics and registry_text.endswith(EOF_LINE):
            registry_text = registry_text[: -len(EOF_LINE)]
        tail = self.fleet_metrics.render(openmetrics) + registry_text + (EOF_LINE if openmetrics else "")
        parts = [OPENMETRICS_EVENTS_HEADER if openmetrics else TEXT_EVENTS_HEADER]
        self.counters.render_into(parts)
        parts.append(tail.encode("utf-8"))
        body = b"".join(parts)  # the one copy of the event lines (Twisted's send buffer makes another)
        request.setHeader(
            b"Content-Type", content_type.encode() if openmetrics else TEXT_CONTENT_TYPE
        )
        request.setHeader(b"Vary", b"Accept-Encoding")
        offer_large_writes(request.channel)
        if request.method != b"GET" or not accepts_gzip(request.getHeader(b"accept-encoding")):
            request.setHeader(b"Content-Length", b"%d" % len(body))
            return body
        if len(body) <= GZIP_INLINE_LIMIT:
            return _gzipped(request, gzip_bytes(body))
        compressing = self.compress_in_thread(body)
        del body
        client_left = request.notifyFinish()
        client_left.addErrback(lambda _: compressing.cancel())

        def write(data: bytes) -> None:
            if not client_left.called:
                request.write(_gzipped(request, data))
                request.finish()

        def failed(failure) -> None:
            if failure.check(defer.CancelledError) or client_left.called:
                return
            log.failure("compressing /metrics failed", failure)
            request.write(error_body(request, 500, "compressing /metrics failed; see the log"))
            request.finish()

        compressing.addCallbacks(write, failed)
        return NOT_DONE_YET

    # HEAD must not be faked by twisted.web from GET (the method would read GET and a deferred
    # answer would follow): it gets the identity answer's headers, the transport drops the body.
    render_HEAD = render_GET


#: /metrics bodies up to this size are gzipped in the reactor thread (well under a millisecond).
GZIP_INLINE_LIMIT = 256 * 1024


def gzip_bytes(body: bytes) -> bytes:
    """gzip at level 1: the exposition text shrinks ~13x (benchmarks/scrape.py: 48.9 MB -> 3.3 MB)."""
    return gzip.compress(body, compresslevel=1, mtime=0)


def _gzipped(request, data: bytes) -> bytes:
    request.setHeader(b"Content-Encoding", b"gzip")
    request.setHeader(b"Content-Length", b"%d" % len(data))
    return data


def accepts_gzip(header: Optional[bytes]) -> bool:
    """Whether an ``Accept-Encoding`` header accepts gzip (by name or ``*``, not at ``q=0``)."""
    if not header:
        return False
    qualities = {}
    for item in header.split(b","):
        coding, _, params = item.partition(b";")
        quality = 1.0
        for param in params.split(b";"):
            name, _, value = param.partition(b"=")
            if name.strip().lower() == b"q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        qualities[coding.strip().lower()] = quality
    for coding in (b"gzip", b"x-gzip"):
        if coding in qualities:
            return qualities[coding] > 0
    return qualities.get(b"*", 0.0) > 0


def offer_large_writes(channel) -> None:
    """Let this connection hand the kernel up to :data:`SCRAPE_SEND_LIMIT` per write.

    Twisted sends at most ``SEND_LIMIT`` (128 KiB) per reactor iteration and
    connection. While a hundred streams keep every iteration busy with ingest
    (an event storm), that is all a scrape gets: a 50 MB /metrics took 50 s.
    Not unlimited: Twisted copies what is left of its buffer whenever less
    than ``SEND_LIMIT`` is, so a limit above what the kernel takes per send
    would copy the rest of the body again on every write. The innermost
    transport is the TCP connection, under TLS too. ``SEND_LIMIT`` is a
    tunable Twisted does not document: tests/test_web.py fails when its TCP
    transport stops honouring it, so an upgrade cannot drop it unnoticed.
    """
    transport = getattr(channel, "transport", None)
    while transport is not None and not isinstance(transport, abstract.FileDescriptor):
        transport = getattr(transport, "transport", None)
    if transport is not None:
        transport.SEND_LIMIT = SCRAPE_SEND_LIMIT


#: What one write of a /metrics connection may offer the kernel: Linux's largest
#: TCP send buffer by default (net.ipv4.tcp_wmem).
SCRAPE_SEND_LIMIT = 4 << 20


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
    specs = getattr(fleet, "specs", {})
    return [
        follower_status(f, getattr(specs.get(name), "labels", ()))
        for name, f in fleet.followers.items()
    ]


class FleetView(PlainTextResource):
    """A leaf page showing the fleet (its followers' plain attributes)."""

    isLeaf = True

    def __init__(self, fleet) -> None:
        super().__init__()
        self.fleet = fleet


class TargetsResource(FleetView):
    """``/targets``: every followed host's state as JSON."""

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps({"targets": fleet_status(self.fleet)}, indent=1).encode() + b"\n"


def _when(seconds: Optional[float]) -> str:
    if seconds is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


class StatusPage(FleetView):
    """``/``: an HTML page of targets, their state, last event and last error, and our version."""

    #: The footer: ``cadvisor-events 0.1.0 (Twisted ..., Python ...)``, as ``--version`` prints it.
    identity = build_info().describe()

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
            up=up, total=len(self.fleet.followers), rows="\n".join(rows) or NO_TARGETS,
            identity=html.escape(self.identity),
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
</table>
<footer><p>{identity}</p></footer></body></html>
"""


class Healthy(PlainTextResource):
    """``/-/healthy``: 200 while the process serves HTTP."""

    isLeaf = True

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"ok\n"


class Ready(FleetView):
    """``/-/ready``: 200 once every target has been tried at least once, else 503."""

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
    """Assemble the tree served by every ``--listen`` endpoint (``proxy=None``: no /proxy)."""
    children: Dict[bytes, resource.Resource] = {
        b"metrics": MetricsResource(registry, counters, fleet_metrics),
        b"targets": TargetsResource(fleet),
        b"-": Dashes(fleet),
    }
    if proxy is not None:
        children[b"proxy"] = proxy
    return Root(children, StatusPage(fleet))


def build_site(root: Root, *, checker=None) -> Site:
    """The site for every ``--listen`` endpoint: ``root`` behind basic auth when
    a twisted.cred ``checker`` is given, an access log without credentials."""
    served = root if checker is None else AuthGate(root, checker, healthy=root.getChild(b"-", None).healthy)
    site = Site(served, logFormatter=redacted_access_log)
    site.displayTracebacks = False
    return site


#: From where a /proxy target starts (after the first path segment or
#: ``url=``, and its scheme if any) up to the last ``@``: a target's credentials.
_CREDENTIALS = re.compile(rb"(?is)(^/[^/?]*/(?:https?://)?|[?&]url=(?:https?://)?).*@")


def redact_uri(uri: bytes) -> bytes:
    """``uri`` for the access log: percent-decoded and any ``user:password@`` replaced by ``***@``."""
    if b"@" not in uri and b"%40" not in uri.lower():
        return uri
    return _CREDENTIALS.sub(lambda m: m.group(1) + b"***@", unquote_to_bytes(uri))


def redacted_access_log(timestamp: str, request) -> str:
    """Twisted's combined log line, with :func:`redact_uri` applied to the request URI."""
    return combinedLogFormatter(timestamp, _RedactedRequest(request))


class _RedactedRequest:
    def __init__(self, request) -> None:
        self._request = request
        self.uri = redact_uri(request.uri)

    def __getattr__(self, name):
        return getattr(self._request, name)
