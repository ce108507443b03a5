"""Helpers shared by the test modules (no test module imports another).

One place for what more than one test module uses: :func:`until`, the one
bounded poll for real I/O; event lines and timestamps as cAdvisor writes them
(:func:`ts`, :func:`event`, ``A``..``G``); :class:`FollowerTestCase`, one
follower on a ``task.Clock`` with the fake client of
:mod:`cadvisor_events.testing`; simulators and the exporter's parts on
loopback (:class:`Hosts`, :class:`Healthy`, :class:`Rig`); a fleet view of
fake followers and the resource tree over it (:class:`FakeFleet`,
:class:`WebFixture`); self-signed certificates (:func:`self_signed`); a real DNS
server whose records change (:class:`Dnsmasq`). The soak's chaos engine is
:mod:`tests.chaos`.

Longer than ~400 lines on purpose: every helper shared by test modules lives
here, grouped by job, so that no test module imports another.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import sys
import time
from typing import Callable, Dict, List, Optional

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.application.internet import backoffPolicy
from twisted.internet import defer, reactor, ssl, task, tcp
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from cadvisor_events.cadvisor import CAdvisorClient, Target, parse_target
from cadvisor_events.counters import EventCounters
from cadvisor_events.event import CountingKey, Event, EventData, OomKill, counting_key, decode_event
from cadvisor_events.event import format_timestamp, timestamp_ns
from cadvisor_events.fleet import FleetService
from cadvisor_events.follower import Follower
from cadvisor_events.httpclients import stream_http_client
from cadvisor_events.selfmetrics import FleetMetrics
from cadvisor_events.simulator import Simulator
from cadvisor_events.targets import TargetSpec
from cadvisor_events.testing import CountingSink, FakeClient, FakeResponse
from cadvisor_events.web import build_root

log = Logger()


# -- waiting for real I/O -------------------------------------------------------------------


@defer.inlineCallbacks
def until(predicate: Callable[[], object], what: str, timeout: float = 20.0, *, interval: float = 0.01,
          detail: Optional[Callable[[], str]] = None):
    """Poll ``predicate`` while real I/O happens, every ``interval`` seconds; fire with its
    first true value. ``predicate`` may return a Deferred (a fetch over HTTP).

    :raises FailTest: after ``timeout`` seconds, saying what was awaited (``what``), and
        ``detail()`` when given (the state that did not come right).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = yield defer.maybeDeferred(predicate)
        if value:
            return value
        if time.monotonic() > deadline:
            raise unittest.FailTest(f"timed out after {timeout:g} s waiting for {what}"
                                    + (f": {detail()}" if detail is not None else ""))
        yield task.deferLater(reactor, interval, lambda: None)


# -- events as cAdvisor writes them ---------------------------------------------------------


TARGET = Target("cadvisor.example", 8080)
NO_JITTER = backoffPolicy(initialDelay=1.0, maxDelay=30.0, factor=2.0, jitter=lambda: 0)


def ts(second: int, nanos: int = 0, zone: str = "-03:00") -> str:
    """A Go RFC 3339 timestamp (trailing zeros trimmed) ``second`` seconds after a base."""
    base = datetime.datetime(2026, 11, 24, 17, 0, 0) + datetime.timedelta(seconds=second)
    frac = ("." + ("%09d" % nanos).rstrip("0")) if nanos else ""
    return base.strftime("%Y-%m-%dT%H:%M:%S") + frac + zone


def before(timestamp: str, seconds: float) -> str:
    """The ``start_time`` a backfill sends: ``seconds`` before ``timestamp``, in UTC."""
    return format_timestamp(timestamp_ns(timestamp) - int(seconds * 1e9))


def event(container: str, event_type: str, timestamp: str, process: str = None, pid: int = None) -> bytes:
    """One event's JSON, as cAdvisor writes it."""
    doc = {"container_name": container, "timestamp": timestamp, "event_type": event_type, "event_data": {}}
    if process is not None:
        doc["event_data"] = {"oom": {"pid": pid or 1, "process_name": process}}
    return msgspec.json.encode(doc)


def key(line: bytes) -> CountingKey:
    """The counting key of one event line."""
    return counting_key(decode_event(line))


A = event("/docker/a", "containerCreation", ts(1))
B = event("/docker/a", "oom", ts(2, 500))
C = event("/docker/a", "oomKill", ts(2, 500), "java", 42)
D = event("/docker/b", "containerDeletion", ts(3, 123456789))
E = event("/docker/b", "containerCreation", ts(4, 1))
F = event("/docker/c", "oom", ts(5))
G = event("/docker/c", "oomKill", ts(5), "node", 7)

