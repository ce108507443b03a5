"""The containers a fake cAdvisor tracks, and their specs as cAdvisor's spec API answers them.

A node's cgroups as cAdvisor sees them: Kubernetes pods under either cgroup
driver (cgroupfs ``/kubepods/...``, systemd ``/kubepods.slice/...``) and
either runtime (docker: aliases ``k8s_<ctr>_<pod>_<ns>_<uid>_<n>`` and the
ID; containerd: the ID and the cgroup name), each with its pod-level cgroup
(no labels) and its sandbox (every pod label, the pause image); standalone
docker containers; raw cgroups (systemd services, every ancestor) without
labels. :class:`Cluster` knows which are alive and answers
``/api/v2.0/spec`` as cAdvisor's ``GetContainerSpec`` does (Go's
``json.Marshal``: map keys sorted, empty fields omitted). It must never emit
events (the :class:`~.core.Simulator` does, and tells it about creations and
deletions first) and never draw from a random source it was not given.
"""

from __future__ import annotations

import random
from typing import Dict, Iterable, List, Optional, Tuple

import attrs

from .golang import go_json_string, go_quote, rfc3339nano

__all__ = ["Cluster", "SimContainer", "SimPod", "make_containers", "make_pod"]

NAMESPACES = ("payments", "checkout", "default", "monitoring", "kube-system", "search")
#: app -> (container name, image) of its pods' containers, the first always present.
APPS: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "api": (("api", "registry.example.com/shop/api:1.42.0"), ("envoy", "envoyproxy/envoy:v1.29.1")),
    "checkout": (("checkout", "registry.example.com/shop/checkout:7.3.1"), ("istio-proxy", "docker.io/istio/proxyv2:1.20.3")),
    "worker": (("worker", "registry.example.com/shop/worker:2024.11.2"), ("log-shipper", "fluent/fluent-bit:2.2.2")),
    "postgres": (("postgres", "docker.io/library/postgres:16.1"), ("exporter", "quay.io/prometheuscommunity/postgres-exporter:v0.15.0")),
    "search": (("elasticsearch", "docker.elastic.co/elasticsearch/elasticsearch:8.12.0"),),
    "node-exporter": (("node-exporter", "quay.io/prometheus/node-exporter:v1.7.0"),),
}
APP_NAMES = tuple(sorted(APPS))
PAUSE_IMAGE = "registry.k8s.io/pause:3.9"
#: The kubelet's pod name suffix alphabet (no vowels, no look-alikes), padded to 32 for bit indexing.
_POD_SUFFIX = "bcdfghjklmnpqrstvwxz2456789bcdfg"
SERVICES = ("kubelet", "containerd", "docker", "sshd", "systemd-journald", "cron", "chronyd", "rsyslog")
STANDALONE = (("nginx-proxy", "nginx:1.25.3"), ("registry-cache", "registry:2.8.3"), ("backup", "restic/restic:0.16.4"))
#: A raw cgroup's limit as cgroup v1 reports "no limit" (cAdvisor passes it through).
UNLIMITED = 9223372036854771712


@attrs.frozen
class SimPod:
    """What a pod's containers share: the kubelet's names for it and its pod-level cgroup."""

    name: str
    namespace: str
    uid: str
    app: str
    template_hash: str
    runtime: str  # docker or containerd
    cgroup: str


