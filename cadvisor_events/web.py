"""The HTTP resource tree: /, /metrics, /proxy, /targets, /oom-kills, /host/, /status.json, /-/healthy, /-/ready,
and the site serving it (behind :mod:`cadvisor_events.authgate`, access log).

Only wiring and presentation: the data comes from the fleet (followers'
plain attributes), the counters and prometheus_client's registry; the HTML
status page is :mod:`cadvisor_events.statuspage`. Rendering
happens in the reactor thread, so nothing here reads state that another
thread mutates. Every error is plain text from :mod:`cadvisor_events.plaintext`,
the 401 of basic auth included. The access log never shows a credential that
a ``/proxy`` URL carries.
"""

from __future__ import annotations

import gzip
import json
import re
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Union
from urllib.parse import unquote_to_bytes

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from twisted.internet import abstract, defer, threads
from twisted.logger import Logger
from twisted.web import resource
from twisted.web.http import combinedLogFormatter
from twisted.web.server import NOT_DONE_YET, Site

from .activity import Activity
from .authgate import AuthGate
from .exposition import EVENTS_HELP, EVENTS_METRIC, TEXT_CONTENT_TYPE, family_header
from .plaintext import NotFound, PlainTextResource, error_body
from .scrapes import AnswerLimit, BodySender, RenderedBody, SharedBodies
from .fleetquery import BadQuery, TargetQuery, fleet_status, follower_status, kill_matches, select_targets
from .statuspage import HostPage, StatusJson, StatusPage

log = Logger()

OPENMETRICS_EVENTS_HEADER = family_header(EVENTS_METRIC[: -len("_total")], EVENTS_HELP)
TEXT_EVENTS_HEADER = family_header()
EOF_LINE = "# EOF\n"
#: /metrics answers in flight at most (--web-max-requests), node_exporter's default.
DEFAULT_MAX_REQUESTS = 40


