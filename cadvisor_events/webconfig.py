"""``--web-config-file``: the web configuration file Prometheus exporters share
(prometheus/exporter-toolkit's ``docs/web-configuration.md``), parsed, served
and reloaded.

:func:`read_web_config` turns the YAML into a typed, validated
:class:`WebConfig` with exporter-toolkit's keys, defaults and errors (unknown
or repeated keys are errors, as ``yaml.UnmarshalStrict``; relative paths are
relative to the file's directory). :func:`load_web_serving` also reads the
certificates and keys it names and builds what the listeners serve with: a
pyOpenSSL context made by ``twisted.internet.ssl.CertificateOptions``, a
password checker (:class:`cadvisor_events.auth.PasswordFileChecker`, bcrypt)
and the extra headers. :class:`WebConfigWatcher` holds the last good one and
swaps in a new one when the file, or a certificate, key or CA file it names,
changes: every new TLS connection and every request ``stat()``s those files
(microseconds; the exporter-toolkit reads and parses the whole file each
time) and only a change reads them again. A file that breaks keeps the last
good configuration, is logged and counted. Whether the listeners speak TLS is
decided at startup; a reload that would switch is refused.

This module never logs or stores a password or a private key beyond the
objects OpenSSL and bcrypt need, and never echoes a hash in an error.

Longer than ~400 lines on purpose: the file format, its TLS context and its
reloading are one feature whose rules must stay together.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import attr
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from twisted.application import internet, strports
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IReactorTime
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web import resource
from zope.interface import implementer

from .auth import PasswordFileChecker
from .authgate import Answer, AuthGate

log = Logger()

#: exporter-toolkit's TLS version names (``min_version`` defaults to TLS12, ``max_version`` to TLS13).
TLS_VERSIONS: Dict[str, Any] = {
    "TLS10": TLSVersion.TLSv1_0, "TLS11": TLSVersion.TLSv1_1,
    "TLS12": TLSVersion.TLSv1_2, "TLS13": TLSVersion.TLSv1_3,
}
_VERSION_ORDER = ["TLS10", "TLS11", "TLS12", "TLS13"]

#: Go's ``tls.CipherSuites()`` names (the only ones exporter-toolkit takes) for TLS 1.0-1.2,
#: with OpenSSL's name for each (``openssl ciphers -stdname``).
GO_CIPHERS = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
#: TLS 1.3 suites: accepted, and like Go without effect (``cipher_suites`` is for TLS 1.2 and below).
GO_TLS13_CIPHERS = frozenset({"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"})
GO_CURVES = ("CurveP256", "CurveP384", "CurveP521", "X25519")

NO_CLIENT_CERT = "NoClientCert"
#: client_auth_type -> (OpenSSL verify mode, whether the client's chain is verified).
CLIENT_AUTH = {
    NO_CLIENT_CERT: (SSL.VERIFY_NONE, False),
    "RequestClientCert": (SSL.VERIFY_PEER, False),
    "RequireAnyClientCert": (SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, False),
    "VerifyClientCertIfGiven": (SSL.VERIFY_PEER, True),
    "RequireAndVerifyClientCert": (SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, True),
}
_CLIENT_AUTH_ALIASES = {"": NO_CLIENT_CERT, "RequireClientCert": "RequireAnyClientCert"}
_CERT_REQUIRED = ("RequireAnyClientCert", "RequireAndVerifyClientCert")

#: The only headers exporter-toolkit lets the file set, with the values allowed (None: any).
ALLOWED_HEADERS: Dict[str, Optional[Tuple[str, ...]]] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

_KEYS = {
    "": ("tls_server_config", "http_server_config", "rate_limit", "basic_auth_users"),
    "tls_server_config": ("cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type",
                          "client_ca_file", "cipher_suites", "curve_preferences", "min_version",
                          "max_version", "prefer_server_cipher_suites", "client_allowed_sans"),
    "http_server_config": ("http2", "headers"),
    "rate_limit": ("interval", "burst"),
}
_BCRYPT = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class WebConfigError(ValueError):
    """A web config file that cannot be used; the message names the key or file and the problem."""


@attr.s(frozen=True, auto_attribs=True)
class TLSServerConfig:
    """``tls_server_config``, paths already joined with the file's directory."""

    cert: str = ""
    key: str = ""
    client_ca: str = ""
    cert_file: str = ""
    key_file: str = ""
    client_auth_type: str = ""
    client_ca_file: str = ""
    cipher_suites: Tuple[str, ...] = ()
    curve_preferences: Tuple[str, ...] = ()
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    prefer_server_cipher_suites: bool = True
    client_allowed_sans: Optional[Tuple[str, ...]] = None

    @property
    def enabled(self) -> bool:
        """exporter-toolkit's ``IsEnabled``: a certificate, key, client CA or client auth type is set."""
        return any((self.cert_file, self.cert, self.key_file, self.key, self.client_ca_file,
                    self.client_ca, self.client_auth_type))

    @property
    def client_auth(self) -> str:
        """``client_auth_type`` with Go's aliases resolved (empty is NoClientCert)."""
        return _CLIENT_AUTH_ALIASES.get(self.client_auth_type, self.client_auth_type)

    def files(self) -> Tuple[str, ...]:
        return tuple(path for path in (self.cert_file, self.key_file, self.client_ca_file) if path)