#: A real cAdvisor line: an OOM kill with every field it writes.
OOM_KILL = (
    b'{"container_name":"/kubepods/burstable/pod1f/3c9","timestamp":"2026-11-24T17:25:55.873677656-03:00",'
    b'"event_type":"oomKill","event_data":{"oom":{"pid":23081,"process_name":"java","constraint":"CONSTRAINT_MEMCG"}}}'
)


def spec(text: str, **labels: str) -> TargetSpec:
    """A target spec from a ``--target`` value and labels."""
    return TargetSpec(target=parse_target(text), labels=labels)


# -- one follower, time from task.Clock, cAdvisor the fake client ------------------------------


class Turns:
    """A reactor's ``callLater(0, ...)`` as a :class:`~cadvisor_events.backfills.BackfillQueue`
    uses it: each :meth:`turn` runs what was scheduled before it began (``task.Clock.advance``
    would also run what those schedule, all in one "turn")."""

    def __init__(self) -> None:
        self.scheduled: list = []

    def callLater(self, delay, f, *args):
        call = task.DelayedCall(0, f, args, {}, lambda c: self.scheduled.remove(c), lambda c: None)
        self.scheduled.append(call)
        return call

    def turn(self) -> None:
        calls, self.scheduled = self.scheduled, []
        for call in calls:
            call.called = 1
            call.func(*call.args)


def one_step_per_turn() -> Callable[[], float]:
    """A queue's ``now`` under which each reactor turn runs one step (with a slice under 1)."""
    ticks = iter(range(1 << 62))
    return lambda: float(next(ticks))


class FollowerTestCase(unittest.TestCase):
    """``make()`` starts a follower of :data:`TARGET` on ``self.clock`` with ``self.client`` (a
    :class:`~cadvisor_events.testing.FakeClient`) counting into ``self.counters``."""

    def make(self, **kwargs) -> Follower:
        self.clock = task.Clock()
        self.client = FakeClient()
        self.counters = CountingSink()
        kwargs.setdefault("backoff", NO_JITTER)
        self.follower = Follower(kwargs.pop("target", TARGET), client=self.client, counters=self.counters,
                                 clock=self.clock, **kwargs)
        self.follower.startService()
        self.addCleanup(self._stop)
        return self.follower

    def _stop(self):
        if self.follower.running:
            d = self.follower.stopService()
            for response in self.client.responses:
                if response.protocol is not None:
                    response.reset()
            return d

    def up(self, *history_lines: bytes) -> FakeResponse:
        """Connect now: accept the stream and answer the backfill."""
        self.clock.advance(0)
        response = self.client.accept()
        if self.follower.state == "backfilling":
            self.client.answer_history(*history_lines)
        self.assertEqual(self.follower.state, "up")
        return response

    def reconnect_delay(self) -> float:
        (call,) = self.clock.getDelayedCalls()
        return call.getTime() - self.clock.seconds()


# -- simulators and the exporter on loopback ------------------------------------------------


#: A GET /metrics must answer within this, whatever the hostile hosts do.
SCRAPE_BUDGET = 0.5


def http_client() -> HTTPClient:
    """A client that leaves no connection behind (trial checks the reactor is clean)."""
    return HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))


def figures(test: unittest.TestCase, **values) -> None:
    """Log a test's measurements (in _trial_temp/test.log) for the record."""
    text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    log.info("figures {test}: {text}", test=test.id().rsplit(".", 1)[-1], text=text)


def rss() -> Optional[int]:
    """This process's resident set size in bytes (Linux), or None."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def transport_of(proto):
    """A server protocol's transport (twisted.web wraps its HTTP channel in a proxy without one)."""
    return getattr(proto, "transport", None) or getattr(getattr(proto, "_channel", None), "transport", None)


def track(factory, test: unittest.TestCase):
    """Remember ``factory``'s live connections; at cleanup abort them and wait until all are gone
    (trial wants no socket left behind)."""
    live: Dict[int, tuple] = {}
    build = factory.buildProtocol

    def buildProtocol(addr):
        proto = build(addr)
        lost = defer.Deferred()
        original = proto.connectionLost

        def connectionLost(reason=None):
            live.pop(id(proto), None)
            try:
                original(reason)
            finally:
                lost.callback(None)

        proto.connectionLost = connectionLost
        live[id(proto)] = (proto, lost)
        return proto

    factory.buildProtocol = buildProtocol

    @defer.inlineCallbacks
    def close():
        waits = []
        for proto, lost in list(live.values()):
            waits.append(lost)
            if transport_of(proto) is not None:
                transport_of(proto).abortConnection()
        yield defer.gatherResults(waits)

    test.addCleanup(close)
    return live