class MetricsResource(PlainTextResource):
    """``/metrics``: the event counters, self-metrics and prometheus_client's registry.

    Prometheus text 0.0.4 by default, OpenMetrics when the scraper asks for it
    (content negotiation is prometheus_client's ``choose_encoder``), gzipped
    when the scraper accepts it (Prometheus does). A large body is compressed
    in the reactor's thread pool (zlib releases the GIL; the body is an
    immutable bytes object), so ingest goes on meanwhile.

    Concurrent scrapes share bodies and at most ``max_requests`` answers
    (``0``: no limit) are in flight, beyond which the answer is a 503 with
    ``Retry-After``: see :mod:`cadvisor_events.scrapes`.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry, counters, fleet_metrics,
                 compress_in_thread: Optional[Callable[[bytes], defer.Deferred]] = None, *,
                 max_requests: int = DEFAULT_MAX_REQUESTS, clock=None) -> None:
        super().__init__()
        self.registry = registry
        self.counters = counters
        self.fleet_metrics = fleet_metrics
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.limit = AnswerLimit(max_requests)
        self.bodies = SharedBodies(
            compress=compress_in_thread or (lambda body: threads.deferToThread(gzip_bytes, body)),
            gzip_inline=gzip_bytes, inline_limit=GZIP_INLINE_LIMIT, clock=clock,
        )

    def render_body(self, encoder: Callable[[CollectorRegistry], bytes], openmetrics: bool) -> Iterator[List[bytes]]:
        """A whole /metrics document in pieces, made as they are asked for (one per reactor turn
        or so, see :class:`~cadvisor_events.scrapes.RenderedBody`): the event family a few
        megabytes at a time (``EventCounters.render_chunks``, never joined whole), then
        self-metrics and the registry's families, rendered last."""
        yield [OPENMETRICS_EVENTS_HEADER if openmetrics else TEXT_EVENTS_HEADER]
        yield from self.counters.render_chunks(openmetrics)
        registry_text = encoder(self.registry).decode("utf-8")
        if openmetrics and registry_text.endswith(EOF_LINE):
            registry_text = registry_text[: -len(EOF_LINE)]
        tail = (self.fleet_metrics.render(openmetrics) + self.scrape_metrics(openmetrics) + registry_text
                + (EOF_LINE if openmetrics else ""))
        yield [tail.encode("utf-8")]

    def scrape_metrics(self, openmetrics: bool) -> str:
        """The families about /metrics itself, named as client_golang's promhttp names them."""
        total = "promhttp_metric_handler_requests" + ("" if openmetrics else "_total")
        renders = "cadvisor_events_metrics_renders" + ("" if openmetrics else "_total")
        codes = "".join(f'promhttp_metric_handler_requests_total{{code="{code}"}} {n}\n'
                        for code, n in sorted(self.limit.codes.items()))
        return (
            "# HELP promhttp_metric_handler_requests_in_flight Current number of scrapes being served.\n"
            "# TYPE promhttp_metric_handler_requests_in_flight gauge\n"
            f"promhttp_metric_handler_requests_in_flight {self.limit.in_flight}\n"
            f"# HELP {total} Total number of scrapes by HTTP status code.\n"
            f"# TYPE {total} counter\n{codes}"
            f"# HELP {renders} /metrics bodies rendered; the scrapes of one round share one.\n"
            f"# TYPE {renders} counter\n"
            f"cadvisor_events_metrics_renders_total {self.bodies.renders}\n"
        )

    def render_GET(self, request):
        if not self.limit.take():
            self.limit.answered(503)
            request.setHeader(b"Retry-After", b"1")
            return error_body(
                request, 503,
                f"/metrics is busy: {self.limit.in_flight} answers in flight (--web-max-requests "
                f"{self.limit.maximum}); retry in a second",
            )
        request.notifyFinish().addBoth(self.limit.release)
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        encoder, content_type = choose_encoder(accept)
        openmetrics = content_type.startswith("application/openmetrics-text")

        def render() -> Iterator[List[bytes]]:
            return self.render_body(encoder, openmetrics)

        request.setHeader(
            b"Content-Type", content_type.encode() if openmetrics else TEXT_CONTENT_TYPE
        )
        request.setHeader(b"Vary", b"Accept-Encoding")
        if request.method != b"GET":  # HEAD: the identity answer's headers, no body
            body = self.bodies.identity(content_type, render)
            self.limit.answered(200)
            request.setHeader(b"Content-Length", b"%d" % len(body))
            return b""
        if not accepts_gzip(request.getHeader(b"accept-encoding")):
            sliced = self.bodies.sliced(content_type, render)
            sliced.start()
            self.limit.answered(200)
            if sliced.done:  # whole already: its length is known (else chunked)
                request.setHeader(b"Content-Length", b"%d" % sliced.size)
            return self._send(request, sliced)
        gzipped = self.bodies.gzipped(content_type, render)
        if isinstance(gzipped, bytes):
            self.limit.answered(200)
            return self._send(request, _gzipped(request, gzipped))
        client_left = request.notifyFinish()
        client_left.addErrback(lambda _: gzipped.cancel())

        def send(data: bytes) -> None:
            self.limit.answered(200)
            self._send(request, _gzipped(request, data))

        def failed(failure) -> None:
            if failure.check(defer.CancelledError) or client_left.called:
                return
            self.limit.answered(500)
            log.failure("compressing /metrics failed", failure)
            request.write(error_body(request, 500, "compressing /metrics failed; see the log"))
            request.finish()

        gzipped.addCallbacks(send, failed)
        return NOT_DONE_YET

    def _send(self, request, body: Union[bytes, RenderedBody]):
        """Send ``body`` (shared: never copied whole) as the connection drains."""
        offer_large_writes(request.channel)
        BodySender(request, body, slice_size=SCRAPE_SEND_LIMIT, clock=self.clock).start()
        return NOT_DONE_YET

    # HEAD must not be faked by twisted.web from GET (the method would read GET and a deferred
    # answer would follow): it gets the identity answer's headers, Content-Length included.
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


class FleetView(PlainTextResource):
    """A leaf page showing the fleet (its followers' plain attributes)."""

    isLeaf = True

    def __init__(self, fleet) -> None:
        super().__init__()
        self.fleet = fleet


class TargetsResource(FleetView):
    """``/targets``: every followed host's state as JSON.

    Without parameters, every target in the fleet's order (``{"targets": [...]}``). With any of
    the status page's filters (``state``, ``q``, ``limit``, ``offset``: see
    :class:`~cadvisor_events.fleetquery.TargetQuery`), the matching targets unhealthy first,
    one page of them, and the counts: ``matched``, ``total`` and ``counts`` by state.
    """

    def render_GET(self, request) -> bytes:
        try:
            query = TargetQuery.from_args(request.args)
        except BadQuery as e:
            return error_body(request, 400, f"bad filter: {e}")
        request.setHeader(b"Content-Type", b"application/json")
        if not query.given:
            return json.dumps({"targets": fleet_status(self.fleet)}, indent=1).encode() + b"\n"
        selected, counts = select_targets(self.fleet, query)
        specs = getattr(self.fleet, "specs", {})
        shown = [follower_status(f, getattr(specs.get(name), "labels", ()))
                 for name, f in selected[query.offset:query.offset + query.limit]]
        answer = {"targets": shown, "matched": len(selected), "total": counts.pop("total"), "counts": counts,
                  "offset": query.offset, "limit": query.limit}
        return json.dumps(answer, indent=1).encode() + b"\n"


