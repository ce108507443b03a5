"""Where the bytes per followed host go: a census of one exporter following a simulated fleet.

``benchmarks/fanin.py`` says how much memory a host costs; this says what
holds it. The exporter's service (``tap.makeService``, as ``twistd`` builds it)
runs in this process, traced by ``tracemalloc`` from before it starts,
against the same simulated fleet as ``fanin.py`` (one simulator process,
``--hosts`` targets on distinct loopback addresses). Once every follower is
``up`` and a few seconds have passed, the live allocations made since the
start are grouped by the file that made them, each file under the part of
the exporter it belongs to (the connection under a stream, the follower,
enrichment, the event series...), and divided by the hosts. What
``fanin.py`` measures above its baseline, minus what is traced here, is the
allocator's share: free space in its pools and heap that it did not give
back. Tracing slows the run and costs memory of its own (not in the figures,
and the reason RSS is not reported here).

Run: ``PYTHONPATH=. python benchmarks/census.py [--hosts 3000] [--top 25] [-- EXPORTER OPTIONS]``,
e.g. ``-- --no-enrich``, or ``--simulator-arg=--history --simulator-arg=1000`` for hosts with history.
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as c  # noqa: E402
import fanin  # noqa: E402

#: Which part of the exporter a file's allocations belong to (first match of a path fragment).
PARTS = [
    ("connection under a stream", ("twisted/internet/", "streamclient.py", "protocol.py", "socket.py")),
    ("follower and its ledger", ("follower.py", "ledger.py", "activity.py", "gate.py", "fleet.py", "tap.py")),
    ("enrichment (spec cache, OOM kill series)", ("enrich.py", "specs.py", "identity.py", "oomkills.py")),
    ("event series", ("counters.py", "exposition.py", "event.py")),
    ("target and its configuration", ("targets.py", "cadvisor.py", "addresses.py")),
    ("HTTP requests (history, specs: treq, Agent)", ("twisted/web/", "treq/", "hyperlink/")),
    ("modules imported meanwhile (once, not per host)", ("<frozen importlib",)),
]


def part_of(filename: str) -> str:
    for part, fragments in PARTS:
        if any(fragment in filename for fragment in fragments):
            return part
    return "other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=3000)
    parser.add_argument("--top", type=int, default=25, help="allocation sites listed")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after every follower is up")
    parser.add_argument("--simulator-arg", action="append", default=[], help="passed to the simulator")
    parser.add_argument("exporter_args", nargs="*", help="after --: passed to the exporter")
    args = parser.parse_args()

    from twisted.application.service import MultiService
    from twisted.internet import reactor, task
    from twisted.logger import globalLogBeginner

    from cadvisor_events import tap
    from cadvisor_events.follower import Follower

    c.raise_nofile()
    workdir = tempfile.mkdtemp(prefix="cadvisor-events-census-")
    simulator, _, path = fanin.simulated_fleet(workdir, args.hosts, 4096, "fleet.json",
                                               "--containers", "1", *args.simulator_arg)
    try:
        # As twistd does: log events go to an observer, not to the start-up buffer.
        globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
        gc.collect()
        tracemalloc.start(1)
        options = tap.Options()
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", "--targets-file", path,
                              *args.exporter_args])
        service = tap.makeService(options, reactor)
        service.startService()
        started = time.monotonic()
        result: dict = {}

        def followers() -> list:
            # From the service tree: gc.get_objects() misses what the exporter's collector
            # policy froze.
            found, services = [], [service]
            while services:
                node = services.pop()
                if isinstance(node, Follower):
                    found.append(node)
                elif isinstance(node, MultiService):
                    services.extend(node)
            return found

        def check() -> None:
            found = followers()
            up = sum(f.state == "up" for f in found)
            if len(found) >= args.hosts and up >= args.hosts:
                poll.stop()
                result["up"] = time.monotonic() - started
                reactor.callLater(args.settle, report)
            elif time.monotonic() - started > 600:
                poll.stop()
                result["error"] = f"only {up} of {args.hosts} followers up after 600 s"
                reactor.stop()

        def report() -> None:
            gc.collect()
            snapshot = tracemalloc.take_snapshot()
            result["stats"] = snapshot.statistics("lineno")
            reactor.stop()

        poll = task.LoopingCall(check)
        poll.start(1.0, now=False)
        reactor.run()
        tracemalloc.stop()
    finally:
        simulator.stop()
    if "error" in result:
        print(result["error"])
        return 1
    hosts = args.hosts
    stats = result["stats"]
    traced = sum(stat.size for stat in stats)
    parts: collections.Counter = collections.Counter()
    for stat in stats:
        parts[part_of(stat.traceback[0].filename)] += stat.size
    print(f"census of {hosts:,} hosts ({' '.join(args.exporter_args) or 'default options'}), "
          f"every follower up after {result['up']:.1f} s (traced)")
    print(f"  {traced / hosts:8.0f} B per host live in traced allocations:")
    for part, size in parts.most_common():
        print(f"  {size / hosts:8.0f}   {part}")
    print("largest allocation sites (bytes and blocks per host):")
    for stat in stats[:args.top]:
        frame = stat.traceback[0]
        name = frame.filename
        for marker in ("site-packages/", "/cadvisor_events/"):
            if marker in name:
                name = ("cadvisor_events/" if marker == "/cadvisor_events/" else "") + name.split(marker, 1)[1]
        print(f"  {stat.size / hosts:8.0f} {stat.count / hosts:6.2f}  {name}:{frame.lineno}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
