"""The shipped rules and dashboard against a real Prometheus scraping the real exporter.

Each test runs the simulator in this process (a cAdvisor with Kubernetes pods
on a loopback port), ``twistd -n cadvisor-events`` following it as a child
process, and Debian's ``prometheus`` as another child process, scraping the
exporter every second with ``honor_labels`` and evaluating
deploy/prometheus/rules.yml every second. Time is real: every wait is a
bounded poll of Prometheus' HTTP API. Without the ``prometheus`` binary the
tests are skipped, saying so. The dashboard's static shape is checked
without a server.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import time
from typing import Dict, List, Set

import yaml
from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from cadvisor_events.simulator import Simulator
from cadvisor_events.simulator.cluster import SimContainer

from .prometheus_server import ExporterProcess, PrometheusServer, PromQLError
from .support import REPO, figures, free_port, http_client, track, until

RULES = os.path.join(REPO, "deploy", "prometheus", "rules.yml")
DASHBOARD = os.path.join(REPO, "deploy", "grafana", "cadvisor-events.json")

#: Grafana's own variables, and what the tests put in their place: as Grafana computes them for
#: a short range scraped every second (``$__rate_interval`` is four scrape intervals).
GRAFANA_BUILTINS = {"__interval": "2s", "__rate_interval": "4s", "__range": None}
VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]")
#: A template variable's query: Grafana's ``label_values(selector, label)``.
LABEL_VALUES = re.compile(r"label_values\((.+), *(\w+)\)")
#: Families with a ``host`` label: the dashboard filters them by ``$host``.
PER_HOST = ("cadvisor_container_", "cadvisor_node_", "cadvisor_events_target_up", "cadvisor_events_gaps",
            "cadvisor_events_stream_failures", "cadvisor_events_last_event")
#: A metric or recording rule name in an expression (every family this project reads).
METRIC = re.compile(r"\b(cadvisor_[a-z_]+(?::[a-z_0-9]+)*|process_start_time_seconds|scrape_[a-z_]+)\b")


def load_dashboard() -> dict:
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def dashboard_targets(dashboard: dict) -> List[dict]:
    """Every query target of every panel (rows included), each with its panel's title."""
    found = []

    def visit(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                found.append(dict(target, panel=panel["title"]))
            visit(panel.get("panels", []))

    visit(dashboard["panels"])
    return found


def rule_expressions() -> List[str]:
    with open(RULES, encoding="utf-8") as f:
        groups = yaml.safe_load(f)["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def substitute(expr: str, range_seconds: int) -> str:
    """The expression Grafana would send with every variable on "All" (``.*``)."""
    values = dict(GRAFANA_BUILTINS, __range=f"{range_seconds}s")

    def replace(match):
        name = next(group for group in match.groups() if group)
        return values.get(name, ".*")

    return VARIABLE.sub(replace, expr)


class DashboardFileTests(unittest.TestCase):
    """What Grafana needs from the file, checked without a server."""

    def setUp(self):
        self.dashboard = load_dashboard()
        self.variables = {v["name"]: v for v in self.dashboard["templating"]["list"]}

    def test_datasource_is_a_variable_and_every_panel_uses_it(self):
        self.assertEqual(self.variables["datasource"]["type"], "datasource")
        self.assertEqual(self.variables["datasource"]["query"], "prometheus")
        for target in dashboard_targets(self.dashboard):
            self.assertEqual(target["datasource"], {"type": "prometheus", "uid": "${datasource}"}, target["panel"])
        self.assertNotIn("__inputs", self.dashboard)  # nothing to map on import but the variable

    def test_host_and_namespace_variables_filter_every_event_query(self):
        for name in ("host", "namespace", "job"):
            self.assertTrue(self.variables[name]["includeAll"], name)
            self.assertEqual(self.variables[name]["allValue"], ".*", name)
        for target in dashboard_targets(self.dashboard):
            expr = target["expr"]
            if any(family in expr for family in PER_HOST):
                self.assertIn('host=~"$host"', expr, target["panel"])
            if "cadvisor_container_" in expr:
                self.assertIn('namespace=~"$namespace"', expr, target["panel"])

    def test_every_variable_used_is_defined(self):
        defined = set(self.variables) | set(GRAFANA_BUILTINS)
        texts = [t["expr"] for t in dashboard_targets(self.dashboard)]
        texts += [v["query"]["query"] for v in self.variables.values() if v["type"] == "query"]
        for text in texts:
            for match in VARIABLE.finditer(text):
                self.assertIn(next(g for g in match.groups() if g), defined, text)

    def test_panels_have_unique_ids_and_the_asked_for_views(self):
        ids = [p["id"] for p in self.dashboard["panels"]]
        self.assertEqual(len(ids), len(set(ids)))
        exprs = " ".join(t["expr"] for t in dashboard_targets(self.dashboard))
        for needed in ("cadvisor_container_oom_kills_total", "cadvisor_node_oom_kills_total", "oom_process",
                       "by (event_type)", "cadvisor_events_target_up", "cadvisor_events_gaps_total",
                       "cadvisor_events_stream_failures_total", "by (reason)", "cadvisor_events_series",
                       "scrape_duration_seconds"):
            self.assertIn(needed, exprs)


class Pod:
    """A Kubernetes pod the simulator started: its name, and each container's cgroup."""

    def __init__(self, sim: Simulator, namespace: str, app: str, driver: str, runtime: str) -> None:
        started = sim.start_pod(namespace=namespace, app=app, driver=driver, runtime=runtime, containers=2)
        self.namespace = namespace
        self.pod_cgroup = started[0].name
        self.cgroups: Dict[str, str] = {}
        for container in started[1:]:
            labels = dict(container.labels)
            self.name = labels["io.kubernetes.pod.name"]
            if "io.kubernetes.container.name" in labels and labels["io.kubernetes.container.name"] != "POD":
                self.cgroups[labels["io.kubernetes.container.name"]] = container.name


class SlowHistory(Resource):
    """The simulator's API with its history answers (not streams, not specs) held ``delay``
    seconds, as a busy cAdvisor or a whole fleet connecting at once holds them."""

    isLeaf = True

    def __init__(self, api: Resource) -> None:
        super().__init__()
        self.api = api
        self.delay = 0.0

    def render(self, request):
        if self.delay and request.path.endswith(b"/events") and b"stream=true" not in request.uri:
            call = reactor.callLater(self.delay, self._answer, request)
            request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
            return NOT_DONE_YET
        return self.api.render(request)

    def _answer(self, request) -> None:
        body = self.api.render(request)
        if body is not NOT_DONE_YET:
            request.write(body)
            request.finish()


class Stack:
    """The simulator here, the exporter and Prometheus as child processes, all on loopback."""

    def __init__(self, test: unittest.TestCase, *exporter_args: str, event_limit: int = 100_000) -> None:
        self.test = test
        self.sim = Simulator(clock=reactor, seed=11, containers=5, event_limit=event_limit)
        self.slow = SlowHistory(self.sim.resource)
        site = Site(self.slow)
        track(site, test)
        self.sim_port = reactor.listenTCP(0, site, interface="127.0.0.1")
        test.addCleanup(self.sim_port.stopListening)
        test.addCleanup(self.sim.cut_streams)
        self.host = f"127.0.0.1:{self.sim_port.getHost().port}"
        self.exporter_args = ("--target", self.host, *exporter_args)
        self.exporter_port = free_port()
        self.exporter = ExporterProcess(test, self.exporter_port, *self.exporter_args)
        # The exporter pod's own namespace and pod, as deploy/prometheus/scrape-config.yml's relabelling
        # sets them: with honor_labels the event series keep the killed container's.
        self.prometheus = PrometheusServer(test, [self.exporter.address], [RULES], interval=1.0,
                                           target_labels={"namespace": "cadvisor", "pod": "cadvisor-events-0"})
        self.started = time.time()

    @defer.inlineCallbacks
    def ready(self):
        yield defer.gatherResults([self.prometheus.ready(), self.exporter.healthy()])
        yield self.until_query(f'cadvisor_events_target_up{{host="{self.host}"}} == 1', "the simulator streamed")

    @defer.inlineCallbacks
    def restart_exporter(self):
        """Stop the exporter (SIGTERM) and start it again where Prometheus scrapes it."""
        yield self.exporter.stop()
        self.exporter = ExporterProcess(self.test, self.exporter_port, *self.exporter_args)
        yield self.exporter.healthy()

    def until_query(self, expr: str, what: str, timeout: float = 15.0):
        """Poll an instant query until it has a result; fires with that result."""
        last: list = []

        def answered():
            return self.prometheus.query(expr).addCallback(lambda result: last.append(result) or result)

        return until(answered, what, timeout, interval=0.2, detail=lambda: f"{expr} -> {last[-1:]}")

    def until_alert(self, name: str, timeout: float = 15.0, **labels: str):
        """Poll /api/v1/alerts until ``name`` fires with ``labels``; fires with that alert."""
        seen: list = []

        @defer.inlineCallbacks
        def firing():
            alerts = yield self.prometheus.alerts(name)
            seen[:] = alerts
            matching = [a for a in alerts if all(a["labels"].get(k) == v for k, v in labels.items())]
            return matching[0] if matching else None

        return until(firing, f"{name} firing for {labels}", timeout, interval=0.2, detail=lambda: repr(seen))


class PrometheusAlertTests(unittest.TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def test_first_oom_kill_of_a_new_pod_fires_and_an_exporter_restart_does_not(self):
        # cAdvisor keeps 3 events per type: the oldest kill ages out of its history.
        stack = Stack(self, event_limit=3)
        sim = stack.sim
        # A pod OOM-killed twice before the exporter started: history seeds its counter at 2, no alert.
        old = Pod(sim, "payments", "postgres", driver="cgroupfs", runtime="docker")
        sim.emit_oom(old.cgroups["postgres"], "postgres", 4001)
        sim.emit_oom(old.cgroups["postgres"], "postgres", 4002)
        yield stack.ready()
        yield stack.until_query(f'cadvisor_container_oom_kills_total{{pod="{old.name}",container="postgres"}} == 2',
                                "the seeded kills scraped")

        # A new pod: its counter is scraped at 0, then its first kill fires within a few evaluations.
        pod = Pod(sim, "shop", "api", driver="systemd", runtime="containerd")
        yield stack.until_query(f'cadvisor_container_oom_kills_total{{pod="{pod.name}",container="api"}} == 0',
                                "the new pod's counter at 0")
        killed = time.monotonic()
        sim.emit_oom(pod.cgroups["api"], "java", 4242)
        alert = yield stack.until_alert("ContainerOOMKilled", pod=pod.name)
        latency = time.monotonic() - killed
        figures(self, first_kill_to_firing_s=latency)
        self.assertEqual(alert["labels"]["namespace"], "shop")
        self.assertEqual(alert["labels"]["container"], "api")
        self.assertEqual(alert["labels"]["host"], stack.host)
        self.assertEqual(alert["labels"]["severity"], "critical")
        self.assertEqual(alert["annotations"]["summary"],
                         f"shop/{pod.name}/api was OOM-killed (java) on {stack.host}, 1 time(s) in 10 minutes")
        self.assertLess(latency, 10.0)
        alerts = yield stack.prometheus.alerts("ContainerOOMKilled")
        self.assertEqual([a["labels"]["pod"] for a in alerts], [pod.name])

        # A node OOM pushes the old pod's first kill out of cAdvisor's history.
        sim.emit_oom("/", "stress-ng", 4300)
        yield stack.until_alert("NodeOOMKill", host=stack.host)

        # The exporter restarts and re-seeds from history: the old pod one kill lower (a counter
        # reset, for increase()), the new one the same. cAdvisor answers its history 3 s late,
        # so Prometheus scrapes the new exporter before the seed. Nothing new fires.
        (first,) = yield stack.prometheus.query("process_start_time_seconds")
        stack.slow.delay = 3.0
        yield stack.restart_exporter()
        (second,) = yield stack.until_query(f"process_start_time_seconds > {first['value'][1]}",
                                            "the new exporter scraped")
        restarted = float(second["value"][1])
        yield stack.until_query(f'cadvisor_container_oom_kills_total{{pod="{old.name}",container="postgres"}} == 1',
                                "the old pod re-seeded lower")
        yield stack.until_query(f'cadvisor_container_oom_kills_total{{pod="{pod.name}",container="api"}} == 1',
                                "the new pod re-seeded")
        moment = time.time()
        yield until(lambda: self.evaluated_since(stack, moment + 3), "three more rule evaluations")
        # What the rules rely on: a re-seeded counter comes back at its seeded value, never
        # first at 0 (which would be a kill for any window holding that 0).
        # Raw samples (a range vector), from the first scrape of the new process on.
        (starts,) = yield stack.prometheus.query("process_start_time_seconds[1m]")
        first_scrape = min(t for t, v in starts["values"] if float(v) == restarted)
        for expr in (f'cadvisor_container_oom_kills_total{{pod="{old.name}",container="postgres"}}',
                     f'cadvisor_container_oom_kills_total{{pod="{pod.name}",container="api"}}',
                     "cadvisor_node_oom_kills_total"):
            (series,) = yield stack.prometheus.query(expr + "[1m]")
            self.assertEqual({float(v) for t, v in series["values"] if t >= first_scrape}, {1.0},
                             f"{expr} after the exporter restarted (seeded at 1)")
        firing = yield stack.prometheus.alerts("ContainerOOMKilled")
        pending = yield stack.prometheus.alerts(state="pending")
        self.assertEqual([a["labels"]["pod"] for a in firing], [pod.name])
        self.assertEqual(pending, [])

    @defer.inlineCallbacks
    def evaluated_since(self, stack: Stack, moment: float):
        """Whether every rule group was last evaluated after ``moment`` (seconds since the epoch)."""
        data = yield stack.prometheus.api("rules")
        times = [group["lastEvaluation"] for group in data["groups"]]
        return times and all(_rfc3339_seconds(t) > moment for t in times)


def _rfc3339_seconds(text: str) -> float:
    """Seconds since the epoch of Prometheus' RFC 3339 times (nanoseconds, ``Z``)."""
    whole, _, rest = text.rstrip("Z").partition(".")
    fraction = float("0." + re.sub(r"\D.*", "", rest)) if rest else 0.0
    moment = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp() + fraction


class DashboardQueryTests(unittest.TestCase):
    """Every expression of the dashboard and of the rules runs against the real server."""

    timeout = 90

    @defer.inlineCallbacks
    def test_every_expression_runs_and_the_oom_panels_show_the_kills(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        down = f"127.0.0.1:{free_port()}"  # nothing listens: a target down, failures "refused"
        targets_file = os.path.join(directory, "targets.json")
        with open(targets_file, "w") as f:
            json.dump([{"targets": [down], "labels": {"cluster": "test"}}], f)
        stack = Stack(self, "--targets-file", targets_file)
        sim = stack.sim
        pod = Pod(sim, "shop", "worker", driver="cgroupfs", runtime="containerd")
        # History of every event type, OOM kills with hostile process names included: all of
        # it older than the exporter, so none of it may fire.
        history = sim.emit_random(40)
        self.assertTrue(any(e.event_type == "oomKill" for e in history))
        yield stack.ready()
        yield stack.until_query(f'cadvisor_container_oom_kills_total{{pod="{pod.name}",container="worker"}} == 0',
                                "the worker at 0")
        sim.emit_oom(pod.cgroups["worker"], "worker-leak", 501)
        # The pod's limit, not the container's, was hit: the kill still belongs to the container.
        sim.emit_oom(pod.cgroups["worker"], "worker-leak", 502, victim_container=pod.pod_cgroup)
        sim.emit_oom("/", "stress-ng", 777)  # a node (global) OOM
        standalone = self.standalone_container(sim, "nginx-proxy")
        yield stack.until_query('cadvisor_container_oom_kills_total{container="nginx-proxy"} == 0',
                                "the standalone container at 0")
        sim.emit_oom(standalone, "nginx", 778)
        yield stack.until_query(f'cadvisor_container_oom_kills_total{{pod="{pod.name}",container="worker"}} == 2',
                                "both kills scraped")
        node_alert = yield stack.until_alert("NodeOOMKill", host=stack.host)
        self.assertEqual(node_alert["annotations"]["summary"],
                         f"node OOM on {stack.host} (stress-ng), 1 kill(s) in 10 minutes")
        container_alert = yield stack.until_alert("ContainerOOMKilled", pod=pod.name)
        self.assertEqual(container_alert["labels"]["container"], "worker")
        self.assertEqual(container_alert["annotations"]["summary"],
                         f"shop/{pod.name}/worker was OOM-killed (worker-leak) on {stack.host}, 2 time(s) in 10 minutes")
        docker_alert = yield stack.until_alert("ContainerOOMKilled", container="nginx-proxy")
        self.assertNotIn("pod", docker_alert["labels"])
        self.assertEqual(docker_alert["annotations"]["summary"],
                         f"container nginx-proxy was OOM-killed (nginx) on {stack.host}, 1 time(s) in 10 minutes")
        firing = yield stack.prometheus.alerts("ContainerOOMKilled")
        self.assertEqual(sorted(a["labels"]["container"] for a in firing), ["nginx-proxy", "worker"])
        # A few more scrapes after the kills (the panels' subqueries step by $__interval).
        yield task.deferLater(reactor, 3, lambda: None)

        now = time.time()
        start = stack.started - 5
        range_seconds = int(now - start) + 1
        names = set((yield stack.prometheus.api("label/__name__/values")))
        exported = yield self.exported_families(stack)
        failures: List[str] = []
        empty: Dict[str, str] = {}
        results: Dict[str, list] = {}
        for target in dashboard_targets(load_dashboard()):
            expr = substitute(target["expr"], range_seconds)
            try:
                if target.get("instant"):
                    result = yield stack.prometheus.query(expr, at=now)
                else:
                    result = yield stack.prometheus.query_range(expr, start, now, 1)
            except PromQLError as e:
                failures.append(f"{target['panel']}: {expr}: {e}")
                continue
            results[target["panel"] + "/" + target["refId"]] = result
            if not result:
                empty[target["panel"] + "/" + target["refId"]] = expr
        for expr in rule_expressions():
            for query in (stack.prometheus.query(expr, at=now), stack.prometheus.query_range(expr, start, now, 1)):
                try:
                    yield query
                except PromQLError as e:
                    failures.append(f"rule: {expr}: {e}")
        self.assertEqual(failures, [])
        # Every panel shows data (a misspelt metric is not an error, only empty).
        self.assertEqual(empty, {})
        # Every name an expression reads exists: in Prometheus, or as a family the exporter declares.
        texts = [t["expr"] for t in dashboard_targets(load_dashboard())] + rule_expressions()
        unknown = {name for text in texts for name in METRIC.findall(text)} - names - exported
        self.assertEqual(unknown, set())

        # The template variables' queries (Grafana's label_values(selector, label)) list what ran.
        values = {}
        for variable in load_dashboard()["templating"]["list"]:
            if variable["type"] == "query":
                selector, label = LABEL_VALUES.fullmatch(variable["query"]["query"]).groups()
                data = yield stack.prometheus.api("series", **{"match[]": substitute(selector, range_seconds)})
                values[variable["name"]] = {series.get(label) for series in data} - {None}
        self.assertEqual(values["job"], {"cadvisor-events"})
        self.assertEqual(values["host"], {stack.host, down})
        self.assertIn("shop", values["namespace"])

        # The OOM panels hold the kills this test caused.
        expected = {"namespace": "shop", "pod": pod.name, "container": "worker"}
        (series,) = [s for s in results["OOM kills by namespace / pod / container/A"] if s["metric"] == expected]
        self.assertTrue(any(float(v) > 0 for _, v in series["values"]), series)
        (row,) = [s for s in results["OOM kills in the time range/A"] if s["metric"].get("pod") == pod.name]
        self.assertEqual(float(row["value"][1]), 2)
        top = {s["metric"]["oom_process"]: float(s["value"][1]) for s in results["Top killed processes/A"]}
        self.assertEqual(top.get("worker-leak"), 2)
        self.assertEqual(top.get("stress-ng"), 1)
        node = results["Node OOM kills/A"]
        self.assertTrue(any(float(v) > 0 for s in node for _, v in s["values"]), node)
        streaming = {s["metric"].get("host"): float(s["value"][1]) for s in results["Targets: state and since when/A"]}
        self.assertEqual(streaming, {stack.host: 1.0, down: 0.0})
        reasons = {s["metric"]["reason"] for s in results["Stream failures by reason/A"]}
        self.assertIn("refused", reasons)

    @staticmethod
    def standalone_container(sim: Simulator, name: str) -> str:
        """Start a docker container outside Kubernetes (its name is its first alias); its cgroup."""
        cid = "%064x" % 0x5EED
        container = SimContainer(name=f"/system.slice/docker-{cid}.scope", kind="docker", image="nginx:1.25.3",
                                 memory_limit=512 << 20, container=name, cid=cid)
        sim.cluster.known[container.name] = container
        sim.emit(container.name, "containerCreation")
        return container.name

    @defer.inlineCallbacks
    def exported_families(self, stack: Stack):
        """Names the exporter declares in its /metrics (HELP lines), with and without samples."""
        response = yield http_client().get(f"http://{stack.exporter.address}/metrics")
        body = (yield response.content()).decode("utf-8")
        names: Set[str] = set()
        for line in body.splitlines():
            if line.startswith("# HELP "):
                names.add(line.split()[2])
        return names
