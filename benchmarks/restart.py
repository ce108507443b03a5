"""Benchmark: the exporter restarting in front of a big fleet, every host holding a long history.

Budget (README.rst, *Performance*): from spawning the exporter until every host is seeded (its
history counted) and live (its stream open): <= 60 s, peak RSS <= 1 GiB; throughout, ``/-/healthy``
answers within 1 s and a full ``/metrics`` scrape completes within 5 s; at the end the counters
equal the histories.

Setup: one simulator process (``twistd cadvisor-simulator --control``) on ``0.0.0.0:PORT``
holding ``--history`` events (default 1,000: creations, deletions, OOM pairs with realistic and
hostile process names) over ``--containers`` containers (default 20), served as ``--hosts`` hosts
(default 10,000) on distinct loopback addresses: every host answers the same history, about 160
series each (1.6 million in all). The simulator encodes that answer once, so it is not the
bottleneck, and logs when each stream opened and each history request arrived (its
``/_simulator/served``). The exporter (``twistd cadvisor-events --targets-file ...
--max-series 2000000`` plus any ``--exporter-arg``; enrichment on unless ``--exporter-arg=--no-enrich``)
runs under a small benchmark-side hook (:func:`instrument`, nothing of the exporter changed): it
times every garbage collection (``gc.callbacks``) and every reactor turn (the I/O handled plus
the calls due: what delays an answer), and, on ``SIGUSR2``, writes a census of live objects by
type.

Measured while the exporter starts, from a separate process so its own work does not delay
the figures: ``GET /-/healthy`` every ``--healthy-interval`` (0.2 s), each answer's latency;
``GET /metrics`` every ``--scrape-interval`` (15 s: an HA pair of Prometheus servers at the
30 s of deploy/prometheus/scrape-config.yml; 0 scrapes back to back, a load no Prometheus
puts on a target) on fresh connections, each read whole, its latency (request to
last byte) and size. In this process: VmRSS every 0.1 s, then VmHWM; the simulator's log (phases);
``/targets?state=up&limit=1`` every 0.5 s until every host is ``up`` (its history counted,
its stream open) and ``cadvisor_events_target_up`` sums to the fleet. Then, all probes
stopped: RSS after settling 5 s, the exporter's GC log, one scrape whose
``cadvisor_container_events_total`` counts per (host, id, event_type, oom_process) (summed over
the other labels) must equal the history's, and with ``--census`` the object census.

Phases: *connect* (spawn to every stream open, from the simulator's log), *history requests*
(the first to the last history request arriving at the simulator: the bodies are in the kernel's
socket buffers at once), *decode and count* (the last history request to every host ``up``),
and, with ``--profile`` (py-spy), the exporter's CPU split into decode, count, HTTP, /metrics
rendering and other, with GC time from the hook. Bytes per series: peak RSS / series, and
(settled RSS minus that of the same fleet with no history, ``--baseline``) / series.

Run: ``python benchmarks/restart.py [--hosts 10000] [--history 1000] [--containers 20]
[--profile] [--census] [--baseline] [--exporter-arg=--no-enrich]``. Exit status 0 only when the
budget is met.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as c  # noqa: E402
from fanin import check_fleet_size, simulated_fleet  # noqa: E402

BUDGET_SECONDS = 60.0
BUDGET_PEAK_BYTES = 1 << 30
BUDGET_HEALTHY = 1.0
BUDGET_SCRAPE = 5.0
SETTLE = 5.0
HERE = os.path.dirname(os.path.abspath(__file__))


# -- inside the exporter: the benchmark's hook ------------------------------------------------

def instrument(out_prefix: str) -> None:
    """Run inside the exporter before twistd: time every GC, dump on SIGUSR1, census on SIGUSR2."""
    pauses: list = []
    totals = {0: [0, 0.0, 0.0], 1: [0, 0.0, 0.0], 2: [0, 0.0, 0.0]}  # gen -> count, seconds, max
    started = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        entry = totals[info["generation"]]
        entry[0] += 1
        entry[1] += took
        entry[2] = max(entry[2], took)
        if took >= 0.05:
            pauses.append((time.time(), info["generation"], took, info.get("collected", 0)))

    gc.callbacks.append(on_gc)
    turns = {"io": 0.0, "fds": 0, "count": 0, "max": 0.0, "over": {0.1: 0, 0.5: 0, 1.0: 0}, "slow": []}
    from twisted.internet import base, epollreactor

    read_or_write = epollreactor.EPollReactor._doReadOrWrite
    run_until_current = base.ReactorBase.runUntilCurrent

    def timed_read_or_write(self, selectable, fd, event):
        began = time.perf_counter()
        try:
            return read_or_write(self, selectable, fd, event)
        finally:
            turns["io"] += time.perf_counter() - began
            turns["fds"] += 1

    def timed_run_until_current(self):
        """One reactor turn: the I/O handled since the last one, then the calls due."""
        began = time.perf_counter()
        run_until_current(self)
        timed = time.perf_counter() - began
        busy = turns["io"] + timed
        turns["count"] += 1
        turns["max"] = max(turns["max"], busy)
        for limit in turns["over"]:
            if busy > limit:
                turns["over"][limit] += 1
        if busy > 0.5:
            turns["slow"].append((time.time(), busy, turns["io"], timed, turns["fds"]))
        turns["io"], turns["fds"] = 0.0, 0

    epollreactor.EPollReactor._doReadOrWrite = timed_read_or_write
    base.ReactorBase.runUntilCurrent = timed_run_until_current

    def write(name: str, data: dict) -> None:
        with open(out_prefix + name + ".part", "w") as f:
            json.dump(data, f)
        os.rename(out_prefix + name + ".part", out_prefix + name)

    def dump(signum, frame) -> None:
        write(".gc.json", {"totals": totals, "pauses": pauses, "threshold": gc.get_threshold(),
                           "frozen": gc.get_freeze_count(),
                           "turns": dict(turns, over={str(k): v for k, v in turns["over"].items()})})

    def census(signum, frame) -> None:
        write(".census.json", object_census())

    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGUSR2, census)


def object_census() -> dict:
    """Live objects by type: count and shallow bytes (``sys.getsizeof``), each object once:
    the GC's objects (frozen ones too) and, through their references, the untracked ones
    (bytes, str, ints, atomic tuples) they hold."""
    gc.unfreeze()
    counts: collections.Counter = collections.Counter()
    sizes: collections.Counter = collections.Counter()
    seen: set = set()
    stack = gc.get_objects()
    for obj in stack:
        seen.add(id(obj))
    for obj in stack:
        name = type(obj).__name__
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    pending = list(stack)
    del stack
    while pending:
        obj = pending.pop()
        for ref in gc.get_referents(obj):
            if id(ref) in seen or gc.is_tracked(ref):
                continue
            seen.add(id(ref))
            name = type(ref).__name__
            counts[name] += 1
            sizes[name] += sys.getsizeof(ref)
            if isinstance(ref, (tuple, dict, frozenset)):
                pending.append(ref)
    return {"counts": dict(counts), "sizes": dict(sizes)}


def instrumented_exporter(workdir: str, port: int, out_prefix: str, *extra: str) -> c.Process:
    hook = ("import sys; sys.argv[0] = 'twistd'; sys.path.insert(0, %r); import restart; "
            "restart.instrument(%r); from twisted.scripts.twistd import run; run()"
            % (HERE, out_prefix))
    argv = [sys.executable, "-c", hook, "-n", "--pidfile=", "cadvisor-events",
            "--listen", f"tcp:{port}:interface=127.0.0.1", *extra]
    return c.Process("exporter", argv, workdir)


# -- probes, in a process of their own -----------------------------------------------------------

def _get(port: int, path: bytes, timeout: float = 120) -> tuple[float, int, int]:
    """One GET on a fresh connection, read whole: (seconds to the last byte, status, body bytes)."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        size, head = 0, b""
        while True:
            data = sock.recv(1 << 20)
            if not data:
                break
            if not head:
                head = data[:16]
            size += len(data)
    status = int(head.split()[1]) if head.startswith(b"HTTP/") else 0
    return time.perf_counter() - started, status, size


