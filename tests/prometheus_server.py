"""Real servers as child processes for tests: Debian's Prometheus, and the exporter as users start it.

:class:`PrometheusServer` runs the ``prometheus`` binary on a loopback port
with a temporary storage directory, short scrape and evaluation intervals and
the given rule files, scraping the given targets with ``honor_labels: true``
(as deploy/prometheus/scrape-config.yml does), and answers its HTTP API
(queries, alerts). :class:`ExporterProcess` runs ``twistd -n
cadvisor-events`` on a port of the test's choosing, so a test can stop it
and start it again where Prometheus scrapes it. Both are real processes in
real time: every wait here is a bounded poll of real I/O. A support module:
test modules import it, it imports no test module.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Dict, List, Optional, Sequence
from urllib.parse import urlencode

from twisted.internet import defer, error, protocol, reactor
from twisted.trial import unittest

from .support import REPO, exporter_command, free_port, http_client, until


#: How long a child process has to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 5.0


class PromQLError(Exception):
    """Prometheus refused a query: its ``errorType`` and ``error``."""


class ChildProcess(protocol.ProcessProtocol):
    """A child process whose output is kept (for failure messages) and that a test cleanup stops."""

    def __init__(self, test: unittest.TestCase, argv: Sequence[str], env: Dict[str, str], path: str) -> None:
        self.output = b""
        self.ended: defer.Deferred = defer.Deferred()
        self.running = True
        self.transport = reactor.spawnProcess(self, argv[0], list(argv), env=env, path=path)
        test.addCleanup(self.stop)

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.running = False
        self.ended.callback(reason.value)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output.decode("utf-8", "replace").splitlines()[-lines:])

    @defer.inlineCallbacks
    def stop(self, signal: str = "TERM"):
        """Send ``signal``; SIGKILL if it is still running after :data:`STOP_TIMEOUT`; wait for its end."""
        if not self.running:
            return
        try:
            self.transport.signalProcess(signal)
        except error.ProcessExitedAlready:
            pass
        timer = reactor.callLater(STOP_TIMEOUT, self._kill)
        yield self.ended
        if timer.active():
            timer.cancel()

    def _kill(self) -> None:
        if self.running:
            try:
                self.transport.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass


@defer.inlineCallbacks
def get_json(url: str):
    """GET ``url``; its status code and decoded JSON body."""
    response = yield http_client().get(url)
    body = yield response.content()
    return response.code, json.loads(body)


class PrometheusServer:
    """Debian's ``prometheus`` on 127.0.0.1, scraping ``targets`` every ``interval`` seconds.

    :param targets: ``host:port`` addresses scraped as job ``job`` (path /metrics).
    :param rule_files: rule files loaded, evaluated every ``interval`` seconds.
    :param target_labels: labels Prometheus gives the targets (as Kubernetes service discovery
        and relabelling give the exporter pod's ``namespace`` and ``pod``).
    """

    def __init__(self, test: unittest.TestCase, targets: Sequence[str], rule_files: Sequence[str] = (),
                 interval: float = 1.0, job: str = "cadvisor-events",
                 target_labels: Optional[Dict[str, str]] = None) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise unittest.SkipTest(
                "prometheus NOT INSTALLED: the real-Prometheus tests cannot run here "
                "(apt-get install prometheus; .ci/run installs it)")
        directory = os.path.abspath(test.mktemp())
        os.makedirs(directory)
        config = {
            "global": {"scrape_interval": f"{interval:g}s", "scrape_timeout": f"{interval:g}s",
                       "evaluation_interval": f"{interval:g}s"},
            "rule_files": [os.path.abspath(path) for path in rule_files],
            "scrape_configs": [{"job_name": job, "honor_labels": True,
                                "static_configs": [{"targets": list(targets),
                                                    "labels": dict(target_labels or {})}]}],
        }
        config_path = os.path.join(directory, "prometheus.yml")
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(config, f)  # JSON is YAML
        self.job = job
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = ChildProcess(test, [
            binary, f"--config.file={config_path}", f"--storage.tsdb.path={os.path.join(directory, 'data')}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
        ], env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, path=directory)

    def ready(self, timeout: float = 15.0) -> defer.Deferred:
        """Fires once Prometheus answers ``/-/ready`` with 200."""

        @defer.inlineCallbacks
        def answered():
            if not self.process.running:
                raise unittest.FailTest(f"prometheus ended:\n{self.process.tail()}")
            try:
                response = yield http_client().get(self.url + "/-/ready")
                yield response.content()
            except error.ConnectError:
                return False
            return response.code == 200

        return until(answered, "prometheus ready", timeout, interval=0.05, detail=self.process.tail)

    @defer.inlineCallbacks
    def api(self, path: str, **params):
        """GET /api/v1/``path``; its ``data``, or :class:`PromQLError` with Prometheus' reason."""
        query = ("?" + urlencode(params)) if params else ""
        code, body = yield get_json(f"{self.url}/api/v1/{path}{query}")
        if body.get("status") != "success":
            raise PromQLError(f"{code} {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    @defer.inlineCallbacks
    def query(self, expr: str, at: Optional[float] = None) -> defer.Deferred:
        """An instant query's result (a list of ``{"metric": ..., "value": [t, "v"]}`` for vectors)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = yield self.api("query", **params)
        return data["result"]

    @defer.inlineCallbacks
    def query_range(self, expr: str, start: float, end: float, step: float) -> defer.Deferred:
        """A range query's result (a list of ``{"metric": ..., "values": [[t, "v"], ...]}``)."""
        data = yield self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")
        return data["result"]

    @defer.inlineCallbacks
    def alerts(self, name: Optional[str] = None, state: str = "firing") -> defer.Deferred:
        """Alerts in ``state`` (``firing``, ``pending``), of rule ``name`` when given."""
        data = yield self.api("alerts")
        return [a for a in data["alerts"]
                if a["state"] == state and (name is None or a["labels"].get("alertname") == name)]

    @defer.inlineCallbacks
    def scrapes_ok(self, instance: str) -> defer.Deferred:
        """Whether the last scrape of ``instance`` succeeded (``up == 1``)."""
        result = yield self.query(f'up{{job="{self.job}",instance="{instance}"}} == 1')
        return bool(result)


class ExporterProcess:
    """``twistd -n cadvisor-events`` listening on 127.0.0.1:``port``, as a user starts it."""

    def __init__(self, test: unittest.TestCase, port: int, *args: str) -> None:
        self.port = port
        self.address = f"127.0.0.1:{port}"
        argv, env = exporter_command(f"tcp:{port}:interface=127.0.0.1", *args)
        self.process = ChildProcess(test, argv, env=env, path=REPO)

    def healthy(self, timeout: float = 20.0) -> defer.Deferred:
        """Fires once the exporter answers ``/-/healthy`` with 200."""

        @defer.inlineCallbacks
        def answered():
            if not self.process.running:
                raise unittest.FailTest(f"exporter ended:\n{self.process.tail()}")
            try:
                response = yield http_client().get(f"http://{self.address}/-/healthy")
                yield response.content()
            except error.ConnectError:
                return False
            return response.code == 200

        return until(answered, "exporter healthy", timeout, interval=0.05, detail=self.process.tail)

    def stop(self, signal: str = "TERM") -> defer.Deferred:
        return self.process.stop(signal)


def labels_of(result: List[dict]) -> List[Dict[str, str]]:
    """The label sets of a query result, for assertions."""
    return [sample["metric"] for sample in result]
