"""Benchmark: stream ingest, one HTTP chunk per event as cAdvisor sends them.

Budget (README.rst, *Performance*): >= 150,000 events per CPU-second of the exporter and
<= 64 MiB RSS growth over the million events.

Setup: one simulator process (``twistd cadvisor-simulator --control``)
listening on ``--hosts`` loopback ports, each a host; the exporter (``twistd
cadvisor-events``) follows them. Once every follower is live (state ``up``:
history fetched, so nothing is buffered), ``POST /_simulator/burst`` makes the
simulator write ``--events`` events to each stream, pre-encoded, one chunk per
event, as fast as each connection takes them (a push producer: the
simulator's memory stays bounded). The burst's containers are known to the
simulator's spec API, as a real cAdvisor knows every container it announces;
the spec requests the exporter made during the burst are reported.
``--exporter-arg=--no-enrich`` measures the exporter without specs. The window runs from the burst's start
until the exporter's ``received`` (from ``/targets``, polled every 50 ms once
the simulator has written everything, every 200 ms before) reaches
hosts x events. Figures over the window: the exporter's user+system CPU
(``/proc/PID/stat``), wall time, VmRSS growth (``/proc/PID/status``), and the
simulator's CPU (to show it was not the bottleneck). Then ``/metrics`` is
checked against the burst's ground truth: every host's
``cadvisor_container_events_total`` series equal the burst's counts and its
``cadvisor_events_received_total`` equals ``--events``.

Each run uses fresh processes; the figures are the median of ``--runs``.
``--profile`` also records the exporter with py-spy during the burst and
prints where the time went.

Run: ``python benchmarks/ingest.py [--events 250000] [--hosts 4] [--runs 3] [--profile]``.
Exit status 0 only when the budget is met and the counts are exact.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as c  # noqa: E402

BUDGET_EVENTS_PER_CPU_SECOND = 150_000
BUDGET_RSS_GROWTH_MIB = 64


def spec_requests(exporter_port: int) -> dict:
    """``cadvisor_events_spec_requests_total`` by result (empty with ``--no-enrich``)."""
    status, body = c.http(f"http://127.0.0.1:{exporter_port}/metrics")
    return {labels["result"]: value
            for _, labels, value in c.parse_samples(body.decode(), {"cadvisor_events_spec_requests_total"})}


def one_run(args, workdir: str, run: int) -> dict:
    sim_ports = [c.free_port() for _ in range(args.hosts)]
    exporter_port = c.free_port()
    simulator = c.start_simulator(workdir, [f"tcp:{p}:interface=127.0.0.1" for p in sim_ports])
    processes = [simulator]
    try:
        sim = f"http://127.0.0.1:{sim_ports[0]}"
        c.wait_for("the simulator", lambda: c.http(sim + "/healthz", timeout=2)[0] == 200, 30, processes)
        target_args = [arg for port in sim_ports for arg in ("--target", f"127.0.0.1:{port}")]
        exporter = c.start_exporter(workdir, exporter_port, *target_args, *args.exporter_arg)
        processes.append(exporter)
        c.wait_for("every stream up", lambda: sum(t["state"] == "up" for t in c.targets(exporter_port)) == args.hosts,
                   60, processes)
        expected = args.hosts * args.events
        before = sum(t["received"] for t in c.targets(exporter_port))
        specs_before = spec_requests(exporter_port)
        cpu0, sim_cpu0, rss0, t0 = exporter.cpu_seconds(), simulator.cpu_seconds(), exporter.rss(), time.monotonic()
        profile = None
        if args.profile:
            profile_path = os.path.join(workdir, f"ingest-{run}.txt")
            profile = c.start_profile(exporter.pid, profile_path, args.events * args.hosts / 50_000 + 5)
        burst = c.http_json(f"{sim}/_simulator/burst?events={args.events}&keys={args.keys}", "POST")
        if burst["streams"] != args.hosts:
            raise RuntimeError(f"the burst went to {burst['streams']} streams, not {args.hosts}")
        c.wait_for("the simulator to write the burst", lambda: not c.http_json(sim + "/_simulator/burst")["running"],
                   args.timeout, processes, interval=0.2)
        received = [before]

        def all_counted() -> bool:
            received[0] = sum(t["received"] for t in c.targets(exporter_port))
            return received[0] - before >= expected

        c.wait_for("the exporter to count the burst", all_counted, args.timeout, processes, interval=0.05)
        t1, cpu1, sim_cpu1, rss1 = time.monotonic(), exporter.cpu_seconds(), simulator.cpu_seconds(), exporter.rss()
        if profile is not None:
            c.stop_profile(profile)
        # Ground truth: every host's series equal the burst's counts, received equals the events.
        status, body = c.http(f"http://127.0.0.1:{exporter_port}/metrics")
        text = body.decode()
        truth = {(id_, event_type, oom_process): n for id_, event_type, oom_process, n in burst["counts"]}
        counts = c.event_counts(text)
        received_metric = c.per_host(text, "cadvisor_events_received_total")
        problems = []
        for port in sim_ports:
            host = f"127.0.0.1:{port}"
            if dict(counts.get(host, {})) != truth:
                problems.append(f"{host}: series differ from the burst's ground truth")
            if received_metric.get(host) != args.events:
                problems.append(f"{host}: received_total {received_metric.get(host)} != {args.events}")
        asked = {result: n - specs_before.get(result, 0) for result, n in spec_requests(exporter_port).items()}
        result = {
            "events": expected,
            "cpu": cpu1 - cpu0,
            "wall": t1 - t0,
            "sim_cpu": sim_cpu1 - sim_cpu0,
            "rss0": rss0,
            "rss_growth": rss1 - rss0,
            "problems": problems,
        }
        result["per_cpu_second"] = expected / result["cpu"]
        result["per_wall_second"] = expected / result["wall"]
        print(f"run {run}: {expected:,} events in {result['wall']:.2f} s wall ({result['per_wall_second']:,.0f}/s), "
              f"exporter CPU {result['cpu']:.2f} s ({result['per_cpu_second']:,.0f} events/CPU-s), "
              f"simulator CPU {result['sim_cpu']:.2f} s, RSS {c.mib(rss0):.1f} -> {c.mib(rss1):.1f} MiB "
              f"(+{c.mib(result['rss_growth']):.1f}); spec requests {sum(asked.values()):,.0f} "
              f"{dict(sorted((k, int(v)) for k, v in asked.items() if v))}; "
              f"counts {'exact' if not problems else 'WRONG: ' + '; '.join(problems)}")
        if profile is not None:
            print(c.summarize_profile(profile_path, args.profile_top))
        return result
    finally:
        for process in reversed(processes):
            process.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=250_000, help="events per stream")
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--keys", type=int, default=64, help="distinct counting keys in the burst")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=180, help="seconds one burst may take")
    parser.add_argument("--profile", action="store_true", help="py-spy the exporter during each burst")
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument("--exporter-arg", action="append", default=[],
                        help="an extra exporter option (repeatable), e.g. --exporter-arg=--no-enrich")
    parser.add_argument("--keep", action="store_true", help="keep the processes' logs")
    args = parser.parse_args()
    c.raise_nofile()
    results = []
    with c.Workdir(args.keep) as workdir:
        for run in range(1, args.runs + 1):
            results.append(one_run(args, workdir, run))
    per_cpu = c.median([r["per_cpu_second"] for r in results])
    per_wall = c.median([r["per_wall_second"] for r in results])
    growth = c.mib(c.median([r["rss_growth"] for r in results]))
    exact = all(not r["problems"] for r in results)
    print(f"\ningest, {args.hosts} hosts x {args.events:,} events, one chunk per event "
          f"(median of {len(results)} runs):")
    print(f"  {per_cpu:,.0f} events per exporter CPU-second   budget >= {BUDGET_EVENTS_PER_CPU_SECOND:,}")
    print(f"  {per_wall:,.0f} events per wall second")
    print(f"  RSS growth {growth:.1f} MiB over the burst          budget <= {BUDGET_RSS_GROWTH_MIB} MiB")
    print(f"  counts {'exact in every run' if exact else 'WRONG'}")
    met = per_cpu >= BUDGET_EVENTS_PER_CPU_SECOND and growth <= BUDGET_RSS_GROWTH_MIB and exact
    print("budget met" if met else "budget NOT met")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
