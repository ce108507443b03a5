"""The HTTP clients that reach cAdvisors, and the connections under them.

Three treq clients made one way (a pool of their own, an ``Agent`` over one
of our endpoint factories, treq's ``HTTPClient``): :func:`stream_http_client`
for the followers' histories and spec requests (their event streams go through
:mod:`cadvisor_events.streamclient`, over :class:`HostEndpointFactory` too), :func:`proxy_http_client` for
``/proxy`` by the URL's host, and :func:`pinned_http_client` for ``/proxy``
to addresses ``--proxy-allow`` already checked. None keeps idle connections:
treq's default pool (two cached per host, 240 s idle) suits request/response
traffic, but a stream holds its connection for hours and is never reused,
and a pinned connection must not outlive the check it was made under. A
stream may carry no byte for hours, so a peer that vanished without a
FIN/RST (power loss, partition) is only noticed by TCP keepalive, which
stream connections get. Address literals connect without resolving, and no
connection's factory logs its start and stop. How ``https://`` is verified
is :mod:`cadvisor_events.clienttls`'s decision; this module only applies it.
It never interprets a response and never decides what may be reached.
"""

from __future__ import annotations

import socket
from typing import Optional, Sequence

from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet.endpoints import (
    HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

from .addresses import ip_literal
from .clienttls import client_tls_policy

log = Logger()

#: Seconds of silence before the first probe, between probes, and probes
#: lost before the peer is declared dead: a dead host is noticed in ~2 min.
KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 15
KEEPALIVE_PROBES = 4

#: Seconds a TCP connect may take (HostnameEndpoint's default).
CONNECT_TIMEOUT = 30


def enable_keepalive(transport) -> None:
    """Turn on TCP keepalive (with short Linux timings) for a client connection.

    Accepts a TCP transport or a TLS wrapper around one. The wrapper must be
    unwrapped: it forwards ``setTcpKeepAlive`` but its ``getHandle`` is the
    OpenSSL connection, which has no ``setsockopt``.
    """
    while getattr(transport, "transport", None) is not None:
        transport = transport.transport
    if transport is None or not hasattr(transport, "setTcpKeepAlive"):
        return
    transport.setTcpKeepAlive(1)
    handle = transport.getHandle() if hasattr(transport, "getHandle") else None
    if handle is None:
        return
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_PROBES),
    ):
        option = getattr(socket, name, None)
        if option is not None:
            try:
                handle.setsockopt(socket.IPPROTO_TCP, option, value)
            except OSError as e:
                log.debug("cannot set {name}: {e}", name=name, e=e)


@implementer(IStreamClientEndpoint)
class QuietEndpoint:
    """``wrapped``, whose connections' factories log nothing; with ``keepalive``, TCP keepalive too.

    The pool makes one factory per connection, and a factory logs "Starting
    factory" and "Stopping factory" for each by default: thousands of hosts
    would drown the log. ``noisy`` is set on the factory instance the pool
    hands over, before anything can log.
    """

    def __init__(self, wrapped: IStreamClientEndpoint, *, keepalive: bool = False) -> None:
        self.wrapped = wrapped
        self.keepalive = keepalive

    def connect(self, factory) -> defer.Deferred:
        factory.noisy = False
        connecting = self.wrapped.connect(factory)
        if self.keepalive:
            connecting.addCallback(_with_keepalive)
        return connecting


def _with_keepalive(protocol):
    enable_keepalive(protocol.transport)
    return protocol


def address_endpoint(reactor, host: str, port: int, timeout: float = CONNECT_TIMEOUT):
    """A plain TCP endpoint when ``host`` is an IP address literal (``[v6]`` too), else None.

    HostnameEndpoint resolves even an address: a getaddrinfo call in the
    reactor's thread pool and a happy-eyeballs timer per connect, which made
    most of the exporter's CPU when 10,000 hosts connect (benchmarks/fanin.py).
    """
    address = ip_literal(host)
    if address is None:
        return None
    kind = TCP4ClientEndpoint if address.version == 4 else TCP6ClientEndpoint
    return kind(reactor, str(address), port, timeout=timeout)


