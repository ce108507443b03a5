"""Benchmark: what one counted event series costs in memory, and a full render of them all.

Goal (README.rst, *Performance*): a fleet of 10,000 hosts x ~150 series
(1.5 million series, Kubernetes labels from enrichment) fits a 1 GiB
process with the per-host and identity-cache costs, which leaves <= 500
bytes per series all-in.

Setup, per host (``--hosts``, default 10,000, with one file_sd label): 20
containers of Kubernetes pods as the simulator makes them (``make_pod``:
both cgroup drivers and runtimes, so ids such as
``/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<64 hex>.scope``),
each with the identity ``identity_from_spec`` reads from its spec. Those
identities and cgroup names are the spec cache's and are built before
measuring. Then every host's events are counted as a follower counts them,
each with a fresh counting key (fresh strings, as decoding gives):
per container one ``containerCreation``, one ``oom``, 4 to 6 ``oomKill``
series under distinct process names and, for half of them, one
``containerDeletion`` (~7.5 series per container), each counted 1 to 12
times. With labels (the default), a series is born with the labels enrichment
gives it (``HostCounters.label_source`` returns ``render_identity`` of the
container's identity, as ``HostEnricher`` does); every container with a name
gets its ``cadvisor_container_oom_kills_total`` series, as a listing does, and
its share is counted in the bytes per series. ``--no-labels`` measures the
``--no-enrich`` case (each container's OOM kill series is then born with its
creation, named by its cgroup).

Measured in fresh processes: the RSS growth from before the first event to
after the last (after a garbage collection), divided by the event series;
then the time of a full render (every chunk of ``render_chunks`` joined, as
/metrics writes them, or one ``render`` where there is no such method) and
its size. In another process, with ``tracemalloc``, the bytes still
allocated per series over ``--trace-hosts`` hosts, and where they were
allocated.

Run: ``python benchmarks/series_memory.py [--hosts 10000] [--trace-hosts 1000] [--no-labels | --both]``.
Exit status 0 only when the labelled figure is within the goal.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time
import tracemalloc
from typing import Dict, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from twisted.internet import task  # noqa: E402

from cadvisor_events.counters import EventCounters  # noqa: E402
from cadvisor_events.enrich import render_identity  # noqa: E402
from cadvisor_events.identity import Identity, identity_from_spec  # noqa: E402
from cadvisor_events.oomkills import OomKills  # noqa: E402
from cadvisor_events.simulator.cluster import make_pod  # noqa: E402

GOAL_BYTES = 500
CONTAINERS = 20
PROCESSES = ("java", "python3", "node", "envoy", "nginx", "postgres", "ruby", "dotnet")

#: (cgroup, identity) of a host's containers: what the spec cache holds.
Containers = List[Tuple[str, Identity]]


def node(index: int) -> Containers:
    """One host's 20 containers (sandboxes included, pod-level cgroups not) and their identities."""
    rng = random.Random(f"node-{index}")
    out: Containers = []
    while len(out) < CONTAINERS:
        for sim in make_pod(rng):
            if sim.kind == "pod":
                continue
            spec = {"labels": dict(sim.labels), "aliases": list(sim.aliases), "image": sim.image}
            out.append((sim.name, identity_from_spec(spec)))
    return out[:CONTAINERS]


def events_of(index: int, containers: Containers) -> List[Tuple[int, str, str, int]]:
    """(container index, event type, process, times) of a host, in a shuffled order."""
    rng = random.Random(f"events-{index}")
    out = []
    for number, _ in enumerate(containers):
        keys = [("containerCreation", ""), ("oom", "")]
        keys += [("oomKill", process) for process in rng.sample(PROCESSES, rng.randint(4, 6))]
        if rng.random() < 0.5:
            keys.append(("containerDeletion", ""))
        out += [(number, kind, process, rng.randint(1, 12)) for kind, process in keys]
    rng.shuffle(out)
    return out


