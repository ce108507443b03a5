"""``/proxy``: the Go seed's one-shot mode, one cAdvisor's whole history as counters.

A request names an upstream cAdvisor the way the Go seed (tsuru's
cadvisor-events-proxy) accepts it, this module fetches that cAdvisor's full
event history and answers the seed's exposition, byte for byte. Nothing is
kept between requests: counts are recomputed every time, as the seed does.
It must never crash or send a traceback on what an upstream sends, never
write to a request whose client went away (the upstream fetch is cancelled
instead), and never show a credential: errors name ``Target.base_url`` only.
It must never connect anywhere ``--proxy-allow`` does not admit (the check
comes first, see :mod:`cadvisor_events.access`), nor hold more than
``--proxy-concurrency`` fetches or ``--max-history-bytes`` per fetch: each
answer holds a whole history in memory.

A history is decoded as the seed decodes it (Go's ``json.Decoder`` into
cAdvisor's ``[]info.Event``), by :mod:`cadvisor_events.seedhistory`: what the
seed counts, this counts the same, and where the seed's decode fails, this
answers 502.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional, Sequence
from urllib.parse import unquote_to_bytes

from prometheus_client import CollectorRegistry, Counter, Histogram
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET

from .access import ProxyAccess, Refused
from .cadvisor import (
    CAdvisorClient, Target, TargetError, UpstreamError, excerpt, parse_target, timed_out,
)
from .event import InvalidEvent
from .exposition import TEXT_CONTENT_TYPE
from .plaintext import PlainTextResource, error_body
from .scrapes import BodySender
from .seedhistory import seed_counts
from .web import SCRAPE_SEND_LIMIT, offer_large_writes

__all__ = ["ProxyResource", "proxy_target", "CLIENT_CLOSED"]

log = Logger()

#: The seed's ``urlRegexp``: everything after the first path segment is the target.
_SEED_PATH = re.compile(r"/.+?/(.+)")
#: A target that already names a scheme (the seed only checks ``^https?://``;
#: other schemes are left alone so that ``parse_target`` refuses them with a 400
#: instead of reading ``ftp://x`` as host ``ftp``).
_HAS_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: A URL without a port means port 80 to Go's HTTP client, hence to the seed.
SEED_DEFAULT_PORT = 80

#: The ``code`` label of a request whose client left before the answer (nginx's convention).
CLIENT_CLOSED = 499

#: Concurrent fetches by default: each may hold a history of up to ``max_history_bytes``.
DEFAULT_CONCURRENCY = 4
DEFAULT_MAX_HISTORY_BYTES = 256 * 1024 * 1024

#: Answers range from milliseconds (small history) to the upstream timeout.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def proxy_target(path: bytes, args: Mapping[bytes, Sequence[bytes]], default: Target) -> Target:
    """The upstream a ``/proxy`` request names, by the Go seed's rule.

    In order: the first ``url`` query parameter if non-empty; else whatever
    follows the first segment of the percent-decoded ``path`` (so
    ``/proxy/http://h:p`` works although a URL parser would see an empty
    segment in it); else ``default``. ``http://`` is prefixed when no scheme
    is given, and any path or query of the target is ignored (the events
    path is fixed).

    :raises TargetError: when the text names no usable http(s) host and port.
    """
    values = args.get(b"url") or [b""]
    text = values[0].decode("utf-8", "replace")
    if not text:
        match = _SEED_PATH.search(unquote_to_bytes(path).decode("utf-8", "replace"))
        text = match.group(1) if match else ""
    if not text:
        return default
    if not _HAS_SCHEME.match(text):
        text = "http://" + text
    return parse_target(text, default_port=SEED_DEFAULT_PORT)


class ProxyResource(PlainTextResource):
    """``/proxy[/<target>][?url=<target>]``: GET or HEAD one upstream's history counts.

    Mounted at ``/proxy`` by :class:`~cadvisor_events.web.Root`; being a leaf, it answers
    ``/proxy``, ``/proxy/`` and everything below. Status codes: 200 with the
    exposition (an empty body for an empty history, as client_golang writes
    nothing for a family without series), 400 malformed target, 403 target
    not admitted by ``access`` (nothing connected), 405 other methods, 502
    upstream unreachable or answering badly (a history over
    ``max_history_bytes`` too), 503 (``Retry-After: 1``) ``concurrency``
    fetches already running, 504 upstream too slow (``timeout`` covers
    resolving, connect, headers and body). A bare ``/proxy`` (the configured
    default) is always admitted: it names nothing the operator did not.

    Registers ``cadvisor_events_proxy_requests_total{code}`` and
    ``cadvisor_events_proxy_request_duration_seconds`` in ``registry``, so only
    one instance per registry. Abandoned requests count as ``code="499"``.
    """

    isLeaf = True

    def __init__(
        self,
        client: CAdvisorClient,
        *,
        default_target: Target,
        oom_only: bool = False,
        timeout: float = 30.0,
        clock=None,
        registry: CollectorRegistry,
        access: Optional[ProxyAccess] = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_history_bytes: int = DEFAULT_MAX_HISTORY_BYTES,
    ) -> None:
        super().__init__()
        if clock is None:
            from twisted.internet import reactor as clock
        self.client = client
        self.default_target = default_target
        self.oom_only = oom_only
        self.timeout = timeout
        self.clock = clock
        self.access = access
        self.concurrency = concurrency
        self.max_history_bytes = max_history_bytes
        self.in_flight = 0
        self.requests = Counter(
            "cadvisor_events_proxy_requests",
            "Answers of /proxy by HTTP status (499: the client left before the answer).",
            ["code"], registry=registry,
        )
        self.duration = Histogram(
            "cadvisor_events_proxy_request_duration_seconds",
            "Seconds from a /proxy request to its answer, upstream fetch included.",
            buckets=DURATION_BUCKETS, registry=registry,
        )

    def render(self, request):
        """Dispatch (405 comes from PlainTextResource) and count synchronous answers."""
        started = self.clock.seconds()
        body = super().render(request)
        if body is not NOT_DONE_YET:
            self._observe(request.code, started)
        return body

    def render_GET(self, request):
        started = self.clock.seconds()
        try:
            target = proxy_target(request.path, request.args, self.default_target)
        except TargetError as e:
            return error_body(request, 400, f"malformed /proxy target: {e}")
        if self.in_flight >= self.concurrency:
            request.setHeader(b"Retry-After", b"1")
            return error_body(
                request, 503,
                f"/proxy is busy: {self.in_flight} fetches running (--proxy-concurrency); retry in a second",
            )
        self.in_flight += 1
        answering = self.fetch_counts(target, bare=target is self.default_target)
        answering.addBoth(self._release)
        client_left = request.notifyFinish()

        def abandon(reason: Failure) -> None:
            # The client went away: drop the upstream connection, answer nobody.
            self._observe(CLIENT_CLOSED, started)
            answering.cancel()

        client_left.addErrback(abandon)
        answering.addCallback(self._write, request, started, client_left)
        answering.addErrback(lambda f: log.failure("writing the /proxy answer failed", failure=f))
        return NOT_DONE_YET

    # HEAD must not be faked by twisted.web from GET: it finishes a NOT_DONE_YET
    # request at once. A real HEAD goes through render_GET and the transport
    # drops the body, keeping Content-Length.
    render_HEAD = render_GET

    def _release(self, result):
        self.in_flight -= 1
        return result

    def fetch_counts(self, target: Target, bare: bool = False) -> defer.Deferred:
        """Fire with ``(code, body_or_message)`` for ``target``; never fails.

        The access check comes first: nothing connects before it admitted the
        target. Cancelling the result stops the check or drops the upstream
        connection.
        """
        deadline = self.clock.seconds() + self.timeout
        if self.access is None or bare:
            admitted = defer.succeed(self.client)
        else:
            admitted = self.access.admit(target, self.client)
            admitted.addTimeout(self.timeout, self.clock, onTimeoutCancel=timed_out(target, self.timeout))

        def fetch(client: CAdvisorClient) -> defer.Deferred:
            return client.fetch_history(
                target, oom_only=self.oom_only, max_bytes=self.max_history_bytes,
                timeout=max(deadline - self.clock.seconds(), 0.001),
            )

        fetching = admitted.addCallback(fetch)
        fetching.addCallback(self._hand_over)
        fetching.addCallback(self._exposition, target)
        fetching.addErrback(self._failure_answer, target)
        return fetching

    def _hand_over(self, body: bytes) -> defer.Deferred:
        """Pass ``body`` on in the next reactor turn, in a list the receiver empties.

        The client fires with the body deep inside its protocol's callbacks,
        whose frames hold it; decoding there would keep 26 MB alive until the
        answer is rendered. A turn later, the receiver holds the only reference.
        """
        held = [body]
        del body
        return task.deferLater(self.clock, 0, lambda: held)

    def _exposition(self, held: list, target: Target):
        """Decode, count and render one history body, dropping each input when done with it."""
        body = held.pop()
        try:
            counts = seed_counts(body)
        except InvalidEvent as e:
            return 502, (
                f"{target.base_url} answered a body that is not a JSON array of cAdvisor events"
                f" ({e}): {excerpt(body)}"
            )
        del body
        return 200, counts.render()

    def _failure_answer(self, failure: Failure, target: Target):
        """Map a failed fetch to a status and a sentence naming the upstream."""
        error = failure.value
        if isinstance(error, Refused):
            log.info("/proxy refused: {why}", why=str(error))
            return 403, f"/proxy refused: {error}"
        if isinstance(error, UpstreamError):
            code = 504 if error.reason == "timeout" else 502
            log.info("/proxy upstream {upstream} failed: {why}", upstream=target.base_url, why=error.message)
            return code, f"upstream cAdvisor failed: {error.message}"
        if isinstance(error, defer.CancelledError):
            return CLIENT_CLOSED, "cancelled"
        log.failure("/proxy to {upstream} failed unexpectedly", failure=failure, upstream=target.base_url)
        return 500, f"internal error while asking {target.base_url}; see the exporter's log"

    def _write(self, answer, request, started: float, client_left: defer.Deferred) -> None:
        if client_left.called:
            return  # finished (client gone): nothing may be written any more
        code, content = answer
        if code != 200:
            request.write(error_body(request, code, content))
            request.finish()
        else:
            # An answer is tens of MB: sent in large slices as the connection drains,
            # never copied whole into the transport's buffer.
            request.setHeader(b"Content-Type", TEXT_CONTENT_TYPE)
            request.setHeader(b"Content-Length", b"%d" % len(content))
            offer_large_writes(request.channel)
            BodySender(request, content, slice_size=SCRAPE_SEND_LIMIT, clock=self.clock).start()
        self._observe(code, started)

    def _observe(self, code: int, started: float) -> None:
        self.requests.labels(code=str(code)).inc()
        self.duration.observe(max(self.clock.seconds() - started, 0.0))
