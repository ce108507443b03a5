"""Tests for cadvisor_events.tap: options, environment variables, the service it makes."""

import json
import os

from treq.client import HTTPClient
from twisted.application.service import IService, MultiService
from twisted.internet import defer, endpoints, protocol, reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial import unittest
from twisted.web import resource, server
from twisted.web.client import Agent, HTTPConnectionPool

from cadvisor_events import auth, tap
from cadvisor_events.auth import hash_password
from cadvisor_events.cadvisor import parse_target
from cadvisor_events.clienttls import UnverifiedPolicyForHTTPS, client_tls_policy
from cadvisor_events.enrich import HostEnricher

from .support import http_client, parse_exporter_options, self_signed, server_options, until


class OptionsTests(unittest.TestCase):
    def test_defaults(self):
        options = parse_exporter_options()
        self.assertEqual(options["listen"], ["tcp:8888"])
        self.assertEqual(options["target"], [])
        self.assertEqual(options["series-ttl"], 3600.0)
        self.assertEqual(options["max-series"], 1_000_000)
        self.assertEqual(options["shard"], (0, 1))
        self.assertEqual(options["proxy-default"], parse_target("127.0.0.1:9094"))
        self.assertEqual(options["upstream-timeout"], 30.0)
        self.assertEqual(options["max-clock-skew"], 300.0)
        self.assertFalse(options["oom-only"])
        self.assertFalse(options["demo"])
        self.assertEqual(tap.static_specs(options)[0].target, parse_target("127.0.0.1:8080"))

    def test_repeatable(self):
        directory = self.mktemp()
        os.makedirs(directory)
        key, cert = self_signed(directory)  # an ssl: endpoint reads its files while parsing
        ssl = f"ssl:2:privateKey={key}:certKey={cert}"
        options = parse_exporter_options(
            "--listen", "tcp:1", "--listen", ssl,
            "--target", "a:1", "--target", "https://b:2",
        )
        self.assertEqual(options["listen"], ["tcp:1", ssl])
        self.assertEqual([t.name for t in options["target"]], ["a:1", "b:2"])
        self.assertEqual([s.target.name for s in tap.static_specs(options)], ["a:1", "b:2"])

    def test_values(self):
        options = parse_exporter_options(
            "--oom-only", "--series-ttl", "0", "--max-series", "5", "--shard", "2/3",
            "--proxy-default", "h", "--upstream-timeout", "1.5", "--no-history-seed",
            "--max-clock-skew", "0",
        )
        self.assertEqual(options["max-clock-skew"], 0.0)
        self.assertTrue(options["oom-only"])
        self.assertTrue(options["no-history-seed"])
        self.assertEqual(options["series-ttl"], 0.0)
        self.assertEqual(options["max-series"], 5)
        self.assertEqual(options["shard"], (2, 3))
        self.assertEqual(options["proxy-default"].name, "h:9094")
        self.assertEqual(options["upstream-timeout"], 1.5)

    def test_no_default_target_with_a_file_or_demo(self):
        self.assertEqual(tap.static_specs(parse_exporter_options("--targets-file", "/nonexistent.json")), [])
        self.assertEqual(tap.static_specs(parse_exporter_options("--demo")), [])

    def test_bad_values_are_usage_errors(self):
        for argv, words in [
            (["--target", "ftp://x"], "scheme"),
            (["--target", "x:99999"], "out of range"),
            (["--series-ttl", "soon"], "number of seconds"),
            (["--series-ttl", "-1"], "negative"),
            (["--max-series", "0"], "at least 1"),
            (["--max-series", "lots"], "whole number"),
            (["--shard", "3/3"], "shard"),
            (["--shard", "x"], "shard"),
            (["--proxy-default", "http://"], "proxy-default"),
            (["--upstream-timeout", "x"], "number"),
            (["--max-clock-skew", "-5"], "negative"),
            (["--bogus"], "bogus"),
        ]:
            with self.assertRaises(usage.UsageError, msg=argv) as e:
                parse_exporter_options(*argv)
            self.assertIn(words, str(e.exception), argv)

    def test_environment(self):
        options = parse_exporter_options(
            env={
                "CADVISOR_EVENTS_TARGET": "a:1, b:2",
                "CADVISOR_EVENTS_LISTEN": "tcp:9",
                "CADVISOR_EVENTS_SERIES_TTL": "60",
                "CADVISOR_EVENTS_OOM_ONLY": "true",
                "CADVISOR_EVENTS_SHARD": "1/2",
            }
        )
        self.assertEqual([t.name for t in options["target"]], ["a:1", "b:2"])
        self.assertEqual(options["listen"], ["tcp:9"])
        self.assertEqual(options["series-ttl"], 60.0)
        self.assertTrue(options["oom-only"])
        self.assertEqual(options["shard"], (1, 2))

    def test_command_line_beats_environment(self):
        options = parse_exporter_options(
            "--target", "c:3", "--series-ttl", "5",
            env={"CADVISOR_EVENTS_TARGET": "a:1", "CADVISOR_EVENTS_SERIES_TTL": "60"},
        )
        self.assertEqual([t.name for t in options["target"]], ["c:3"])
        self.assertEqual(options["series-ttl"], 5.0)

    def test_bad_environment_value_is_a_usage_error(self):
        with self.assertRaises(usage.UsageError):
            parse_exporter_options(env={"CADVISOR_EVENTS_MAX_SERIES": "many"})

    def test_listen_shorthands(self):
        options = parse_exporter_options("--listen", "9100", "--listen", ":9101", "--listen", "127.0.0.1:9102",
                        "--listen", "[::1]:9103", "--listen", "unix:/tmp/x.sock")
        self.assertEqual(options["listen"], ["tcp:9100", "tcp:9101", "tcp:9102:interface=127.0.0.1",
                                             r"tcp6:9103:interface=\:\:1", "unix:/tmp/x.sock"])

    def test_bad_listen_is_a_usage_error_naming_it(self):
        missing = os.path.abspath(self.mktemp())
        for value, words in [
            ("carrier-pigeon:1", "Unknown endpoint type"),
            ("tcp:9100:bogus=1", "bogus"),
            ("tcp:x", "invalid literal"),
            (f"ssl:8443:privateKey={missing}", "No such file"),
            ("localhost:9100", "IP:PORT"),
            (":70000", "0 to 65535"),
            ("300.1.1.1:80", "not an IP address"),
        ]:
            with self.assertRaises(usage.UsageError, msg=value) as e:
                parse_exporter_options("--listen", value)
            self.assertIn(f"--listen {value!r}", str(e.exception))
            self.assertIn(words, str(e.exception), value)

    def test_listen_from_the_environment(self):
        options = parse_exporter_options(env={"CADVISOR_EVENTS_LISTEN": ":9100, [::1]:9101, tcp:9102"})
        self.assertEqual(options["listen"], ["tcp:9100", r"tcp6:9101:interface=\:\:1", "tcp:9102"])
        self.assertEqual(parse_exporter_options("--listen", "1", env={"CADVISOR_EVENTS_LISTEN": ":9100"})["listen"], ["tcp:1"])
        with self.assertRaises(usage.UsageError) as e:
            parse_exporter_options(env={"CADVISOR_EVENTS_LISTEN": "tcp:9100, carrier-pigeon:1"})
        self.assertIn("--listen 'carrier-pigeon:1'", str(e.exception))

    TIME_OPTIONS = ("series-ttl", "upstream-timeout", "connect-timeout", "max-clock-skew", "backfill-overlap")

    def test_time_options_take_durations(self):
        for text, value in [("90s", 90.0), ("5m", 300.0), ("1h30m", 5400.0), ("1d", 86400.0),
                            ("1w", 604800.0), ("500ms", 0.5), ("1.5", 1.5), ("2", 2.0)]:
            argv = [arg for name in self.TIME_OPTIONS for arg in (f"--{name}", text)]
            options = parse_exporter_options(*argv)
            self.assertEqual([options[name] for name in self.TIME_OPTIONS], [value] * 5, text)

    def test_time_options_take_durations_from_the_environment(self):
        env = {tap.ENV_PREFIX + name.upper().replace("-", "_"): "1h30m" for name in self.TIME_OPTIONS}
        options = parse_exporter_options(env=env)
        self.assertEqual([options[name] for name in self.TIME_OPTIONS], [5400.0] * 5)
        self.assertEqual(parse_exporter_options("--series-ttl", "90s", env=env)["series-ttl"], 90.0)

    def test_bad_durations_name_the_option(self):
        for name in self.TIME_OPTIONS:
            for text, words in [("5m1h", "largest to the smallest"), ("-5m", "cannot be negative"),
                                ("", "number of seconds"), ("soon", "number of seconds"),
                                ("5M", "number of seconds")]:
                for how in ("command line", "environment"):
                    with self.assertRaises(usage.UsageError, msg=(name, text, how)) as e:
                        if how == "command line":
                            parse_exporter_options(f"--{name}", text)
                        else:
                            parse_exporter_options(env={tap.ENV_PREFIX + name.upper().replace("-", "_"): text})
                    self.assertIn(f"--{name} ", str(e.exception))
                    self.assertIn(words, str(e.exception), (name, text, how))


