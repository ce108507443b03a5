"""End-to-end tests: the running service against the simulator, over loopback.

Two kinds. In-process: the real fleet, followers, client and counters in this
test's reactor against simulators on 127.0.0.1 (fast backoff injected), for
the no-loss guarantee. Subprocess: the real ``twistd cadvisor-events`` as a
user starts it, for --demo, the targets file, header timeouts and SIGTERM.
Waiting here is always for real I/O (a bounded poll), never for time to pass.
"""

from __future__ import annotations

import json
import collections
import os
import random
import re
import signal
import socket
import sys

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, protocol, reactor, task
from twisted.trial import unittest
from twisted.web.server import Site

from cadvisor_events import tap
from cadvisor_events.cadvisor import CAdvisorClient, parse_target
from cadvisor_events.counters import EventCounters
from cadvisor_events.fleet import FleetService
from cadvisor_events.follower import Follower
from cadvisor_events.httpclients import stream_http_client
from cadvisor_events.simulator import Simulator
from cadvisor_events.targets import TargetSpec

from .support import REPO, TWISTD, Hosts, exporter_command, free_port, http_client, until



class NoLossTests(unittest.TestCase):
    """Counts equal cAdvisor's ground truth through ends, cuts and downtime."""

    timeout = 120

    @defer.inlineCallbacks
    def test_twenty_hosts_eight_breaks(self):
        hosts = Hosts(20)
        self.addCleanup(hosts.stop)
        # Some history before the exporter starts: seeded on first connect.
        for sim in hosts.sims:
            sim.emit_random(25)
        counters = EventCounters(reactor)
        client = CAdvisorClient(reactor, http=stream_http_client(reactor))

        def make_follower(spec, first_delay):
            return Follower(
                spec.target,
                client=client,
                counters=counters.host(spec.target.name),
                clock=reactor,
                backoff=lambda retries: 0.05,
                first_delay=first_delay,
            )

        fleet = FleetService(make_follower, clock=reactor)
        fleet.set_targets([TargetSpec(target=parse_target(name)) for name in hosts.names])
        fleet.startService()
        self.addCleanup(fleet.stopService)
        followers = list(fleet.followers.values())

        def all_up(connects):
            return lambda: all(f.up and f.connects >= connects and f.state == "up" for f in followers)

        yield until(all_up(1), "every stream up")
        for sim in hosts.sims:
            sim.start_emitting(40)
        rng = random.Random(7)
        for round_ in range(8):
            yield task.deferLater(reactor, 0.1, lambda: None)  # live events flow
            for sim in hosts.sims:
                sim.emit_random(rng.randint(1, 5))
                sim.end_streams() if round_ % 2 else sim.cut_streams()
                # Emitted while this host's stream is down: only history has them.
                sim.emit_random(rng.randint(1, 5))
                # A new OOM kill each round (a kernel does not reuse a pid within a second).
                sim.emit_oom(sim.container_pool[0], 'java "main" <&>', 4242 + round_)
            yield until(all_up(round_ + 2), f"every stream back after break {round_ + 1}")
        for sim in hosts.sims:
            sim.stop_emitting()
            sim.emit_random(3)  # the last events arrive live

        def caught_up():
            return all(
                sum(counters.hosts[name].values().values()) == len(sim.emitted)
                for name, sim in hosts.by_name().items()
            )

        yield until(caught_up, "every event counted")
        for name, sim in hosts.by_name().items():
            expected = dict(sim.ground_truth())
            self.assertEqual(counters.hosts[name].values(), expected, name)
            follower = fleet.followers[name]
            self.assertEqual(follower.failures.get("eof", 0) + follower.failures.get("cut", 0), 8)
            self.assertGreater(follower.backfilled, 25)
        self.assertGreater(sum(len(sim.emitted) for sim in hosts.sims), 20 * 100)


