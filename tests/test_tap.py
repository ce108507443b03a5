"""Tests for cadvisor_events.tap: options, environment variables, the service it makes."""

import os

from twisted.application.service import IService, MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial import unittest

from cadvisor_events import tap
from cadvisor_events.cadvisor import parse_target


def parse(*argv, env=None):
    saved = {k: v for k, v in os.environ.items() if k.startswith(tap.ENV_PREFIX)}
    for key in saved:
        del os.environ[key]
    os.environ.update(env or {})
    try:
        options = tap.Options()
        options.parseOptions(list(argv))
        return options
    finally:
        for key in list(os.environ):
            if key.startswith(tap.ENV_PREFIX):
                del os.environ[key]
        os.environ.update(saved)


class OptionsTests(unittest.TestCase):
    def test_defaults(self):
        options = parse()
        self.assertEqual(options["listen"], ["tcp:8888"])
        self.assertEqual(options["target"], [])
        self.assertEqual(options["series-ttl"], 3600.0)
        self.assertEqual(options["max-series"], 1_000_000)
        self.assertEqual(options["shard"], (0, 1))
        self.assertEqual(options["proxy-default"], parse_target("127.0.0.1:9094"))
        self.assertEqual(options["upstream-timeout"], 30.0)
        self.assertFalse(options["oom-only"])
        self.assertFalse(options["demo"])
        self.assertEqual(tap.static_specs(options)[0].target, parse_target("127.0.0.1:8080"))

    def test_repeatable(self):
        options = parse(
            "--listen", "tcp:1", "--listen", "ssl:2:privateKey=k.pem",
            "--target", "a:1", "--target", "https://b:2",
        )
        self.assertEqual(options["listen"], ["tcp:1", "ssl:2:privateKey=k.pem"])
        self.assertEqual([t.name for t in options["target"]], ["a:1", "b:2"])
        self.assertEqual([s.target.name for s in tap.static_specs(options)], ["a:1", "b:2"])

    def test_values(self):
        options = parse(
            "--oom-only", "--series-ttl", "0", "--max-series", "5", "--shard", "2/3",
            "--proxy-default", "h", "--upstream-timeout", "1.5", "--no-history-seed",
        )
        self.assertTrue(options["oom-only"])
        self.assertTrue(options["no-history-seed"])
        self.assertEqual(options["series-ttl"], 0.0)
        self.assertEqual(options["max-series"], 5)
        self.assertEqual(options["shard"], (2, 3))
        self.assertEqual(options["proxy-default"].name, "h:9094")
        self.assertEqual(options["upstream-timeout"], 1.5)

    def test_no_default_target_with_a_file_or_demo(self):
        self.assertEqual(tap.static_specs(parse("--targets-file", "/nonexistent.json")), [])
        self.assertEqual(tap.static_specs(parse("--demo")), [])

    def test_bad_values_are_usage_errors(self):
        for argv, words in [
            (["--target", "ftp://x"], "scheme"),
            (["--target", "x:99999"], "out of range"),
            (["--series-ttl", "soon"], "number of seconds"),
            (["--series-ttl", "-1"], "negative"),
            (["--max-series", "0"], "at least 1"),
            (["--max-series", "lots"], "whole number"),
            (["--shard", "3/3"], "shard"),
            (["--shard", "x"], "shard"),
            (["--proxy-default", "http://"], "proxy-default"),
            (["--upstream-timeout", "x"], "number"),
            (["--bogus"], "bogus"),
        ]:
            with self.assertRaises(usage.UsageError, msg=argv) as e:
                parse(*argv)
            self.assertIn(words, str(e.exception), argv)

    def test_environment(self):
        options = parse(
            env={
                "CADVISOR_EVENTS_TARGET": "a:1, b:2",
                "CADVISOR_EVENTS_LISTEN": "tcp:9",
                "CADVISOR_EVENTS_SERIES_TTL": "60",
                "CADVISOR_EVENTS_OOM_ONLY": "true",
                "CADVISOR_EVENTS_SHARD": "1/2",
            }
        )
        self.assertEqual([t.name for t in options["target"]], ["a:1", "b:2"])
        self.assertEqual(options["listen"], ["tcp:9"])
        self.assertEqual(options["series-ttl"], 60.0)
        self.assertTrue(options["oom-only"])
        self.assertEqual(options["shard"], (1, 2))

    def test_command_line_beats_environment(self):
        options = parse(
            "--target", "c:3", "--series-ttl", "5",
            env={"CADVISOR_EVENTS_TARGET": "a:1", "CADVISOR_EVENTS_SERIES_TTL": "60"},
        )
        self.assertEqual([t.name for t in options["target"]], ["c:3"])
        self.assertEqual(options["series-ttl"], 5.0)

    def test_bad_environment_value_is_a_usage_error(self):
        with self.assertRaises(usage.UsageError):
            parse(env={"CADVISOR_EVENTS_MAX_SERIES": "many"})


class MakeServiceTests(unittest.TestCase):
    def test_wires_listeners_and_followers(self):
        reactor = MemoryReactorClock()
        options = parse("--listen", "tcp:0:interface=127.0.0.1", "--target", "127.0.0.1:1")
        service = tap.makeService(options, reactor=reactor)
        self.assertIsInstance(service, MultiService)
        service.startService()
        try:
            self.assertEqual([port[0] for port in reactor.tcpServers], [0])
            fleets = [s for s in service if hasattr(s, "followers")]
            self.assertEqual(len(fleets), 1)
            self.assertEqual(list(fleets[0].followers), ["127.0.0.1:1"])
            self.assertTrue(IService.providedBy(fleets[0].followers["127.0.0.1:1"]))
        finally:
            service.stopService()
