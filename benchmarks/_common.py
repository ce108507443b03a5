"""Helpers shared by the benchmarks: processes, HTTP, /proc figures, metrics, profiles.

Every benchmark runs the real exporter (``python -m twisted -n --pidfile=
cadvisor-events ...``) and the cAdvisor simulator (``... cadvisor-simulator
--control``) as subprocesses with PYTHONPATH set to the repository root, so
they work from a clean checkout without installing anything. Nothing here
loops without a bound: every wait has a deadline.
"""

from __future__ import annotations

import collections
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Callable, Iterable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def raise_nofile(wanted: int = 1 << 20) -> int:
    """Raise this process's soft RLIMIT_NOFILE as far as the hard limit allows; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Process:
    """A twistd subprocess (log in a temporary file) with its /proc figures."""

    def __init__(self, name: str, argv: list[str], workdir: str) -> None:
        self.name = name
        self.log_path = os.path.join(workdir, name + ".log")
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   PYTHONDONTWRITEBYTECODE="1")
        self._log = open(self.log_path, "wb")
        # The exporter raises its own fd limit; the simulator inherits ours (raise_nofile).
        self.popen = subprocess.Popen(argv, cwd=workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        """user + system CPU seconds so far (``/proc/PID/stat`` utime + stime)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def status(self, field: str) -> int:
        """A ``kB`` field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``) in bytes."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(field)

    def rss(self) -> int:
        return self.status("VmRSS")

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")

    def stop(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()


#: ``twistd`` itself, run by this Python (``python -m twisted`` is the other runner,
#: ``twist``, which knows neither ``-n`` nor ``--pidfile``).
TWISTD = [sys.executable, "-c", "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"]


def twistd(plugin: str, *args: str) -> list[str]:
    return [*TWISTD, "-n", "--pidfile=", plugin, *args]


def start_simulator(workdir: str, listen: Iterable[str], *extra: str) -> Process:
    argv = twistd("cadvisor-simulator", "--rate", "0", "--control", *extra)
    for description in listen:
        argv += ["--listen", description]
    return Process("simulator", argv, workdir)


def start_exporter(workdir: str, port: int, *extra: str) -> Process:
    return Process("exporter", twistd("cadvisor-events", "--listen", f"tcp:{port}:interface=127.0.0.1", *extra),
                   workdir)


def http(url: str, method: str = "GET", timeout: float = 60, headers: Optional[dict] = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {},
                                     data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_json(url: str, method: str = "GET", timeout: float = 60):
    status, body = http(url, method, timeout)
    if status != 200:
        raise RuntimeError(f"{method} {url}: HTTP {status}: {body[:300]!r}")
    return json.loads(body)


def wait_for(what: str, check: Callable[[], bool], seconds: float, processes: Iterable[Process] = (),
             interval: float = 0.1) -> float:
    """Call ``check`` until it is true; the seconds it took. Fails after ``seconds``
    or when one of ``processes`` died."""
    started = time.monotonic()
    deadline = started + seconds
    while True:
        for process in processes:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited while waiting for {what}:\n{process.log_tail()}")
        try:
            if check():
                return time.monotonic() - started
        except (OSError, ValueError, RuntimeError):
            pass  # not answering yet
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(interval)


def targets(exporter_port: int) -> list[dict]:
    return http_json(f"http://127.0.0.1:{exporter_port}/targets", timeout=30)["targets"]


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def parse_samples(text: str, names: Optional[set] = None) -> list[tuple[str, dict, float]]:
    """``(name, labels, value)`` of every sample line (of ``names`` only, if given)."""
    samples = []
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        if names is not None and line.partition("{")[0].partition(" ")[0] not in names:
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise ValueError(f"not a sample line: {line!r}")
        name, labels, value = match.groups()
        samples.append((name, {k: _unescape(v) for k, v in _LABEL.findall(labels or "")}, float(value)))
    return samples


def event_counts(text: str) -> dict[str, collections.Counter]:
    """host -> Counter((id, event_type, oom_process) -> count) from a /metrics answer."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for _, labels, value in parse_samples(text, {"cadvisor_container_events_total"}):
        counts[labels["host"]][(labels["id"], labels["event_type"], labels["oom_process"])] += int(value)
    return counts


def per_host(text: str, name: str) -> dict[str, float]:
    return {labels["host"]: value for _, labels, value in parse_samples(text, {name})}


def median(values: list[float]) -> float:
    return statistics.median(values)


def mib(n_bytes: float) -> float:
    return n_bytes / (1024 * 1024)


class Workdir:
    """A temporary directory for logs, removed at the end unless ``keep``."""

    def __init__(self, keep: bool = False) -> None:
        self.path = tempfile.mkdtemp(prefix="cadvisor-events-bench-")
        self.keep = keep

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, *exc) -> None:
        if self.keep or exc[0] is not None:
            print(f"(logs kept in {self.path})")
        else:
            shutil.rmtree(self.path, ignore_errors=True)


# -- profiles (py-spy) ---------------------------------------------------------------------

def pyspy() -> Optional[str]:
    """The py-spy executable next to this Python, or on PATH (None without it)."""
    candidate = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return candidate if os.path.exists(candidate) else shutil.which("py-spy")


def start_profile(pid: int, out_path: str, seconds: float) -> Optional[subprocess.Popen]:
    """py-spy sampling ``pid`` for at most ``seconds`` into ``out_path`` (collapsed stacks)."""
    exe = pyspy()
    if exe is None:
        print("(py-spy not installed: no profile)")
        return None
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--format", "raw", "--rate", "250",
                             "--duration", str(max(1, int(seconds))), "--nonblocking", "--output", out_path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profile(profile: subprocess.Popen) -> None:
    """Stop py-spy early; SIGINT makes it write what it sampled."""
    if profile.poll() is None:
        profile.send_signal(signal.SIGINT)
    try:
        profile.wait(30)
    except subprocess.TimeoutExpired:
        profile.kill()
        profile.wait()


def summarize_profile(path: str, top: int = 25) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            frames = [re.sub(r" \((.*/)?([^/]+?)(:\d+)?\)$", r" (\2)", frame) for frame in stack.split(";")]
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    if not total:
        return "(no samples)"
    lines = [f"{total} samples; self% / inclusive% per function:"]
    for frame, n in own.most_common(top):
        lines.append(f"  {100 * n / total:5.1f}% {100 * inclusive[frame] / total:5.1f}%  {frame}")
    return "\n".join(lines)