class OomKillsResource(PlainTextResource):
    """``/oom-kills``: the fleet's most recent OOM kills, newest first, as JSON (the status
    page's ``state`` and ``q`` filters apply)."""

    isLeaf = True

    def __init__(self, oom_kills, fleet=None) -> None:
        super().__init__()
        self.oom_kills = oom_kills
        self.fleet = fleet

    def render_GET(self, request) -> bytes:
        try:
            query = TargetQuery.from_args(request.args)
        except BadQuery as e:
            return error_body(request, 400, f"bad filter: {e}")
        request.setHeader(b"Content-Type", b"application/json")
        kills = [kill.as_json() for kill in self.oom_kills.recent() if kill_matches(kill, query, self.fleet)]
        return json.dumps({"oom_kills": kills}, indent=1).encode() + b"\n"


class Healthy(PlainTextResource):
    """``/-/healthy``: 200 while the process serves HTTP."""

    isLeaf = True

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"ok\n"


class Ready(FleetView):
    """``/-/ready``: 200 once every target has been tried at least once, else 503.

    ``sources`` are where targets come from besides the command line and the
    file (DNS discovery): each has ``not_ready()``, a reason while it has not
    answered once. Until then "every target tried" would be true of no targets.
    """

    def __init__(self, fleet, sources: Sequence = ()) -> None:
        super().__init__(fleet)
        self.sources = list(sources)

    def render_GET(self, request) -> bytes:
        for source in self.sources:
            reason = source.not_ready()
            if reason:
                return error_body(request, 503, f"not ready: {reason}")
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

    def __init__(self, fleet, readiness: Sequence = ()) -> None:
        super().__init__()
        self.healthy = Healthy()
        self.ready = Ready(fleet, readiness)

    def getChild(self, name: bytes, request):
        return {b"healthy": self.healthy, b"ready": self.ready}.get(name) or NotFound()

    def render_GET(self, request):
        return NotFound().render(request)


def build_root(*, registry, counters, fleet_metrics, fleet, proxy,
               max_requests: int = DEFAULT_MAX_REQUESTS, clock=None, oom_kills=None,
               readiness: Sequence = (), activity=None) -> Root:
    """Assemble the tree served by every ``--listen`` endpoint (``proxy=None``: no /proxy;
    ``max_requests``: /metrics answers in flight at most, 0 for no limit; ``readiness``:
    target sources /-/ready waits for, see :class:`Ready`; ``activity``: the per-minute counts
    the status page charts, an :class:`~cadvisor_events.activity.Activity`, made here unsampled
    (read on every page) when not given)."""
    if activity is None:
        from twisted.internet import reactor

        activity = Activity(counters.counted, clock or reactor)
    children: Dict[bytes, resource.Resource] = {
        b"metrics": MetricsResource(registry, counters, fleet_metrics, max_requests=max_requests, clock=clock),
        b"targets": TargetsResource(fleet),
        b"-": Dashes(fleet, readiness),
    }
    if proxy is not None:
        children[b"proxy"] = proxy
    if oom_kills is not None:
        children[b"oom-kills"] = OomKillsResource(oom_kills, fleet)
    children[b"host"] = HostPage(fleet, oom_kills, counters, activity)
    children[b"status.json"] = StatusJson(fleet, oom_kills, counters, activity)
    return Root(children, StatusPage(fleet, oom_kills, counters, activity))


def build_site(root: Root, *, checker=None, access_log: bool = False, web_config=None) -> Site:
    """The site for every ``--listen`` endpoint: ``root`` behind basic auth when
    a twisted.cred ``checker`` is given, or behind the ``--web-config-file``
    (a :class:`~cadvisor_events.webconfig.WebConfigWatcher`: rate limit, headers,
    basic auth); with ``access_log``, a line per request without credentials."""
    healthy = root.getChild(b"-", None).healthy
    served = root if checker is None else AuthGate(root, checker, healthy=healthy)
    if web_config is not None:
        served = web_config.guard(root, healthy=healthy)
    site = (Site if access_log else QuietSite)(served, logFormatter=redacted_access_log)
    site.displayTracebacks = False
    return site


class QuietSite(Site):
    """A site that writes no access-log line: a Prometheus scraping every 15 s
    and a liveness probe would otherwise fill the log with lines nobody reads."""

    def log(self, request) -> None:
        pass


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