class RestartTests(unittest.TestCase):
    """Counts equal ground truth through cAdvisor restarts that replay OOMs shifted, as real ones do."""

    timeout = 120

    @defer.inlineCallbacks
    def test_five_hosts_restarted_with_shifted_replays_count_every_oom_once(self):
        hosts = Hosts(5)
        self.addCleanup(hosts.stop)
        for sim in hosts.sims:
            sim.emit_random(20)
        counters = EventCounters(reactor)
        client = CAdvisorClient(reactor, http=stream_http_client(reactor))
        fleet = FleetService(
            lambda spec, first_delay: Follower(spec.target, client=client, counters=counters.host(spec.target.name),
                                               clock=reactor, backoff=lambda retries: 0.05, first_delay=first_delay),
            clock=reactor)
        fleet.set_targets([TargetSpec(target=parse_target(name)) for name in hosts.names])
        fleet.startService()
        self.addCleanup(fleet.stopService)
        followers = [fleet.followers[name] for name in hosts.names]

        def exact():
            return all(f.state == "up" and counters.hosts[name].values() == dict(sim.ground_truth())
                       for f, (name, sim) in zip(followers, hosts.by_name().items()))

        yield until(exact, "the seed")
        rng = random.Random(3)
        pid = 1000
        for round_ in range(6):
            for sim in hosts.sims:
                container = sim.container_pool[round_ % 3]
                for _ in range(2):  # OOM kills are the newest events counted
                    pid += 1
                    sim.emit_oom(container, "java", pid)
            yield until(exact, f"the OOMs of round {round_ + 1}")
            for sim in hosts.sims:
                pid += 1
                sim.kernel_oom(sim.container_pool[0], "node", pid)  # while it is down: new
                # Replays into history, or onto the streams the followers open meanwhile.
                sim.restart(replay_delay=None if round_ % 2 else rng.uniform(0.05, 0.3),
                            oom_clock_error=rng.random())
            try:
                yield until(lambda: all(sim.open_streams and not sim.replaying for sim in hosts.sims) and exact(),
                            f"every host back after restart {round_ + 1}")
            except AssertionError:
                self.fail(f"after restart {round_ + 1}: " + "; ".join(
                    f"{name} {f.state}: over {dict(collections.Counter(counters.hosts[name].values()) - sim.ground_truth())}"
                    f" short {dict(sim.ground_truth() - collections.Counter(counters.hosts[name].values()))}"
                    for f, (name, sim) in zip(followers, hosts.by_name().items())))
            for sim in hosts.sims:
                sim.emit_random(3)
            yield until(exact, "live events after the restart")
        for f, sim in zip(followers, hosts.sims):
            self.assertGreater(len(sim.replayed), 20)
            self.assertGreaterEqual(f.duplicates_dropped, len(sim.replayed) // 2)
            self.assertEqual(f.gaps, 6)  # each restart lost the history counted since the last one


class ManyScrapersTests(unittest.TestCase):
    """The service as makeService wires it, in this process, under 41 concurrent scrapers.

    In-process so the test controls when requests reach the reactor: 40 raw HTTP/1.1
    clients connect, are accepted, then send their requests while the reactor waits,
    so one reactor iteration reads them all; they stop reading and, with small socket
    buffers on both sides, their answers stay in flight until they read again.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_forty_scrapes_share_one_render_and_the_41st_gets_503(self):
        sim = Simulator(clock=reactor, seed=3)
        sim.fill_history(8000, containers=8000)  # ~1.5 MB of /metrics
        sim_port = reactor.listenTCP(0, Site(sim.resource), interface="127.0.0.1")
        self.addCleanup(sim_port.stopListening)
        target = f"127.0.0.1:{sim_port.getHost().port}"
        port = free_port()
        options = tap.Options()
        options.parseOptions(["--listen", f"tcp:{port}:interface=127.0.0.1", "--target", target, "--no-proxy"])
        service = tap.makeService(options, reactor=reactor)
        (listener,) = [s for s in service if hasattr(s, "endpoint")]
        accepted = small_send_buffers(listener.factory)
        service.startService()
        self.addCleanup(service.stopService)
        base = f"http://127.0.0.1:{port}"

        @defer.inlineCallbacks
        def get(path):
            response = yield http_client().get(base + path)
            body = yield response.content()
            return response, body

        @defer.inlineCallbacks
        def seeded():
            _, body = yield get("/targets")
            return json.loads(body)["targets"][0]["received"] == 8000

        yield until(seeded, "the history counted", interval=0.05)
        response, body = yield get("/metrics")
        self.assertGreater(len(body), 1 << 20)  # far more than the socket buffers below hold
        renders = scrape_sample(body, "cadvisor_events_metrics_renders_total")

        scrapers = [socket.socket() for _ in range(40)]
        for scraper in scrapers:
            self.addCleanup(scraper.close)
            scraper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            scraper.connect(("127.0.0.1", port))  # the kernel completes it; the reactor accepts later
        already = len(accepted)
        yield until(lambda: len(accepted) - already >= 40, "40 connections accepted")
        for scraper in scrapers:  # the reactor waits meanwhile: one iteration reads all 40
            scraper.sendall(b"GET /metrics HTTP/1.1\r\nHost: e2e\r\n\r\n")

        response, refused = yield get("/metrics")  # accepted and read after the 40 requests
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["1"])
        self.assertEqual(refused, b"/metrics is busy: 40 answers in flight (--web-max-requests 40); "
                                  b"retry in a second\n")
        response, _ = yield get("/-/healthy")  # only /metrics is limited
        self.assertEqual(response.code, 200)

        answers = [b""] * 40
        for scraper in scrapers:
            scraper.setblocking(False)
            scraper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # read faster now
        for transport in accepted:
            if transport.connected:
                transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)

        def read_all():
            for index, scraper in enumerate(scrapers):
                try:
                    while True:
                        data = scraper.recv(1 << 20)
                        if not data:
                            break
                        answers[index] += data
                except BlockingIOError:
                    pass
            return all(complete(answer) for answer in answers)

        yield until(read_all, "the 40 answers read", interval=0.001)
        bodies = {answer.partition(b"\r\n\r\n")[2] for answer in answers}
        self.assertEqual(len(bodies), 1)  # byte for byte the same body: one render
        (shared,) = bodies
        self.assertEqual(scrape_sample(shared, "cadvisor_events_metrics_renders_total"), renders + 1)
        self.assertTrue(all(answer.startswith(b"HTTP/1.1 200 OK\r\n") for answer in answers))

        _, body = yield get("/metrics")  # the 40 are done: room again
        self.assertEqual(scrape_sample(body, "cadvisor_events_metrics_renders_total"), renders + 2)
        self.assertEqual(scrape_sample(body, "promhttp_metric_handler_requests_in_flight"), 1)
        self.assertEqual(scrape_sample(body, "promhttp_metric_handler_requests_total", code="503"), 1)
        self.assertEqual(scrape_sample(body, "promhttp_metric_handler_requests_total", code="200"), 41)


def small_send_buffers(factory) -> list:
    """Make every connection ``factory`` serves send through a 4 KiB kernel buffer, so an
    answer its client does not read stays in flight; return the list of their transports."""
    accepted: list = []
    build = factory.buildProtocol

    def build_protocol(addr):
        connection = build(addr)
        make_connection = connection.makeConnection

        def made(transport):
            transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            accepted.append(transport)
            make_connection(transport)

        connection.makeConnection = made
        return connection

    factory.buildProtocol = build_protocol
    return accepted


def complete(answer: bytes) -> bool:
    """Whether ``answer`` is a whole HTTP response with a Content-Length."""
    head, separator, body = answer.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def scrape_sample(body: bytes, name: str, **labels: str) -> float:
    """The value of sample ``name`` with ``labels`` in a /metrics text body."""
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"no sample {name} {labels}")


class Exporter(protocol.ProcessProtocol):
    """``twistd -n cadvisor-events`` as a child process; ``port`` fires with its HTTP port."""

    def __init__(self, *args: str, env=None, runner=TWISTD) -> None:
        self.output = b""
        self.port = defer.Deferred()
        self.ended = defer.Deferred()
        self.exit_code = None
        self.exit_signal = None
        self.running = True
        argv, environ = exporter_command("tcp:0:interface=127.0.0.1", *args, runner=runner, env=env)
        self.transport = reactor.spawnProcess(self, sys.executable, argv, env=environ, path=REPO)

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.port.called:
            started = re.search(rb"Site starting on (\d+)", self.output)
            if started:
                self.port.callback(int(started.group(1)))

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.running = False
        self.exit_code = reason.value.exitCode
        self.exit_signal = getattr(reason.value, "signal", None)
        if not self.port.called:
            self.port.errback(AssertionError(f"exporter ended early:\n{self.output.decode()}"))
        self.ended.callback(self.exit_code)

    def signal(self, name: str) -> None:
        if self.running:
            self.transport.signalProcess(name)


class ServiceTests(unittest.TestCase):
    """The real twistd service, started as a user starts it."""

    timeout = 60

    def start(self, *args: str):
        exporter = Exporter(*args)

        @defer.inlineCallbacks
        def stop():
            exporter.signal("KILL")
            yield exporter.ended

        self.addCleanup(stop)
        return exporter

    @defer.inlineCallbacks
    def get(self, port: int, path: str):
        response = yield http_client().get(f"http://127.0.0.1:{port}{path}")
        body = yield response.content()
        return response.code, body

    @defer.inlineCallbacks
    def metrics(self, port: int):
        _, body = yield self.get(port, "/metrics")
        return {f.name: f for f in text_string_to_metric_families(body.decode())}

    @defer.inlineCallbacks
    def targets(self, port: int):
        _, body = yield self.get(port, "/targets")
        return {t["host"]: t for t in json.loads(body)["targets"]}

    @defer.inlineCallbacks
    def poll(self, fetch, predicate, what, timeout=20.0):
        """Fetch over HTTP until ``predicate(result)`` holds; return the result."""
        last: list = []

        def fetched():
            return fetch().addCallback(lambda result: last.append(result) or predicate(result))

        yield until(fetched, what, timeout, interval=0.05, detail=lambda: f"last: {last[-1]!r}" if last else "")
        return last[-1]

    @defer.inlineCallbacks
    def test_demo_shows_events_and_sigterm_exits_cleanly(self):
        exporter = self.start("--demo")
        port = yield exporter.port

        def has_events(families):
            family = families.get("cadvisor_container_events")
            return family is not None and len({s.labels["event_type"] for s in family.samples}) == 4

        families = yield self.poll(lambda: self.metrics(port), has_events, "demo events of all four types")
        self.assertEqual(families["cadvisor_events_target_up"].samples[0].value, 1.0)
        code, page = yield self.get(port, "/")
        self.assertEqual(code, 200)
        self.assertIn(b"1 of 1 targets up", page)
        code, body = yield self.get(port, "/-/ready")
        self.assertEqual(code, 200)

        started = reactor.seconds()
        exporter.signal("TERM")
        yield exporter.ended
        self.assertLess(reactor.seconds() - started, 5.0)
        # twistd stops cleanly, then re-raises SIGTERM so the exit status says why it ended.
        self.assertIn((exporter.exit_code, exporter.exit_signal), [(0, None), (None, signal.SIGTERM)])
        self.assertIn(b"Server Shut Down.", exporter.output)
        self.assertIn(b"stopped following", exporter.output)
        self.assertNotIn(b"Traceback", exporter.output)

    @defer.inlineCallbacks
    def test_targets_file_reload_on_change_and_sighup(self):
        hosts = Hosts(3)
        self.addCleanup(hosts.stop)
        for sim in hosts.sims:
            sim.emit_oom(sim.container_pool[0], "java", 1)
        a, b, c = hosts.names
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "fleet.json")

        def write(groups, raw=None):
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(raw if raw is not None else json.dumps(groups))
            os.replace(tmp, path)

        write([{"targets": [a], "labels": {"cluster": "eu"}}])
        exporter = self.start("--targets-file", path)
        port = yield exporter.port
        # "up" once its history is counted (the stream opens first, then the spec listing, then it).
        targets = yield self.poll(lambda: self.targets(port), lambda t: set(t) == {a} and t[a]["state"] == "up",
                                  "a up")
        self.assertEqual(targets[a]["labels"], {"cluster": "eu"})
        families = yield self.metrics(port)
        labels = [s.labels for s in families["cadvisor_container_events"].samples]
        self.assertTrue(labels and all(each["cluster"] == "eu" and each["host"] == a for each in labels))

        # A change is picked up within ~2 s: b added, a removed.
        write([{"targets": [b, c], "labels": {"cluster": "us"}}])
        yield self.poll(
            lambda: self.targets(port),
            # state "up": their histories counted (x["up"] is true once a stream opens).
            lambda t: set(t) == {b, c} and all(x["state"] == "up" for x in t.values()),
            "b and c up, a gone",
            timeout=10,
        )
        families = yield self.metrics(port)
        hosts_seen = {s.labels["host"] for s in families["cadvisor_container_events"].samples}
        self.assertEqual(hosts_seen, {b, c})  # a's series went away with it

        # A broken file keeps the last good set and says so.
        write(None, raw='[{"targets": [')
        families = yield self.poll(
            lambda: self.metrics(port),
            lambda f: f["cadvisor_events_config_last_reload_successful"].samples[0].value == 0,
            "reload failure reported",
            timeout=10,
        )
        self.assertEqual(families["cadvisor_events_targets"].samples[0].value, 2)

        # SIGHUP re-reads: make the file good again without waiting for the poll to matter.
        write([{"targets": [c]}])
        exporter.signal("HUP")
        yield self.poll(lambda: self.targets(port), lambda t: set(t) == {c}, "only c after SIGHUP", timeout=10)
        families = yield self.metrics(port)
        self.assertEqual(families["cadvisor_events_config_last_reload_successful"].samples[0].value, 1)

    @defer.inlineCallbacks
    def test_no_access_log_unless_asked(self):
        quiet = self.start("--target", "127.0.0.1:1")  # nothing else serving HTTP in the process
        logged = self.start("--target", "127.0.0.1:1", "--access-log")
        quiet_port = yield quiet.port
        logged_port = yield logged.port
        for port in (quiet_port, logged_port):
            for path in ("/metrics", "/-/healthy", "/metrics"):
                code, _ = yield self.get(port, path)
                self.assertEqual(code, 200)
        yield until(lambda: logged.output.count(b'"GET /metrics HTTP/1.1" 200') == 2, "the access log lines")
        self.assertIn(b'"GET /-/healthy HTTP/1.1" 200', logged.output)
        self.assertNotIn(b"HTTP/1.1", quiet.output)  # its answers were done before the other's
        self.assertIn(b"QuietSite starting on", quiet.output)

    @defer.inlineCallbacks
    def test_twist_in_the_foreground_logs_json(self):
        # As README.rst shows it for containers: Twisted's foreground runner, JSON logs on stdout.
        exporter = Exporter("--target", "127.0.0.1:1",
                            runner=("-m", "twisted", "--log-format", "json"))  # python -m twisted: twist
        self.addCleanup(lambda: exporter.signal("KILL") or exporter.ended)
        port = yield exporter.port
        code, _ = yield self.get(port, "/metrics")
        self.assertEqual(code, 200)
        exporter.signal("TERM")
        yield exporter.ended
        records = [record for record in exporter.output.split(b"\x1e") if record.strip()]  # RFC 7464
        events = [json.loads(record) for record in records]
        self.assertGreater(len(events), 3)
        self.assertTrue(all("log_time" in event and "log_level" in event for event in events))
        namespaces = {event.get("log_namespace") for event in events}
        self.assertIn("cadvisor_events.tap", namespaces)
        self.assertNotIn(b"Traceback", exporter.output)

    @defer.inlineCallbacks
    def test_host_that_never_sends_headers_is_marked_down_and_retried(self):
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # accepts (kernel backlog) and never answers
        self.addCleanup(silent.close)
        name = f"127.0.0.1:{silent.getsockname()[1]}"
        exporter = self.start("--target", name, "--connect-timeout", "0.5")
        port = yield exporter.port
        targets = yield self.poll(
            lambda: self.targets(port),
            lambda t: t[name]["failures"].get("timeout", 0) >= 2,
            "two header timeouts",
        )
        self.assertFalse(targets[name]["up"])
        self.assertIn("did not answer", targets[name]["last_error"])
        code, _ = yield self.get(port, "/-/ready")
        self.assertEqual(code, 200)  # tried (and failed) counts as tried

    @defer.inlineCallbacks
    def test_kubernetes_labels_and_a_new_pods_first_oom_kill(self):
        hosts = Hosts(1)
        self.addCleanup(hosts.stop)
        (sim,), (name,) = hosts.sims, hosts.names
        old = sim.start_pod(namespace="payments", app="api", driver="cgroupfs", runtime="docker", containers=1)
        exporter = self.start("--target", name, "--container-label", "io.kubernetes.container.name")
        port = yield exporter.port

        def kills(families):
            family = families.get("cadvisor_container_oom_kills")
            return {(s.labels["namespace"], s.labels["pod"], s.labels["container"]): s.value
                    for s in (family.samples if family else ()) if s.name.endswith("_total")}

        old_pod = dict(old[1].labels)["io.kubernetes.pod.name"]
        # A container that existed before the exporter: learned from the listing, at 0.
        yield self.poll(lambda: self.metrics(port), lambda f: kills(f).get(("payments", old_pod, "api")) == 0,
                        "the listed container's OOM kill series at 0")

        # A new pod: its containers are learned from their creation events, at 0 ...
        new = sim.start_pod(namespace="checkout", app="worker", driver="systemd", runtime="containerd",
                            containers=2)
        pod_cgroup, worker, shipper = new[0].name, new[2].name, new[3].name
        pod = dict(new[2].labels)["io.kubernetes.pod.name"]
        families = yield self.poll(
            lambda: self.metrics(port),
            lambda f: kills(f).get(("checkout", pod, "worker")) == 0 and ("checkout", pod, "log-shipper") in kills(f),
            "the new pod's OOM kill series at 0")
        creation = [s.labels for s in families["cadvisor_container_events"].samples
                    if s.labels["id"] == worker and s.labels["event_type"] == "containerCreation"]
        self.assertEqual(creation, [{
            "host": name, "namespace": "checkout", "pod": pod, "container": "worker",
            "image": new[2].image, "name": new[2].aliases[0],
            "container_label_io_kubernetes_container_name": "worker",
            "event_type": "containerCreation", "id": worker, "oom_process": ""}])

        # ... and its first OOM kill, on the pod-level limit, is the log shipper's: 0 -> 1.
        sim.emit_oom(shipper, "fluent-bit", 4242, victim_container=pod_cgroup)
        families = yield self.poll(lambda: self.metrics(port),
                                   lambda f: kills(f).get(("checkout", pod, "log-shipper")) == 1,
                                   "the first kill counted")
        self.assertEqual(kills(families)[("checkout", pod, "worker")], 0)
        (kill,) = [s.labels for s in families["cadvisor_container_events"].samples
                   if s.labels["event_type"] == "oomKill" and s.labels["id"] == pod_cgroup]
        self.assertEqual((kill["container"], kill["pod"], kill["oom_process"]), ("log-shipper", pod, "fluent-bit"))
        node = families["cadvisor_node_oom_kills"].samples
        self.assertEqual([(s.labels, s.value) for s in node if s.name.endswith("_total")], [({"host": name}, 0)])

        code, body = yield self.get(port, "/oom-kills")
        self.assertEqual(code, 200)
        (listed,) = json.loads(body)["oom_kills"]
        self.assertEqual({k: listed[k] for k in ("host", "namespace", "pod", "container", "cgroup",
                                                 "limit_cgroup", "process", "pid")},
                         {"host": name, "namespace": "checkout", "pod": pod, "container": "log-shipper",
                          "cgroup": shipper, "limit_cgroup": pod_cgroup, "process": "fluent-bit", "pid": 4242})
        code, page = yield self.get(port, "/")
        self.assertIn(f"checkout/{pod}/log-shipper".encode(), page)
        self.assertLess(page.index(b"Recent OOM kills"), page.index(b"<th>target</th>"))
