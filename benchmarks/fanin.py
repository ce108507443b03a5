"""Benchmark: fan-in of a large fleet, 10,000 hosts on distinct loopback addresses.

Budget (README.rst, *Performance*): all streams open and ``cadvisor_events_target_up`` summing to
the fleet size within 10 s; <= 16 KiB of exporter RSS per host, the whole process's RSS divided
by the hosts (nothing subtracted: what a user sizes for).

Setup: one simulator process (``twistd cadvisor-simulator --control``)
listening on ``0.0.0.0:PORT`` (so it accepts connections to every 127.x.y.z
address; backlog 4096) with an empty history, tracking ``--containers``
containers (default 1, its least: one pod-level cgroup and its ancestors, 4
cgroups and no container; every host's spec listing returns them); a targets file (file_sd JSON)
listing ``127.0.X.Y:PORT`` for ``--hosts`` distinct addresses; the exporter
(``twistd cadvisor-events --targets-file ...``) started on it. Every first
connect opens the stream and then fetches the host's (empty) history to seed
the counters: two requests per host, both counted in the figures.

Time: from spawning the exporter until ``/metrics`` says ``target_up`` sums to
the fleet size. While connecting, only the simulator is polled (its open
stream count, every 100 ms: no load on the exporter); once it holds every
stream, ``/metrics`` is polled every 200 ms. The exporter's own start-up (Python,
imports, twistd) is measured separately on the baseline run (spawn to first
``/-/healthy``) and reported; it is included in the figure, not subtracted.
Also reported: when every follower finished its history (state ``up``).

Memory: VmRSS of the exporter 3 s after every follower is ``up`` (no request
in between), divided by the hosts (the budget), and also minus the baseline,
divided by the hosts (what one more host costs). The baseline is the
VmRSS of an exporter started the same way on an empty targets file, after
it answered ``/metrics`` once and settled 3 s. Kernel socket buffers are not
in RSS; Python objects per follower and per connection are. Also reported:
the spec cache's entries (``cadvisor_events_spec_cache_entries``), so two
runs with different ``--containers`` give the memory per cached container.

Each run uses fresh processes; the figures are the median of ``--runs``.
``--profile`` records the exporter with py-spy while it connects.

Run: ``python benchmarks/fanin.py [--hosts 10000] [--runs 3] [--profile]``.
Exit status 0 only when the budget is met.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as c  # noqa: E402

BUDGET_SECONDS = 10.0
BUDGET_KIB_PER_HOST = 16.0
SETTLE = 3.0


def addresses(count: int) -> list[str]:
    """``127.0.X.Y`` for X from 1, Y in 1..250: distinct, never 127.0.0.1."""
    return [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(count)]


def check_fleet_size(parser: argparse.ArgumentParser, hosts: int) -> None:
    """Refuse more hosts than :func:`addresses` has; raise the open files limit, warning when
    it stays too low for a stream per host."""
    if hosts > 250 * 255:
        parser.error("at most 63,750 hosts (127.0.1-255.1-250)")
    nofile = c.raise_nofile()
    if nofile < hosts + 1000:
        print(f"warning: open files limit {nofile} is low for {hosts} streams")


def write_targets(path: str, targets: list[str]) -> None:
    with open(path, "w") as f:
        json.dump([{"targets": targets, "labels": {"bench": "fanin"}}] if targets else [], f)


def simulated_fleet(workdir: str, hosts: int, backlog: int, name: str = "fleet.json", *simulator_args: str):
    """One simulator process (``--control``) on 0.0.0.0 and a targets file naming it as ``hosts``
    hosts on distinct loopback addresses: ``(simulator process, its URL, the file's path)``."""
    sim_port = c.free_port("0.0.0.0")
    simulator = c.start_simulator(workdir, [f"tcp:port={sim_port}:interface=0.0.0.0:backlog={backlog}"],
                                  *simulator_args)
    sim = f"http://127.0.0.1:{sim_port}"
    try:
        c.wait_for("the simulator", lambda: c.http(sim + "/healthz", timeout=2)[0] == 200, 30, [simulator])
    except BaseException:
        simulator.stop()
        raise
    path = os.path.join(workdir, name)
    write_targets(path, [f"{address}:{sim_port}" for address in addresses(hosts)])
    return simulator, sim, path


def spec_cache_entries(port: int) -> float:
    """``cadvisor_events_spec_cache_entries`` (0 with ``--no-enrich``)."""
    status, body = c.http(f"http://127.0.0.1:{port}/metrics", timeout=60)
    return sum(value for _, _, value in c.parse_samples(body.decode(), {"cadvisor_events_spec_cache_entries"}))


def target_up_sum(port: int) -> float:
    status, body = c.http(f"http://127.0.0.1:{port}/metrics", timeout=60)
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    return sum(c.per_host(body.decode(), "cadvisor_events_target_up").values())


def baseline(args, workdir: str) -> tuple[int, float]:
    """RSS of an exporter with no target, and its start-up time (spawn to /-/healthy)."""
    path = os.path.join(workdir, "empty.json")
    write_targets(path, [])
    port = c.free_port()
    started = time.monotonic()
    exporter = c.start_exporter(workdir, port, "--targets-file", path, *args.exporter_arg)
    try:
        startup = c.wait_for("the exporter", lambda: c.http(f"http://127.0.0.1:{port}/-/healthy", timeout=2)[0] == 200,
                             60, [exporter], interval=0.02)
        startup = time.monotonic() - started
        c.http(f"http://127.0.0.1:{port}/metrics")
        time.sleep(SETTLE)
        return exporter.rss(), startup
    finally:
        exporter.stop()


def one_run(args, workdir: str, run: int, rss_base: int) -> dict:
    exporter_port = c.free_port()
    simulator, sim, path = simulated_fleet(workdir, args.hosts, 4096, f"fleet-{run}.json",
                                           "--containers", str(args.containers))
    processes = [simulator]
    try:
        started = time.monotonic()
        exporter = c.start_exporter(workdir, exporter_port, "--targets-file", path, *args.exporter_arg)
        processes.append(exporter)
        profile = None
        if args.profile:
            profile_path = os.path.join(workdir, f"fanin-{run}.txt")
            profile = c.start_profile(exporter.pid, profile_path, args.timeout)

        def all_streams_at_simulator() -> bool:
            return c.http_json(sim + "/_simulator/status", timeout=5)["open_streams"] >= args.hosts

        c.wait_for("the simulator to hold every stream", all_streams_at_simulator, args.timeout, processes)
        sim_seconds = time.monotonic() - started
        c.wait_for("target_up to sum to the fleet", lambda: target_up_sum(exporter_port) >= args.hosts,
                   args.timeout, processes, interval=0.2)
        up_seconds = time.monotonic() - started
        cpu_at_up = exporter.cpu_seconds()
        if profile is not None:
            c.stop_profile(profile)

        def all_caught_up() -> bool:
            return sum(t["state"] == "up" for t in c.targets(exporter_port)) >= args.hosts

        c.wait_for("every follower to finish its history", all_caught_up, args.timeout, processes, interval=1.0)
        caught_up_seconds = time.monotonic() - started
        time.sleep(SETTLE)
        rss = exporter.rss()
        per_host = rss / args.hosts
        above = (rss - rss_base) / args.hosts
        entries = spec_cache_entries(exporter_port)
        result = {"up": up_seconds, "sim": sim_seconds, "caught_up": caught_up_seconds, "rss": rss,
                  "per_host": per_host, "above": above, "hwm": exporter.status("VmHWM"), "cpu": cpu_at_up,
                  "sim_cpu": simulator.cpu_seconds(), "entries": entries}
        print(f"run {run}: simulator held {args.hosts:,} streams after {sim_seconds:.2f} s, target_up = "
              f"{args.hosts:,} after {up_seconds:.2f} s (exporter CPU {cpu_at_up:.2f} s), every history done "
              f"by {caught_up_seconds:.1f} s (1 s polls); RSS {c.mib(rss):.1f} MiB (peak {c.mib(result['hwm']):.1f}), "
              f"{per_host / 1024:.1f} KiB per host ({above / 1024:.1f} above the baseline), {entries:,.0f} spec cache "
              f"entries; simulator CPU {result['sim_cpu']:.1f} s")
        if profile is not None:
            print(c.summarize_profile(profile_path, args.profile_top))
        return result
    finally:
        for process in reversed(processes):
            process.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120, help="seconds one phase may take")
    parser.add_argument("--profile", action="store_true", help="py-spy the exporter while it connects")
    parser.add_argument("--profile-top", type=int, default=30)
    parser.add_argument("--containers", type=int, default=1,
                        help="containers the simulated cAdvisor tracks (its --containers; 1, its least: a "
                             "pod-level cgroup, no container), which every host's spec listing returns")
    parser.add_argument("--exporter-arg", action="append", default=[],
                        help="an extra exporter option (repeatable), e.g. --exporter-arg=--no-history-seed")
    parser.add_argument("--keep", action="store_true", help="keep the processes' logs")
    args = parser.parse_args()
    check_fleet_size(parser, args.hosts)
    results = []
    with c.Workdir(args.keep) as workdir:
        rss_base, startup = baseline(args, workdir)
        print(f"baseline: exporter with no target: RSS {c.mib(rss_base):.1f} MiB; start-up (spawn to /-/healthy) "
              f"{startup:.2f} s")
        for run in range(1, args.runs + 1):
            results.append(one_run(args, workdir, run, rss_base))
    up = c.median([r["up"] for r in results])
    per_host_kib = c.median([r["per_host"] for r in results]) / 1024
    above_kib = c.median([r["above"] for r in results]) / 1024
    print(f"\nfan-in, {args.hosts:,} hosts on distinct loopback addresses (median of {len(results)} runs):")
    print(f"  {up:.2f} s from spawning the exporter to target_up = {args.hosts:,}   budget <= {BUDGET_SECONDS:g} s")
    print(f"    (its start-up alone: {startup:.2f} s; the simulator held every stream after "
          f"{c.median([r['sim'] for r in results]):.2f} s)")
    print(f"  {per_host_kib:.1f} KiB RSS per host (the whole process's RSS / hosts)   "
          f"budget <= {BUDGET_KIB_PER_HOST:g} KiB")
    print(f"    ({above_kib:.1f} KiB per host above the {c.mib(rss_base):.1f} MiB baseline; "
          f"{c.median([r['entries'] for r in results]):,.0f} spec cache entries)")
    met = up <= BUDGET_SECONDS and per_host_kib <= BUDGET_KIB_PER_HOST
    print("budget met" if met else "budget NOT met")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
