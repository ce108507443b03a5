"""Whether a host is an IP address literal: the one rule for it.

A target's host, a URL's host (``[::1]`` in brackets) and a resolved address
all go through :func:`ip_literal`, which decides what connects without DNS,
over IPv4 or IPv6, and which TLS connection gets no server name (SNI takes
names only). One rule, so the followers, ``/proxy`` and ``--proxy-allow``
never disagree on what an address is. This module never resolves a name.
"""

from __future__ import annotations

import ipaddress
from typing import Optional, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def ip_literal(host: str) -> Optional[IPAddress]:
    """The address ``host`` spells (``10.0.0.1``, ``::1``, ``[::1]``, ``fe80::1%eth0``), or None for a name."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_ip_literal(host: str) -> bool:
    """Whether ``host`` is an IPv4/IPv6 literal (no DNS needed)."""
    return ip_literal(host) is not None
