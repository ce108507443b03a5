"""Who a cgroup is: Kubernetes namespace, pod, container and image from a cAdvisor spec or the cgroup's name.

Pure functions and one value type; no I/O, no cache (that is
:mod:`cadvisor_events.specs`). Label names and values follow what users
already know from the kubelet's ``/metrics/cadvisor``: ``name`` is the
container's first alias, as cAdvisor's own Prometheus metrics write it
(``DefaultContainerLabels``), and ``container_label_<key>`` is sanitised as
cAdvisor sanitises it. Strings a fleet repeats (namespace, container name,
image, ``--container-label`` names and values) are interned, so its thousands
of copies share one object; strings unique to a container or a pod (its
``name`` alias, pod name, pod UID) are not: interning them would only add an
intern-table slot each (the cache shares a pod's strings among its
containers instead).
"""

from __future__ import annotations

import re
import sys
from typing import Any, Dict, Mapping, NamedTuple, Sequence, Tuple

__all__ = [
    "Identity",
    "POD_LABEL",
    "UNKNOWN",
    "cgroup_ids",
    "container_label_name",
    "identity_from_cgroup",
    "identity_from_spec",
    "named_by_ids",
    "unknown_identity",
    "with_pod",
]

#: The kubelet's labels on every container it starts (docker, containerd and cri-o runtimes).
NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
POD_LABEL = "io.kubernetes.pod.name"
POD_UID_LABEL = "io.kubernetes.pod.uid"
CONTAINER_LABEL = "io.kubernetes.container.name"
#: containerd marks a pod's sandbox with this label instead of a container name.
CONTAINERD_KIND_LABEL = "io.cri-containerd.kind"
#: The container name docker's kubelet integration gives a pod's sandbox; used for
#: containerd's sandboxes too, so a sandbox reads the same under either runtime.
SANDBOX_CONTAINER = "POD"


class Identity(NamedTuple):
    """The labels a container's series carry; ``""`` where unknown.

    ``extra`` holds the ``--container-label`` copies as
    ``(container_label_<sanitised key>, value)`` pairs, in option order.
    """

    namespace: str
    pod: str
    container: str
    image: str
    name: str
    pod_uid: str
    extra: Tuple[Tuple[str, str], ...]


UNKNOWN = Identity("", "", "", "", "", "", ())

_intern = sys.intern

# A pod UID in a cgroup name: ``pod<uid>`` as a path component (cgroupfs driver) or after a
# ``-`` (systemd driver, ``_`` for ``-``), then ``.slice``, ``/`` or the end. Static pods'
# UIDs are 32 hex digits without dashes. The last match wins (nested hierarchies).
_POD_UID = re.compile(
    r"(?:^|[/-])pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})"
    r"(?=\.slice(?:[/:]|$)|/|$)"
)
# A container ID: the last component is 64 hex digits, bare (cgroupfs) or after a runtime
# prefix (``docker-``, ``cri-containerd-``, ``crio-``; ``:cri-containerd:`` in the
# ``slice:runtime:id`` form), optionally with ``.scope``. cri-o's ``crio-conmon-<id>`` is
# the monitor process, not the container.
_CONTAINER_ID = re.compile(r"(?:^|[-:])([0-9a-f]{64})(?:\.scope)?$")


def cgroup_ids(cgroup: str) -> Tuple[str, str]:
    """(pod UID with dashes or ``""``, container ID or ``""``) read from a cgroup name.

    Handles the cgroupfs driver (``/kubepods/burstable/pod<uid>/<id>``), the
    systemd driver (``.../kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope``),
    docker/containerd/cri-o scopes and any prefix before them (kind, k3s,
    a node inside a container). Never fails: a name it does not recognise
    gives ``("", "")``.
    """
    uid = ""
    for match in _POD_UID.finditer(cgroup):
        uid = match.group(1)
    last = cgroup.rpartition("/")[2]
    container = ""
    if "conmon" not in last:
        found = _CONTAINER_ID.search(last)
        if found is not None:
            container = found.group(1)
    return (uid.replace("_", "-"), container)


_SELF_NAMED: Dict[str, bool] = {}