class Hosts:
    """N simulators, each on its own loopback port."""

    def __init__(self, count: int) -> None:
        self.sims = [Simulator(clock=reactor, seed=i, containers=30) for i in range(count)]
        self.ports = [
            reactor.listenTCP(0, Site(sim.resource), interface="127.0.0.1") for sim in self.sims
        ]
        self.names = [f"127.0.0.1:{port.getHost().port}" for port in self.ports]

    def by_name(self):
        return dict(zip(self.names, self.sims))

    @defer.inlineCallbacks
    def stop(self):
        for sim in self.sims:
            sim.stop_emitting()
            sim.cut_streams()
        yield defer.gatherResults([port.stopListening() for port in self.ports])


class Healthy:
    """A healthy simulator host on its own loopback port (the one that must be counted exactly)."""

    def __init__(self, test: unittest.TestCase, seed: int = 1) -> None:
        self.sim = Simulator(clock=reactor, seed=seed, containers=20)
        site = Site(self.sim.resource)
        track(site, test)
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.name = f"127.0.0.1:{self.port.getHost().port}"

        def stop():
            self.sim.stop_emitting()
            self.sim.cut_streams()
            return self.port.stopListening()

        test.addCleanup(stop)


class Rig:
    """The exporter's parts as tap.makeService wires them: one fleet of real followers with the
    real stream client, the counters, and the real resource tree serving /metrics on loopback."""

    def __init__(self, test: unittest.TestCase, clock=reactor, **follower_options) -> None:
        self.clock = clock
        self.counters = EventCounters(reactor)
        client = CAdvisorClient(reactor, http=stream_http_client(reactor))

        def make_follower(spec, first_delay):
            return self.follower_class(spec.target, client=client, counters=self.counters.host(spec.name),
                                       clock=clock, first_delay=first_delay, **follower_options)

        self.follower_class = Follower
        self.fleet = FleetService(make_follower, clock=clock)
        root = build_root(registry=CollectorRegistry(), counters=self.counters,
                          fleet_metrics=FleetMetrics(self.fleet, self.counters), fleet=self.fleet,
                          proxy=Resource())
        site = Site(root)
        self.web_connections = track(site, test)
        self.web = reactor.listenTCP(0, site, interface="127.0.0.1")
        test.addCleanup(self.web.stopListening)
        self.url = f"http://127.0.0.1:{self.web.getHost().port}/metrics"
        self.scraper = http_client()
        self.latencies: List[float] = []
        self._test = test
        self._scraping: Optional[defer.Deferred] = None
        self._scrape_on = False
        test.addCleanup(self.stop)  # runs before the servers' cleanups: streams closed first

    def follow(self, *names: str) -> None:
        self.fleet.set_targets([TargetSpec(target=parse_target(name)) for name in names])
        if not self.fleet.running:
            self.fleet.startService()

    def __getitem__(self, name: str) -> Follower:
        return self.fleet.followers[name]

    def counts(self, name: str) -> dict:
        host = self.counters.hosts.get(name)
        return host.values() if host is not None else {}

    @defer.inlineCallbacks
    def scrape(self, parse: bool = True):
        """One real GET /metrics; its latency is recorded; returns the parsed families."""
        started = time.monotonic()
        response = yield self.scraper.get(self.url)
        body = yield response.content()
        self.latencies.append(time.monotonic() - started)
        assert response.code == 200, response.code
        if parse:
            return {f.name: f for f in text_string_to_metric_families(body.decode("utf-8"))}

    def start_scraping(self, interval: float = 0.02) -> None:
        """Scrape /metrics in the background, one GET at a time, until :meth:`stop_scraping`."""
        self._scrape_on = True
        self._scraping = self._scrape_loop(interval)
        self._test.addCleanup(self.stop_scraping)

    @defer.inlineCallbacks
    def _scrape_loop(self, interval: float):
        for _ in range(100_000):  # bounded; stops when told
            if not self._scrape_on:
                return
            yield self.scrape(parse=False)
            yield task.deferLater(reactor, interval, lambda: None)

    def stop_scraping(self):
        self._scrape_on = False
        running, self._scraping = self._scraping, None
        return running

    @staticmethod
    def sample(families, family: str, host: str, **labels) -> float:
        for sample in families[family].samples:
            if sample.labels.get("host") == host and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
        return 0.0

    def stop(self):
        if self.fleet.running:
            return self.fleet.stopService()