def _finish(endpoint, uri, tls_policy: IPolicyForHTTPS, keepalive: bool) -> QuietEndpoint:
    """``endpoint`` under TLS for an ``https`` URI (verified by the URI's host), made quiet."""
    if uri.scheme == b"https":
        endpoint = wrapClientTLS(tls_policy.creatorForNetloc(uri.host, uri.port), endpoint)
    return QuietEndpoint(endpoint, keepalive=keepalive)


@implementer(IAgentEndpointFactory)
class HostEndpointFactory:
    """Connect to the URL's host as ``Agent`` does by default (TLS by ``tls_policy``),
    but an address literal without resolving it; ``keepalive`` for streams."""

    def __init__(self, reactor, tls_policy: Optional[IPolicyForHTTPS] = None, *, keepalive: bool = False) -> None:
        self._reactor = reactor
        self._tls = tls_policy if tls_policy is not None else client_tls_policy()
        self._keepalive = keepalive

    def endpointForURI(self, uri):
        host = uri.host.decode("ascii")
        endpoint = address_endpoint(self._reactor, host, uri.port) or HostnameEndpoint(
            self._reactor, host, uri.port, timeout=CONNECT_TIMEOUT
        )
        return _finish(endpoint, uri, self._tls, self._keepalive)


class _FirstThatConnects:
    """Try endpoints in order; connect through the first that accepts."""

    def __init__(self, endpoints: Sequence) -> None:
        self._endpoints = endpoints

    def connect(self, factory) -> defer.Deferred:
        attempt = self._endpoints[0].connect(factory)
        for endpoint in self._endpoints[1:]:
            attempt.addErrback(self._next, endpoint, factory)
        return attempt

    @staticmethod
    def _next(failure, endpoint, factory):
        if failure.check(defer.CancelledError):
            return failure
        return endpoint.connect(factory)


@implementer(IAgentEndpointFactory)
class PinnedEndpointFactory:
    """Connect to fixed, already checked addresses whatever the URL's host says.

    The URL keeps the name, so ``Agent`` sends it as ``Host`` and TLS uses it
    for SNI and the certificate check.

    :raises ValueError: for an ``addresses`` entry that is not an IP literal
        (it would be resolved, unchecked, at connect time).
    """

    def __init__(self, reactor, tls_policy: IPolicyForHTTPS, addresses: Sequence[str],
                 timeout: float = CONNECT_TIMEOUT) -> None:
        if not addresses or any(ip_literal(a) is None for a in addresses):
            raise ValueError(f"pinned connections go to IP addresses, not {list(addresses)!r}")
        self._reactor = reactor
        self._tls = tls_policy
        self._addresses = tuple(addresses)
        self._timeout = timeout

    def endpointForURI(self, uri):
        endpoints = [address_endpoint(self._reactor, a, uri.port, self._timeout) for a in self._addresses]
        return _finish(_FirstThatConnects(endpoints), uri, self._tls, keepalive=False)


def _client(reactor, endpoints: IAgentEndpointFactory) -> HTTPClient:
    """A treq client over ``endpoints`` whose pool closes every connection after its response."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    return HTTPClient(Agent.usingEndpointFactory(reactor, endpoints, pool=pool))


def stream_http_client(reactor, tls_policy: Optional[IPolicyForHTTPS] = None) -> HTTPClient:
    """The followers' client for histories and specs: keepalive on every connection, none kept
    after its response."""
    return _client(reactor, HostEndpointFactory(reactor, tls_policy, keepalive=True))


def proxy_http_client(reactor, tls_policy: IPolicyForHTTPS) -> HTTPClient:
    """The client ``/proxy`` fetches by name with (no list, allowed names, address literals)."""
    return _client(reactor, HostEndpointFactory(reactor, tls_policy))


def pinned_http_client(reactor, tls_policy: IPolicyForHTTPS, addresses: Sequence[str]) -> HTTPClient:
    """A treq client whose every connection goes to ``addresses`` (one request's worth)."""
    return _client(reactor, PinnedEndpointFactory(reactor, tls_policy, addresses))
