"""Tests for cadvisor_events.sharding: --shard I/N, --shard auto and --shards."""

import os
import socket

from twisted.trial import unittest

from cadvisor_events.sharding import choose_shard, current_hostname, ordinal_shard


def host(name):
    return lambda: name


class OrdinalTests(unittest.TestCase):
    def test_the_trailing_ordinal_of_a_statefulset_pod(self):
        self.assertEqual(ordinal_shard("cadvisor-events-0", 3), (0, 3))
        self.assertEqual(ordinal_shard("cadvisor-events-2", 3), (2, 3))
        self.assertEqual(ordinal_shard("web-12", 20), (12, 20))
        self.assertEqual(ordinal_shard("cadvisor-events-1.cadvisor-events.monitoring.svc.cluster.local", 2),
                         (1, 2))

    def test_errors(self):
        for hostname, shards, words in [
            ("cadvisor-events", 3, "does not end in -N"),
            ("node7", 3, "does not end in -N"),
            ("cadvisor-events-", 3, "does not end in -N"),
            ("cadvisor-events-01", 3, "does not end in -N"),  # StatefulSets never pad ordinals
            ("example.com-2", 3, "does not end in -N"),  # only the first label counts
            ("cadvisor-events-3", 3, "ordinal is 3"),
            ("cadvisor-events-0", 0, "at least 1"),
        ]:
            with self.assertRaises(ValueError, msg=hostname) as e:
                ordinal_shard(hostname, shards)
            self.assertIn(words, str(e.exception), hostname)
        with self.assertRaises(ValueError) as e:
            ordinal_shard("cadvisor-events-3", 3)
        self.assertIn("0 to 2", str(e.exception))
        self.assertIn("StatefulSet's replicas", str(e.exception))

    def test_current_hostname_prefers_the_environment(self):
        self.patch(os, "environ", {"HOSTNAME": "cadvisor-events-4"})
        self.assertEqual(current_hostname(), "cadvisor-events-4")
        self.patch(os, "environ", {})
        self.assertEqual(current_hostname(), socket.gethostname())


class ChooseTests(unittest.TestCase):
    def test_explicit_and_default(self):
        self.assertEqual(choose_shard(None, None, host("unused")), (0, 1))
        self.assertEqual(choose_shard("2/3", None), (2, 3))
        self.assertEqual(choose_shard("2/3", 3), (2, 3))

    def test_auto(self):
        self.assertEqual(choose_shard("auto", 3, host("cadvisor-events-2")), (2, 3))
        self.assertEqual(choose_shard(" AUTO ", 1, host("cadvisor-events-0")), (0, 1))

    def test_hostname_is_read_only_for_auto(self):
        def never():
            raise AssertionError("host name read")

        self.assertEqual(choose_shard("1/2", None, never), (1, 2))

    def test_errors_name_the_options(self):
        for shard, shards, hostname, words in [
            ("auto", None, "cadvisor-events-0", "--shard auto needs --shards N"),
            ("auto", 3, "cadvisor-events-3", "--shard auto: this pod's ordinal is 3"),
            ("auto", 3, "laptop", "--shard auto: the host name 'laptop' does not end in -N"),
            ("auto", 0, "cadvisor-events-0", "--shards must be at least 1"),
            (None, 3, "cadvisor-events-0", "--shards 3 is used with --shard auto"),
            ("1/2", 3, "cadvisor-events-0", "--shard 1/2 says 2 shards but --shards says 3"),
            ("3/3", None, "cadvisor-events-0", "--shard: shard index I must be between 0 and 2"),
            ("x", None, "cadvisor-events-0", "--shard: expected I/N"),
        ]:
            with self.assertRaises(ValueError, msg=(shard, shards)) as e:
                choose_shard(shard, shards, host(hostname))
            self.assertIn(words, str(e.exception), (shard, shards))