@attr.s(frozen=True, auto_attribs=True)
class WebConfig:
    """The whole file; ``tls`` is None when it configures no TLS (plain HTTP)."""

    tls: Optional[TLSServerConfig] = None
    http2: bool = True
    headers: Tuple[Tuple[str, str], ...] = ()
    users: Mapping[str, str] = attr.ib(factory=dict)
    rate_limit_interval: float = 0.0
    rate_limit_burst: int = 0

    def files(self) -> Tuple[str, ...]:
        """The files this configuration names (watched for changes besides the file itself)."""
        return self.tls.files() if self.tls is not None else ()


# -- reading the file ----------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader refusing a key repeated in one mapping, as Go's UnmarshalStrict does."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> Dict[Any, Any]:
    loader.flatten_mapping(node)
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is repeated", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_web_config(path: str) -> WebConfig:
    """The web config in the file ``path`` (only the file itself is read).

    :raises WebConfigError: for an unreadable file, bad YAML, an unknown or
        repeated key, a value of the wrong type or outside what exporter-toolkit
        accepts.
    """
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise WebConfigError(f"cannot read {path!r}: {e.strerror or e}") from None
    return parse_web_config(text, os.path.dirname(os.path.abspath(path)))


def parse_web_config(text: bytes, directory: str = ".") -> WebConfig:
    """:func:`read_web_config` for the file's content; relative paths are joined with ``directory``."""
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise WebConfigError(f"not valid YAML: {e}") from None
    top = _mapping(document, "")
    tls = _tls_config(_mapping(top.get("tls_server_config"), "tls_server_config"), directory)
    http = _mapping(top.get("http_server_config"), "http_server_config")
    rate = _mapping(top.get("rate_limit"), "rate_limit")
    config = WebConfig(
        tls=tls if tls.enabled else None,
        http2=_bool(http.get("http2", True), "http_server_config.http2"),
        headers=_headers(_mapping(http.get("headers"), "http_server_config.headers", known=None)),
        users=_users(_mapping(top.get("basic_auth_users"), "basic_auth_users", known=None)),
        rate_limit_interval=_go_duration(rate.get("interval"), "rate_limit.interval"),
        rate_limit_burst=_int(rate.get("burst", 0), "rate_limit.burst"),
    )
    return config


def _mapping(value: Any, where: str, known: Optional[Iterable[str]] = ()) -> Dict[Any, Any]:
    """``value`` as a dict (None is empty); with ``known`` (default: the section's keys), any other key is an error."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError(f"{where or 'the file'} must be a mapping, not {_kind(value)}")
    names = _KEYS[where] if known == () else known
    if names is not None:
        for key in value:
            if key not in names:
                place = f" in {where}" if where else ""
                raise WebConfigError(f"unknown key {key!r}{place} (exporter-toolkit's keys here: {', '.join(names)})")
    return value


def _kind(value: Any) -> str:
    return {list: "a list", dict: "a mapping", bool: "a boolean"}.get(type(value), repr(value))


def _string(value: Any, where: str) -> str:
    """A YAML scalar as Go's yaml decodes it into a string field (null is empty)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise WebConfigError(f"{where} must be a string, not {_kind(value)}")


