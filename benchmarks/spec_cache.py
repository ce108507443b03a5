"""Benchmark: memory of the spec cache, 10,000 hosts x 20 cached containers.

Goal (README.rst, *Performance*): <= 0.5 KiB per cached container identity.

Setup, per host: a node of Kubernetes pods (the simulator's ``make_pod``:
both cgroup drivers, both runtimes, pod-level cgroups, sandboxes and
containers) until 20 cgroups would be cached, plus the raw cgroups a node
has (systemd services, ``/kubepods`` and other ancestors, ``/``), all with
one random source per host: every host's pods, UIDs and IDs differ, while
namespaces, images and container names repeat as in a real fleet. The
host's recursive spec listing is written as the simulator's spec API writes
it (Go's ``json.Marshal`` bytes), decoded as ``CAdvisorClient.spec`` decodes
it (msgspec), and learned through ``SpecStore.host(target).listing()`` with a
client that answers from memory, so exactly the production path keeps what
it keeps.

Measured in fresh processes per run (nothing interned by an earlier run):
the bytes the cache retains after a garbage collection (``tracemalloc``:
every allocation still alive, interned strings and the store's dicts
included, the transient listings excluded), divided by the identities
cached; in a second process without ``tracemalloc``, the RSS growth per
identity (the allocator's slack around the freed listings included) and
the CPU time to decode and learn one host's listing. The median of
``--runs`` runs is reported.

Run: ``python benchmarks/spec_cache.py [--hosts 10000] [--containers 20] [--runs 3]``.
Exit status 0 only when the goal is met.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import msgspec  # noqa: E402
from twisted.internet import defer, task  # noqa: E402

from cadvisor_events.cadvisor import parse_target  # noqa: E402
from cadvisor_events.simulator.cluster import SERVICES, Cluster, SimContainer, make_pod  # noqa: E402
from cadvisor_events.specs import SpecStore  # noqa: E402

GOAL_BYTES = 512
START_NS = 1_764_000_000 * 10 ** 9
DECODER = msgspec.json.Decoder(Dict[str, Dict[str, Any]])  # as CAdvisorClient.spec decodes


def node_listing(index: int, containers: int) -> bytes:
    """One host's ``/api/v2.0/spec/?type=name&recursive=true`` answer."""
    rng = random.Random(f"node-{index}")
    cgroups: List[SimContainer] = []
    while len(cgroups) < containers:
        cgroups.extend(make_pod(rng))
    cgroups = cgroups[:containers]
    cgroups += [SimContainer(f"/system.slice/{service}.service") for service in SERVICES]
    status, body = Cluster(cgroups, START_NS, 0).spec_answer("/", True)
    assert status == 200
    return body


class MemoryClient:
    """A spec client answering every listing with the next prepared answer."""

    def __init__(self) -> None:
        self.answer: Dict[str, Any] = {}

    def spec(self, target, name="/", recursive=False, *, timeout=10.0) -> defer.Deferred:
        answer, self.answer = self.answer, {}
        return defer.succeed(answer)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def one_run(hosts: int, containers: int, traced: bool) -> dict:
    gc.collect()
    rss_before = rss_bytes()
    if traced:
        tracemalloc.start()
    client = MemoryClient()
    store = SpecStore(client, task.Clock(), max_total=hosts * containers * 2)
    # The followers hold their targets anyway: not the cache's memory.
    targets = [parse_target(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:8080") for i in range(hosts)]
    gc.collect()
    traced_before = tracemalloc.get_traced_memory()[0] if traced else 0
    learn_seconds = 0.0
    for index in range(hosts):
        body = node_listing(index, containers)
        started = time.process_time()
        client.answer = DECODER.decode(body)
        store.host(targets[index]).listing()
        learn_seconds += time.process_time() - started
        del body
    gc.collect()
    if traced:
        retained = tracemalloc.get_traced_memory()[0] - traced_before
        tracemalloc.stop()
        return {"entries": store.entries, "requests": store.requests, "bytes_per_identity": retained / store.entries}
    return {"entries": store.entries, "rss_per_identity": (rss_bytes() - rss_before) / store.entries,
            "learn_ms_per_host": learn_seconds / hosts * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--containers", type=int, default=20, help="cached cgroups per host")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", choices=("traced", "rss"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_run(args.hosts, args.containers, args.child == "traced")))
        return 0
    results = []
    for run in range(args.runs):
        result = {}
        for mode in ("traced", "rss"):
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode, "--hosts",
                                  str(args.hosts), "--containers", str(args.containers)],
                                 check=True, capture_output=True, text=True)
            result.update(json.loads(out.stdout))
        results.append(result)
        print(f"run {run + 1}: {result['entries']} identities cached, {result['bytes_per_identity']:.0f} B each "
              f"retained (RSS growth {result['rss_per_identity']:.0f} B each), "
              f"{result['learn_ms_per_host']:.2f} ms CPU to decode and learn a host's listing")
    median = statistics.median(r["bytes_per_identity"] for r in results)
    rss = statistics.median(r["rss_per_identity"] for r in results)
    learn = statistics.median(r["learn_ms_per_host"] for r in results)
    ok = median <= GOAL_BYTES
    print(f"median of {len(results)}: {median:.0f} B retained per cached container (goal <= {GOAL_BYTES} B): "
          f"{'OK' if ok else 'OVER'}; RSS growth {rss:.0f} B per container; {learn:.2f} ms CPU per host listing")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