def counted(rig: Rig, healthy: Healthy) -> Callable[[], bool]:
    """Whether ``rig`` counted exactly what ``healthy`` emitted."""
    return lambda: rig.counts(healthy.name) == dict(healthy.sim.ground_truth())


# -- a fleet view of fake followers, and the resource tree over it -------------------------


class FakeFollower:
    """A :class:`~cadvisor_events.interfaces.HostStatus` with fixed figures: up, or down after
    failures; keyword arguments set any attribute to another value."""

    def __init__(self, name, up=True, tried=True, **values):
        self.target = parse_target(name)
        self.state = "up" if up else "down"
        self.up = up
        self.tried = tried
        self.state_since = 1_700_000_000.0
        self.received = 7
        self.invalid_lines = 2
        self.connects = 3
        self.failures = {"refused": 1, "eof": 2} if not up else {}
        self.backfilled = 4
        self.duplicates_dropped = 1
        self.gaps = 0 if up else 2
        self.future_events = 0
        self.dedup_evicted = {"window": 0, "oom": 1 if up else 0}
        self.last_event_time = 1_700_000_001.5 if up else None
        self.last_error = None if up else "http://b:1: connection refused"
        vars(self).update(values)


class FakeSpec:
    """A target spec: only its labels."""

    def __init__(self, labels):
        self.labels = labels


class FakeFleet:
    """A :class:`~cadvisor_events.interfaces.FleetView` of ``followers`` (labels by host name)."""

    def __init__(self, followers, labels=None):
        self.followers = {f.target.name: f for f in followers}
        self.specs = {name: FakeSpec((labels or {}).get(name, ())) for name in self.followers}


class FakeWatcher:
    """A targets-file watcher whose last reload failed."""

    last_reload_successful = False
    last_reload_success_time = 1_700_000_000.0


class Leaf(Resource):
    """Stands in for /proxy."""

    isLeaf = True

    def render_GET(self, request):
        return b"proxy here"


class WebFixture(unittest.TestCase):
    """A resource tree over fake followers and real counters, queried through StubTreq."""

    def setUp(self):
        self.clock = Clock()
        self.counters = EventCounters(self.clock)
        self.fleet = FakeFleet(
            [FakeFollower("https://user:pw@a:1"), FakeFollower("b:1", up=False, tried=True)],
            labels={"a:1": (("cluster", "eu"),)},
        )
        host = self.counters.host("a:1", (("cluster", "eu"),))
        host.count(
            Event(
                container_name="/docker/1",
                timestamp="2026-11-24T17:25:55Z",
                event_type="oomKill",
                event_data=EventData(oom=OomKill(pid=1, process_name='ja"va')),
            )
        )
        self.registry = CollectorRegistry()
        Counter("cadvisor_events_proxy_requests", "x", ["code"], registry=self.registry).labels("200").inc()
        self.root = build_root(
            registry=self.registry,
            counters=self.counters,
            fleet_metrics=FleetMetrics(self.fleet, self.counters, FakeWatcher()),
            fleet=self.fleet,
            proxy=Leaf(),
        )
        self.http = StubTreq(self.root)

    def get(self, path, method="GET", headers=None):
        response = self.successResultOf(self.http.request(method, "http://x" + path, headers=headers))
        body = self.successResultOf(response.content())
        return response, body


# -- certificates ---------------------------------------------------------------------------


