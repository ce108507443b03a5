"""--web-config-file: exporter-toolkit's file format (keys, defaults, errors), what it
builds, its reloads, and the running service driven by real TLS clients.

Certificates are made per test with ``cryptography``: a CA, server and client
certificates it signs, and a second CA nobody trusts. The TLS clients are
Python's ``ssl`` module (``http.client`` over it) in a thread, against the
service ``makeService`` builds, listening on 127.0.0.1.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import os
import socket
import ssl
from typing import Dict, List, Optional, Tuple

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet import defer, reactor, threads
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial import unittest

from cadvisor_events import tap
from cadvisor_events.webconfig import (
    TokenBucket,
    WebConfigError,
    WebConfigWatcher,
    load_web_serving,
    parse_web_config,
)

from .support import parse_exporter_options

PASSWORD = "s3cret-web"


def bcrypt_hash(password: str) -> str:
    """What ``htpasswd -nB`` writes (``$2y$``), at the lowest cost Go accepts, so tests stay fast."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)


def write(path: str, data) -> str:
    """Replace ``path`` atomically (as a certificate rotation or a Kubernetes secret update does)."""
    data = data.encode() if isinstance(data, str) else data
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)
    return path


class PKI:
    """A CA in ``directory`` and the certificates it issues, as PEM files."""

    def __init__(self, directory: str, name: str = "test-ca") -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = write(os.path.join(directory, name + ".pem"), self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, client: bool = False, sans: Tuple[str, ...] = ()) -> Tuple[str, str, int]:
        """Write ``name.key`` and ``name.pem`` (for localhost and 127.0.0.1, or a client); return paths and serial."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        names = [x509.DNSName(s) for s in sans] or [x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        usage_oid = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        serial = x509.random_serial_number()
        cert = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage_oid]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        key_path = write(os.path.join(self.directory, name + ".key"), key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        cert_path = write(os.path.join(self.directory, name + ".pem"), cert.public_bytes(serialization.Encoding.PEM))
        return key_path, cert_path, serial


class ParseTests(unittest.TestCase):
    """The YAML as exporter-toolkit reads it (no file other than the config is read)."""

    def parse(self, text: str, directory: str = "/etc/exporter"):
        return parse_web_config(text.encode(), directory)

    def refused(self, text: str, *words: str) -> str:
        with self.assertRaises(WebConfigError) as e:
            self.parse(text)
        for word in words:
            self.assertIn(word, str(e.exception))
        return str(e.exception)

    def test_empty_file_is_plain_http(self):
        config = self.parse("")
        self.assertIsNone(config.tls)
        self.assertEqual((config.users, config.headers, config.rate_limit_interval), ({}, (), 0.0))

    def test_tls_defaults_and_paths_relative_to_the_file(self):
        config = self.parse("tls_server_config:\n  cert_file: server.crt\n  key_file: /abs/server.key\n")
        tls = config.tls
        self.assertEqual((tls.cert_file, tls.key_file), ("/etc/exporter/server.crt", "/abs/server.key"))
        self.assertEqual((tls.min_version, tls.max_version, tls.client_auth), ("TLS12", "TLS13", "NoClientCert"))
        self.assertTrue(tls.prefer_server_cipher_suites)
        self.assertTrue(config.http2)

    def test_unknown_keys_are_named(self):
        self.refused("tls_server_config:\n  cert_fil: a\n", "'cert_fil'", "tls_server_config")
        self.refused("basic_auth: {}\n", "'basic_auth'", "basic_auth_users")
        self.refused("http_server_config:\n  http3: true\n", "'http3'")
        self.refused("rate_limit:\n  per_second: 3\n", "'per_second'")

    def test_a_repeated_key_is_an_error(self):
        self.refused("tls_server_config:\n  cert_file: a\n  cert_file: b\n", "'cert_file' is repeated")

    def test_not_yaml_or_not_a_mapping(self):
        self.refused("tls_server_config: [\n", "not valid YAML")
        self.refused("- a\n", "must be a mapping")
        self.refused("tls_server_config: yes\n", "tls_server_config must be a mapping")

    def test_certificate_and_key_are_both_needed(self):
        self.refused("tls_server_config:\n  cert_file: a\n", "missing one of key or key_file")
        self.refused("tls_server_config:\n  key_file: a\n", "missing one of cert or cert_file")
        self.refused("tls_server_config:\n  client_auth_type: NoClientCert\n", "missing one of cert")

    def test_client_auth_types(self):
        base = "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_ca_file: ca\n  client_auth_type: "
        for name in ("RequestClientCert", "RequireAnyClientCert", "VerifyClientCertIfGiven",
                     "RequireAndVerifyClientCert"):
            self.assertEqual(self.parse(base + name).tls.client_auth, name)
        self.assertEqual(self.parse(base + "RequireClientCert").tls.client_auth, "RequireAnyClientCert")
        self.refused(base + "Always", "invalid ClientAuth 'Always'")
        self.refused("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_ca_file: ca\n",
                     "client CA's have been configured without a Client Auth Policy")

    def test_allowed_sans_need_a_required_certificate(self):
        base = "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_allowed_sans: [a]\n  client_auth_type: "
        self.assertEqual(self.parse(base + "RequireAnyClientCert").tls.client_allowed_sans, ("a",))
        self.refused(base + "VerifyClientCertIfGiven", "client_allowed_sans requires")

    def test_versions(self):
        base = "tls_server_config:\n  cert_file: c\n  key_file: k\n"
        self.assertEqual(self.parse(base + "  min_version: TLS13\n").tls.min_version, "TLS13")
        self.refused(base + "  min_version: TLS1.2\n", "unknown TLS version 'TLS1.2'")
        self.refused(base + "  min_version: TLS13\n  max_version: TLS12\n", "above max_version")

    def test_cipher_suites_are_go_names(self):
        base = "tls_server_config:\n  cert_file: c\n  key_file: k\n"
        config = self.parse(base + "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n")
        self.assertEqual(len(config.tls.cipher_suites), 2)
        self.refused(base + "  cipher_suites: [ECDHE-ECDSA-AES128-GCM-SHA256]\n", "unknown cipher")
        self.refused(base + "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "only TLS 1.3 suites")
        self.parse(base + "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n  min_version: TLS13\n")

    def test_curves(self):
        base = "tls_server_config:\n  cert_file: c\n  key_file: k\n  curve_preferences: "
        self.refused(base + "[CurveP999]\n", "unknown curve 'CurveP999'")
        self.refused(base + "[X25519, CurveP256]\n", "curve_preferences is not supported")
        self.parse(base + "[]\n")

    def test_headers(self):
        config = self.parse("http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
                            "    X-XSS-Protection: 0\n    Content-Security-Policy: ''\n")
        self.assertEqual(config.headers, (("X-Frame-Options", "deny"), ("X-XSS-Protection", "0")))
        self.refused("http_server_config:\n  headers:\n    Server: x\n", "'Server' can not be configured")
        self.refused("http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                     "invalid value for X-Frame-Options", "deny, sameorigin")
        self.refused("http_server_config:\n  headers:\n    x-frame-options: deny\n", "can not be configured")

    def test_users_need_bcrypt_hashes_and_errors_never_show_them(self):
        hashed = bcrypt_hash(PASSWORD)
        self.assertEqual(self.parse(f"basic_auth_users:\n  alice: {hashed}\n").users, {"alice": hashed})
        message = self.refused("basic_auth_users:\n  bob: $pbkdf2-sha256$600000$c2FsdA$aGFzaA\n",
                               "user 'bob'", "bcrypt")
        self.assertNotIn("pbkdf2", message)
        self.refused(f"basic_auth_users:\n  carol: {hashed[:-1]}\n", "user 'carol'")

    def test_rate_limit(self):
        config = self.parse("rate_limit:\n  interval: 1m30s\n  burst: 20\n")
        self.assertEqual((config.rate_limit_interval, config.rate_limit_burst), (90.0, 20))
        self.assertEqual(self.parse("rate_limit:\n  interval: 500ms\n").rate_limit_interval, 0.5)
        self.refused("rate_limit:\n  interval: 5 minutes\n", "Go duration")
        self.refused("rate_limit:\n  burst: many\n", "whole number")

    def test_http2_and_prefer_server_cipher_suites_are_taken(self):
        config = self.parse("http_server_config:\n  http2: false\ntls_server_config:\n"
                            "  cert_file: c\n  key_file: k\n  prefer_server_cipher_suites: false\n")
        self.assertFalse(config.http2)
        self.refused("http_server_config:\n  http2: maybe\n", "true or false")


class ServingTests(unittest.TestCase):
    """What a file builds: certificates and keys read, checked, and turned into a context."""

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        self.pki = PKI(self.directory)
        self.key, self.cert, _ = self.pki.issue("server")

    def config(self, text: str) -> str:
        return write(os.path.join(self.directory, "web.yml"), text)

    def refused(self, text: str, *words: str) -> None:
        with self.assertRaises(WebConfigError) as e:
            load_web_serving(self.config(text))
        for word in words:
            self.assertIn(word, str(e.exception))

    def test_files_relative_to_the_config(self):
        serving = load_web_serving(self.config("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"))
        self.assertIsInstance(serving.tls, SSL.Context)
        self.assertIsNone(serving.checker)

    def test_inline_certificate_and_key(self):
        with open(self.cert) as c, open(self.key) as k:
            cert, key = c.read(), k.read()
        indent = lambda text: text.replace("\n", "\n    ")  # noqa: E731
        serving = load_web_serving(self.config(f"tls_server_config:\n  cert: |\n    {indent(cert)}\n"
                                               f"  key: |\n    {indent(key)}\n"))
        self.assertIsNotNone(serving.tls)

    def test_unusable_files_are_named(self):
        self.refused("tls_server_config:\n  cert_file: nothing.pem\n  key_file: server.key\n",
                     "cert_file", "nothing.pem", "No such file")
        other_key, _, _ = self.pki.issue("other")
        self.refused(f"tls_server_config:\n  cert_file: server.pem\n  key_file: {other_key}\n", "does not match")
        write(os.path.join(self.directory, "junk.pem"), "not a certificate\n")
        self.refused("tls_server_config:\n  cert_file: junk.pem\n  key_file: server.key\n", "no PEM certificate")
        self.refused("tls_server_config:\n  cert_file: server.pem\n  key_file: junk.pem\n", "key_file", "private key")
        self.refused("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
                     "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: junk.pem\n",
                     "client_ca_file", "no PEM certificate")

    def test_unchanged_users_keep_their_checker(self):
        text = f"basic_auth_users:\n  alice: {bcrypt_hash(PASSWORD)}\n"
        first = load_web_serving(self.config(text))
        self.assertIs(load_web_serving(self.config(text), first).checker, first.checker)
        self.assertIsNot(load_web_serving(self.config(text + f"  bob: {bcrypt_hash('x')}\n"), first).checker,
                         first.checker)


class OptionsTests(unittest.TestCase):
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        self.pki = PKI(self.directory)
        self.pki.issue("server")
        self.path = write(os.path.join(self.directory, "web.yml"),
                          "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n")

    def refused(self, *argv: str) -> str:
        with self.assertRaises(usage.UsageError) as e:
            parse_exporter_options(*argv)
        return str(e.exception)

    def test_a_bad_file_is_a_usage_error_naming_the_option(self):
        bad = write(os.path.join(self.directory, "bad.yml"), "tls_server_config:\n  cert: x\n  keyfile: y\n")
        message = self.refused("--web-config-file", bad)
        self.assertIn("--web-config-file", message)
        self.assertIn("'keyfile'", message)
        self.assertIn("--web-config-file", self.refused("--web-config-file", bad + ".missing"))

    def test_not_with_auth_file_nor_ssl_endpoints(self):
        users = write(os.path.join(self.directory, "users"), f"alice:{bcrypt_hash(PASSWORD)}\n")
        self.assertIn("--auth-file", self.refused("--web-config-file", self.path, "--auth-file", users))
        key, cert = os.path.join(self.directory, "server.key"), os.path.join(self.directory, "server.pem")
        message = self.refused("--web-config-file", self.path, "--listen", f"ssl:0:privateKey={key}:certKey={cert}")
        self.assertIn("tls_server_config", message)

    def test_parsed(self):
        options = parse_exporter_options("--web-config-file", self.path)
        self.assertIsNotNone(options["web-config"].tls)


class WatcherTests(unittest.TestCase):
    """Reloads, driven by file changes and a fake clock (no network)."""

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        self.pki = PKI(self.directory)
        self.pki.issue("server")
        self.path = write(os.path.join(self.directory, "web.yml"),
                          "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n")
        self.clock = Clock()
        self.clock.advance(1000)
        self.watcher = WebConfigWatcher(self.path, load_web_serving(self.path), clock=self.clock)
        self.logged: List[dict] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def test_nothing_changed_nothing_reloaded(self):
        serving = self.watcher.serving
        self.watcher.refresh()
        self.assertIs(self.watcher.serving, serving)

    def test_a_rotated_certificate_is_loaded(self):
        serving = self.watcher.serving
        self.pki.issue("server")
        self.clock.advance(5)
        self.watcher.refresh()
        self.assertIsNot(self.watcher.serving.tls, serving.tls)
        self.assertEqual((self.watcher.last_reload_successful, self.watcher.last_reload_success_time), (True, 1005))

    def test_a_broken_change_keeps_the_last_good_serving(self):
        serving = self.watcher.serving
        write(os.path.join(self.directory, "server.key"), "half a key")
        self.watcher.refresh()
        self.assertIs(self.watcher.serving, serving)
        self.assertEqual((self.watcher.last_reload_successful, self.watcher.reload_failures), (False, 1))
        self.assertTrue(any("not reloaded" in (e.get("log_format") or "") for e in self.logged))
        self.watcher.refresh()  # nothing changed since the failed attempt: not tried (nor counted) again
        self.assertEqual(self.watcher.reload_failures, 1)
        self.pki.issue("server")  # a complete new pair
        self.watcher.refresh()
        self.assertIsNot(self.watcher.serving, serving)
        self.assertTrue(self.watcher.last_reload_successful)

    def test_a_broken_config_file_keeps_the_last_good_serving(self):
        serving = self.watcher.serving
        write(self.path, "tls_server_config:\n  cert_file: server.pem\n  key_fil: server.key\n")
        self.pki.issue("server")  # a file it named changed at the same time
        for _ in range(3):
            self.watcher.refresh()
        self.assertIs(self.watcher.serving, serving)
        self.assertEqual(self.watcher.reload_failures, 1)  # one change, one failure
        write(self.path, "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n")
        self.watcher.refresh()
        self.assertIsNot(self.watcher.serving, serving)
        self.assertEqual((self.watcher.last_reload_successful, self.watcher.reload_failures), (True, 1))

    def test_switching_tls_off_needs_a_restart(self):
        write(self.path, f"basic_auth_users:\n  alice: {bcrypt_hash(PASSWORD)}\n")
        self.watcher.refresh()
        self.assertFalse(self.watcher.last_reload_successful)
        self.assertIsNone(self.watcher.serving.checker)

    def test_token_bucket(self):
        bucket = TokenBucket(rate=1.0, burst=2, clock=self.clock)
        self.assertEqual([bucket.allow() for _ in range(3)], [True, True, False])
        self.clock.advance(1)
        self.assertEqual([bucket.allow(), bucket.allow()], [True, False])


# -- the running service and real TLS clients ----------------------------------------------------


class Answer:
    def __init__(self, status: int, headers: Dict[str, str], body: bytes, peer: Optional[x509.Certificate]):
        self.status, self.headers, self.body, self.peer = status, headers, body, peer


def fetch(port: int, path: str, *, ca: Optional[str], client: Optional[Tuple[str, str]] = None,
          maximum: Optional[ssl.TLSVersion] = None, auth: Optional[Tuple[str, str]] = None) -> Answer:
    """One GET over a new connection (HTTPS when ``ca`` is given), in the calling thread."""
    headers = {"Connection": "close"}
    if auth is not None:
        import base64

        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    if ca is None:
        connection: http.client.HTTPConnection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    else:
        context = ssl.create_default_context(cafile=ca)
        if client is not None:
            context.load_cert_chain(certfile=client[1], keyfile=client[0])
        if maximum is not None:
            context.maximum_version = maximum
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.connect()
        peer = None
        if isinstance(connection.sock, ssl.SSLSocket):
            peer = x509.load_der_x509_certificate(connection.sock.getpeercert(binary_form=True))
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return Answer(response.status, dict(response.getheaders()), response.read(), peer)
    finally:
        connection.close()


class ServiceTests(unittest.TestCase):
    """``makeService`` with --web-config-file on 127.0.0.1, real clients in threads."""

    timeout = 60

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        self.pki = PKI(self.directory)
        self.other_ca = PKI(os.path.join(self.directory, "other"), "untrusted-ca")
        _, _, self.serial = self.pki.issue("server")
        self.config_path = os.path.join(self.directory, "web.yml")

    def start(self, config: str) -> int:
        write(self.config_path, config)
        targets = write(os.path.join(self.directory, "targets.json"), "[]")
        options = parse_exporter_options("--listen", "tcp:0:interface=127.0.0.1", "--targets-file", targets,
                                "--web-config-file", self.config_path)
        service = tap.makeService(options, reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        (listener,) = [s for s in service if hasattr(s, "endpoint")]
        ports: list = []
        listener._waitingForPort.addCallback(lambda port: ports.append(port.getHost().port) or port)
        self.assertTrue(ports, "a loopback listen happens at once")
        return ports[0]

    def get(self, port: int, path: str = "/metrics", **kwargs) -> defer.Deferred:
        kwargs.setdefault("ca", self.pki.cert_path)
        return threads.deferToThread(fetch, port, path, **kwargs)

    @defer.inlineCallbacks
    def refused(self, port: int, **kwargs) -> defer.Deferred:
        """The request fails at the TLS layer; returns what the client saw."""
        try:
            answer = yield self.get(port, **kwargs)
        except (OSError, http.client.HTTPException) as e:
            return f"{type(e).__name__}: {e}"
        self.fail(f"expected a refused connection, got HTTP {answer.status}")

    @defer.inlineCallbacks
    def test_mutual_tls(self):
        port = self.start("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
                          f"  client_ca_file: {self.pki.cert_path}\n  client_auth_type: RequireAndVerifyClientCert\n")
        key, cert, _ = self.pki.issue("scraper", client=True)
        answer = yield self.get(port, client=(key, cert))
        self.assertEqual(answer.status, 200)
        self.assertIn(b"cadvisor_events_web_config_last_reload_successful 1\n", answer.body)
        self.assertEqual(answer.peer.serial_number, self.serial)
        seen = yield self.refused(port)
        self.assertIn("certificate required", seen.lower().replace("_", " "))
        untrusted = self.other_ca.issue("intruder", client=True)[:2]
        seen = yield self.refused(port, client=untrusted)
        self.assertIn("unknown ca", seen.lower().replace("_", " "))

    @defer.inlineCallbacks
    def test_require_any_client_cert_takes_any_certificate(self):
        port = self.start("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
                          "  client_auth_type: RequireAnyClientCert\n")
        untrusted = self.other_ca.issue("anyone", client=True)[:2]
        self.assertEqual((yield self.get(port, client=untrusted)).status, 200)
        yield self.refused(port)

    @defer.inlineCallbacks
    def test_verify_client_cert_if_given(self):
        port = self.start("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
                          f"  client_ca: |\n    {self.ca_pem()}\n"
                          "  client_auth_type: VerifyClientCertIfGiven\n")
        self.assertEqual((yield self.get(port)).status, 200)
        self.assertEqual((yield self.get(port, client=self.pki.issue("scraper", client=True)[:2])).status, 200)
        yield self.refused(port, client=self.other_ca.issue("intruder", client=True)[:2])

    def ca_pem(self) -> str:
        with open(self.pki.cert_path) as f:
            return f.read().strip().replace("\n", "\n    ")

    @defer.inlineCallbacks
    def test_client_allowed_sans(self):
        port = self.start("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
                          f"  client_ca_file: {self.pki.cert_path}\n  client_auth_type: RequireAndVerifyClientCert\n"
                          "  client_allowed_sans: [prometheus.example]\n")
        allowed = self.pki.issue("prometheus", client=True, sans=("prometheus.example",))[:2]
        self.assertEqual((yield self.get(port, client=allowed)).status, 200)
        other = self.pki.issue("grafana", client=True, sans=("grafana.example",))[:2]
        yield self.refused(port, client=other)

    @defer.inlineCallbacks
    def test_tls12_client_refused_under_min_version_tls13(self):
        port = self.start("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
                          "  min_version: TLS13\n")
        seen = yield self.refused(port, maximum=ssl.TLSVersion.TLSv1_2)
        self.assertIn("version", seen.lower())
        self.assertEqual((yield self.get(port)).status, 200)

    @defer.inlineCallbacks
    def test_tls12_cipher_suites(self):
        port = self.start("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
                          "  max_version: TLS12\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n")
        cipher = yield threads.deferToThread(self.negotiated_cipher, port)
        self.assertEqual(cipher, ("ECDHE-ECDSA-AES256-GCM-SHA384", "TLSv1.2"))

    def negotiated_cipher(self, port: int) -> Tuple[str, str]:
        context = ssl.create_default_context(cafile=self.pki.cert_path)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                name, version, _ = tls.cipher()
                return name, version

    @defer.inlineCallbacks
    def test_a_rotated_certificate_is_served_without_restart(self):
        port = self.start("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n")
        self.assertEqual((yield self.get(port)).peer.serial_number, self.serial)
        _, _, rotated = self.pki.issue("server")
        answer = yield self.get(port)
        self.assertEqual(answer.peer.serial_number, rotated)
        self.assertNotEqual(rotated, self.serial)
        self.assertIn(b"cadvisor_events_web_config_reload_failures_total 0\n", answer.body)
        # A broken rotation (a key that is no key) keeps serving the last good certificate.
        write(os.path.join(self.directory, "server.key"), "-----BEGIN PRIVATE KEY-----\nnope\n")
        answer = yield self.get(port)
        self.assertEqual(answer.peer.serial_number, rotated)
        self.assertIn(b"cadvisor_events_web_config_last_reload_successful 0\n", answer.body)
        self.assertIn(b"cadvisor_events_web_config_reload_failures_total 1\n", answer.body)

    @defer.inlineCallbacks
    def test_basic_auth_and_headers_over_tls(self):
        port = self.start("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
                          f"basic_auth_users:\n  alice: {bcrypt_hash(PASSWORD)}\n"
                          "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
                          "    Strict-Transport-Security: max-age=31536000\n")
        wrong = yield self.get(port, auth=("alice", "wrong"))
        self.assertEqual(wrong.status, 401)
        self.assertEqual(wrong.headers.get("X-Frame-Options"), "deny")
        self.assertEqual((yield self.get(port)).status, 401)
        self.assertEqual((yield self.get(port, auth=("mallory", PASSWORD))).status, 401)
        self.assertEqual((yield self.get(port, auth=("alice", "x" * 100))).status, 401)  # beyond bcrypt's 72 bytes
        right = yield self.get(port, auth=("alice", PASSWORD))
        self.assertEqual(right.status, 200)
        self.assertEqual(right.headers.get("Strict-Transport-Security"), "max-age=31536000")
        self.assertIn(b"cadvisor_events_targets 0\n", right.body)
        healthy = yield self.get(port, "/-/healthy")
        self.assertEqual((healthy.status, healthy.headers.get("X-Frame-Options")), (200, "deny"))

    @defer.inlineCallbacks
    def test_plain_http_with_users_changed_on_the_fly(self):
        port = self.start(f"basic_auth_users:\n  alice: {bcrypt_hash(PASSWORD)}\n"
                          "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n")
        self.assertEqual((yield self.get(port, ca=None)).status, 401)
        answer = yield self.get(port, ca=None, auth=("alice", PASSWORD))
        self.assertEqual((answer.status, answer.headers.get("X-Content-Type-Options")), (200, "nosniff"))
        write(self.config_path, f"basic_auth_users:\n  bob: {bcrypt_hash('builder')}\n")
        self.assertEqual((yield self.get(port, ca=None, auth=("alice", PASSWORD))).status, 401)
        self.assertEqual((yield self.get(port, ca=None, auth=("bob", "builder"))).status, 200)
        write(self.config_path, "")
        self.assertEqual((yield self.get(port, ca=None)).status, 200)

    @defer.inlineCallbacks
    def test_rate_limit(self):
        port = self.start("rate_limit:\n  interval: 1h\n  burst: 2\n")
        statuses = []
        for _ in range(3):
            statuses.append((yield self.get(port, "/targets", ca=None)).status)
        self.assertEqual(statuses, [200, 200, 429])
        self.assertEqual((yield self.get(port, "/-/healthy", ca=None)).status, 200)

