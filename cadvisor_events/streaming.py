"""The HTTP client for long-lived event streams: its own pool, TCP keepalive.

treq's default pool suits request/response traffic (two cached connections
per host, 240 s idle). A stream holds its connection for hours and may carry
no byte for hours, so a peer that vanished without a FIN/RST (power loss,
partition) is only noticed by TCP keepalive. This module never interprets a
response; it only makes the connections.
"""

from __future__ import annotations

import socket

from treq.client import HTTPClient
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.logger import Logger
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.client import _HTTP11ClientFactory
from zope.interface import implementer
from twisted.web.iweb import IAgentEndpointFactory

log = Logger()

#: Seconds of silence before the first probe, between probes, and probes
#: lost before the peer is declared dead: a dead host is noticed in ~2 min.
KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 15
KEEPALIVE_PROBES = 4


def enable_keepalive(transport) -> None:
    """Turn on TCP keepalive (with short Linux timings) for a client connection.

    Accepts a TCP transport or a TLS wrapper around one.
    """
    while transport is not None and not hasattr(transport, "setTcpKeepAlive"):
        transport = getattr(transport, "transport", None)
    if transport is None:
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


class _KeepAliveEndpoint:
    """An endpoint whose connections get TCP keepalive as soon as they are made."""

    def __init__(self, endpoint) -> None:
        self._endpoint = endpoint

    def connect(self, factory):
        def keepalive(protocol):
            enable_keepalive(protocol.transport)
            return protocol

        return self._endpoint.connect(factory).addCallback(keepalive)


@implementer(IAgentEndpointFactory)
class KeepAliveEndpointFactory:
    """What ``Agent`` uses by default (plain TCP or TLS with certificate checks), plus keepalive."""

    def __init__(self, reactor, tls_policy=None) -> None:
        self._reactor = reactor
        self._tls = tls_policy if tls_policy is not None else BrowserLikePolicyForHTTPS()

    def endpointForURI(self, uri):
        host = uri.host.decode("ascii")
        endpoint = HostnameEndpoint(self._reactor, host, uri.port)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self._tls.creatorForNetloc(uri.host, uri.port), endpoint)
        return _KeepAliveEndpoint(endpoint)


class _QuietClientFactory(_HTTP11ClientFactory):
    """The pool's per-connection factory, minus its "Starting factory" log lines
    (two per connection: thousands of hosts would drown the log)."""

    noisy = False


def stream_http_client(reactor, tls_policy=None) -> HTTPClient:
    """A treq client for streams: non-persistent pool, keepalive on every connection.

    Non-persistent because a stream's connection is never reused: when it
    ends we want it closed, not parked in a cache.
    """
    pool = HTTPConnectionPool(reactor, persistent=False)
    pool._factory = _QuietClientFactory
    agent = Agent.usingEndpointFactory(
        reactor, KeepAliveEndpointFactory(reactor, tls_policy), pool=pool
    )
    return HTTPClient(agent)