def self_signed(directory: str, names=("localhost",), addresses=("127.0.0.1", "::1")):
    """Write ``key.pem`` and ``cert.pem`` (self-signed, valid now) into ``directory``; return their paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path = os.path.join(directory, "key.pem")
    cert_path = os.path.join(directory, "cert.pem")
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def server_options(key_path: str, cert_path: str):
    """Server TLS options from the files :func:`self_signed` wrote."""
    with open(key_path, "rb") as k, open(cert_path, "rb") as c:
        return ssl.PrivateCertificate.loadPEM(k.read() + c.read()).options()


# -- a real DNS server: dnsmasq on loopback (tests of dnsclient and dnstargets) -------------


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port free for both UDP and TCP now (dnsmasq listens on both)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            with socket.socket(family, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free loopback port")


class Dnsmasq:
    """dnsmasq in the foreground, on a high loopback port, answering for ``test.`` from a hosts file.

    ``set_hosts`` rewrites the file and sends SIGHUP (dnsmasq re-reads it); names under
    ``test.`` it does not know are NXDOMAIN (``--local``). SRV records are fixed at start.
    ``local`` names the domains answered that way (a cluster's ``cluster.local`` too).
    """

    def __init__(self, test: unittest.TestCase, hosts: str, *srv_hosts: str, listen: str = "127.0.0.1",
                 local: tuple = ("test",)) -> None:
        binary = shutil.which("dnsmasq") or next(
            (p for p in ("/usr/sbin/dnsmasq", "/sbin/dnsmasq") if os.path.exists(p)), None)
        if binary is None:
            raise unittest.SkipTest(
                "NOT TESTED AGAINST A REAL DNS SERVER: dnsmasq is not installed "
                "(apt-get install dnsmasq-base; .ci/run installs it)")
        directory = tempfile.mkdtemp()
        test.addCleanup(shutil.rmtree, directory, True)
        self.hosts_path = os.path.join(directory, "hosts")
        self.log_path = os.path.join(directory, "dnsmasq.log")
        self.port = free_port(listen)
        self._write(hosts)
        # --keep-in-foreground, not --no-daemon: that debug mode answers TCP in the main process,
        # one connection at a time, where a real dnsmasq forks a child per connection.
        argv = [binary, "--keep-in-foreground", "--log-facility=-", "--no-resolv", "--no-hosts",
                "--pid-file=", "--log-queries",
                f"--port={self.port}", f"--listen-address={listen}", "--bind-interfaces",
                f"--addn-hosts={self.hosts_path}", *(f"--local=/{domain}/" for domain in local),
                "--user=" + _user()]
        argv += [f"--srv-host={record}" for record in srv_hosts]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        test.addCleanup(self.stop)

    def _write(self, text: str) -> None:
        temporary = self.hosts_path + ".new"
        with open(temporary, "w") as f:
            f.write(text)
        os.replace(temporary, self.hosts_path)

    def set_hosts(self, text: str) -> None:
        self._write(text)
        self.process.send_signal(signal.SIGHUP)

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        self.process.wait(10)


def connections_to(server: Dnsmasq) -> list:
    """The reactor's open TCP connections to ``server``."""
    return [reader for reader in reactor.getReaders()
            if isinstance(reader, tcp.Client) and reader.getPeer().port == server.port]


def _user() -> str:
    """The user dnsmasq runs as: ourselves (it drops to ``nobody`` by default, as root)."""
    return pwd.getpwuid(os.getuid()).pw_name


def parse_exporter_options(*argv: str, env: Optional[Dict[str, str]] = None,
                           hostname: Optional[str] = None):
    """``tap.Options`` parsed from ``argv`` with exactly ``env``'s CADVISOR_EVENTS_* variables
    (none of the test process's), on host ``hostname`` when given (for ``--shard auto``)."""
    from cadvisor_events import tap

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(tap.ENV_PREFIX)}
    os.environ.update(env or {})
    try:
        options = tap.Options()
        if hostname is not None:
            options.hostname = lambda: hostname  # type: ignore[method-assign]
        options.parseOptions(list(argv))
        return options
    finally:
        for key in [k for k in os.environ if k.startswith(tap.ENV_PREFIX)]:
            del os.environ[key]
        os.environ.update(saved)


def fleet_of(up: int, down: int, connecting: int = 0) -> "FakeFleet":
    """A fake fleet: ``up`` hosts up, ``down`` refusing connections, ``connecting`` never tried;
    alternately labelled zone=us / zone=eu."""
    followers = [FakeFollower(f"up-{i:05d}:8080") for i in range(up)]
    followers += [FakeFollower(f"down-{i:05d}:8080", up=False,
                               last_error=f"http://down-{i:05d}:8080: connection refused") for i in range(down)]
    followers += [FakeFollower(f"new-{i:05d}:8080", up=False, state="connecting", last_error=None)
                  for i in range(connecting)]
    labels = {f.target.name: (("zone", "eu" if i % 2 else "us"),) for i, f in enumerate(followers)}
    return FakeFleet(followers, labels)


#: The checkout: child processes run the package from it.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: ``twistd`` in the foreground, logging text to stdout, run by this interpreter (the
#: console script may not be on PATH).
TWISTD = ("-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "--logfile=-")


def exporter_command(listen: str, *args: str, runner=TWISTD, env=None):
    """``(argv, environment)`` that start ``cadvisor-events`` on ``listen`` as a user does,
    from the checkout, with no CADVISOR_EVENTS_* variable but ``env``'s."""
    argv = [sys.executable, *runner, "cadvisor-events", "--listen", listen, *args]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CADVISOR_EVENTS_")}
    environ["PYTHONPATH"] = REPO + os.pathsep + environ.get("PYTHONPATH", "")
    environ.update(env or {})
    return argv, environ
