"""Tests for cadvisor_events.identity: cgroup names, specs of both runtimes, label sanitising."""

from __future__ import annotations

import random
import sys

from twisted.trial import unittest

from cadvisor_events.identity import (
    UNKNOWN, Identity, cgroup_ids, container_label_name, identity_from_cgroup, identity_from_spec,
    named_by_ids, unknown_identity, with_pod,
)
from cadvisor_events.simulator.cluster import make_pod

UID = "1f2e3d4c-1111-4222-8333-444455556666"
UID_ = UID.replace("-", "_")
ID = "3f9" + "a" * 61
DOCKER_SPEC = {
    "creation_time": "2026-11-24T17:25:55.873677656-03:00",
    "aliases": [f"k8s_api_checkout-7d9f_payments_{UID}_2", ID],
    "namespace": "docker",
    "labels": {
        "io.kubernetes.container.name": "api",
        "io.kubernetes.docker.type": "container",
        "io.kubernetes.pod.name": "checkout-7d9f",
        "io.kubernetes.pod.namespace": "payments",
        "io.kubernetes.pod.uid": UID,
        "team": "shop",
    },
    "has_cpu": True,
    "image": "registry.example.com/shop/api:1.42.0",
}
CONTAINERD_SPEC = {
    "aliases": [ID, f"/kubepods/burstable/pod{UID}/{ID}"],
    "namespace": "containerd",
    "labels": {
        "io.cri-containerd.kind": "container",
        "io.kubernetes.container.name": "api",
        "io.kubernetes.pod.name": "checkout-7d9f",
        "io.kubernetes.pod.namespace": "payments",
        "io.kubernetes.pod.uid": UID,
    },
    "image": "registry.example.com/shop/api:1.42.0",
}


class CgroupIdsTests(unittest.TestCase):
    def test_every_form(self):
        cases = {
            f"/kubepods/burstable/pod{UID}/{ID}": (UID, ID),  # cgroupfs, docker or containerd
            f"/kubepods/pod{UID}/{ID}": (UID, ID),  # guaranteed
            f"/kubepods/besteffort/pod{UID}": (UID, ""),  # pod-level cgroup
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope":
                (UID, ID),
            f"/kubepods.slice/kubepods-pod{UID_}.slice/docker-{ID}.scope": (UID, ID),
            f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice": (UID, ""),
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope":
                (UID, ID),
            # kind and k3d: a node in a container, then the node's own hierarchy
            f"/docker/{'b' * 64}/kubepods/besteffort/pod{UID}/{ID}": (UID, ID),
            f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
            f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope": (UID, ID),
            f"/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:{ID}": (UID, ID),
            # static pods: the UID is a 32-digit hash without dashes
            f"/kubepods/burstable/pod{'c' * 32}/{ID}": ("c" * 32, ID),
            f"/docker/{ID}": ("", ID),
            f"/system.slice/docker-{ID}.scope": ("", ID),
            "/": ("", ""),
            "/system.slice/kubelet.service": ("", ""),
            "/kubepods": ("", ""),
            "": ("", ""),
            # cri-o's monitor process is not the container
            f"/kubepods/burstable/pod{UID}/crio-conmon-{ID}.scope": (UID, ""),
            # not a pod UID: too short, or not a component of its own
            "/kubepods/burstable/pod1234": ("", ""),
            f"/kubepods/burstable/xpod{UID}/{ID}": ("", ID),
            # 63 or 65 hex digits are not a container ID
            "/docker/" + "a" * 63: ("", ""),
            "/docker/" + "a" * 65: ("", ""),
        }
        for cgroup, expected in cases.items():
            self.assertEqual(cgroup_ids(cgroup), expected, cgroup)

    def test_innermost_pod_wins(self):
        other = "99999999-1111-4222-8333-444455556666"
        self.assertEqual(cgroup_ids(f"/kubepods/pod{other}/kubepods/burstable/pod{UID}/{ID}"), (UID, ID))

    def test_simulated_pods_of_both_drivers_and_runtimes(self):
        rng = random.Random(4)
        for driver in ("cgroupfs", "systemd"):
            for runtime in ("docker", "containerd"):
                pod = make_pod(rng, driver=driver, runtime=runtime)
                uid = dict(pod[1].labels)["io.kubernetes.pod.uid"]
                self.assertEqual(cgroup_ids(pod[0].name), (uid, ""))
                for container in pod[1:]:
                    cid = container.aliases[1] if runtime == "docker" else container.aliases[0]
                    self.assertEqual(cgroup_ids(container.name), (uid, cid), container.name)

    def test_named_by_ids(self):
        """A name holding a container ID or pod UID always names the same container or pod."""
        for name, expected in [(f"/kubepods/burstable/pod{UID}/{ID}", True), (f"/kubepods/burstable/pod{UID}", True),
                               (f"/docker/{ID}", True), ("/system.slice/cron.service", False), ("/docker/web", False),
                               ("/", False)]:
            for _ in range(2):  # computed, then remembered
                self.assertIs(named_by_ids(name), expected, name)