def _probe_loop(port: int, path: bytes, interval: float, stop, out: list) -> None:
    while not stop.is_set():
        started = time.time()
        try:
            took, status, size = _get(port, path)
        except OSError:
            time.sleep(0.05)  # not listening yet
            continue
        out.append((started, took, status, size))
        if interval:
            stop.wait(max(0.0, interval - took))


def probes(port: int, healthy_interval: float, scrape_interval: float, stop, results) -> None:
    """``/-/healthy`` polls and ``/metrics`` scrapes (back to back with ``scrape_interval`` 0)
    until ``stop``; lists into ``results``."""
    healthy: list = []
    scrapes: list = []
    threads = [threading.Thread(target=_probe_loop, args=(port, b"/-/healthy", healthy_interval, stop, healthy)),
               threading.Thread(target=_probe_loop, args=(port, b"/metrics", scrape_interval, stop, scrapes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.send({"healthy": healthy, "scrapes": scrapes})


# -- the runs ---------------------------------------------------------------------------------

def history_counts(sim: str) -> collections.Counter:
    """(id, event_type, oom_process) -> events in the simulator's history, as the exporter keys them."""
    status, body = c.http(sim + "/api/v1.3/events?subcontainers=true&max_events=-1&all_events=true")
    counts: collections.Counter = collections.Counter()
    for event in json.loads(body):
        kind = event["event_type"]
        process = (event.get("event_data", {}).get("oom", {}).get("process_name", "") if kind == "oomKill" else "")
        counts[(event["container_name"], kind, process)] += 1
    return counts


def event_counts(text: str) -> tuple[dict, float]:
    """host -> Counter((id, event_type, oom_process) -> count) and the sum of ``target_up``, from
    a /metrics answer. Lines split on ``\\n`` only: a process name may hold a form feed or a
    U+2028, which ``str.splitlines`` would split on."""
    counts: dict = collections.defaultdict(collections.Counter)
    up = 0.0
    for line in text.split("\n"):
        if line.startswith("cadvisor_container_events_total{"):
            labels, _, value = line.rpartition(" ")
            pairs = {k: c._unescape(v) for k, v in c._LABEL.findall(labels)}
            counts[pairs["host"]][(pairs["id"], pairs["event_type"], pairs["oom_process"])] += int(value)
        elif line.startswith("cadvisor_events_target_up{"):
            up += float(line.rpartition(" ")[2])
    return counts, up


def up_count(port: int) -> int:
    answer = c.http_json(f"http://127.0.0.1:{port}/targets?state=up&limit=1", timeout=30)
    return answer["matched"]


class RssSampler(threading.Thread):
    def __init__(self, process: c.Process) -> None:
        super().__init__(daemon=True)
        self.process, self.peak, self.samples = process, 0, []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                rss = self.process.rss()
            except (OSError, KeyError):
                return
            self.peak = max(self.peak, rss)
            self.samples.append((time.time(), rss))
            self.stopping.wait(0.1)


def signal_and_read(process: c.Process, signum: int, path: str, seconds: float) -> Optional[dict]:
    if os.path.exists(path):
        os.unlink(path)
    os.kill(process.pid, signum)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.path.exists(path):
            time.sleep(0.5)  # let the writer finish
            try:
                with open(path) as f:
                    return json.load(f)
            except ValueError:
                continue
        time.sleep(0.2)
    return None


def settled_baseline(args, workdir: str) -> int:
    """Settled RSS of an exporter following the same fleet with no history."""
    port = c.free_port()
    simulator, sim, path = simulated_fleet(workdir, args.hosts, 4096, "baseline.json",
                                           "--containers", str(args.containers))
    processes = [simulator]
    try:
        exporter = c.start_exporter(workdir, port, "--targets-file", path, "--max-series", str(args.max_series),
                                    *args.exporter_arg)
        processes.append(exporter)
        c.wait_for("every host up", lambda: up_count(port) >= args.hosts, args.timeout, processes, interval=0.5)
        time.sleep(SETTLE)
        return exporter.rss()
    finally:
        for process in reversed(processes):
            process.stop()


def classify(frames: list[str]) -> str:
    """The CPU category of one sampled stack, from the innermost frame that tells."""
    for frame in reversed(frames):
        where = frame.rpartition("(")[2]
        if "scrapes.py" in where or "exposition.py" in where or "web.py" in where and "render" in frame:
            return "/metrics"
        if "counters.py" in where and "render" in frame:
            return "/metrics"
        if any(name in where for name in ("event.py", "msgspec", "json/")):
            return "decode"
        if any(name in where for name in ("counters.py", "ledger.py", "enrich.py", "oomkills.py", "specs.py",
                                          "identity.py")):
            return "count"
        if "follower.py" in where and ("merge" in frame or "_count" in frame or "received" in frame):
            return "count"
        if any(name in where for name in ("twisted/web", "twisted/internet", "treq", "httpclients.py",
                                          "cadvisor.py", "protocol.py", "streamclient.py", "gate.py")):
            return "HTTP"
    return "other"


def cpu_split(path: str) -> str:
    shares: collections.Counter = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if stack:
                n = int(count)
                total += n
                shares[classify(stack.split(";"))] += n
    if not total:
        return "(no samples)"
    return ", ".join(f"{kind} {100 * n / total:.0f}%" for kind, n in shares.most_common())


def census_table(census: dict, series: int, top: int) -> str:
    sizes, counts = census["sizes"], census["counts"]
    total = sum(sizes.values())
    lines = [f"  census: {sum(counts.values()):,} objects, {c.mib(total):.0f} MiB shallow in all "
             f"({total / max(series, 1):.0f} B per series); the biggest types:"]
    for name, size in sorted(sizes.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"    {c.mib(size):8.1f} MiB {counts[name]:>11,}  {name} ({size / counts[name]:.0f} B each)")
    return "\n".join(lines)


def one_run(args, workdir: str, base_rss: Optional[int]) -> dict:
    port = c.free_port()
    simulator, sim, path = simulated_fleet(workdir, args.hosts, 4096, "restart.json", "--history", str(args.history),
                                           "--containers", str(args.containers))
    processes = [simulator]
    stop = multiprocessing.Event()
    receiver, sender = multiprocessing.Pipe(duplex=False)
    prober = None
    try:
        expected = history_counts(sim)
        series = len(expected) * args.hosts
        print(f"history: {sum(expected.values()):,} events, {len(expected)} series per host; "
              f"{series:,} series in all")
        prefix = os.path.join(workdir, "exporter")
        prober = multiprocessing.Process(target=probes, args=(port, args.healthy_interval, args.scrape_interval, stop, sender))
        wall0 = time.time()
        started = time.monotonic()
        exporter = instrumented_exporter(workdir, port, prefix, "--targets-file", path, "--max-series",
                                         str(args.max_series), *args.exporter_arg)
        processes.append(exporter)
        prober.start()
        sampler = RssSampler(exporter)
        sampler.start()
        profile = None
        if args.profile:
            profile_path = os.path.join(workdir, "restart-profile.txt")
            profile = c.start_profile(exporter.pid, profile_path, args.timeout)
        c.wait_for("every host seeded and live", lambda: up_count(port) >= args.hosts, args.timeout, processes,
                   interval=0.5)
        done = time.monotonic() - started
        cpu = exporter.cpu_seconds()
        stop.set()
        if profile is not None:
            c.stop_profile(profile)
        probe = receiver.recv()
        prober.join()
        sampler.stopping.set()
        sampler.join()
        peak = max(sampler.peak, exporter.status("VmHWM"))
        time.sleep(SETTLE)
        settled = exporter.rss()
        gc_log = signal_and_read(exporter, signal.SIGUSR1, prefix + ".gc.json", 30)

        served = c.http_json(sim + "/_simulator/served")
        streams = sorted(t for kind, t, _ in served if kind == "stream")
        histories = sorted(t for kind, t, _ in served if kind == "history")[1:]  # the first: ours, above
        connect = streams[-1] - wall0 if len(streams) >= args.hosts else float("nan")

        status, body = c.http(f"http://127.0.0.1:{port}/metrics", timeout=300)
        text = body.decode()
        del body
        counted, up = event_counts(text)
        del text
        wrong = [host for host in counted if counted[host] != expected]
        missing = args.hosts - len(counted)
        census = None
        if args.census:
            census = signal_and_read(exporter, signal.SIGUSR2, prefix + ".census.json", 600)
    finally:
        stop.set()
        if prober is not None and prober.is_alive():
            prober.join(30)
        for process in reversed(processes):
            process.stop()

    healthy, scrapes = probe["healthy"], probe["scrapes"]
    worst_healthy = max((h[1] for h in healthy), default=0)
    worst_scrape = max((s[1] for s in scrapes), default=0)
    full_scrapes = [s for s in scrapes if s[2] == 200]
    print(f"every host seeded and live after {done:.1f} s (exporter CPU {cpu:.1f} s); peak RSS "
          f"{c.mib(peak):.0f} MiB, settled {c.mib(settled):.0f} MiB")
    print(f"  phases: connect (spawn to every stream open) {connect:.1f} s; history requests arrived from "
          f"{histories[0] - wall0 if histories else float('nan'):.1f} s to "
          f"{histories[-1] - wall0 if histories else float('nan'):.1f} s ({len(histories):,} of them, "
          f"{sum(size for kind, _, size in served if kind == 'history') / 1e6:,.0f} MB); decode and count "
          f"until every host up: {done - (histories[-1] - wall0) if histories else float('nan'):.1f} s more")
    print(f"  /-/healthy: {len(healthy)} polls, worst {worst_healthy:.2f} s, "
          f"{sum(1 for h in healthy if h[1] > BUDGET_HEALTHY)} over {BUDGET_HEALTHY:g} s, "
          f"non-200: {sum(1 for h in healthy if h[2] != 200)}")
    print(f"  /metrics: {len(scrapes)} scrapes, worst {worst_scrape:.2f} s, largest "
          f"{max((s[3] for s in full_scrapes), default=0) / 1e6:.0f} MB; latencies: "
          + ", ".join(f"{s[1]:.1f}" for s in scrapes[:60]) + (", ..." if len(scrapes) > 60 else ""))
    print(f"  bytes per series: {peak / series:,.0f} peak RSS / series"
          + (f", {(settled - base_rss) / series:,.0f} (settled RSS - the {c.mib(base_rss):.0f} MiB no-history "
             f"run) / series" if base_rss else "")
          + f"; a GiB holds ~{(1 << 30) / (peak / series) / 1e6:.1f} M series at this peak")
    if gc_log is not None:
        totals = gc_log["totals"]
        print("  GC: " + "; ".join(f"gen {gen}: {n} collections, {s:.2f} s, longest {m:.3f} s"
                                   for gen, (n, s, m) in sorted(totals.items()))
              + f"; thresholds {gc_log['threshold']}, frozen {gc_log['frozen']:,}")
        turns = gc_log["turns"]
        print(f"  reactor turns: {turns['count']:,}, longest {turns['max']:.2f} s; over 0.1 / 0.5 / 1 s: "
              + " / ".join(str(n) for n in turns["over"].values()) + "; the slowest (s after start: busy = "
              "I/O handling + calls due, fds handled): " + ", ".join(
                  f"{t - wall0:.0f}: {busy:.2f} = {io:.2f} + {timed:.2f}, {fds}"
                  for t, busy, io, timed, fds in sorted(turns["slow"], key=lambda x: -x[1])[:12]))
        if gc_log["pauses"]:
            print("  GC pauses >= 50 ms (s after start, gen, seconds): " + ", ".join(
                f"{t - wall0:.1f}/{g}/{s:.2f}" for t, g, s, _ in gc_log["pauses"]))
    if profile is not None:
        print("  CPU split (py-spy samples; GC shows under whatever allocated): " + cpu_split(profile_path))
        print(c.summarize_profile(profile_path, args.profile_top))
    print(f"  counters: {len(counted):,} hosts counted, {missing} missing, {len(wrong)} differing from the "
          f"history; target_up sums to {up:,.0f}")
    if census is not None:
        print(census_table(census, series, args.census_top))
    ok = not wrong and not missing and up >= args.hosts
    return {"done": done, "peak": peak, "settled": settled, "healthy": worst_healthy, "scrape": worst_scrape,
            "counts_ok": ok}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=1000, help="events of history every host holds")
    parser.add_argument("--containers", type=int, default=20, help="containers the history is over")
    parser.add_argument("--max-series", type=int, default=2_000_000, help="the exporter's --max-series")
    parser.add_argument("--healthy-interval", type=float, default=0.2)
    parser.add_argument("--scrape-interval", type=float, default=15.0,
                        help="seconds from one /metrics scrape's start to the next (0: back to back); "
                             "the default is an HA pair of Prometheus servers at deploy/'s 30 s")
    parser.add_argument("--timeout", type=float, default=600, help="seconds until every host must be up")
    parser.add_argument("--baseline", action="store_true",
                        help="first measure the settled RSS of the same fleet with no history (bytes per series)")
    parser.add_argument("--profile", action="store_true", help="py-spy the exporter until every host is up")
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument("--census", action="store_true", help="a census of live objects by type at the end")
    parser.add_argument("--census-top", type=int, default=20)
    parser.add_argument("--exporter-arg", action="append", default=[],
                        help="an extra exporter option (repeatable), e.g. --exporter-arg=--no-enrich")
    parser.add_argument("--keep", action="store_true", help="keep the processes' logs")
    args = parser.parse_args()
    check_fleet_size(parser, args.hosts)
    with c.Workdir(args.keep) as workdir:
        base_rss = None
        if args.baseline:
            base_rss = settled_baseline(args, workdir)
            print(f"baseline: {args.hosts:,} hosts with no history: settled RSS {c.mib(base_rss):.0f} MiB")
        result = one_run(args, workdir, base_rss)
    print(f"\nrestart in front of {args.hosts:,} hosts x {args.history:,} events of history "
          "(timings noisy: 2 shared cores):")
    print(f"  {result['done']:.1f} s to every host seeded and live   budget <= {BUDGET_SECONDS:g} s")
    print(f"  peak RSS {c.mib(result['peak']):.0f} MiB   budget <= {c.mib(BUDGET_PEAK_BYTES):.0f} MiB")
    print(f"  worst /-/healthy {result['healthy']:.2f} s   budget <= {BUDGET_HEALTHY:g} s")
    print(f"  worst /metrics scrape {result['scrape']:.2f} s   budget <= {BUDGET_SCRAPE:g} s")
    print(f"  counters equal the histories: {'yes' if result['counts_ok'] else 'NO'}")
    met = (result["done"] <= BUDGET_SECONDS and result["peak"] <= BUDGET_PEAK_BYTES
           and result["healthy"] <= BUDGET_HEALTHY and result["scrape"] <= BUDGET_SCRAPE and result["counts_ok"])
    print("budget met" if met else "budget NOT met")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
