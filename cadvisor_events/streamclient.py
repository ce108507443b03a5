"""A lean HTTP/1.1 GET for cAdvisor's event streams: a status, headers, then the body as it comes.

A follower holds one stream for hours and a fleet holds ten thousand, so what
a stream costs while it is open is what the exporter costs. Twisted's
``Agent`` (under treq) builds, per request, a connection pool entry, an
``HTTP11ClientProtocol`` with its parser, a ``Request``, a ``Response`` with
parsed ``Headers``, a chunked decoder and producer proxies: about 6 KiB that
live as long as the stream, and on the hot path one call through each layer
per chunk. A stream needs none of what they are for (redirects, request
bodies, connection reuse, trailers). :class:`StreamConnection` is the one
object a stream keeps: it writes the request, reads the status line and the
two headers that frame the body (``Transfer-Encoding``, ``Content-Length``),
and hands each chunk's bytes straight to the body's protocol. Every other
request (histories, specs, ``/proxy``) stays on treq.

The answer looks like treq's to its caller (``code``, ``phrase``,
``deliverBody``) and ends the body's protocol the same way: ``ResponseDone``
at the last chunk or the announced length, ``PotentialDataLoss`` when a body
without either ends with the connection, ``ResponseFailed`` when it is cut. A
response that cannot be HTTP (a bad status line, headers over
:data:`MAX_HEADER_BYTES`, a bad chunk size) fails the request or cuts the
body with a reason naming it, and the connection is dropped.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Tuple

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import URI, ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from .addresses import ip_literal
from .httpclients import CONNECT_TIMEOUT, HostEndpointFactory, enable_keepalive

__all__ = ["StreamClient", "StreamConnection", "BadResponse", "MAX_HEADER_BYTES"]

#: A status line and headers longer than this are not a cAdvisor answering.
MAX_HEADER_BYTES = 64 * 1024
#: A chunk-size line (hex digits, maybe extensions) longer than this is not HTTP.
MAX_CHUNK_LINE = 1024

# Where the response is: its head, a chunk's data (or the CRLF after it), its size line,
# the trailers, and after the end.
_HEAD, _DATA, _DATA_END, _SIZE, _TRAILERS, _DONE = range(6)
_CLOSE_DELIMITED = -1
_HEX = frozenset(b"0123456789abcdefABCDEF")


class BadResponse(Exception):
    """What came back is not the HTTP/1.1 this client speaks; the message says where."""


@implementer(IPushProducer)
class StreamConnection(Protocol):
    """One GET on its own connection, and its response.

    Fires ``ready`` with itself once the status line and headers are in; the
    caller then gives the body a protocol with :meth:`deliverBody`, whose
    transport is this object: pausing it pauses reading the socket, stopping
    it drops the connection. Body bytes that arrive before :meth:`deliverBody`
    are kept until then.
    """

    def __init__(self, request: bytes, ready: defer.Deferred, keepalive: bool = False) -> None:
        self.transport = None
        self.connected = 0
        self.code = 0
        self.phrase = b""
        self._keepalive = keepalive
        self._request = request
        self._ready: Optional[defer.Deferred] = ready
        self._state = _HEAD
        self._buffer = b""
        #: Bytes of body (a chunk's, or the whole body's) still to come; _CLOSE_DELIMITED: all.
        self._left = 0
        self._chunked = False
        self._body: Optional[Protocol] = None
        self._early: Optional[list] = None  # body bytes before deliverBody
        self._end: Optional[Failure] = None  # how the body ended, before deliverBody

    # -- the connection ------------------------------------------------------------

    def connectionMade(self) -> None:
        request, self._request = self._request, b""
        transport: Any = self.transport
        if self._keepalive:
            enable_keepalive(transport)
        transport.write(request)

    def dataReceived(self, data: bytes) -> None:
        if self._state == _DONE:
            return
        try:
            if self._state == _HEAD:
                data = self._head(data)
                if not data:
                    return
            if self._chunked:
                self._chunks(data)
            elif self._state == _DATA:
                self._plain(data)
        except BadResponse as e:
            self._bad(e)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self._buffer = b""
        if self._state == _HEAD:
            self._state = _DONE
            self._fail_ready(Failure(ResponseNeverReceived([reason])))
        elif self._state != _DONE:
            self._state = _DONE
            if self._left == _CLOSE_DELIMITED and not self._chunked and reason.check(ConnectionDone):
                self._finish(Failure(PotentialDataLoss()))
            else:
                self._finish(Failure(ResponseFailed([reason])))

    # -- the response, as its caller sees it --------------------------------------

    def deliverBody(self, protocol: Protocol) -> None:
        """Give the body to ``protocol`` (bytes that came early first), then its end."""
        self._body = protocol
        protocol.makeConnection(self)
        early, self._early = self._early, None
        for data in early or ():
            protocol.dataReceived(data)
        end, self._end = self._end, None
        if end is not None:
            protocol.connectionLost(end)

    def pauseProducing(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.pauseProducing()

    def resumeProducing(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.resumeProducing()

    def stopProducing(self) -> None:
        """Drop the connection; the body's protocol then gets ``ResponseFailed``."""
        if self._state != _DONE:
            self.abort()

    def abort(self) -> None:
        """Drop the connection (the request's canceller)."""
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    # -- parsing -------------------------------------------------------------------

    def _head(self, data: bytes) -> bytes:
        """Take the status line and headers; fire ``ready``; the body bytes after them."""
        buffer = self._buffer + data if self._buffer else data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEADER_BYTES:
                raise BadResponse(f"response headers longer than {MAX_HEADER_BYTES} bytes")
            self._buffer = buffer
            return b""
        if end > MAX_HEADER_BYTES:
            raise BadResponse(f"response headers longer than {MAX_HEADER_BYTES} bytes")
        self._buffer = b""
        lines = buffer[:end].split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code, _, phrase = rest.partition(b" ")
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise BadResponse(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        self.code = int(code)
        self.phrase = phrase
        length = _CLOSE_DELIMITED
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise BadResponse(f"malformed response header {line[:80]!r}")
            name = name.strip().lower()
            if name == b"transfer-encoding":
                codings = [c.strip().lower() for c in value.split(b",")]
                if codings[-1] != b"chunked":
                    raise BadResponse(f"unsupported transfer encoding {value.strip()[:80]!r}")
                self._chunked = True
            elif name == b"content-length":
                value = value.strip()
                if not value.isdigit():
                    raise BadResponse(f"bad Content-Length {value[:80]!r}")
                if length != _CLOSE_DELIMITED and length != int(value):
                    raise BadResponse("conflicting Content-Length headers")
                length = int(value)
        if self._chunked:
            self._state, self._left = _SIZE, 0
        else:
            self._state, self._left = _DATA, length
        ready, self._ready = self._ready, None
        body = buffer[end + 4:]
        if self.code in (204, 304) or (length == 0 and not self._chunked):
            self._state = _DONE
            self._finish(Failure(ResponseDone()))
            self._close()
            body = b""
        if ready is not None:
            ready.callback(self)
        return body

    def _plain(self, data: bytes) -> None:
        """A body framed by Content-Length, or by the connection's end."""
        left = self._left
        if left == _CLOSE_DELIMITED:
            self._deliver(data)
            return
        if len(data) < left:
            self._left = left - len(data)
            self._deliver(data)
            return
        self._left = 0
        self._deliver(data[:left] if len(data) > left else data)
        self._state = _DONE
        self._finish(Failure(ResponseDone()))
        self._close()

    def _chunks(self, data: bytes) -> None:
        """A chunked body: each chunk's bytes go to the body as they come, in one piece when
        a chunk arrives whole (cAdvisor writes one event per chunk)."""
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        position, end = 0, len(buffer)
        # Straight to the body's protocol once it has one: a call per chunk is the hot path.
        deliver = self._body.dataReceived if self._body is not None else self._deliver
        while position < end:
            state = self._state
            if state == _DATA:
                left, available = self._left, end - position
                if available < left:
                    deliver(buffer[position:] if position else buffer)
                    self._left = left - available
                    return
                deliver(buffer[position:position + left] if position or available > left else buffer)
                position += left
                self._left = 0
                self._state = _DATA_END
                continue
            if state == _DATA_END:
                if end - position < 2:
                    break
                if buffer[position:position + 2] != b"\r\n":
                    raise BadResponse("chunk not followed by CRLF")
                position += 2
                self._state = _SIZE
                continue
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                limit = MAX_CHUNK_LINE if state == _SIZE else MAX_HEADER_BYTES
                if end - position > limit:
                    raise BadResponse("chunk size line too long" if state == _SIZE else "trailers too long")
                break
            line = buffer[position:line_end]
            position = line_end + 2
            if state == _TRAILERS:
                if not line:
                    self._state = _DONE
                    self._finish(Failure(ResponseDone()))
                    self._close()
                    return
                continue
            size = line.partition(b";")[0].strip()
            if not size or len(size) > 16 or not _HEX.issuperset(size):
                raise BadResponse(f"bad chunk size {line[:80]!r}")
            self._left = int(size, 16)
            self._state = _DATA if self._left else _TRAILERS
        if position < end and self._state != _DONE:
            self._buffer = buffer[position:]

    def _deliver(self, data: bytes) -> None:
        body = self._body
        if body is not None:
            body.dataReceived(data)
        elif self._early is None:
            self._early = [data]
        else:
            self._early.append(data)

    def _finish(self, end: Failure) -> None:
        """End the body with ``end`` (now, or at :meth:`deliverBody`)."""
        body = self._body
        if body is None:
            self._end = end
            return
        self._body = None
        body.connectionLost(end)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def _bad(self, error: BadResponse) -> None:
        failure = Failure(error)
        if self._state == _HEAD:
            self._state = _DONE
            self._fail_ready(Failure(ResponseNeverReceived([failure])))
        elif self._state != _DONE:
            self._state = _DONE
            self._finish(Failure(ResponseFailed([failure])))
        self.abort()

    def _fail_ready(self, failure: Failure) -> None:
        ready, self._ready = self._ready, None
        if ready is not None and not ready.called:
            ready.errback(failure)


class _OneConnection(ClientFactory):
    """The factory of one connection: it builds the protocol it was given, and fails the
    request when the connect does (a direct connect; an endpoint reports that itself)."""

    noisy = False

    def __init__(self, protocol: StreamConnection) -> None:
        self._protocol: Optional[StreamConnection] = protocol

    def buildProtocol(self, addr):
        protocol, self._protocol = self._protocol, None
        return protocol

    def clientConnectionFailed(self, connector, reason: Failure) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol._fail_ready(reason)


class StreamClient:
    """Sends GETs whose bodies are streams, each on a connection of its own, with TCP keepalive.

    A plain ``http`` URL to an address literal, a fleet's usual target, is connected
    with the reactor's ``connectTCP`` straight away: an endpoint would keep three more
    objects per stream for as long as it lives (its wrapping factory and protocol, its
    Deferred). Host names and ``https`` go through :class:`~cadvisor_events.httpclients.HostEndpointFactory`
    (resolving, TLS as ``tls_policy`` says).
    """

    def __init__(self, reactor, tls_policy: Optional[IPolicyForHTTPS] = None) -> None:
        self._reactor = reactor
        self._endpoints = HostEndpointFactory(reactor, tls_policy, keepalive=True)

    def get(self, url: str, headers: Iterable[Tuple[bytes, bytes]] = ()) -> defer.Deferred:
        """GET ``url`` (absolute, ASCII) with ``headers``; fire with the :class:`StreamConnection`
        once the response's head is in. Cancelling drops the connection, or the connect."""
        uri = URI.fromBytes(url.encode("ascii"))
        lines = [b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n" % (uri.originForm, uri.netloc)]
        lines += [b"%s: %s\r\n" % (name, value) for name, value in headers]
        lines.append(b"\r\n")
        connecting: Any = None

        def cancel(_):
            if isinstance(connecting, defer.Deferred) and not connecting.called:
                connecting.cancel()
            elif connecting is not None and connection.transport is None:
                connecting.stopConnecting()
            else:
                connection.abort()

        ready: defer.Deferred = defer.Deferred(cancel)
        address = ip_literal(uri.host.decode("ascii")) if uri.scheme == b"http" else None
        connection = StreamConnection(b"".join(lines), ready, keepalive=address is not None)
        factory = _OneConnection(connection)
        if address is not None:
            connecting = self._reactor.connectTCP(str(address), uri.port, factory, timeout=CONNECT_TIMEOUT)
            return ready
        connecting = self._endpoints.endpointForURI(uri).connect(factory)
        connecting.addErrback(connection._fail_ready)
        return ready
