"""How ``https://`` cAdvisors are verified: the one TLS policy of every client.

:func:`client_tls_policy` turns ``--ca-file`` and ``--insecure-skip-verify``
into an ``IPolicyForHTTPS`` that the followers and ``/proxy`` share: the
system's trust store by default, a PEM bundle instead of it, or, only when
asked for explicitly, no verification at all. Either way the server name is
sent (SNI) and, when verifying, checked against the certificate. This module
never connects: :mod:`cadvisor_events.httpclients` applies the policy.
"""

from __future__ import annotations

import re
from typing import Optional

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from .addresses import is_ip_literal

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
        if not is_ip_literal(self._hostname):
            connection.set_tlsext_host_name(self._hostname.encode("idna"))
        return connection
