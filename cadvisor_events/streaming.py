"""The HTTP client for long-lived event streams (own pool, TCP keepalive) and
the TLS policy of every connection to a cAdvisor.

treq's default pool suits request/response traffic (two cached connections
per host, 240 s idle). A stream holds its connection for hours and may carry
no byte for hours, so a peer that vanished without a FIN/RST (power loss,
partition) is only noticed by TCP keepalive. :func:`client_tls_policy` is the
one place that decides how ``https://`` cAdvisors are verified (system trust
store, a ``--ca-file`` bundle, or explicitly not at all), for the followers
and ``/proxy`` alike. This module never interprets a response; it only makes
the connections.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Optional

from OpenSSL import SSL
from treq.client import HTTPClient
from twisted.internet import ssl
from twisted.internet.endpoints import (
    HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS,
)
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.client import _HTTP11ClientFactory
from zope.interface import implementer
from twisted.web.iweb import IAgentEndpointFactory, IPolicyForHTTPS

log = Logger()

#: Seconds of silence before the first probe, between probes, and probes
#: lost before the peer is declared dead: a dead host is noticed in ~2 min.
KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 15
KEEPALIVE_PROBES = 4


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


class _KeepAliveEndpoint:
    """An endpoint whose connections get TCP keepalive as soon as they are made."""

    def __init__(self, endpoint) -> None:
        self._endpoint = endpoint

    def connect(self, factory):
        def keepalive(protocol):
            enable_keepalive(protocol.transport)
            return protocol

        return self._endpoint.connect(factory).addCallback(keepalive)


#: Seconds a TCP connect may take (HostnameEndpoint's default).
CONNECT_TIMEOUT = 30


def _address_endpoint(reactor, host: str, port: int):
    """A plain TCP endpoint when ``host`` is an IP address literal (``[v6]`` too), else None.

    HostnameEndpoint resolves even an address: a getaddrinfo call in the
    reactor's thread pool and a happy-eyeballs timer per connect, which made
    most of the exporter's CPU when 10,000 hosts connect (benchmarks/fanin.py).
    """
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(literal)
    except ValueError:
        return None
    if address.version == 4:
        return TCP4ClientEndpoint(reactor, literal, port, timeout=CONNECT_TIMEOUT)
    return TCP6ClientEndpoint(reactor, literal, port, timeout=CONNECT_TIMEOUT)


@implementer(IAgentEndpointFactory)
class KeepAliveEndpointFactory:
    """What ``Agent`` uses by default (plain TCP or TLS with certificate checks), plus keepalive."""

    def __init__(self, reactor, tls_policy=None) -> None:
        self._reactor = reactor
        self._tls = tls_policy if tls_policy is not None else BrowserLikePolicyForHTTPS()

    def endpointForURI(self, uri):
        host = uri.host.decode("ascii")
        endpoint = _address_endpoint(self._reactor, host, uri.port) or HostnameEndpoint(self._reactor, host, uri.port)
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


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


def load_ca_file(path: str):
    """The certificates of a PEM bundle as a Twisted trust root.

    :raises ValueError: (with a message naming ``path``) when the file cannot
        be read or holds no readable certificate.
    """
    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError as e:
        raise ValueError(f"cannot read CA file {path!r}: {e.strerror or e}") from None
    blocks = _PEM_CERTIFICATE.findall(pem)
    if not blocks:
        raise ValueError(f"CA file {path!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    try:
        certificates = [ssl.Certificate.loadPEM(block) for block in blocks]
    except Exception as e:
        raise ValueError(f"CA file {path!r} holds a broken certificate: {e}") from None
    return ssl.trustRootFromCertificates(certificates)


def client_tls_policy(ca_file: Optional[str] = None, insecure: bool = False) -> IPolicyForHTTPS:
    """How ``https://`` cAdvisors are verified.

    Default: the system's trust store and the host name, as a browser does.
    ``ca_file``: trust that PEM bundle instead of the system's store (a
    private CA signing the cAdvisors' certificates). ``insecure``: encrypt but
    verify nothing, accepting any certificate (a man in the middle too); only
    when asked for explicitly.

    :raises ValueError: for an unreadable ``ca_file``.
    """
    if insecure:
        return UnverifiedPolicyForHTTPS()
    if ca_file:
        return BrowserLikePolicyForHTTPS(trustRoot=load_ca_file(ca_file))
    return BrowserLikePolicyForHTTPS()


@implementer(IPolicyForHTTPS)
class UnverifiedPolicyForHTTPS:
    """TLS without certificate or host name checks (``--insecure-skip-verify``).

    The server name is still sent (SNI), so a TLS proxy in front of many
    cAdvisors picks the right certificate and backend.
    """

    def __init__(self) -> None:
        self._options = ssl.CertificateOptions()  # verify=False is its default

    def creatorForNetloc(self, hostname: bytes, port: int):
        return _UnverifiedCreator(hostname.decode("ascii"), self._options.getContext())


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedCreator:
    def __init__(self, hostname: str, context) -> None:
        self._hostname = hostname
        self._context = context

    def clientConnectionForTLS(self, tls_protocol):
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tls_protocol)
        try:
            ipaddress.ip_address(self._hostname)
        except ValueError:
            connection.set_tlsext_host_name(self._hostname.encode("idna"))
        return connection