def named_by_ids(cgroup: str) -> bool:
    """Whether a cgroup's name holds a container ID or a pod UID, so that whatever is created
    under that name is always the same container or pod (``docker restart`` keeps the ID;
    Kubernetes restarts a container under a new one). Remembered, bounded: a stream may ask
    for the same few names at every event."""
    known = _SELF_NAMED.get(cgroup)
    if known is None:
        if len(_SELF_NAMED) >= 4096:
            _SELF_NAMED.clear()
        uid, container = cgroup_ids(cgroup)
        known = _SELF_NAMED[cgroup] = bool(uid or container)
    return known


_INVALID_LABEL_CHARACTER = re.compile(r"[^a-zA-Z0-9_]")


def container_label_name(key: str) -> str:
    """``container_label_<key>`` with every character Prometheus does not allow in a label
    name replaced by ``_``, as cAdvisor does (``sanitizeLabelName``: ``[^a-zA-Z0-9_]`` to
    ``_``, one per character): ``app.kubernetes.io/name`` gives
    ``container_label_app_kubernetes_io_name``."""
    return _intern(_INVALID_LABEL_CHARACTER.sub("_", "container_label_" + key))


def unknown_identity(container_labels: Sequence[str] = ()) -> Identity:
    """:data:`UNKNOWN` with an empty value for every ``--container-label``, so every identity
    of one exporter carries the same label names."""
    if not container_labels:
        return UNKNOWN
    return UNKNOWN._replace(extra=tuple((container_label_name(key), "") for key in container_labels))


def identity_from_spec(spec: Mapping[str, Any], container_labels: Sequence[str] = ()) -> Identity:
    """The identity a cAdvisor spec (one value of the spec API's answer) gives its container.

    Kubernetes containers are named by the kubelet's labels; a sandbox (docker's
    ``POD``, containerd's ``io.cri-containerd.kind=sandbox``) is container
    ``POD``. A container without the kubelet's labels is named by its first
    alias (docker: its name; containerd: its ID). Raw cgroups have neither:
    every field stays empty. Only the ``container_labels`` keys are copied,
    never labels wholesale (a sandbox carries every label of its pod).
    """
    labels = spec.get("labels")
    if not isinstance(labels, Mapping):
        labels = {}
    aliases = spec.get("aliases")
    name = _unique(aliases[0]) if isinstance(aliases, list) and aliases else ""
    namespace = _text(labels.get(NAMESPACE_LABEL))
    pod = _unique(labels.get(POD_LABEL))
    pod_uid = _unique(labels.get(POD_UID_LABEL))
    container = _text(labels.get(CONTAINER_LABEL))
    if not container:
        if labels.get(CONTAINERD_KIND_LABEL) == "sandbox":
            container = SANDBOX_CONTAINER
        elif not (namespace or pod or pod_uid):
            container = name
    extra: Tuple[Tuple[str, str], ...] = ()
    if container_labels:
        extra = tuple((container_label_name(key), _text(labels.get(key))) for key in container_labels)
    return Identity(namespace, pod, container, _text(spec.get("image")), name, pod_uid, extra)


def identity_from_cgroup(cgroup: str, siblings: Mapping[str, Identity] = {},
                         unknown: Identity = UNKNOWN) -> Identity:
    """What the cgroup name alone says (the pod UID), named through ``siblings`` (pod UID ->
    the identity of any container of that pod) when one is known. ``unknown`` is the
    identity to start from (:func:`unknown_identity` with ``--container-label``)."""
    uid, _ = cgroup_ids(cgroup)
    if not uid:
        return unknown
    return with_pod(unknown._replace(pod_uid=uid), siblings)


def with_pod(identity: Identity, siblings: Mapping[str, Identity]) -> Identity:
    """``identity`` with the namespace and pod of a sibling of the same pod UID, when it has a
    pod UID but no pod name (a pod-level cgroup, a container whose spec was not read)."""
    if identity.pod or not identity.pod_uid:
        return identity
    sibling = siblings.get(identity.pod_uid)
    if sibling is None:
        return identity
    return identity._replace(namespace=sibling.namespace, pod=sibling.pod)


def _text(value: Any) -> str:
    """An interned string, ``""`` for a missing or non-string value (specs are input)."""
    return _intern(value) if isinstance(value, str) and value else ""


def _unique(value: Any) -> str:
    """A string kept as it is (unique to one container or pod), ``""`` for a missing or non-string value."""
    return value if isinstance(value, str) else ""
