"""cAdvisor's API as a client: targets, URLs, history, stream and spec requests on treq.

The only module that builds cAdvisor URLs or talks HTTP to a cAdvisor. It
turns every upstream failure into :class:`UpstreamError` (with a short reason
a person can act on and a ``reason`` slug for metrics) and never lets a
password reach a log, a label or an error message.
"""

from __future__ import annotations

import base64
from typing import Any, Dict, Optional, cast
from urllib.parse import quote, urlencode, urlsplit

import attrs
import msgspec
import treq
from hyperlink import EncodedURL
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.error import (
    ConnectError,
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError as ConnectTimeoutError,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.internet.main import CONNECTION_DONE as _DONE
from twisted.web.http_headers import Headers

from .streamclient import StreamClient

log = Logger()

DEFAULT_PORT = 8080
EVENTS_PATH = "/api/v1.3/events"
SPEC_PATH = "/api/v2.0/spec"
#: A spec listing of a busy node is a few MB; more than this is not a cAdvisor answering.
MAX_SPEC_BYTES = 64 * 1024 * 1024
EXCERPT_BYTES = 200
#: Of a non-200 body only this much is read (the message quotes its start);
#: then the connection is dropped: an error body may be huge or endless.
ERROR_BODY_BYTES = 4096


@attrs.frozen
class Target:
    """One cAdvisor: where it is and how to reach it.

    ``name`` (``host:port``) is what labels, logs and pages show; the
    credentials are kept out of ``repr`` and never rendered.
    """

    host: str
    port: int
    scheme: str = "http"
    username: Optional[str] = attrs.field(default=None, repr=False)
    password: Optional[str] = attrs.field(default=None, repr=False)
    #: ``host:port`` as configured (IPv6 hosts in brackets). Made once: every per-host
    #: table, label and log line of a fleet shares this one string.
    name: str = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        host = f"[{self.host}]" if ":" in self.host else self.host
        object.__setattr__(self, "name", f"{host}:{self.port}")

    @property
    def base_url(self) -> str:
        """``scheme://host:port`` without credentials."""
        return f"{self.scheme}://{self.name}"


class TargetError(ValueError):
    """A target string that cannot name a cAdvisor; the message says why."""


def parse_target(text: str, default_port: int = DEFAULT_PORT) -> Target:
    """Parse ``HOST``, ``HOST:PORT``, ``[V6]:PORT`` or ``http(s)://[user:pass@]HOST[:PORT][/...]``.

    Any path or query after the host is ignored (the events path is fixed).

    :raises TargetError: for an empty host, a bad port or another scheme.
    """
    text = text.strip()
    if not text:
        raise TargetError("empty target")
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
        host = parts.hostname
    except ValueError as e:
        raise TargetError(f"malformed target {_redact(text)!r}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise TargetError(f"target scheme must be http or https, not {scheme!r}")
    if not host:
        raise TargetError(f"target {_redact(text)!r} has no host")
    if any(c in host for c in " /\\?#@") or not host.isascii():
        raise TargetError(f"target host {host!r} is not a host name or address")
    if port is None:
        port = 443 if scheme == "https" and ":" not in parts.netloc.rpartition("@")[2] else default_port
    if not 0 < port < 65536:
        raise TargetError(f"target port {port} out of range")
    return Target(
        host=host,
        port=port,
        scheme=scheme,
        username=parts.username,
        password=parts.password,
    )


def _redact(text: str) -> str:
    """``text`` with any ``user:password@`` removed, for error messages."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{scheme}{sep}{netloc}{slash}{path}"


def type_selection(oom_only: bool) -> list[tuple[str, str]]:
    """The event-type flags: every type, or only the two OOM types (Go seed's ``-oom-only``)."""
    if oom_only:
        return [("oom_events", "true"), ("oom_kill_events", "true")]
    return [("all_events", "true")]


def history_url(target: Target, *, oom_only: bool, start_time: Optional[str] = None) -> str:
    """The history request: every retained event (``max_events=-1``), optionally since ``start_time``.

    ``start_time`` is passed through verbatim (the original nanosecond string;
    cAdvisor's bound is inclusive, so expect the boundary event again).
    """
    query = [("subcontainers", "true"), ("max_events", "-1")] + type_selection(oom_only)
    if start_time is not None:
        query.append(("start_time", start_time))
    return f"{target.base_url}{EVENTS_PATH}?{urlencode(query, quote_via=quote)}"


def stream_url(target: Target, *, oom_only: bool) -> str:
    """The stream request: new events as they happen (never history)."""
    query = [("stream", "true"), ("subcontainers", "true")] + type_selection(oom_only)
    return f"{target.base_url}{EVENTS_PATH}?{urlencode(query, quote_via=quote)}"


def spec_url(target: Target, name: str = "/", *, recursive: bool = False) -> str:
    """The spec request for container ``name`` (an absolute cgroup name), or for it and
    every container below it with ``recursive``."""
    path = quote("/" + name.lstrip("/"), safe="/")
    query = [("type", "name")] + ([("recursive", "true")] if recursive else [])
    return f"{target.base_url}{SPEC_PATH}{path}?{urlencode(query)}"


@attrs.frozen
class UpstreamError(Exception):
    """A cAdvisor that answered badly or not at all.

    ``reason`` is a short slug for metrics (``refused``, ``dns``, ``timeout``,
    ``status``, ``body``, ``too_large``, ``connect``, ``reset``, ``tls``);
    ``message`` is for people and never holds credentials.
    """

    reason: str
    message: str

    def __str__(self) -> str:
        return self.message


class UnknownContainer(UpstreamError):
    """cAdvisor's 500 ``unknown container "<name>"``: the container is not (or no longer)
    tracked. A recursive spec listing fails whole this way when a container vanishes
    under it; asking again usually succeeds. ``reason`` is ``unknown_container``."""


#: In cAdvisor's 500 for a name it does not track (``unknown container "/x"``, recursive:
#: ``unknown container: "/x"``) and for a listing a container vanished under
#: (``partial failures: ["/x": GetInfo: unknown container "/x"]``).
_UNKNOWN_CONTAINER = b"unknown container"
_spec_decoder = msgspec.json.Decoder(Dict[str, Dict[str, Any]])


def describe_failure(target: Target, failure) -> UpstreamError:
    """Turn a connection-level failure into an :class:`UpstreamError` naming ``target``."""
    if isinstance(failure, UpstreamError):
        return failure
    error = getattr(failure, "value", failure)
    if isinstance(error, UpstreamError):
        return error
    if isinstance(error, (defer.TimeoutError, ConnectTimeoutError, defer.CancelledError)):
        return UpstreamError("timeout", f"{target.base_url} did not answer in time")
    if isinstance(error, ConnectionRefusedError):
        return UpstreamError("refused", f"{target.base_url}: connection refused")
    if isinstance(error, DNSLookupError):
        return UpstreamError("dns", f"{target.base_url}: host name does not resolve")
    if isinstance(error, ConnectError):
        return UpstreamError("connect", f"{target.base_url}: cannot connect ({error.__class__.__name__})")
    if isinstance(error, ResponseFailed):
        tls = [r for r in error.reasons if _is_tls_failure(r.value)]
        if tls:
            return UpstreamError(
                "tls",
                f"{target.base_url}: TLS handshake failed ({_tls_message(tls[0].value)};"
                " see --ca-file)",
            )
        inner = ", ".join(r.getErrorMessage() for r in error.reasons) or "connection lost"
        return UpstreamError("reset", f"{target.base_url}: response failed ({inner})")
    if _is_tls_failure(error):
        return UpstreamError(
            "tls", f"{target.base_url}: TLS handshake failed ({_tls_message(error)}; see --ca-file)"
        )
    return UpstreamError("connect", f"{target.base_url}: {error.__class__.__name__}: {error}")


def _is_tls_failure(error: BaseException) -> bool:
    """An OpenSSL error or a certificate that does not match the host name."""
    module = type(error).__module__
    return module.startswith("OpenSSL") or module.startswith("service_identity")


def _tls_message(error: BaseException) -> str:
    """The most specific words of a TLS failure, e.g. ``certificate verify failed``."""
    args = getattr(error, "args", ())
    if args and isinstance(args[0], list):  # OpenSSL.SSL.Error: [(lib, func, reason), ...]
        reasons = [entry[-1] for entry in args[0] if isinstance(entry, tuple) and entry]
        if reasons:
            return ", ".join(str(r) for r in reasons)
    return str(error) or type(error).__name__


def request_url(url: str) -> EncodedURL:
    """``url`` for treq exactly as given: an IPv6 literal host survives.

    treq turns every URL into a URI with hyperlink's ``to_uri``, which
    IDNA-encodes the host and fails on ``[::1]``. Our URLs are already ASCII
    and percent-encoded (targets are ASCII, queries built with ``quote``), so
    that step has nothing to do for them and is skipped.
    """
    return _ReadyURL.from_text(url)


class _ReadyURL(EncodedURL):
    """An :class:`EncodedURL` whose ``to_uri`` is itself (see :func:`request_url`)."""

    def to_uri(self):
        return self


def timed_out(target: Target, timeout: float):
    """An ``onTimeoutCancel`` for ``Deferred.addTimeout``: whatever the cancelled
    request failed with, the reason is the timeout."""

    def as_timeout(result, _timeout):
        if isinstance(result, Failure):
            raise UpstreamError("timeout", f"{target.base_url} did not answer within {timeout:g} s")
        return result

    return as_timeout


def excerpt(body: bytes) -> str:
    """The first bytes of a bad body, printable, for an error message."""
    text = body[:EXCERPT_BYTES].decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    return text + ("..." if len(body) > EXCERPT_BYTES else "")


def header_pairs(target: Target) -> list[tuple[bytes, bytes]]:
    """Request headers as (name, value) pairs, with HTTP basic auth when the target carries
    credentials."""
    pairs = [(b"Accept", b"application/json")]
    if target.username is not None:
        token = base64.b64encode(f"{target.username}:{target.password or ''}".encode())
        pairs.append((b"Authorization", b"Basic " + token))
    return pairs


def auth_headers(target: Target) -> Headers:
    """:func:`header_pairs` as treq's ``Headers``."""
    headers = Headers()
    for name, value in header_pairs(target):
        headers.addRawHeader(name, value)
    return headers


class CAdvisorClient:
    """Requests against cAdvisors: streams through a :class:`~cadvisor_events.streamclient.StreamClient`
    (``streams``), everything else through one treq ``HTTPClient`` (``http``).

    Tests pass a ``treq.testing.StubTreq`` as ``http``; the service passes an
    ``HTTPClient`` over its own connection pool. Without ``streams``, streams
    connect as :func:`~cadvisor_events.httpclients.event_stream_client` does.
    """

    def __init__(self, reactor, http=None, streams: Optional[StreamClient] = None) -> None:
        self._reactor = reactor
        self._http = http if http is not None else treq
        self._streams = streams

    def _get(self, url: str, target: Target) -> defer.Deferred:
        """GET ``url`` with the target's credentials; never follows a redirect.

        A redirect is answered like any other non-200 (a ``status`` failure):
        following one would send the credentials and the request to a host
        nobody configured or checked.
        """
        return self._http.get(
            request_url(url), headers=auth_headers(target), unbuffered=True, allow_redirects=False
        )

    def fetch_history(
        self,
        target: Target,
        *,
        oom_only: bool,
        start_time: Optional[str] = None,
        timeout: float = 30.0,
        max_bytes: int = 256 * 1024 * 1024,
    ) -> defer.Deferred:
        """GET the history; fire with the whole body (bytes) of a 200 answer.

        The timeout covers the whole exchange, body included.

        :raises UpstreamError: (as the Deferred's failure) on connect errors,
            a non-200 status (message holds an excerpt of the body), a body
            over ``max_bytes``, or the timeout (``reason="timeout"``).
        """
        url = history_url(target, oom_only=oom_only, start_time=start_time)
        return self._get_body(target, url, timeout=timeout, max_bytes=max_bytes)

    def spec(self, target: Target, name: str = "/", recursive: bool = False, *,
             timeout: float = 10.0, max_bytes: int = MAX_SPEC_BYTES) -> defer.Deferred:
        """GET the spec of container ``name`` (with ``recursive``: of it and every container
        below it); fire with the answer, a dict of cgroup name to spec (a JSON object each).

        The timeout covers the whole exchange, body included.

        :raises UnknownContainer: for cAdvisor's 500 ``unknown container``.
        :raises UpstreamError: (as the Deferred's failure) like :meth:`fetch_history`, and
            ``reason="body"`` for an answer that is not a JSON object of objects.
        """
        url = spec_url(target, name, recursive=recursive)
        d = self._get_body(target, url, timeout=timeout, max_bytes=max_bytes, what="spec answer")

        def decode(body: bytes) -> Dict[str, Dict[str, Any]]:
            try:
                return _spec_decoder.decode(body)
            except (msgspec.DecodeError, UnicodeDecodeError) as e:
                raise UpstreamError("body", f"{target.base_url}: bad spec answer ({e}): {excerpt(body)}")

        return d.addCallback(decode)

    @defer.inlineCallbacks
    def _get_body(self, target: Target, url: str, *, timeout: float, max_bytes: int, what: str = "history"):
        deadline = self._reactor.seconds() + timeout
        request = self._get(url, target)
        request.addTimeout(timeout, self._reactor, onTimeoutCancel=timed_out(target, timeout))
        try:
            response = yield request
        except Exception as e:
            raise describe_failure(target, e)
        finished: defer.Deferred = defer.Deferred(lambda d: reader.abort())
        if response.code == 200:
            reader = LimitedBodyReader(finished, max_bytes)
        else:
            reader = LimitedBodyReader(finished, ERROR_BODY_BYTES, truncate=True)
        response.deliverBody(reader)
        finished.addTimeout(
            max(deadline - self._reactor.seconds(), 0),
            self._reactor,
            onTimeoutCancel=timed_out(target, timeout),
        )
        try:
            body = yield finished
        except BodyTooLarge:
            raise UpstreamError(
                "too_large",
                f"{target.base_url}: {what} larger than the limit of {max_bytes} bytes"
                + (" (--max-history-bytes)" if what == "history" else ""),
            )
        except Exception as e:
            if response.code == 200 or not reader.chunks:
                raise describe_failure(target, e)
            body = b"".join(reader.chunks)
        if response.code == 500 and _UNKNOWN_CONTAINER in body:
            raise UnknownContainer(
                "unknown_container", f"{target.base_url} answered HTTP 500: {excerpt(body)}"
            )
        if response.code != 200:
            raise UpstreamError(
                "status", f"{target.base_url} answered HTTP {response.code}: {excerpt(body)}"
            )
        return body

    def open_stream(self, target: Target, *, oom_only: bool, timeout: float = 30.0) -> defer.Deferred:
        """GET the stream; fire with the response (``code``, ``deliverBody``) once a 200's head arrived.

        The caller delivers the body to a protocol (``response.deliverBody``).
        ``timeout`` covers connecting and the headers only: a healthy stream
        may stay silent for hours.

        :raises UpstreamError: on connect errors, timeouts and non-200 answers
            (their body excerpt read within ``timeout``).
        """
        if self._streams is None:
            self._streams = StreamClient(self._reactor)
        url = stream_url(target, oom_only=oom_only)
        request = self._streams.get(url, header_pairs(target))
        request.addTimeout(timeout, self._reactor, onTimeoutCancel=timed_out(target, timeout))

        def check(response):
            if response.code == 200:
                return response
            body: defer.Deferred = defer.Deferred(lambda d: reader.abort())
            reader = LimitedBodyReader(body, ERROR_BODY_BYTES, truncate=True)
            response.deliverBody(reader)
            body.addTimeout(timeout, self._reactor, onTimeoutCancel=timed_out(target, timeout))

            def fail(content):
                raise UpstreamError(
                    "status", f"{target.base_url} answered HTTP {response.code}: {excerpt(content)}"
                )

            body.addCallbacks(fail, lambda _: fail(b""))
            return body

        def translate(failure):
            raise describe_failure(target, failure)

        request.addCallbacks(check, translate)
        return request


class BodyTooLarge(Exception):
    """The body grew past the reader's limit; the connection was dropped."""


class LimitedBodyReader(Protocol):
    """Collect a response body up to ``max_bytes``, dropping the connection beyond.

    ``finished`` fires with the body on a clean end (``ResponseDone``, or
    ``PotentialDataLoss`` for a body delimited by connection close, which a Go
    client accepts too) and fails otherwise; beyond ``max_bytes`` it fails
    with :class:`BodyTooLarge`, or, with ``truncate``, fires with the first
    ``max_bytes`` (an error body, of which only the start is wanted).
    :meth:`abort` (the Deferred's canceller, used by timeouts) stops the
    transport so nothing leaks.
    """

    def __init__(self, finished: defer.Deferred, max_bytes: int, truncate: bool = False) -> None:
        self.finished: Optional[defer.Deferred] = finished
        self.max_bytes = max_bytes
        self.truncate = truncate
        self.size = 0
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        if self.finished is None:
            return
        self.size += len(data)
        if self.size > self.max_bytes:
            finished, self.finished = self.finished, None
            self.abort()
            if self.truncate:
                self.chunks.append(data[: self.max_bytes - (self.size - len(data))])
                finished.callback(b"".join(self.chunks))
            else:
                finished.errback(BodyTooLarge())
            return
        self.chunks.append(data)

    def abort(self) -> None:
        # Called as the canceller: the cancelled Deferred fails by itself, so the
        # connectionLost that stopProducing causes must not fire it again.
        self.finished = None
        if self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()

    def connectionLost(self, reason: Failure = Failure(_DONE)) -> None:
        finished, self.finished = self.finished, None
        if finished is None:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            # Drop the chunks before firing: the callbacks run inside this call,
            # and a 26 MB history must not be held twice while they decode it.
            chunks, self.chunks = self.chunks, []
            body = b"".join(chunks)
            del chunks
            finished.callback(body)
        else:
            finished.errback(reason)