@attrs.frozen
class SimContainer:
    """One cgroup as cAdvisor tracks it; its spec's labels and aliases are derived on demand
    (a fleet-sized pool is built quickly, and only the cgroups served pay for them)."""

    name: str
    kind: str = "raw"  # raw, pod (a pod-level cgroup), docker, containerd
    image: str = ""
    memory_limit: int = UNLIMITED
    pod: Optional[SimPod] = None
    container: str = ""  # the kubelet's container name (POD: the sandbox), or a docker container's name
    cid: str = ""  # the runtime's container ID

    @property
    def pod_cgroup(self) -> str:
        """The pod-level cgroup of a pod's container, else ``""``."""
        return self.pod.cgroup if self.pod is not None and self.kind != "pod" else ""

    @property
    def namespace(self) -> str:
        """The runtime's namespace (``docker``, ``containerd``), not Kubernetes'."""
        return self.kind if self.kind in ("docker", "containerd") else ""

    @property
    def aliases(self) -> Tuple[str, ...]:
        """docker: ``k8s_<ctr>_<pod>_<ns>_<uid>_0`` (standalone: its name) and the ID;
        containerd: the ID and the cgroup name; nothing for other cgroups."""
        pod = self.pod
        if self.kind not in ("docker", "containerd"):
            return ()
        if pod is None:
            return (self.container, self.cid)
        if self.kind == "docker":
            return ("k8s_%s_%s_%s_%s_0" % (self.container, pod.name, pod.namespace, pod.uid), self.cid)
        return (self.cid, self.name)

    @property
    def labels(self) -> Tuple[Tuple[str, str], ...]:
        """The spec's labels as (key, value) pairs: the kubelet's, through the runtime."""
        pod = self.pod
        if self.kind not in ("docker", "containerd"):
            return ()
        if pod is None:
            return (("com.docker.compose.service", self.container),)
        sandbox = self.container == "POD"
        labels = [("io.kubernetes.pod.name", pod.name), ("io.kubernetes.pod.namespace", pod.namespace),
                  ("io.kubernetes.pod.uid", pod.uid)]
        if self.kind == "docker":
            labels += [("io.kubernetes.container.name", self.container),
                       ("io.kubernetes.docker.type", "podsandbox" if sandbox else "container")]
        else:
            labels.append(("io.cri-containerd.kind", "sandbox" if sandbox else "container"))
            if not sandbox:
                labels.append(("io.kubernetes.container.name", self.container))
        if sandbox:  # a sandbox carries every label of its pod
            labels += [("app", pod.app), ("pod-template-hash", pod.template_hash), ("app.kubernetes.io/name", pod.app)]
        return tuple(labels)

    def spec_json(self, creation_ns: int, tz_offset_minutes: int) -> str:
        """cAdvisor's v2 ``ContainerSpec`` as Go's ``json.Marshal`` writes it."""
        parts = ['"creation_time":"%s"' % rfc3339nano(creation_ns, tz_offset_minutes)]
        aliases, labels = self.aliases, self.labels
        if aliases:
            parts.append('"aliases":[%s]' % ",".join(go_json_string(a) for a in aliases))
        if self.namespace:
            parts.append('"namespace":%s' % go_json_string(self.namespace))
        if labels:
            parts.append('"labels":{%s}' % ",".join(  # a Go map: keys sorted
                "%s:%s" % (go_json_string(k), go_json_string(v)) for k, v in sorted(labels)))
        parts.append('"has_cpu":true,"cpu":{"limit":%d,"max_limit":0,"mask":"0-3","period":100000}'
                     % (2 if self.kind == "pod" else 1024))
        parts.append('"has_memory":true,"memory":{"limit":%d,"reservation":%d}' % (self.memory_limit, UNLIMITED))
        parts.append('"has_custom_metrics":false,"has_network":%s,"has_filesystem":%s,"has_diskio":true'
                     % (("true",) * 2 if self.kind in ("docker", "containerd") else ("false",) * 2))
        if self.image:
            parts.append('"image":%s' % go_json_string(self.image))
        return "{" + ",".join(parts) + "}"


def _hex_id(rng: random.Random) -> str:
    return "%064x" % rng.getrandbits(256)


def _uuid4(rng: random.Random) -> str:
    """``str(uuid.UUID(int=rng.getrandbits(128), version=4))``, without the UUID object."""
    n = rng.getrandbits(128) & ~(0xC000 << 48) | 0x8000 << 48  # RFC 4122 variant
    n = n & ~(0xF000 << 64) | 4 << 76  # version 4
    h = "%032x" % n
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def make_pod(rng: random.Random, *, driver: Optional[str] = None, runtime: Optional[str] = None,
             namespace: Optional[str] = None, app: Optional[str] = None,
             containers: Optional[int] = None) -> List[SimContainer]:
    """One Kubernetes pod as cAdvisor sees it: the pod-level cgroup, the sandbox, then
    ``containers`` containers (1 to the app's count), drawn from ``rng`` where not given.

    ``driver``: ``cgroupfs`` or ``systemd``; ``runtime``: ``docker`` or ``containerd``.
    """
    draw = rng.getrandbits(64)  # one draw for every small choice: pools of 50,000 are built often
    qos = ("burstable", "burstable", "besteffort", "guaranteed")[draw & 3]
    uid = _uuid4(rng)
    driver = driver or ("cgroupfs", "systemd")[draw >> 2 & 1]
    runtime = runtime or ("docker", "containerd")[draw >> 3 & 1]
    namespace = namespace or NAMESPACES[(draw >> 4 & 255) % len(NAMESPACES)]
    app = app or APP_NAMES[(draw >> 12 & 255) % len(APP_NAMES)]
    template_hash = "%09x" % (draw >> 20 & 0xFFFFFFFFF)
    name = "%s-%s-%s" % (app, template_hash, "".join(_POD_SUFFIX[draw >> shift & 31] for shift in (39, 44, 49, 54, 59)))
    if driver == "cgroupfs":
        pod_cgroup = "/kubepods/pod" + uid if qos == "guaranteed" else "/kubepods/%s/pod%s" % (qos, uid)
        template = pod_cgroup + "/%s"
    else:
        underscored = uid.replace("-", "_")
        pod_cgroup = ("/kubepods.slice/kubepods-pod%s.slice" % underscored if qos == "guaranteed" else
                      "/kubepods.slice/kubepods-{0}.slice/kubepods-{0}-pod{1}.slice".format(qos, underscored))
        template = pod_cgroup + ("/docker-%s.scope" if runtime == "docker" else "/cri-containerd-%s.scope")
    pod = SimPod(name, namespace, uid, app, template_hash, runtime, pod_cgroup)
    wanted = (("POD", PAUSE_IMAGE),) + APPS[app][: containers or 1 + (draw >> 28 & 7) % len(APPS[app])]
    out = [SimContainer(pod_cgroup, "pod", pod=pod)]
    for index, (container, image) in enumerate(wanted):
        cid = _hex_id(rng)
        limit = UNLIMITED if container == "POD" else 256 << (20 + (cid[-1] in "0123") + (cid[-2] in "01234567"))
        out.append(SimContainer(template % cid, runtime, image, limit, pod, container, cid))
    return out


