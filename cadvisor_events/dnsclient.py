"""The DNS client of ``--target-dns``: where queries go and how (TCP, one connection per refresh).

:class:`TcpResolver` answers ``lookupAddress``, ``lookupIPV6Address`` and
``lookupService`` like Twisted's resolvers, so :mod:`cadvisor_events.dnstargets`
never knows the transport; ``client.Resolver`` still picks the server and
judges each answer. It must never ask a server other than ``--dns-server``
(or ``/etc/resolv.conf``'s), never cache, and never keep a connection
across refreshes.
"""

from __future__ import annotations

import ipaddress
from typing import List, Optional, Sequence, Tuple

from twisted.internet import defer, endpoints, protocol
from twisted.names import client, dns
from twisted.python.failure import Failure

DNS_PORT = 53
#: Seconds one query has, connection included: well inside the default refresh,
#: so a dead server costs one refresh, not several.
QUERY_TIMEOUT = 5.0


def parse_dns_server(text: str) -> Tuple[str, int]:
    """Parse ``ADDRESS[:PORT]`` (``[V6]:PORT`` for IPv6; port 53 unless given).

    Only an address: the client connects there, and a DNS server's own name
    would need another DNS server to find it.

    :raises ValueError: with a message a person can act on.
    """
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"expected ADDRESS[:PORT] or [IPv6]:PORT, not {text!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address (the DNS server must be given by address)") from None
    port = DNS_PORT
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"port {port_text!r} is not a port number (1 to 65535)")
        port = int(port_text)
    return str(address), port


def make_resolver(servers: Sequence[Tuple[str, int]], reactor, timeout: float = QUERY_TIMEOUT) -> TcpResolver:
    """Twisted's DNS client asking ``servers``, or the ones in ``/etc/resolv.conf`` if none, over TCP.

    No cache and no ``/etc/hosts`` (as Prometheus' dns_sd): every refresh asks
    the server, so a change is seen on the next refresh. ``/etc/resolv.conf``'s
    ``search`` domains are not applied: names are fully qualified.
    """
    if servers:
        resolver = client.Resolver(servers=list(servers), reactor=reactor)
    else:
        resolver = client.Resolver(resolv="/etc/resolv.conf", reactor=reactor)
    return TcpResolver(resolver, reactor, timeout)


class TcpResolver:
    """A/AAAA/SRV lookups over one TCP connection per refresh, to the server Twisted's client picks.

    TCP, not UDP, because a headless Service of more than a few dozen pods
    answers more than a UDP answer holds (Twisted's client sends no EDNS), so
    over UDP most lookups would be asked twice; because Twisted's UDP client
    binds, and logs, a socket per query, thousands of log lines per refresh
    for a large SRV name; and because a forged answer would need the
    connection's handshake. ``client.Resolver`` still picks the server (in
    turn, from ``--dns-server`` or ``/etc/resolv.conf``) and judges each
    answer (``filterAnswers``); ``dns.DNSProtocol`` carries the queries,
    matched to answers by id. The first query of a refresh connects, the
    others share that connection, and :meth:`close` ends it after the refresh:
    dnsmasq serves each TCP connection from a child process holding the
    records of the moment it started, so a connection kept open would never
    see a change.
    """

    def __init__(self, resolver: client.Resolver, reactor, timeout: float = QUERY_TIMEOUT) -> None:
        self.resolver = resolver
        self.reactor = reactor
        self.timeout = timeout
        self._connection: Optional[defer.Deferred] = None
        self._protocols: List[dns.DNSProtocol] = []

    def lookupAddress(self, name: str) -> defer.Deferred:
        return self._query(name, dns.A)

    def lookupIPV6Address(self, name: str) -> defer.Deferred:
        return self._query(name, dns.AAAA)

    def lookupService(self, name: str) -> defer.Deferred:
        return self._query(name, dns.SRV)

    def _query(self, name: str, kind: int) -> defer.Deferred:
        """``(answers, authority, additional)``, or a failure (a DNS error, a timeout, a refused connection)."""
        if self._connection is None:
            self._connection = self._connect()
        connected = _share(self._connection)
        connected.addCallback(lambda protocol: protocol.query([dns.Query(name, kind, dns.IN)], self.timeout))
        return connected.addCallback(self.resolver.filterAnswers)

    def _connect(self) -> defer.Deferred:
        host, port = self.resolver.pickServer()
        endpoint_type = endpoints.TCP6ClientEndpoint if ":" in host else endpoints.TCP4ClientEndpoint
        endpoint = endpoint_type(self.reactor, host, port, timeout=max(1, int(self.timeout)))
        factory = protocol.Factory.forProtocol(lambda: dns.DNSProtocol(self, reactor=self.reactor))
        factory.noisy = False
        return endpoint.connect(factory)

    def close(self) -> None:
        """End this refresh's connection: the next query connects again."""
        # Detach first: cancelling fails the queries waiting on the connection, and
        # their errbacks may call close() again.
        connecting, self._connection = self._connection, None
        if connecting is not None:
            connecting.addErrback(lambda failure: None)  # every query has seen it
            if not connecting.called:
                connecting.cancel()  # stopped while connecting: give up the attempt
        for connection in self._protocols:
            if connection.transport is not None:
                connection.transport.loseConnection()

    # the controller dns.DNSProtocol reports to
    def connectionMade(self, connection: dns.DNSProtocol) -> None:
        self._protocols.append(connection)

    def connectionLost(self, connection: dns.DNSProtocol) -> None:
        if connection in self._protocols:
            self._protocols.remove(connection)

    def messageReceived(self, message: dns.Message, connection: dns.DNSProtocol) -> None:
        """An answer to no query of ours (one that timed out): nothing to do."""


def _share(shared: defer.Deferred) -> defer.Deferred:
    """A Deferred firing with ``shared``'s result, which ``shared`` keeps for the next one."""
    copy: defer.Deferred = defer.Deferred()

    def pass_on(result: object) -> object:
        if isinstance(result, Failure):
            copy.errback(result)
        else:
            copy.callback(result)
        return result

    shared.addBoth(pass_on)
    return copy
