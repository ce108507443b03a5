"""Chaos soak: 50 simulated cAdvisors, the real exporter following them, random breaks for minutes.

Three processes on loopback. This one runs 50 simulators (each on its own
port, ~200 events per second each, every type, realistic names, history
pre-filled) and the chaos: about nine times a second (so each host every
5-6 s) a random host has its streams cut or ended, or is restarted keeping
its history or losing it (then its OOMs are replayed from the "kernel log",
as cAdvisor does), or is cut and then, 0.1-0.8 s later while the exporter
is still away, restarted losing its history. The exporter is the real ``twistd cadvisor-events`` with a
targets file and its default options (backoff 1 s doubling, jittered). A
third process GETs ``/metrics`` once a second and reports each latency, so
the figure does not include this process's own load.

At the end (chaos stopped, every host back, three last events per host
counted live) the counters read from the exporter's ``/metrics`` are checked
against each simulator's ground truth (the chaos engine and its check are
``tests/chaos.py``'s; tests/test_soak.py also runs them for ~15 s in-process):

* no host has any series above ground truth (nothing counted twice);
* a host whose ``cadvisor_events_gaps_total`` stayed 0 equals ground truth
  exactly;
* a host with gaps is short only of *loss candidates*: events that were not
  in history any more when the exporter came back. For each history-losing
  restart, they are the non-OOM events emitted from the last break the
  exporter had recovered from (seen "up" in /targets at least 0.3 s after
  it, less 0.25 s for events still in flight) to the restart; OOMs are never
  candidates since the restart re-adds them;
* a host whose history was never lost has no gap (no false alarm). Hosts are
  dealt fates in turn: never a history-losing restart, exactly one (so a
  loss without a gap cannot hide behind another host's gap), or any;
* the exporter never logged a traceback and exits cleanly on SIGTERM.

Run: ``PYTHONPATH=. python benchmarks/soak.py [--seconds 300] [--hosts 50] [--rate 200]``.
Prints the figures; exit status 0 only when every check passes.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)

import psutil  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from treq.client import HTTPClient  # noqa: E402
from twisted.internet import defer, protocol, task  # noqa: E402
from twisted.web.client import Agent, HTTPConnectionPool  # noqa: E402
from twisted.web.server import Site  # noqa: E402

from cadvisor_events.simulator import Simulator  # noqa: E402
from tests.chaos import Chaos, LOSSY  # noqa: E402

PROBER = r"""
import http.client, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
for _ in range(count):
    started = time.monotonic()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        size = len(response.read())
        connection.close()
        print("%.6f %d %d" % (time.monotonic() - started, response.status, size), flush=True)
    except Exception as e:
        print("error %s" % (e,), flush=True)
    time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
