"""Who ``/proxy`` may ask: the ``--proxy-allow`` list, checked before anything connects.

Without a list ``/proxy`` is an open relay (any host and port reachable from
this process), which is what the Go seed does and why the service warns at
startup. With one, a target is admitted when its host is an allowed name
(compared case-insensitively, never resolved) or when it is an address, or a
name all of whose addresses are, inside an allowed network. A name is
resolved once, here, and the connection then goes to the addresses that were
checked and to no others: a DNS answer that changes between the check and the
connect (DNS rebinding) cannot reach anything that was not checked. The
request still carries the name (``Host`` header, TLS SNI and certificate
check), so name-based virtual hosts and certificates keep working. This
module never connects to anything itself.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable, Iterable, Sequence, Tuple, Union

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IResolutionReceiver
from zope.interface import implementer

from .addresses import is_ip_literal
from .cadvisor import CAdvisorClient, Target, UpstreamError

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: A DNS name: dot-separated labels of letters, digits, ``-`` and ``_``.
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
                        r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$")


@attrs.frozen
class AllowList:
    """Networks and exact host names ``/proxy`` may reach; empty means anything."""

    networks: Tuple[Network, ...] = ()
    names: frozenset = frozenset()

    @property
    def open(self) -> bool:
        return not self.networks and not self.names

    def allows_address(self, text: str) -> bool:
        """Whether the address ``text`` lies in an allowed network.

        An IPv4-mapped IPv6 address (``::ffff:10.0.0.1``) also counts as its
        IPv4 address; a zone (``fe80::1%eth0``) is ignored.
        """
        address = ipaddress.ip_address(text.split("%", 1)[0])
        candidates = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(
            a in network for a in candidates for network in self.networks if a.version == network.version
        )

    def describe(self) -> str:
        return ", ".join([str(n) for n in self.networks] + sorted(self.names))


def parse_allow(values: Iterable[str]) -> AllowList:
    """An :class:`AllowList` from ``--proxy-allow`` values: CIDRs, addresses or host names.

    :raises ValueError: naming the value that is neither.
    """
    networks, names = [], set()
    for value in values:
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        if "/" in text or ":" in text or re.fullmatch(r"[0-9.]+", text):
            try:
                networks.append(ipaddress.ip_network(text))
            except ValueError as e:
                raise ValueError(f"--proxy-allow {value!r}: not a network ({e})") from None
        elif _HOST_NAME.match(text):
            names.add(text.lower())
        else:
            raise ValueError(
                f"--proxy-allow {value!r}: not a CIDR (10.0.0.0/8), an address or a host name"
                " (wildcards are not supported)"
            )
    return AllowList(networks=tuple(networks), names=frozenset(names))


class Refused(Exception):
    """A ``/proxy`` target outside ``--proxy-allow``; the message says which address and why."""


Resolve = Callable[[str, int], "defer.Deferred[Sequence[str]]"]


class ProxyAccess:
    """Admits ``/proxy`` targets and hands out the client to fetch each one with.

    ``resolve(host, port)`` fires with every address of a name (the reactor's
    resolver by default: :func:`resolver`); ``pinned_client(addresses)``
    makes a client whose connections go only to those addresses (in the
    service: :func:`cadvisor_events.httpclients.pinned_http_client`).
    """

    def __init__(
        self, allow: AllowList, *, resolve: Resolve, pinned_client: Callable[[Tuple[str, ...]], CAdvisorClient]
    ) -> None:
        self.allow = allow
        self._resolve = resolve
        self._pinned_client = pinned_client

    def admit(self, target: Target, client: CAdvisorClient) -> defer.Deferred:
        """Fire with the client to fetch ``target`` with, before anything connects.

        ``client`` itself when no name has to be pinned (open list, an allowed
        name, an allowed address literal); else a pinned client.

        :raises Refused: (as the failure) for a target outside the list.
        :raises UpstreamError: ``dns`` for a name without addresses.
        """
        host = target.host
        if self.allow.open or host.lower() in self.allow.names:
            return defer.succeed(client)
        if is_ip_literal(host):
            if self.allow.allows_address(host):
                return defer.succeed(client)
            return defer.fail(Refused(f"{target.base_url} is not allowed: {host} is outside --proxy-allow"))
        resolving = self._resolve(host, target.port)

        def decide(addresses: Sequence[str]) -> CAdvisorClient:
            unique = tuple(dict.fromkeys(addresses))
            if not unique:
                raise UpstreamError("dns", f"{target.base_url}: host name does not resolve")
            outside = [a for a in unique if not self.allow.allows_address(a)]
            if outside:
                raise Refused(
                    f"{target.base_url} is not allowed: {host} resolves to {', '.join(outside)},"
                    " outside --proxy-allow"
                )
            return self._pinned_client(unique)

        return resolving.addCallback(decide)


def resolver(reactor) -> Resolve:
    """``resolve(host, port)`` on the reactor's own name resolver (getaddrinfo in a thread)."""

    def resolve(host: str, port: int) -> defer.Deferred:
        done: defer.Deferred = defer.Deferred()
        addresses: list = []

        @implementer(IResolutionReceiver)
        class Receiver:
            def resolutionBegan(self, resolution) -> None:
                pass

            def addressResolved(self, address) -> None:
                addresses.append(address.host)

            def resolutionComplete(self) -> None:
                if not done.called:  # a cancelled (timed out) request no longer waits
                    done.callback(addresses)

        reactor.nameResolver.resolveHostName(Receiver(), host, port)
        return done

    return resolve