class MakeServiceTests(unittest.TestCase):
    def test_wires_listeners_and_followers(self):
        reactor = MemoryReactorClock()
        options = parse_exporter_options("--listen", "tcp:0:interface=127.0.0.1", "--target", "127.0.0.1:1")
        service = tap.makeService(options, reactor=reactor)
        self.assertIsInstance(service, MultiService)
        service.startService()
        try:
            self.assertEqual([port[0] for port in reactor.tcpServers], [0])
            fleets = [s for s in service if hasattr(s, "followers")]
            self.assertEqual(len(fleets), 1)
            self.assertEqual(list(fleets[0].followers), ["127.0.0.1:1"])
            follower = fleets[0].followers["127.0.0.1:1"]
            self.assertTrue(IService.providedBy(follower))
            self.assertEqual(follower.max_clock_skew, 300.0)
        finally:
            service.stopService()

    def test_listen_shorthands_listen_where_they_say(self):
        reactor = MemoryReactorClock()
        options = parse_exporter_options("--listen", ":9100", "--listen", "127.0.0.1:9101", "--listen", "[::1]:9102",
                        "--target", "127.0.0.1:1")
        service = tap.makeService(options, reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual([(port[0], port[3]) for port in reactor.tcpServers],
                         [(9100, ""), (9101, "127.0.0.1"), (9102, "::1")])

    def test_backfill_overlap_reaches_every_follower(self):
        options = parse_exporter_options("--listen", "tcp:0:interface=127.0.0.1", "--target", "127.0.0.1:1",
                        "--backfill-overlap", "250ms")
        service = tap.makeService(options, reactor=MemoryReactorClock())
        service.startService()
        self.addCleanup(service.stopService)
        (fleet,) = [s for s in service if hasattr(s, "followers")]
        self.assertEqual(fleet.followers["127.0.0.1:1"].backfill_overlap, 0.25)

    def test_max_clock_skew_zero_trusts_every_timestamp(self):
        options = parse_exporter_options("--listen", "tcp:0:interface=127.0.0.1", "--target", "127.0.0.1:1",
                        "--max-clock-skew", "0")
        service = tap.makeService(options, reactor=MemoryReactorClock())
        service.startService()
        self.addCleanup(service.stopService)
        (fleet,) = [s for s in service if hasattr(s, "followers")]
        self.assertIsNone(fleet.followers["127.0.0.1:1"].max_clock_skew)


def write(test, text: str) -> str:
    path = test.mktemp()
    with open(path, "w") as f:
        f.write(text)
    return path


class SecurityOptionsTests(unittest.TestCase):
    def test_defaults(self):
        options = parse_exporter_options()
        self.assertTrue(options["proxy-allow"].open)
        self.assertFalse(options["no-proxy"])
        self.assertFalse(options["insecure-skip-verify"])
        self.assertIsNone(options["ca-file"])
        self.assertIsNone(options["auth-users"])
        self.assertEqual(options["proxy-concurrency"], 4)
        self.assertEqual(options["max-history-bytes"], 256 * 1024 * 1024)

    def test_values(self):
        directory = self.mktemp()
        os.makedirs(directory)
        _, cert = self_signed(directory)
        line = f"alice:{hash_password('pw', iterations=10_000)}\n"
        options = parse_exporter_options(
            "--proxy-allow", "10.0.0.0/8", "--proxy-allow", "cadvisor.local", "--ca-file", cert,
            "--auth-file", write(self, line), "--proxy-concurrency", "9", "--max-history-bytes", "64MiB",
            "--no-proxy",
        )
        self.assertEqual(options["proxy-allow"].describe(), "10.0.0.0/8, cadvisor.local")
        self.assertEqual(list(options["auth-users"]), ["alice"])
        self.assertEqual(options["proxy-concurrency"], 9)
        self.assertEqual(options["max-history-bytes"], 64 << 20)
        self.assertTrue(options["no-proxy"])
        self.assertIsInstance(parse_exporter_options("--insecure-skip-verify")["tls-policy"], UnverifiedPolicyForHTTPS)

    def test_environment(self):
        line = f"alice:{hash_password('pw', iterations=10_000)}\n"
        options = parse_exporter_options(env={
            "CADVISOR_EVENTS_PROXY_ALLOW": "10.0.0.0/8, fd00::/8",
            "CADVISOR_EVENTS_NO_PROXY": "1",
            "CADVISOR_EVENTS_INSECURE_SKIP_VERIFY": "true",
            "CADVISOR_EVENTS_AUTH_FILE": write(self, line),
            "CADVISOR_EVENTS_PROXY_CONCURRENCY": "2",
            "CADVISOR_EVENTS_MAX_HISTORY_BYTES": "1GiB",
        })
        self.assertEqual(options["proxy-allow"].describe(), "10.0.0.0/8, fd00::/8")
        self.assertTrue(options["no-proxy"] and options["insecure-skip-verify"])
        self.assertEqual(list(options["auth-users"]), ["alice"])
        self.assertEqual((options["proxy-concurrency"], options["max-history-bytes"]), (2, 1 << 30))
        self.assertEqual(
            parse_exporter_options("--proxy-allow", "h", env={"CADVISOR_EVENTS_PROXY_ALLOW": "10.0.0.0/8"})["proxy-allow"].describe(),
            "h",
        )

    def test_bad_values_are_usage_errors(self):
        missing = self.mktemp()
        for argv, words in [
            (["--proxy-allow", "10.0.0.0/33"], "not a network"),
            (["--proxy-allow", "*.x"], "wildcards"),
            (["--ca-file", missing], "cannot read CA file"),
            (["--ca-file", write(self, "junk")], "no PEM certificate"),
            (["--ca-file", write(self, "junk"), "--insecure-skip-verify"], "--insecure-skip-verify"),
            (["--auth-file", missing], "cannot read auth file"),
            (["--auth-file", write(self, "alice\n")], "expected user:hash"),
            (["--auth-file", write(self, "alice:$2b$12$" + "a" * 53 + "\n")], "bcrypt"),
            (["--proxy-concurrency", "0"], "at least 1"),
            (["--proxy-concurrency", "many"], "whole number"),
            (["--web-max-requests", "-1"], "--web-max-requests cannot be negative"),
            (["--web-max-requests", "many"], "--web-max-requests takes a whole number"),
            (["--max-history-bytes", "lots"], "size in bytes"),
            (["--max-history-bytes", "0"], "at least 1 byte"),
        ]:
            self.patch(auth, "bcrypt", None)
            with self.assertRaises(usage.UsageError, msg=argv) as e:
                parse_exporter_options(*argv)
            self.assertIn(words, str(e.exception), argv)


class RunningService:
    """``makeService`` on the real reactor, listening on a loopback port (TLS if asked)."""

    def __init__(self, test: unittest.TestCase, *argv: str, listen: str = "tcp:0:interface=127.0.0.1") -> None:
        self.events: list = []
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        empty = write(test, "[]")
        options = parse_exporter_options("--listen", listen, "--targets-file", empty, *argv)
        self.service = tap.makeService(options, reactor=reactor)
        self.service.startService()
        test.addCleanup(self.service.stopService)
        (listener,) = [s for s in self.service if hasattr(s, "endpoint")]
        # Read the port without consuming the Deferred's result: stopService needs it.
        self.port = None
        listener._waitingForPort.addCallback(self._keep_port)

    def _keep_port(self, port):
        self.port = port.getHost().port  # a loopback listen happens at once
        return port

    def log_text(self) -> str:
        """Every log event so far, formatted, with its fields and any traceback."""
        parts = []
        for event in self.events:
            parts.append(formatEvent(event) or "")
            parts.append(repr({k: v for k, v in event.items() if k != "log_failure"}))
            if event.get("log_failure") is not None:
                parts.append(event["log_failure"].getTraceback())
        return "\n".join(parts)


class ServiceWiringTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def get(self, service, path, http=None, scheme="http", **kwargs):
        response = yield (http or http_client()).get(f"{scheme}://127.0.0.1:{service.port}{path}", **kwargs)
        body = yield response.content()
        return response.code, body

    @defer.inlineCallbacks
    def test_open_proxy_warns(self):
        service = RunningService(self)
        self.assertIn("/proxy is open", service.log_text())
        code, body = yield self.get(service, "/proxy/127.0.0.1:1")
        self.assertEqual(code, 502)

    @defer.inlineCallbacks
    def test_no_proxy_is_404(self):
        service = RunningService(self, "--no-proxy")
        self.assertNotIn("/proxy is open", service.log_text())
        code, body = yield self.get(service, "/proxy/127.0.0.1:1")
        self.assertEqual(code, 404)

    @defer.inlineCallbacks
    def test_allow_list_refuses_before_connecting(self):
        service = RunningService(self, "--proxy-allow", "10.0.0.0/8")
        self.assertNotIn("/proxy is open", service.log_text())
        self.assertIn("/proxy fetches only from: 10.0.0.0/8", service.log_text())
        code, body = yield self.get(service, "/proxy/http://user:s3cret@127.0.0.1:1")
        self.assertEqual((code, body), (403, b"/proxy refused: http://127.0.0.1:1 is not allowed: "
                                              b"127.0.0.1 is outside --proxy-allow\n"))
        code, body = yield self.get(service, "/metrics")
        self.assertIn(b'cadvisor_events_proxy_requests_total{code="403"} 1.0', body)

    @defer.inlineCallbacks
    def test_serves_on_a_listen_shorthand(self):
        service = RunningService(self, listen="127.0.0.1:0")
        self.assertEqual((yield self.get(service, "/-/healthy")), (200, b"ok\n"))

    def test_insecure_skip_verify_warns(self):
        service = RunningService(self, "--insecure-skip-verify")
        self.assertIn("NOT verified", service.log_text())

    @defer.inlineCallbacks
    def test_auth_file(self):
        line = f"alice:{hash_password('wonderland', iterations=10_000)}\n"
        service = RunningService(self, "--auth-file", write(self, line))
        self.assertEqual((yield self.get(service, "/metrics"))[0], 401)
        self.assertEqual((yield self.get(service, "/-/healthy"))[0], 200)
        code, body = yield self.get(service, "/metrics", auth=("alice", "wonderland"))
        self.assertEqual(code, 200)
        self.assertIn(b"cadvisor_events_targets 0\n", body)

    def test_followers_get_the_history_limit(self):
        reactor_ = MemoryReactorClock()
        options = parse_exporter_options("--listen", "tcp:0", "--target", "127.0.0.1:1", "--max-history-bytes", "1MiB")
        service = tap.makeService(options, reactor=reactor_)
        service.startService()
        self.addCleanup(service.stopService)
        (fleet,) = [s for s in service if hasattr(s, "followers")]
        self.assertEqual(fleet.followers["127.0.0.1:1"].max_history_bytes, 1 << 20)

    @defer.inlineCallbacks
    def test_serves_metrics_over_tls(self):
        directory = self.mktemp()
        os.makedirs(directory)
        key, cert = self_signed(directory)
        service = RunningService(self, listen=f"ssl:0:privateKey={key}:certKey={cert}:interface=127.0.0.1")
        http = HTTPClient(Agent(reactor, contextFactory=client_tls_policy(ca_file=cert),
                                pool=HTTPConnectionPool(reactor, persistent=False)))
        code, body = yield self.get(service, "/metrics", http=http, scheme="https")
        self.assertEqual(code, 200)
        self.assertIn(b"cadvisor_events_targets 0\n", body)
        with self.assertRaises(Exception):  # the same server over plain HTTP: no answer
            yield self.get(service, "/metrics", http=http_client())


class RawClient(protocol.Protocol):
    """Sends raw bytes, collects the answer until the server closes (or the test times out)."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = b""
        self.closed: defer.Deferred = defer.Deferred()

    def connectionMade(self):
        self.transport.write(self.request)

    def dataReceived(self, data):
        self.received += data
        if b"\r\n\r\n" in self.received and not self.received.startswith(b"HTTP/1.1 2"):
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.closed.callback(self.received)


class RequestLimitTests(unittest.TestCase):
    """twisted.web's HTTPChannel bounds request lines and headers (16 KiB); the service survives."""

    timeout = 30

    @defer.inlineCallbacks
    def send(self, port: int, request: bytes) -> bytes:
        client = RawClient(request)
        yield endpoints.connectProtocol(
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        answer = yield client.closed
        return answer

    @defer.inlineCallbacks
    def test_oversized_request_line_and_header(self):
        service = RunningService(self)
        for request in [
            b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100 * 1024 + b"\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Many: a\r\n" * 1000 + b"\r\n",
        ]:
            answer = yield self.send(service.port, request)
            self.assertTrue(answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:100])
            code, body = yield ServiceWiringTests.get(self, service, "/-/healthy")
            self.assertEqual((code, body), (200, b"ok\n"))


class Answer(resource.Resource):
    isLeaf = True

    def __init__(self, code: int, body: bytes) -> None:
        super().__init__()
        self.code, self.body = code, body

    def render_GET(self, request):
        request.setResponseCode(self.code)
        return self.body


class CredentialTests(unittest.TestCase):
    """Credentials in target URLs never reach labels, logs, /targets, the page or /proxy errors."""

    timeout = 30
    SECRET = "s3cret-pw"

    def listen(self, site, tls=None) -> int:
        if tls:
            port = reactor.listenSSL(0, site, tls, interface="127.0.0.1")
        else:
            port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @defer.inlineCallbacks
    def test_nowhere(self):
        directory = self.mktemp()
        os.makedirs(directory)
        tls_port = self.listen(server.Site(Answer(200, b"[]")), server_options(*self_signed(directory)))
        status_port = self.listen(server.Site(Answer(500, b"internal error")))
        dead = reactor.listenTCP(0, server.Site(Answer(200, b"")), interface="127.0.0.1")
        dead_port = dead.getHost().port
        yield dead.stopListening()
        urls = [f"https://user:{self.SECRET}@127.0.0.1:{tls_port}",
                f"http://user:{self.SECRET}@127.0.0.1:{status_port}",
                f"http://user:{self.SECRET}@127.0.0.1:{dead_port}"]
        argv = ["--proxy-allow", "127.0.0.0/8"]
        for url in urls:
            argv += ["--target", url]
        service = RunningService(self, *argv)
        get = lambda path: ServiceWiringTests.get(self, service, path)  # noqa: E731

        answers = []

        def every_follower_failed(answer):
            answers.append(answer[1])
            return all(t["last_error"] for t in json.loads(answer[1])["targets"])

        yield until(lambda: get("/targets").addCallback(every_follower_failed), "every follower to fail once",
                    interval=0.05, detail=lambda: answers[-1].decode() if answers else "")
        body = answers[-1]
        targets = json.loads(body)["targets"]
        self.assertEqual(
            sorted(t["failures"] and next(iter(t["failures"])) for t in targets), ["refused", "status", "tls"]
        )
        seen = [body]
        for path in ["/", "/metrics"] + [f"/proxy/{url}" for url in urls] + [
            f"/proxy/http://user:{self.SECRET}@10.0.0.1:1",
            f"/proxy?url=http://user:{self.SECRET}@127.0.0.1:{status_port}",
        ]:
            code, body = yield get(path)
            seen.append(body)
        self.assertEqual([len(b) > 0 for b in seen], [True] * len(seen))
        self.assertIn(b'host="127.0.0.1:%d"' % status_port, seen[2])
        self.assertIn(b"TLS handshake failed", seen[3])
        self.assertIn(b"HTTP 500", seen[4])
        self.assertIn(b"connection refused", seen[5])
        self.assertIn(b"/proxy refused", seen[6])
        for body in seen:
            self.assertNotIn(self.SECRET.encode(), body)
        self.assertNotIn(self.SECRET, service.log_text())
        self.assertIn("/proxy upstream", service.log_text())  # the log did see the failures


class DiscoveryAndShardOptionsTests(unittest.TestCase):
    """--target-dns, --dns-server, --dns-refresh, --shard auto and --shards as options."""

    def test_dns_options(self):
        options = parse_exporter_options("--target-dns", "cadvisor.monitoring.svc.cluster.local",
                        "--target-dns", "_http._tcp.cadvisor.test", "--dns-server", "10.96.0.10",
                        "--dns-server", "[::1]:5353", "--dns-refresh", "1m")
        self.assertEqual([(n.name, n.port) for n in options["target-dns"]],
                         [("cadvisor.monitoring.svc.cluster.local", 8080), ("_http._tcp.cadvisor.test", None)])
        self.assertEqual(options["dns-server"], [("10.96.0.10", 53), ("::1", 5353)])
        self.assertEqual(options["dns-refresh"], 60.0)
        self.assertEqual(tap.static_specs(options), [])  # DNS is a source: no default target
        self.assertEqual(parse_exporter_options()["dns-refresh"], 30.0)

    def test_dns_options_from_the_environment(self):
        options = parse_exporter_options(env={"CADVISOR_EVENTS_TARGET_DNS": "a.test, b.test:9000",
                             "CADVISOR_EVENTS_DNS_SERVER": "127.0.0.1:5353",
                             "CADVISOR_EVENTS_DNS_REFRESH": "10s"})
        self.assertEqual([(n.name, n.port) for n in options["target-dns"]], [("a.test", 8080), ("b.test", 9000)])
        self.assertEqual(options["dns-server"], [("127.0.0.1", 5353)])
        self.assertEqual(options["dns-refresh"], 10.0)
        options = parse_exporter_options("--target-dns", "c.test", env={"CADVISOR_EVENTS_TARGET_DNS": "a.test"})
        self.assertEqual([n.name for n in options["target-dns"]], ["c.test"])

    def test_bad_dns_options(self):
        for argv, words in [
            (["--target-dns", "10.0.0.1"], "--target-dns '10.0.0.1': 10.0.0.1 is an address"),
            (["--target-dns", "_http._tcp.x.test:80"], "leave out :PORT"),
            (["--target-dns", "a.test", "--target-dns", "A.test:9000"], "--target-dns a.test is given twice"),
            (["--dns-server", "kube-dns"], "--dns-server 'kube-dns': 'kube-dns' is not an IP address"),
            (["--dns-refresh", "0"], "--dns-refresh must be more than 0"),
            (["--dns-refresh", "soon"], "--dns-refresh takes"),
        ]:
            with self.assertRaises(usage.UsageError, msg=argv) as e:
                parse_exporter_options(*argv)
            self.assertIn(words, str(e.exception), argv)

    def test_shard_auto(self):
        self.patch(tap.Options, "hostname", staticmethod(lambda: "cadvisor-events-2"))
        self.assertEqual(parse_exporter_options("--shard", "auto", "--shards", "3")["shard"], (2, 3))
        self.assertEqual(parse_exporter_options(env={"CADVISOR_EVENTS_SHARD": "auto", "CADVISOR_EVENTS_SHARDS": "5"})["shard"],
                         (2, 5))
        self.assertEqual(parse_exporter_options("--shard", "auto", env={"CADVISOR_EVENTS_SHARDS": "4"})["shard"], (2, 4))
        self.assertEqual(parse_exporter_options("--shard", "1/4", "--shards", "4")["shard"], (1, 4))
        for argv, env, words in [
            (["--shard", "auto"], {}, "--shard auto needs --shards N"),
            (["--shard", "auto", "--shards", "2"], {}, "ordinal is 2"),
            (["--shard", "auto", "--shards", "0"], {}, "--shards must be at least 1"),
            (["--shard", "auto"], {"CADVISOR_EVENTS_SHARDS": "two"}, "--shards takes a whole number"),
            (["--shards", "3"], {}, "add --shard auto"),
            (["--shard", "0/2", "--shards", "3"], {}, "--shard 0/2 says 2 shards but --shards says 3"),
        ]:
            with self.assertRaises(usage.UsageError, msg=argv) as e:
                parse_exporter_options(*argv, env=env)
            self.assertIn(words, str(e.exception), argv)
        self.patch(tap.Options, "hostname", staticmethod(lambda: "laptop"))
        with self.assertRaises(usage.UsageError) as e:
            parse_exporter_options("--shard", "auto", "--shards", "3")
        self.assertIn("does not end in -N", str(e.exception))

    def test_makeservice_adds_dns_discovery(self):
        reactor = MemoryReactorClock()
        options = parse_exporter_options("--listen", "tcp:0:interface=127.0.0.1", "--target-dns", "cadvisor.test",
                        "--dns-server", "127.0.0.1:5353")
        from cadvisor_events.dnstargets import DnsTargets

        service = tap.makeService(options, reactor=reactor)
        (dns_targets,) = [s for s in service if isinstance(s, DnsTargets)]
        self.assertEqual([n.name for n in dns_targets.names], ["cadvisor.test"])
        self.assertEqual(dns_targets.refresh_interval, 30.0)
        self.assertEqual(dns_targets.resolver.resolver.servers, [("127.0.0.1", 5353)])


class EnrichmentOptionsTests(unittest.TestCase):
    def test_container_labels_and_no_enrich(self):
        options = parse_exporter_options("--container-label", "app", "--container-label", "app.kubernetes.io/name",
                        "--container-label", "app")
        self.assertEqual((options["container-label"], options["no-enrich"]), (["app", "app.kubernetes.io/name"], 0))
        options = parse_exporter_options("--no-enrich", env={"CADVISOR_EVENTS_CONTAINER_LABEL": "team, tier"})
        self.assertEqual((options["container-label"], options["no-enrich"]), (["team", "tier"], 1))
        self.assertEqual(parse_exporter_options("--container-label", "x", env={"CADVISOR_EVENTS_CONTAINER_LABEL": "y"})["container-label"],
                         ["x"])
        with self.assertRaises(usage.UsageError) as raised:
            parse_exporter_options("--container-label", " ")
        self.assertIn("--container-label", str(raised.exception))

    def follower(self, *argv):
        options = parse_exporter_options("--listen", "tcp:0:interface=127.0.0.1", "--target", "127.0.0.1:1", *argv)
        service = tap.makeService(options, reactor=MemoryReactorClock())
        service.startService()
        self.addCleanup(service.stopService)
        (fleet,) = [s for s in service if hasattr(s, "followers")]
        return fleet.followers["127.0.0.1:1"]

    def test_followers_count_through_an_enricher_with_specs_unless_no_enrich(self):
        enricher = self.follower("--container-label", "team")._counters
        self.assertIsInstance(enricher, HostEnricher)
        self.assertIsNotNone(enricher.specs)
        self.assertEqual(enricher.specs.store.container_labels, ("team",))
        self.assertIsNone(self.follower("--no-enrich")._counters.specs)
