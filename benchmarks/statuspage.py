"""Benchmark: the status page for a fleet of 10,000 hosts: render time and size.

Budget (README.rst, *Performance*): ``/`` renders in well under a second
(the reactor is not taken from ingest for long) and transfers well under 1 MB.

Setup, in one process: ``--hosts`` real :class:`~cadvisor_events.follower.Follower`
objects (not started: their state set as a running fleet's would be: 90 % up, 7 %
down with an error and a history of state changes, 3 % connecting), each with
a file_sd label set, ``--series`` event series per host in the real
:class:`~cadvisor_events.counters.EventCounters`, the last 100 OOM kills, and
an hour of per-minute activity; the resource tree is ``build_root``'s, queried
through ``treq.testing.StubTreq`` (no network: the render is what is measured,
as the reactor thread does it). Each page is asked ``--runs`` times; the median
time and the answer's size are reported.

Run: ``python benchmarks/statuspage.py [--hosts 10000] [--series 20] [--runs 5]``.
Exit status 0 only when ``/`` meets the budget.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from prometheus_client import CollectorRegistry
from treq.testing import StubTreq
from twisted.internet.task import Clock

from cadvisor_events.activity import Activity
from cadvisor_events.cadvisor import parse_target
from cadvisor_events.counters import EventCounters
from cadvisor_events.event import Event
from cadvisor_events.follower import Follower
from cadvisor_events.oomkills import OomKills, RecentKill
from cadvisor_events.selfmetrics import FleetMetrics
from cadvisor_events.targets import TargetSpec
from cadvisor_events.web import build_root

BUDGET_SECONDS = 1.0
BUDGET_BYTES = 1_000_000
TYPES = ("containerCreation", "containerDeletion", "oom", "oomKill")


class Fleet:
    def __init__(self) -> None:
        self.followers: dict = {}
        self.specs: dict = {}


def build(hosts: int, series: int):
    clock = Clock()
    clock.advance(1_800_000_000)
    counters = EventCounters(clock, max_series=hosts * series + 1)
    kills = OomKills(clock)
    fleet = Fleet()
    for i in range(hosts):
        spec = TargetSpec(target=parse_target(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:8080"),
                          labels=(("zone", f"zone-{i % 7}"), ("rack", f"r{i % 97}")))
        host = counters.host(spec.name, spec.labels)
        follower = Follower(spec.target, client=None, counters=host, clock=clock)  # type: ignore[arg-type]
        fleet.followers[spec.name] = follower
        fleet.specs[spec.name] = spec
        for n in range(series):
            host.count(Event(container_name=f"/kubepods/pod{i}/c{n // 4}", timestamp="2026-11-24T17:25:55Z",
                             event_type=TYPES[n % 4]))
        kind = i % 100
        if kind < 7:
            for attempt in range(12):
                follower.last_error = f"http://{spec.name}: connection refused (attempt {attempt})"
                follower.failures["refused"] = attempt + 1
                follower._set_state("connecting")
                follower._set_state("down")
        elif kind < 10:
            follower._set_state("connecting")
        else:
            follower._set_state("backfilling")
            follower._set_state("up")
            follower.up = True
    for n in range(150):
        name = next(iter(fleet.followers))
        kills.host(name).killed(RecentKill(
            ns=n * 10**9, timestamp=f"2026-11-24T17:{n % 60:02d}:00Z", host=name, namespace="payments",
            pod=f"checkout-{n}", container="api", cgroup=f"/kubepods/pod{n}", limit_cgroup=f"/kubepods/pod{n}",
            process="java", pid=n), None, None)
    activity = Activity(counters.counted, clock)
    for minute in range(60):  # an hour of counting
        for kind in TYPES:
            counters.counted[kind] = counters.counted.get(kind, 0) + 100 + minute
        activity.sample()
        clock.advance(60)
    root = build_root(registry=CollectorRegistry(), counters=counters, fleet_metrics=FleetMetrics(fleet, counters),
                      fleet=fleet, proxy=None, clock=clock, oom_kills=kills, activity=activity)
    return StubTreq(root), next(iter(fleet.followers))


def ask(http: StubTreq, path: str):
    """The answer's status, body and seconds taken (the request through the resource tree)."""
    results: list = []
    started = time.perf_counter()
    http.get("http://bench" + path).addCallback(
        lambda response: response.content().addCallback(lambda body: results.append((response.code, body))))
    http.flush()
    seconds = time.perf_counter() - started
    (code, body), = results
    return code, body, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    started = time.perf_counter()
    http, first = build(args.hosts, args.series)
    print(f"status page, {args.hosts:,} hosts x {args.series} series (set up in {time.perf_counter() - started:.1f} s); "
          f"median of {args.runs} renders:")
    pages = ["/", "/?state=down", "/?q=zone-3", "/?offset=5000", "/status.json", "/targets?state=unhealthy",
             "/targets?q=zone-3&limit=1000", "/oom-kills?q=checkout", f"/host/{first}", "/targets"]
    ok = True
    for path in pages:
        times = []
        for _ in range(args.runs):
            code, body, seconds = ask(http, path)
            if code != 200:
                print(f"  {path}: HTTP {code}: {body[:200]!r}")
                return 1
            times.append(seconds)
        median = statistics.median(times)
        note = ""
        if path == "/":
            met = median < BUDGET_SECONDS and len(body) < BUDGET_BYTES
            ok = ok and met
            note = f"   budget < {BUDGET_SECONDS * 1000:.0f} ms, < {BUDGET_BYTES:,} bytes: {'met' if met else 'NOT met'}"
        elif path == "/targets":
            note = "   (unfiltered: every target, the old answer)"
        print(f"  {path:32} {median * 1000:8.1f} ms {len(body):>11,} bytes{note}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