def fresh(text: str) -> str:
    """An equal string that is a new object, as each decoded event's strings are."""
    return text[:1] + text[1:]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def one_run(hosts: int, labelled: bool, traced: bool, render: bool) -> dict:
    nodes = [node(index) for index in range(hosts)]
    plans = [events_of(index, containers) for index, containers in enumerate(nodes)]
    clock = task.Clock()
    counters = EventCounters(clock, series_ttl=3600, max_series=10**9)
    kills = OomKills(clock, series_ttl=3600)
    counters.families_after.append(kills)
    gc.collect()
    if traced:
        tracemalloc.start(8)
    traced_before = tracemalloc.get_traced_memory()[0] if traced else 0
    rss_before = rss_bytes()
    events = 0
    started = time.process_time()
    for index, (containers, plan) in enumerate(zip(nodes, plans)):
        name = f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}:8080"
        labels = (("cluster", "prod-eu-west-1"),)
        host = counters.host(name, labels)
        host_kills = kills.host(name, labels)
        host_kills.deletions = host.deleted  # as HostEnricher shares them
        if labelled:
            identities: Dict[str, Identity] = dict(containers)

            def source(key, identities=identities):
                return key[3] if len(key) > 3 else render_identity(identities[key[0]])

            host.label_source = source
            for cgroup, identity in containers:  # the listing after a connect
                if identity.container and identity.container != "POD":
                    host_kills.learned(cgroup, (identity.namespace, identity.pod, identity.container))
        count_key = host.count_key
        for number, kind, process, times in plan:
            cgroup = containers[number][0]
            for _ in range(times):
                key = (fresh(cgroup), fresh(kind), fresh(process) if process else "")
                count_key(key)
                if not labelled and kind == "containerCreation" and key[0] not in host_kills.cgroups:
                    host_kills.learned(key[0], ("", "", key[0]))  # as HostEnricher does without specs
            events += times
        host_kills.ready()
    count_seconds = time.process_time() - started
    gc.collect()
    series = counters.series_count
    result = {"hosts": hosts, "series": series, "kill_series": kills.series_count, "events": events,
              "labelled": labelled, "count_us_per_event": count_seconds / events * 1e6}
    if traced:
        snapshot = tracemalloc.take_snapshot()
        result["traced_per_series"] = (tracemalloc.get_traced_memory()[0] - traced_before) / series
        tracemalloc.stop()
        top = snapshot.statistics("lineno")[:8]
        result["where"] = [f"{stat.size / series:7.1f} B/series  {stat.traceback[0].filename.rpartition('/')[2]}:"
                           f"{stat.traceback[0].lineno}" for stat in top]
        return result
    result["rss_per_series"] = (rss_bytes() - rss_before) / series
    if render:
        chunks = getattr(counters, "render_chunks", None)
        started = time.perf_counter()
        size = 0
        pieces = 0
        if chunks is not None:
            for parts in chunks():
                size += len(b"".join(parts))
                pieces += 1
        else:
            size = len(counters.render())
            pieces = 1
        result["render_seconds"] = time.perf_counter() - started
        result["render_mb"] = size / 1e6
        result["render_pieces"] = pieces
        result["rss_after_render_per_series"] = (rss_bytes() - rss_before) / series
    return result


def child(mode: str, hosts: int, labelled: bool) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", mode, "--hosts", str(hosts)]
    if not labelled:
        command.append("--no-labels")
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--trace-hosts", type=int, default=1_000, help="hosts of the tracemalloc run (0: none)")
    parser.add_argument("--no-labels", action="store_true", help="series without identity labels (--no-enrich)")
    parser.add_argument("--both", action="store_true", help="with labels, then without")
    parser.add_argument("--child", choices=("traced", "rss"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_run(args.hosts, not args.no_labels, args.child == "traced", True)))
        return 0
    verdict = 0
    for labelled in ((True, False) if args.both else (not args.no_labels,)):
        what = "with identity labels" if labelled else "without identity labels (--no-enrich)"
        rss = child("rss", args.hosts, labelled)
        print(f"{what}: {rss['series']:,} event series ({rss['kill_series']:,} OOM kill series) of "
              f"{args.hosts:,} hosts, {rss['events']:,} events counted ({rss['count_us_per_event']:.2f} us each)")
        print(f"  RSS growth {rss['rss_per_series']:.0f} B per series, all-in: "
              f"{(1 << 30) / rss['rss_per_series'] / 1e6:.2f} million series per GiB")
        print(f"  full render: {rss['render_seconds']:.2f} s, {rss['render_mb']:.0f} MB in {rss['render_pieces']} "
              f"piece(s); RSS growth with it {rss['rss_after_render_per_series']:.0f} B per series")
        if args.trace_hosts:
            traced = child("traced", args.trace_hosts, labelled)
            print(f"  tracemalloc over {traced['series']:,} series: {traced['traced_per_series']:.0f} B allocated "
                  f"per series; largest sites:")
            for line in traced["where"]:
                print("    " + line)
        if labelled:
            ok = rss["rss_per_series"] <= GOAL_BYTES
            print(f"  goal <= {GOAL_BYTES} B per series with labels: {'OK' if ok else 'OVER'}")
            verdict = 0 if ok else 1
    return verdict


if __name__ == "__main__":
    sys.exit(main())