"""


class Child(protocol.ProcessProtocol):
    """A child process whose output is kept as lines; ``port`` fires on "Site starting on N"."""

    def __init__(self, reactor, argv, env, on_line=None) -> None:
        self.lines: list[str] = []
        self.tracebacks = 0
        self.port = defer.Deferred()
        self.ended = defer.Deferred()
        self.on_line = on_line
        self._partial = b""
        self.transport = reactor.spawnProcess(self, argv[0], argv, env=env, path=HERE)

    def outReceived(self, data: bytes) -> None:
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if "Traceback" in line or "Unhandled" in line:
                self.tracebacks += 1
            if len(self.lines) < 200_000:
                self.lines.append(line)
            if not self.port.called and "Site starting on " in line and "cadvisor_events" not in line:
                self.port.callback(int(line.rsplit(" ", 1)[1]))
            if self.on_line is not None:
                self.on_line(line)

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        if not self.port.called:
            self.port.errback(RuntimeError("exporter ended early:\n" + "\n".join(self.lines[-50:])))
        self.ended.callback(reason.value)


def parse_metrics(text: str):
    """Per host: Counter of (id, event_type, oom_process), and the self-metrics we report."""
    counted: dict = collections.defaultdict(collections.Counter)
    per_host: dict = collections.defaultdict(lambda: collections.defaultdict(float))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            host = sample.labels.get("host")
            if family.name == "cadvisor_container_events":
                key = (sample.labels["id"], sample.labels["event_type"], sample.labels["oom_process"])
                counted[host][key] = int(sample.value)
            elif host is not None and sample.name.startswith("cadvisor_events_"):
                name = sample.name[len("cadvisor_events_"):]
                if name == "stream_failures_total":
                    name = "failures_" + sample.labels["reason"]
                per_host[host][name] += sample.value
    return counted, per_host


@defer.inlineCallbacks
def soak(reactor, options):
    rng = random.Random(options.seed)
    http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
    sims, ports = {}, []
    for i in range(options.hosts):
        sim = Simulator(clock=reactor, seed=i, containers=20)
        port = reactor.listenTCP(0, Site(sim.resource), interface="127.0.0.1")
        ports.append(port)
        sims[f"127.0.0.1:{port.getHost().port}"] = sim
        sim.emit_random(50)  # history before the exporter starts: counted by its seed
    workdir = tempfile.mkdtemp(prefix="soak-")
    targets_file = os.path.join(workdir, "fleet.json")
    with open(targets_file, "w") as f:
        json.dump([{"targets": sorted(sims), "labels": {"soak": "1"}}], f)

    env = {k: v for k, v in os.environ.items() if not k.startswith("CADVISOR_EVENTS_")}
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    exporter = Child(reactor, [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                               "-n", "--pidfile=", "--logfile=-", "cadvisor-events",
                               "--listen", "tcp:0:interface=127.0.0.1", "--targets-file", targets_file], env)
    web = yield exporter.port
    process = psutil.Process(exporter.transport.pid)
    base = f"http://127.0.0.1:{web}"

    @defer.inlineCallbacks
    def get(path):
        response = yield http.get(base + path)
        body = yield response.content()
        return body

    @defer.inlineCallbacks
    def targets():
        body = yield get("/targets")
        return {t["host"]: t for t in json.loads(body)["targets"]}

    @defer.inlineCallbacks
    def poll(predicate, what, timeout):
        deadline = reactor.seconds() + timeout
        while True:
            state = yield targets()
            if predicate(state):
                return state
            if reactor.seconds() > deadline:
                raise RuntimeError(f"timed out waiting for {what}: " + ", ".join(
                    f"{h}={t['state']}" for h, t in state.items() if t["state"] != "up"))
            yield task.deferLater(reactor, 0.25, lambda: None)

    started = time.monotonic()
    yield poll(lambda t: len(t) == len(sims) and all(x["state"] == "up" for x in t.values()),
               "every target up", 60)
    print(f"{len(sims)} hosts up after {time.monotonic() - started:.1f} s; soaking for {options.seconds} s",
          flush=True)
    rss_start = process.memory_info().rss
    rss_samples = [rss_start]

    latencies, probe_errors = [], []

    def probe_line(line):
        parts = line.split()
        if parts and parts[0] == "error":
            probe_errors.append(line)
        elif len(parts) == 3 and parts[1] == "200":
            latencies.append(float(parts[0]))
        elif parts:
            probe_errors.append(line)

    prober = Child(reactor, [sys.executable, "-c", PROBER, str(web), str(int(options.seconds) + 60)],
                   dict(os.environ), on_line=probe_line)
    prober.port.addErrback(lambda _: None)  # it serves nothing

    chaos = Chaos(sims, reactor, rng)
    carry = collections.defaultdict(float)

    def emit():
        for name, sim in sims.items():
            carry[name] += options.rate * 0.01 * rng.uniform(0.5, 1.5)
            due = int(carry[name])
            if due:
                carry[name] -= due
                sim.emit_random(due)

    emitting = task.LoopingCall(emit)
    emitting.start(0.01)
    deadline = reactor.seconds() + options.seconds
    strikes, last_report = 0, reactor.seconds()
    while reactor.seconds() < deadline:
        state = yield targets()
        chaos.observe({h: t["state"] for h, t in state.items()}, reactor.seconds())
        for _ in range(2):  # ~2 breaks per ~0.25 s poll: each host broken every ~6 s on average
            chaos.strike()
            strikes += 1
        rss_samples.append(process.memory_info().rss)
        if reactor.seconds() - last_report >= 30:
            last_report = reactor.seconds()
            print(f"  t={options.seconds - (deadline - reactor.seconds()):.0f}s strikes={strikes} "
                  f"emitted={sum(len(s.emitted) for s in sims.values())} "
                  f"rss={rss_samples[-1] / 2**20:.0f}MiB max_scrape={max(latencies, default=0):.3f}s",
                  flush=True)
        yield task.deferLater(reactor, 0.2, lambda: None)
    emitting.stop()
    yield task.deferLater(reactor, max(chaos.restart_delay) + 0.1, lambda: None)  # pending restarts
    chaos.stop()
    yield poll(lambda t: all(x["state"] == "up" for x in t.values())
               and all(s.open_streams == 1 for s in sims.values()), "every host back", 90)
    last = {name: sim.emit_random(3)[-1].timestamp_ns / 1e9 for name, sim in sims.items()}
    yield poll(lambda t: all((t[h]["last_event_time"] or 0) >= ts - 1e-6 for h, ts in last.items()),
               "the last events counted", 60)
    body = yield get("/metrics")
    counted, per_host = parse_metrics(body.decode("utf-8"))
    rss_end = process.memory_info().rss
    gaps = {name: int(per_host[name]["gaps_total"]) for name in sims}
    result = chaos.check({name: counted.get(name, collections.Counter()) for name in sims}, gaps)

    exporter.transport.signalProcess("TERM")
    stop_started = time.monotonic()
    ended = yield exporter.ended
    stop_seconds = time.monotonic() - stop_started
    prober.transport.signalProcess("KILL")
    yield prober.ended
    for port in ports:
        yield port.stopListening()

    def total(name):
        return int(sum(per_host[h][name] for h in sims))

    fates = collections.Counter(h.fate for h in chaos.hosts.values())
    lossy_hosts = sum(1 for h in chaos.hosts.values() if any(h.kinds[k] for k in LOSSY))
    failures = collections.Counter()
    for h in sims:
        for name, value in per_host[h].items():
            if name.startswith("failures_"):
                failures[name[len("failures_"):]] += int(value)
    kinds = result["kinds"]
    figures = [
        ("hosts", f"{len(sims)} ({dict(fates)})"),
        ("seconds of chaos", options.seconds),
        ("events emitted", result["emitted"]),
        ("events counted", result["counted"]),
        ("short (lost)", f"{result['short']} on {result['hosts_short']} hosts "
                         f"(loss candidates: {result['loss_candidates']})"),
        ("gaps", f"{result['gaps']} on {result['hosts_with_gaps']} hosts "
                 f"({lossy_hosts} hosts had a history-losing restart)"),
        ("duplicates dropped", total("duplicates_dropped_total")),
        ("backfilled", total("backfilled_total")),
        ("invalid lines", total("invalid_lines_total")),
        ("stream connects", total("stream_connects_total")),
        ("stream failures", dict(failures)),
        ("cuts", kinds.get("cut", 0) + kinds.get("cut_then_restart_lost", 0)),
        ("ends", kinds.get("end", 0)),
        ("restarts keeping history", kinds.get("restart_kept", 0)),
        ("restarts losing history", kinds.get("restart_lost", 0) + kinds.get("cut_then_restart_lost", 0)),
        ("exporter RSS start / end / peak (MiB)",
         f"{rss_start / 2**20:.1f} / {rss_end / 2**20:.1f} / {max(rss_samples + [rss_end]) / 2**20:.1f}"),
        ("/metrics latency max / p99 / median (s)",
         f"{max(latencies):.3f} / {statistics.quantiles(latencies, n=100, method='inclusive')[98]:.3f} / "
         f"{statistics.median(latencies):.3f} over {len(latencies)} scrapes" if len(latencies) > 2 else "none"),
        ("/metrics size at the end", f"{len(body)} bytes"),
        ("exporter tracebacks logged", exporter.tracebacks),
        ("exporter stop on SIGTERM", f"{stop_seconds:.2f} s ({ended.__class__.__name__})"),
    ]
    print()
    for name, value in figures:
        print(f"{name:42} {value}")
    problems = list(result["problems"])
    if exporter.tracebacks:
        problems.append(f"the exporter logged {exporter.tracebacks} traceback lines")
    if probe_errors:
        problems.append(f"{len(probe_errors)} /metrics probes failed: {probe_errors[:3]}")
    if not latencies or max(latencies) >= 1.0:
        problems.append("/metrics took a second or more")
    if stop_seconds > 10:
        problems.append("the exporter took over 10 s to stop")
    print()
    if problems:
        print("FAILED:")
        for problem in problems:
            print("  " + problem[:2000])
        return 1
    print("PASSED: every host without gaps counted exactly, every shortfall a loss candidate, "
          "nothing counted twice")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="seconds of chaos (default 300)")
    parser.add_argument("--hosts", type=int, default=50, help="simulated cAdvisors (default 50)")
    parser.add_argument("--rate", type=float, default=200.0, help="events per second per host (default 200)")
    parser.add_argument("--seed", type=int, default=5, help="seed of the chaos (default 5)")
    options = parser.parse_args()

    def exit_with(status: int) -> None:
        raise SystemExit(status)  # task.react exits with a SystemExit's code

    task.react(lambda reactor: soak(reactor, options).addCallback(exit_with))


if __name__ == "__main__":
    main()