class SpecTests(unittest.TestCase):
    def test_docker_container(self):
        self.assertEqual(identity_from_spec(DOCKER_SPEC), Identity(
            "payments", "checkout-7d9f", "api", "registry.example.com/shop/api:1.42.0",
            f"k8s_api_checkout-7d9f_payments_{UID}_2", UID, ()))

    def test_containerd_container_is_named_by_its_id_like_cadvisor(self):
        identity = identity_from_spec(CONTAINERD_SPEC)
        self.assertEqual((identity.namespace, identity.pod, identity.container, identity.name, identity.pod_uid),
                         ("payments", "checkout-7d9f", "api", ID, UID))

    def test_sandboxes_of_both_runtimes_are_container_pod(self):
        rng = random.Random(9)
        for runtime in ("docker", "containerd"):
            sandbox = make_pod(rng, runtime=runtime)[1]
            identity = identity_from_spec({"labels": dict(sandbox.labels), "aliases": list(sandbox.aliases),
                                           "image": sandbox.image})
            self.assertEqual(identity.container, "POD", runtime)
            self.assertEqual(identity.image, "registry.k8s.io/pause:3.9")
            self.assertTrue(identity.pod and identity.namespace and identity.pod_uid)

    def test_standalone_docker_container_is_named_by_its_name(self):
        identity = identity_from_spec({"aliases": ["nginx-proxy", ID], "namespace": "docker",
                                       "labels": {"com.docker.compose.service": "nginx"}, "image": "nginx:1.25"})
        self.assertEqual(identity, Identity("", "", "nginx-proxy", "nginx:1.25", "nginx-proxy", "", ()))

    def test_raw_cgroup_and_empty_or_odd_specs(self):
        raw = {"creation_time": "2026-11-24T17:25:55Z", "has_cpu": True, "has_memory": True}
        self.assertEqual(identity_from_spec(raw), UNKNOWN)
        self.assertEqual(identity_from_spec({}), UNKNOWN)
        odd = {"labels": {"io.kubernetes.pod.name": 7, "io.kubernetes.pod.namespace": None}, "aliases": [],
               "image": ["x"]}
        self.assertEqual(identity_from_spec(odd), UNKNOWN)  # specs are input: wrong types are empty

    def test_container_labels_copied_in_option_order_missing_ones_empty(self):
        identity = identity_from_spec(DOCKER_SPEC, ["team", "app.kubernetes.io/name"])
        self.assertEqual(identity.extra, (("container_label_team", "shop"),
                                          ("container_label_app_kubernetes_io_name", "")))
        self.assertEqual(identity_from_spec({}, ["team"]).extra, (("container_label_team", ""),))

    def test_only_chosen_labels_are_copied(self):
        identity = identity_from_spec(DOCKER_SPEC)
        self.assertEqual(identity.extra, ())
        self.assertNotIn("shop", identity)

    def test_strings_are_interned(self):
        one = identity_from_spec(DOCKER_SPEC)
        copy = {**DOCKER_SPEC, "labels": {k: "".join(v) for k, v in DOCKER_SPEC["labels"].items()},
                "image": "".join(list(DOCKER_SPEC["image"]))}
        two = identity_from_spec(copy)
        self.assertIs(one.namespace, two.namespace)
        self.assertIs(one.image, two.image)
        self.assertIs(one.container, two.container)
        self.assertIs(identity_from_spec(copy, ["team"]).extra[0][1], sys.intern("shop"))


class CgroupFallbackTests(unittest.TestCase):
    def test_pod_uid_alone(self):
        self.assertEqual(identity_from_cgroup(f"/kubepods/burstable/pod{UID}/{ID}"),
                         UNKNOWN._replace(pod_uid=UID))
        self.assertEqual(identity_from_cgroup("/system.slice/cron.service"), UNKNOWN)

    def test_sibling_gives_namespace_and_pod_only(self):
        siblings = {UID: identity_from_spec(DOCKER_SPEC)}
        identity = identity_from_cgroup(f"/kubepods/burstable/pod{UID}", siblings)
        self.assertEqual(identity, Identity("payments", "checkout-7d9f", "", "", "", UID, ()))

    def test_sibling_of_another_pod_is_ignored(self):
        siblings = {"other": identity_from_spec(DOCKER_SPEC)}
        self.assertEqual(identity_from_cgroup(f"/kubepods/pod{UID}", siblings), UNKNOWN._replace(pod_uid=UID))

    def test_unknown_with_labels_has_every_label_name(self):
        self.assertIs(unknown_identity(), UNKNOWN)
        unknown = unknown_identity(["a.b", "c"])
        self.assertEqual(unknown.extra, (("container_label_a_b", ""), ("container_label_c", "")))
        self.assertEqual(identity_from_cgroup(f"/kubepods/pod{UID}", {}, unknown).extra, unknown.extra)

    def test_with_pod_keeps_a_named_identity(self):
        named = identity_from_spec(DOCKER_SPEC)
        self.assertIs(with_pod(named, {UID: named._replace(pod="other")}), named)
        self.assertIs(with_pod(UNKNOWN, {UID: named}), UNKNOWN)


class SanitiseTests(unittest.TestCase):
    def test_cadvisor_convention(self):
        # cAdvisor: "container_label_" + key, then [^a-zA-Z0-9_] -> "_", one per character (rune)
        cases = {
            "app": "container_label_app",
            "app.kubernetes.io/name": "container_label_app_kubernetes_io_name",
            "io.kubernetes.pod.name": "container_label_io_kubernetes_pod_name",
            "team-owner": "container_label_team_owner",
            "Já": "container_label_J_",
            "9lives": "container_label_9lives",
            "": "container_label_",
            "a b:c": "container_label_a_b_c",
        }
        for key, name in cases.items():
            self.assertEqual(container_label_name(key), name, key)

    def test_interned(self):
        self.assertIs(container_label_name("x.y"), sys.intern("container_label_x_y"))