def _strings(value: Any, where: str) -> Tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise WebConfigError(f"{where} must be a list, not {_kind(value)}")
    return tuple(_string(item, where) for item in value)


def _bool(value: Any, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise WebConfigError(f"{where} must be true or false, not {value!r}")
    return value


def _int(value: Any, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise WebConfigError(f"{where} must be a whole number, not {value!r}")
    return value


def _go_duration(value: Any, where: str) -> float:
    """Seconds in a Go duration (``1s``, ``1m30s``, ``500ms``; a bare integer is nanoseconds, as in Go)."""
    if value is None:
        return 0.0
    if isinstance(value, int) and not isinstance(value, bool):
        return value * 1e-9
    text = _string(value, where)
    if text in ("0", ""):
        return 0.0
    if not re.fullmatch(f"(?:{_GO_DURATION.pattern})+", text):
        raise WebConfigError(f"{where} must be a Go duration such as 1s, 1m30s or 500ms, not {text!r}")
    return sum(float(number) * _GO_DURATION_UNITS[unit] for number, unit in _GO_DURATION.findall(text))


def _path(value: Any, where: str, directory: str) -> str:
    """exporter-toolkit's ``JoinDir``: a relative path is relative to the web config file's directory."""
    text = _string(value, where)
    return os.path.join(directory, text) if text and not os.path.isabs(text) else text


def _tls_config(section: Dict[str, Any], directory: str) -> TLSServerConfig:
    where = "tls_server_config."
    versions = {}
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        version = _string(section.get(name, default), where + name)
        if version not in TLS_VERSIONS:
            raise WebConfigError(f"{where}{name}: unknown TLS version {version!r} (one of {', '.join(TLS_VERSIONS)})")
        versions[name] = version
    ciphers = _strings(section.get("cipher_suites"), where + "cipher_suites")
    for cipher in ciphers:
        if cipher not in GO_CIPHERS and cipher not in GO_TLS13_CIPHERS:
            raise WebConfigError(f"{where}cipher_suites: unknown cipher {cipher!r} (Go's tls.CipherSuites() names, "
                                 f"such as TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)")
    curves = _strings(section.get("curve_preferences"), where + "curve_preferences")
    for curve in curves:
        if curve not in GO_CURVES:
            raise WebConfigError(f"{where}curve_preferences: unknown curve {curve!r} (one of {', '.join(GO_CURVES)})")
    auth_given = _string(section.get("client_auth_type"), where + "client_auth_type")
    auth = _CLIENT_AUTH_ALIASES.get(auth_given, auth_given)
    sans = section.get("client_allowed_sans")
    config = TLSServerConfig(
        cert=_string(section.get("cert"), where + "cert"),
        key=_string(section.get("key"), where + "key"),
        client_ca=_string(section.get("client_ca"), where + "client_ca"),
        cert_file=_path(section.get("cert_file"), where + "cert_file", directory),
        key_file=_path(section.get("key_file"), where + "key_file", directory),
        client_auth_type=auth_given,
        client_ca_file=_path(section.get("client_ca_file"), where + "client_ca_file", directory),
        cipher_suites=ciphers,
        curve_preferences=curves,
        min_version=versions["min_version"],
        max_version=versions["max_version"],
        prefer_server_cipher_suites=_bool(section.get("prefer_server_cipher_suites", True),
                                          where + "prefer_server_cipher_suites"),
        client_allowed_sans=None if sans is None else _strings(sans, where + "client_allowed_sans"),
    )
    if not config.enabled:
        return config
    if not (config.cert_file or config.cert):
        raise WebConfigError(f"{where[:-1]}: missing one of cert or cert_file")
    if not (config.key_file or config.key):
        raise WebConfigError(f"{where[:-1]}: missing one of key or key_file")
    if auth not in CLIENT_AUTH:
        raise WebConfigError(f"{where}client_auth_type: invalid ClientAuth {auth!r} (one of {', '.join(CLIENT_AUTH)})")
    if (config.client_ca_file or config.client_ca) and auth == NO_CLIENT_CERT:
        raise WebConfigError(f"{where[:-1]}: client CA's have been configured without a Client Auth Policy "
                             "(set client_auth_type, e.g. RequireAndVerifyClientCert)")
    if config.client_allowed_sans is not None and auth not in _CERT_REQUIRED:
        raise WebConfigError(f"{where}client_allowed_sans requires client_auth_type to be one of "
                             f"{' or '.join(_CERT_REQUIRED)}")
    if _VERSION_ORDER.index(config.min_version) > _VERSION_ORDER.index(config.max_version):
        raise WebConfigError(f"{where}min_version {config.min_version} is above max_version {config.max_version}")
    if curves:
        raise WebConfigError(f"{where}curve_preferences is not supported here: pyOpenSSL cannot set a list "
                             "of key exchange groups, so OpenSSL's defaults (X25519, P-256, P-384, ...) "
                             "apply; remove it")
    if ciphers and not any(c in GO_CIPHERS for c in ciphers) and config.min_version != "TLS13":
        raise WebConfigError(f"{where}cipher_suites names only TLS 1.3 suites: TLS 1.2 would have none "
                             "(add TLS 1.2 suites or set min_version: TLS13)")
    return config


def _headers(section: Dict[Any, Any]) -> Tuple[Tuple[str, str], ...]:
    headers = []
    for name, value in section.items():
        name = _string(name, "http_server_config.headers")
        if name not in ALLOWED_HEADERS:
            raise WebConfigError(f"http_server_config.headers: HTTP header {name!r} can not be configured "
                                 f"(only {', '.join(ALLOWED_HEADERS)})")
        value = _string(value, f"http_server_config.headers.{name}")
        allowed = ALLOWED_HEADERS[name]
        if allowed is not None and value not in allowed:
            raise WebConfigError(f"http_server_config.headers: invalid value for {name}. "
                                 f"Expected one of: {', '.join(allowed)}, but got: {value!r}")
        if value:  # "Unset if blank"
            headers.append((name, value))
    return tuple(headers)


def _users(section: Dict[Any, Any]) -> Dict[str, str]:
    users = {}
    for user, stored in section.items():
        user = _string(user, "basic_auth_users")
        stored = _string(stored, f"basic_auth_users.{user}")
        match = _BCRYPT.match(stored)
        if not match or not 4 <= int(match.group(1)) <= 31:
            raise WebConfigError(f"basic_auth_users: user {user!r}: the password must be a bcrypt hash "
                                 "($2y$10$..., as htpasswd -nB makes)")
        users[user] = stored
    return users


# -- what the listeners serve with ---------------------------------------------------------


@attr.s(frozen=True, auto_attribs=True)
class WebServing:
    """One good load of the file: the config and what is built from it."""

    config: WebConfig
    tls: Optional[SSL.Context]
    checker: Optional[PasswordFileChecker]
    headers: Tuple[Tuple[bytes, bytes], ...]


def load_web_serving(path: str, previous: Optional[WebServing] = None) -> WebServing:
    """Read ``path`` and every file it names; build the TLS context, the password checker, the headers.

    A checker for unchanged users is taken from ``previous`` (its cache of verified logins too).

    :raises WebConfigError: as :func:`read_web_config`, or for a certificate,
        key or CA that cannot be read or used.
    """
    return build_web_serving(read_web_config(path), previous)


def build_web_serving(config: WebConfig, previous: Optional[WebServing] = None) -> WebServing:
    """:func:`load_web_serving` for an already parsed ``config``."""
    tls = server_tls_context(config.tls) if config.tls is not None else None
    if previous is not None and previous.config.users == config.users:
        checker = previous.checker
    else:
        checker = PasswordFileChecker(dict(config.users)) if config.users else None
    headers = tuple((name.encode("ascii"), value.encode("utf-8")) for name, value in config.headers)
    return WebServing(config=config, tls=tls, checker=checker, headers=headers)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise WebConfigError(f"tls_server_config.{what}: cannot read {path!r}: {e.strerror or e}") from None


def _certificates(data: bytes, what: str) -> List[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise WebConfigError(f"tls_server_config.{what}: no PEM certificate in it") from None


def server_tls_context(tls: TLSServerConfig) -> SSL.Context:
    """The server's pyOpenSSL context for ``tls``: certificate chain and key, versions, ciphers,
    client certificate policy. Reads the files ``tls`` names.

    :raises WebConfigError: naming the key and file that cannot be read or used.
    """
    cert_what = f"cert_file {tls.cert_file}" if tls.cert_file else "cert"
    key_what = f"key_file {tls.key_file}" if tls.key_file else "key"
    chain = _certificates(_read(tls.cert_file, "cert_file") if tls.cert_file else tls.cert.encode(), cert_what)
    try:
        key = serialization.load_pem_private_key(
            _read(tls.key_file, "key_file") if tls.key_file else tls.key.encode(), password=None)
    except (ValueError, TypeError) as e:
        raise WebConfigError(f"tls_server_config.{key_what}: not a usable PEM private key "
                             f"(encrypted keys are not supported): {e}") from None
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*public) != chain[0].public_key().public_bytes(*public):
        raise WebConfigError(f"tls_server_config: the private key ({key_what}) does not match the "
                             f"certificate ({cert_what})")
    minimum, maximum = TLS_VERSIONS[tls.min_version], TLS_VERSIONS[tls.max_version]
    versions: Dict[str, Any] = {"lowerMaximumSecurityTo": maximum if tls.max_version != "TLS13" else None}
    versions["raiseMinimumTo" if minimum >= TLSVersion.TLSv1_2 else "insecurelyLowerMinimumTo"] = minimum
    ciphers = [GO_CIPHERS[c] for c in tls.cipher_suites if c in GO_CIPHERS]
    try:
        options = CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(key),  # type: ignore[arg-type]
            certificate=crypto.X509.from_cryptography(chain[0]),
            extraCertChain=[crypto.X509.from_cryptography(c) for c in chain[1:]],
            acceptableCiphers=AcceptableCiphers.fromOpenSSLCipherString(":".join(ciphers)) if ciphers else None,
            **versions,
        )
        context = options.getContext()
    except (ValueError, TypeError, SSL.Error) as e:
        raise WebConfigError(f"tls_server_config: OpenSSL refuses it: {e}") from None
    _client_certificates(context, tls)
    return context


def _client_certificates(context: SSL.Context, tls: TLSServerConfig) -> None:
    """Apply ``client_auth_type``, the client CAs and ``client_allowed_sans`` to ``context``."""
    mode, verify_chain = CLIENT_AUTH[tls.client_auth]
    if mode == SSL.VERIFY_NONE:
        return
    if tls.client_ca_file or tls.client_ca:
        what = f"client_ca_file {tls.client_ca_file}" if tls.client_ca_file else "client_ca"
        data = _read(tls.client_ca_file, "client_ca_file") if tls.client_ca_file else tls.client_ca.encode()
        store = context.get_cert_store()
        assert store is not None
        for ca in _certificates(data, what):
            store.add_cert(crypto.X509.from_cryptography(ca))
            context.add_client_ca(crypto.X509.from_cryptography(ca))
    elif verify_chain:
        context.set_default_verify_paths()  # Go verifies against the system's roots without client CAs
    allowed = tls.client_allowed_sans

    def verify(connection, certificate, error, depth: int, ok: int) -> bool:
        ok = ok or not verify_chain
        if ok and depth == 0 and allowed is not None:
            return _has_allowed_san(certificate.to_cryptography(), allowed)
        return bool(ok)

    context.set_verify(mode, verify)


def _has_allowed_san(certificate: x509.Certificate, allowed: Sequence[str]) -> bool:
    """exporter-toolkit's ``VerifyPeerCertificate``: a DNS, e-mail, IP or URI SAN listed exactly."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    values: List[str] = []
    for kind in (x509.DNSName, x509.RFC822Name, x509.UniformResourceIdentifier):
        values.extend(names.get_values_for_type(kind))
    values.extend(str(address) for address in names.get_values_for_type(x509.IPAddress))
    return any(value in allowed for value in values)


# -- reloading -----------------------------------------------------------------------------


def _stat(path: str) -> Optional[Tuple[int, int, int, int]]:
    """What tells a file changed: device, inode (a rename or symlink swap), mtime, size."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class WebConfigWatcher:
    """The current :class:`WebServing` of the file at ``path``, reloaded when it or a file it names changes.

    :meth:`refresh` is called at every new TLS connection and every request.
    ``last_reload_successful``, ``last_reload_success_time`` (``clock``
    seconds) and ``reload_failures`` feed the self-metrics.
    """

    def __init__(self, path: str, serving: WebServing, clock: IReactorTime) -> None:
        self.path = path
        self.serving = serving
        self.clock = clock
        self.serves_tls = serving.tls is not None
        self.last_reload_successful = True
        self.last_reload_success_time: Optional[float] = clock.seconds()
        self.reload_failures = 0
        self._watched = (path,) + serving.config.files()
        self._signature = tuple(_stat(p) for p in self._watched)
        self.tls_creator = ReloadingServerTLS(self) if self.serves_tls else None
        self.limiter = self._limiter(serving.config)

    def refresh(self) -> None:
        """Reload if the file or a file it names changed since the last attempt (a ``stat()`` each otherwise)."""
        seen = tuple(_stat(p) for p in self._watched)
        if seen != self._signature:
            self.reload(seen)

    def reload(self, seen: Optional[Tuple[Any, ...]] = None) -> bool:
        """Read everything again; keep the last good serving if anything is wrong. True when it worked.

        ``seen`` is what the watched files' ``stat()`` said before reading (taken now if not given):
        a failed attempt is not repeated until one of them changes again.
        """
        seen = seen if seen is not None else tuple(_stat(p) for p in self._watched)
        try:
            config = read_web_config(self.path)
        except WebConfigError as e:
            self._signature = seen
            return self._failed(e)
        self._watched = (self.path,) + config.files()
        self._signature = seen[:1] + tuple(_stat(p) for p in self._watched[1:])
        try:
            if (config.tls is not None) != self.serves_tls:
                raise WebConfigError("tls_server_config was added or removed: the listeners serve "
                                     f"{'HTTPS' if self.serves_tls else 'plain HTTP'} since startup; "
                                     "restart the exporter to switch")
            serving = build_web_serving(config, self.serving)
        except WebConfigError as e:
            return self._failed(e)
        except Exception as e:  # a library's surprise must not break the connection that asked
            log.failure("web config {path}: unexpected error while loading", path=self.path)
            return self._failed(WebConfigError(f"{type(e).__name__}: {e}"))
        if serving.config.rate_limit_interval != self.serving.config.rate_limit_interval or \
                serving.config.rate_limit_burst != self.serving.config.rate_limit_burst:
            self.limiter = self._limiter(serving.config)
        self.serving = serving
        self.last_reload_successful = True
        self.last_reload_success_time = self.clock.seconds()
        log.info("web config {path} reloaded", path=self.path)
        return True

    def _failed(self, error: WebConfigError) -> bool:
        self.last_reload_successful = False
        self.reload_failures += 1
        log.error("web config {path} not reloaded, still serving the last good one: {why}",
                  path=self.path, why=str(error))
        return False

    def _limiter(self, config: WebConfig) -> Optional["TokenBucket"]:
        if not config.rate_limit_interval:
            return None
        return TokenBucket(1 / config.rate_limit_interval, config.rate_limit_burst, self.clock)

    def guard(self, root: resource.IResource, healthy: resource.IResource) -> resource.IResource:
        """``root`` behind this file's rate limit, basic auth and headers (``healthy`` stays open)."""
        return WebConfigResource(self, root, AuthGate(root, CurrentUsersChecker(self), healthy=healthy), healthy)

    def listening_service(self, reactor, description: str, factory):
        """A service listening on the endpoint ``description``: TLS with the current context if the file
        configures TLS, else plain (``factory`` as it is)."""
        if self.tls_creator is None:
            return strports.service(description, factory, reactor=reactor)
        endpoint = endpoints.serverFromString(reactor, description)
        return internet.StreamServerEndpointService(endpoint, TLSMemoryBIOFactory(self.tls_creator, False, factory))


@implementer(IOpenSSLServerConnectionCreator)
class ReloadingServerTLS:
    """Each new TLS connection gets the context of the web config's current serving."""

    def __init__(self, watcher: WebConfigWatcher) -> None:
        self.watcher = watcher

    def serverConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        self.watcher.refresh()
        context = self.watcher.serving.tls
        assert context is not None, "a watcher serving TLS keeps a TLS context"
        return SSL.Connection(context, None)


@implementer(ICredentialsChecker)
class CurrentUsersChecker:
    """Checks against the current ``basic_auth_users``; a password bcrypt cannot take (over 72
    bytes) is a refused login, as in Go, not an error."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, watcher: WebConfigWatcher) -> None:
        self.watcher = watcher

    def requestAvatarId(self, credentials) -> defer.Deferred:
        checker = self.watcher.serving.checker
        if checker is None:
            return defer.fail(UnauthorizedLogin("no users"))

        def too_long(failure: Failure):
            failure.trap(ValueError)
            raise UnauthorizedLogin("unauthorized")

        return checker.requestAvatarId(credentials).addErrback(too_long)


class TokenBucket:
    """``rate_limit``: Go's ``rate.Limiter`` (``rate`` tokens a second, at most ``burst`` saved, full at first)."""

    def __init__(self, rate: float, burst: int, clock: IReactorTime) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.last = clock.seconds()

    def allow(self) -> bool:
        now = self.clock.seconds()
        self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


TOO_MANY = Answer(429, "too many requests: over the web config file's rate_limit; retry later")


class WebConfigResource(resource.Resource):
    """In front of the tree: refresh the config, then the rate limit, the headers and basic auth
    (when the file lists users). ``/-/healthy`` skips the rate limit and auth, as with --auth-file."""

    def __init__(self, watcher: WebConfigWatcher, root: resource.IResource, gate: resource.IResource,
                 healthy: resource.IResource) -> None:
        super().__init__()
        self.watcher = watcher
        self.root = root
        self.gate = gate
        self.healthy = healthy

    def getChildWithDefault(self, path: bytes, request):
        chosen = self._serving(request, path == b"-" and request.postpath == [b"healthy"])
        return chosen if chosen is TOO_MANY else chosen.getChildWithDefault(path, request)

    def render(self, request):
        return self._serving(request, False).render(request)

    def _serving(self, request, healthy: bool) -> resource.IResource:
        watcher = self.watcher
        watcher.refresh()
        serving = watcher.serving
        for name, value in serving.headers:
            request.setHeader(name, value)
        if healthy:
            return self.root
        if watcher.limiter is not None and not watcher.limiter.allow():
            return TOO_MANY
        return self.gate if serving.checker is not None else self.root


def describe(config: WebConfig) -> str:
    """One line for the startup log: what the file turns on (never a secret)."""
    parts = []
    if config.tls is not None:
        parts.append(f"TLS {config.tls.min_version}-{config.tls.max_version}, client certificates: "
                     f"{config.tls.client_auth}")
    if config.users:
        parts.append(f"basic auth for {len(config.users)} user(s)")
    if config.headers:
        parts.append("headers " + ", ".join(name for name, _ in config.headers))
    if config.rate_limit_interval:
        parts.append(f"rate limit {1 / config.rate_limit_interval:g}/s, burst {config.rate_limit_burst}")
    return "; ".join(parts) or "nothing (plain HTTP, no auth)"


__all__ = ["WebConfigError", "WebConfig", "TLSServerConfig", "WebServing", "WebConfigWatcher",
           "read_web_config", "parse_web_config", "load_web_serving", "build_web_serving",
           "server_tls_context", "describe"]