def make_containers(count: int, rng: random.Random) -> List[SimContainer]:
    """``count`` cgroups of a realistic node (pods of both drivers and runtimes, standalone
    docker containers, systemd services), deterministic for an ``rng``."""
    out: List[SimContainer] = []
    seen = set()
    while len(out) < count:
        kind = rng.random()
        if kind < 0.22:
            cid = _hex_id(rng)
            name, image = rng.choice(STANDALONE)
            cgroup = "/docker/" + cid if kind < 0.15 else "/system.slice/docker-%s.scope" % cid
            out.append(SimContainer(cgroup, "docker", image, 512 << 20, None, name, cid))
        elif kind < 0.27:
            cgroup = "/system.slice/%s.service" % rng.choice(SERVICES)
            if cgroup not in seen:
                seen.add(cgroup)
                out.append(SimContainer(cgroup))
        else:
            out.extend(make_pod(rng))
    return out[:count]


class Cluster:
    """The containers a simulated cAdvisor tracks: which are alive, and their specs.

    ``known`` maps every cgroup name the simulator may use to its
    :class:`SimContainer` (an unknown name is a raw cgroup); ``alive`` maps
    the living ones to their creation time (ns). Every ancestor of a living
    cgroup, and ``/``, is tracked too, as a raw cgroup.
    """

    def __init__(self, containers: Iterable[SimContainer], created_ns: int, tz_offset_minutes: int) -> None:
        self.known: Dict[str, SimContainer] = {c.name: c for c in containers}
        self.alive: Dict[str, int] = {name: created_ns for name in self.known}
        self.started_ns = created_ns
        self.tz_offset_minutes = tz_offset_minutes
        #: Recursive answers still to fail as if a container vanished under them (tests set it).
        self.fail_listings = 0

    def created(self, name: str, timestamp_ns: int) -> None:
        """Track ``name`` from now on (before its ``containerCreation`` is emitted)."""
        self.alive[name] = timestamp_ns

    def deleted(self, name: str) -> None:
        """Forget ``name`` (before its ``containerDeletion`` is emitted)."""
        self.alive.pop(name, None)

    def pod_cgroup_of(self, name: str) -> str:
        """The pod-level cgroup of a pod's container, else ``""``."""
        container = self.known.get(name)
        return container.pod_cgroup if container is not None else ""

    def tracked(self) -> Dict[str, int]:
        """Every tracked cgroup (living ones and their ancestors) -> creation time."""
        tracked = {"/": self.started_ns}
        for name, created in self.alive.items():
            parts = name.split("/")
            for end in range(2, len(parts)):
                tracked.setdefault("/".join(parts[:end]), self.started_ns)
            tracked[name] = created
        return tracked

    def spec_answer(self, name: str, recursive: bool) -> Tuple[int, bytes]:
        """``GET /api/v2.0/spec<name>?type=name[&recursive=true]``: (status, body)."""
        tracked = self.tracked()
        if recursive:
            prefix = name  # Go's path.Join(name, "/"): the cleaned name, no slash added
            selected = sorted(n for n in tracked if n == name or n.startswith(prefix))
            if not selected:
                return 500, ("unknown container: %s\n" % go_quote(name)).encode()
            if self.fail_listings > 0:
                self.fail_listings -= 1
                gone = selected[-1]
                return 500, ("partial failures: [%s: GetInfo: unknown container %s]\n"
                             % (go_quote(gone), go_quote(gone))).encode()
        elif name in tracked:
            selected = [name]
        else:
            return 500, ("unknown container %s\n" % go_quote(name)).encode()
        items = ["%s:%s" % (go_json_string(n), self.spec(n).spec_json(tracked[n], self.tz_offset_minutes))
                 for n in selected]
        return 200, ("{" + ",".join(items) + "}").encode()

    def spec(self, name: str) -> SimContainer:
        """What cAdvisor knows of ``name``: its container, or a raw cgroup."""
        return self.known.get(name) or SimContainer(name)
