"""Tests for cadvisor_events.targets: file_sd parsing, the watcher, SIGHUP, shards."""

from __future__ import annotations

import collections
import json
import os
import signal

from twisted.internet import task
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial import unittest

from cadvisor_events import targets
from cadvisor_events.cadvisor import parse_target
from cadvisor_events.targets import (
    TargetSpec,
    TargetsFileError,
    TargetsWatcher,
    install_sighup,
    parse_file_sd,
    parse_shard,
    shard_of,
)

from .support import spec


def sd(*groups) -> bytes:
    """A file_sd JSON document from ``(targets, labels)`` pairs."""
    return json.dumps([{"targets": t, "labels": labels} for t, labels in groups]).encode()


class TargetSpecTests(unittest.TestCase):
    def test_labels_sorted_from_mapping(self):
        s = TargetSpec(target=parse_target("h:1"), labels={"b": "2", "a": "1"})
        self.assertEqual(s.labels, (("a", "1"), ("b", "2")))
        self.assertEqual(s.name, "h:1")

    def test_equal_and_hashable(self):
        self.assertEqual(spec("h:1", a="1"), spec("h:1", a="1"))
        self.assertNotEqual(spec("h:1", a="1"), spec("h:1", a="2"))
        self.assertEqual(len({spec("h:1"), spec("h:1")}), 1)


class ParseFileSdTests(unittest.TestCase):
    def test_valid_groups_with_labels(self):
        data = sd((["a:1", "b"], {"env": "prod", "dc": "x"}), (["c:3"], {}))
        self.assertEqual(
            parse_file_sd(data, "t.json"),
            [spec("a:1", env="prod", dc="x"), spec("b:8080", env="prod", dc="x"), spec("c:3")],
        )

    def test_labels_optional_and_null(self):
        data = b'[{"targets": ["a:1"]}, {"targets": ["b:2"], "labels": null}]'
        self.assertEqual(parse_file_sd(data, "t.json"), [spec("a:1"), spec("b:2")])

    def test_empty_list_means_no_targets(self):
        self.assertEqual(parse_file_sd(b"[]", "t.json"), [])
        self.assertEqual(parse_file_sd(b'[{"targets": []}]', "t.json"), [])

    def test_double_underscore_and_empty_labels_dropped(self):
        data = sd((["a:1"], {"__meta_x": "y", "__address__": "z", "empty": "", "ok": "1"}))
        self.assertEqual(parse_file_sd(data, "t.json"), [spec("a:1", ok="1")])

    def test_url_target_keeps_credentials_out_of_repr(self):
        [s] = parse_file_sd(sd((["https://u:secret@h:9443/x"], {})), "t.json")
        self.assertEqual((s.name, s.target.scheme, s.target.password), ("h:9443", "https", "secret"))
        self.assertNotIn("secret", repr(s))

    def test_duplicate_target_first_wins(self):
        data = sd((["a:1", "b:2"], {"g": "1"}), (["a:1", "c:3"], {"g": "2"}))
        self.assertEqual(
            parse_file_sd(data, "t.json"),
            [spec("a:1", g="1"), spec("b:2", g="1"), spec("c:3", g="2")],
        )

    def test_scheme_label_is_the_scheme_of_the_groups_targets(self):
        data = sd(
            (["a:9443", "b", "[::1]:1"], {"__scheme__": "https", "env": "p"}),
            (["c:1"], {"__scheme__": "http"}),
            (["d:1"], {"__scheme__": ""}),  # empty is absent, as in Prometheus
            (["e:1"], {}),
        )
        specs = parse_file_sd(data, "t.json")
        self.assertEqual(
            [(s.target.base_url, s.labels) for s in specs],
            [("https://a:9443", (("env", "p"),)),
             ("https://b:443", (("env", "p"),)),  # https://b, as --target would read it
             ("https://[::1]:1", (("env", "p"),)),
             ("http://c:1", ()), ("http://d:1", ()), ("http://e:1", ())],
        )

    def test_a_url_target_keeps_its_own_scheme_under_scheme_label(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        data = sd((["http://u:secret@a:1", "https://b:2"], {"__scheme__": "https"}))
        [a, b] = parse_file_sd(data, "t.json")
        self.assertEqual((a.target.base_url, a.target.password, b.target.base_url),
                         ("http://a:1", "secret", "https://b:2"))
        warnings = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
        self.assertEqual(len(warnings), 1, warnings)  # the disagreeing one only
        self.assertIn("group 0: target 0 is a http:// URL under __scheme__: https", warnings[0])
        self.assertNotIn("secret", warnings[0])

    def test_a_bad_scheme_label_names_the_value(self):
        message = self.assertFileError(
            sd((["a:1"], {}), (["b:1"], {"__scheme__": "ftp"})), "group 1", "__scheme__", "'ftp'",
            '"http" or "https"',
        )
        self.assertNotIn("group 0", message)
        self.assertFileError(sd((["b:1"], {"__scheme__": "HTTPS"})), "'HTTPS'")
        self.assertFileError(b'[{"targets": ["a:1"], "labels": {"__scheme__": 1}}]',
                             "'__scheme__'", "string value")

    def test_other_prometheus_meta_labels_are_ignored(self):
        data = sd((["a:1"], {"__metrics_path__": "/x", "__param_q": "1", "__address__": "z:2",
                             "__scrape_interval__": "5s", "job": "cadvisor"}))
        [s] = parse_file_sd(data, "t.json")
        self.assertEqual((s.target.base_url, s.labels), ("http://a:1", (("job", "cadvisor"),)))

    def assertFileError(self, data: bytes, *phrases: str, source: str = "/etc/t.json"):
        with self.assertRaises(TargetsFileError) as caught:
            parse_file_sd(data, source)
        message = str(caught.exception)
        self.assertIn(source, message)
        for phrase in phrases:
            self.assertIn(phrase, message)
        return message

    def test_empty_file(self):
        self.assertFileError(b"", "empty")
        self.assertFileError(b"  \n", "empty")

    def test_invalid_json(self):
        self.assertFileError(b'[{"targets": ["a:1"]', "not valid JSON")

    def test_not_utf8(self):
        self.assertFileError(b'["\xff"]', "not UTF-8")

    def test_not_a_list(self):
        self.assertFileError(b'{"targets": ["a:1"]}', "expected a list", "an object")

    def test_group_not_an_object(self):
        self.assertFileError(b'["a:1"]', "group 0", "a string")

    def test_group_without_targets(self):
        self.assertFileError(b'[{"targets": []}, {"labels": {}}]', "group 1", 'no "targets"')

    def test_unknown_group_key(self):
        self.assertFileError(b'[{"target": ["a:1"]}]', "unknown key", "'target'")

    def test_targets_not_a_list(self):
        self.assertFileError(b'[{"targets": "a:1"}]', '"targets" must be a list', "a string")

    def test_target_not_a_string(self):
        self.assertFileError(b'[{"targets": ["a:1", 8080]}]', "target 1", "must be a string", "a number")

    def test_bad_target(self):
        self.assertFileError(b'[{"targets": ["a:99999"]}]', "target 0", "out of range")
        self.assertFileError(b'[{"targets": ["ftp://a"]}]', "target 0", "scheme")

    def test_bad_target_message_hides_password(self):
        message = self.assertFileError(b'[{"targets": ["http://u:secret@a:99999"]}]', "target 0")
        self.assertNotIn("secret", message)

    def test_labels_not_an_object(self):
        self.assertFileError(b'[{"targets": [], "labels": ["a"]}]', '"labels" must be an object')

    def test_bad_label_name(self):
        for name in ("1abc", "a-b", "", "é"):
            data = json.dumps([{"targets": ["a:1"], "labels": {name: "v"}}]).encode()
            self.assertFileError(data, "label name", "not valid")

    def test_label_value_not_a_string(self):
        self.assertFileError(b'[{"targets": [], "labels": {"n": 1}}]', "label 'n'", "string value")

    def test_reserved_label_names(self):
        for name in ("host", "id", "event_type", "oom_process"):
            data = json.dumps([{"targets": ["a:1"], "labels": {name: "v"}}]).encode()
            self.assertFileError(data, f"label {name!r}", "collides")

    def test_yaml_without_pyyaml_is_a_clear_error(self):
        self.patch(targets, "yaml", None)
        self.assertFileError(b"- targets: [a:1]\n", "PyYAML", "JSON", source="/etc/t.yml")
        self.assertFileError(b"- targets: [a:1]\n", "PyYAML", source="/etc/t.yaml")

    def test_yaml_with_pyyaml(self):
        if targets.yaml is None:
            raise unittest.SkipTest("PyYAML is not installed")
        data = b"- targets: ['a:1', 'b:2']\n  labels: {env: prod}\n"
        self.assertEqual(
            parse_file_sd(data, "t.yaml"), [spec("a:1", env="prod"), spec("b:2", env="prod")]
        )
        self.assertFileError(b"- targets: [\n", "not valid YAML", source="t.yml")


class WatcherTests(unittest.TestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "targets.json")
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.changes: list[list[TargetSpec]] = []
        self.mtime = 1_600_000_000 * 10**9

    def write(self, data: bytes, path: str = None) -> None:
        """Write in place (same inode) with a fresh mtime, immune to coarse file system clocks."""
        path = path or self.path
        with open(path, "wb") as f:
            f.write(data)
        self.mtime += 10**9
        os.utime(path, ns=(self.mtime, self.mtime))

    def watcher(self, static=(), path="default", interval=1.0) -> TargetsWatcher:
        w = TargetsWatcher(
            list(static), self.path if path == "default" else path, self.changes.append,
            clock=self.clock, interval=interval,
        )
        self.addCleanup(w.stop)
        return w

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass in quarter-second steps (exact in binary floating point)."""
        for _ in range(int(seconds * 4)):
            self.clock.advance(0.25)

    def test_start_reads_file_and_reports_static_plus_file(self):
        self.write(sd((["a:1"], {"env": "p"})))
        w = self.watcher(static=[spec("s:9")])
        self.assertTrue(w.start())
        self.assertEqual(self.changes, [[spec("s:9"), spec("a:1", env="p")]])
        self.assertTrue(w.last_reload_successful)
        self.assertEqual(w.last_reload_success_time, 1_700_000_000)

    def test_static_wins_over_file_duplicate(self):
        self.write(sd((["s:9", "a:1"], {"env": "p"})))
        self.watcher(static=[spec("s:9")]).start()
        self.assertEqual(self.changes, [[spec("s:9"), spec("a:1", env="p")]])

    def test_no_file_means_static_only_and_no_polling(self):
        w = self.watcher(static=[spec("s:9")], path=None)
        self.assertTrue(w.start())
        self.assertEqual(self.changes, [[spec("s:9")]])
        self.assertTrue(w.last_reload_successful)
        self.assertEqual(w.last_reload_success_time, 1_700_000_000)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_one_looping_call(self):
        self.write(b"[]")
        self.watcher().start()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_change_seen_within_two_seconds(self):
        self.write(sd((["a:1"], {})))
        w = self.watcher()
        w.start()
        self.clock.advance(0.37)  # the change lands at an arbitrary point between polls
        self.write(sd((["a:1", "b:2"], {})))
        written_at = self.clock.seconds()
        while len(self.changes) < 2 and self.clock.seconds() - written_at < 2:
            self.clock.advance(0.25)
        self.assertEqual(self.changes, [[spec("a:1")], [spec("a:1"), spec("b:2")]])
        self.assertLessEqual(w.last_reload_success_time - written_at, 2)

    def test_missing_file_at_start_then_created(self):
        w = self.watcher(static=[spec("s:9")])
        self.assertFalse(w.start())
        self.assertEqual(self.changes, [[spec("s:9")]])
        self.assertFalse(w.last_reload_successful)
        self.assertIsNone(w.last_reload_success_time)
        self.assertIn("does not exist", w.last_error)
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        self.advance(3)  # still missing: no reload, no new report
        self.assertEqual(len(self.changes), 1)
        self.write(sd((["a:1"], {})))
        self.advance(2)
        self.assertEqual(self.changes[-1], [spec("s:9"), spec("a:1")])
        self.assertTrue(w.last_reload_successful)
        self.assertIsNotNone(w.last_reload_success_time)

    def test_broken_file_at_start_keeps_static(self):
        self.write(b"[{")
        w = self.watcher(static=[spec("s:9")])
        self.assertFalse(w.start())
        self.assertEqual(self.changes, [[spec("s:9")]])
        self.assertIn("not valid JSON", w.last_error)

    def test_broken_file_keeps_last_good_set(self):
        self.write(sd((["a:1"], {})))
        w = self.watcher()
        w.start()
        good_time = w.last_reload_success_time
        self.clock.advance(10)
        self.write(b'[{"targets": ["a:1", 2]}]')
        self.advance(2)
        self.assertEqual(self.changes, [[spec("a:1")]])
        self.assertEqual(w.specs, [spec("a:1")])
        self.assertFalse(w.last_reload_successful)
        self.assertEqual(w.last_reload_success_time, good_time)
        self.assertIn("must be a string", w.last_error)
        self.write(sd((["b:2"], {})))
        self.advance(2)
        self.assertEqual(self.changes[-1], [spec("b:2")])
        self.assertTrue(w.last_reload_successful)
        self.assertGreater(w.last_reload_success_time, good_time)

    def test_deleted_file_keeps_last_good_set(self):
        self.write(sd((["a:1"], {})))
        w = self.watcher()
        w.start()
        os.remove(self.path)
        self.advance(2)
        self.assertEqual(self.changes, [[spec("a:1")]])
        self.assertFalse(w.last_reload_successful)

    def test_rewritten_in_place_partial_then_complete(self):
        self.write(sd((["a:1"], {})))
        inode = os.stat(self.path).st_ino
        w = self.watcher()
        w.start()
        full = sd((["a:1", "b:2", "c:3"], {"env": "p"}))
        self.write(full[: len(full) // 2])  # the editor has written half of it
        self.advance(1)
        self.assertFalse(w.last_reload_successful)
        self.assertEqual(len(self.changes), 1)
        self.write(full)
        self.assertEqual(os.stat(self.path).st_ino, inode)
        self.advance(1)
        self.assertTrue(w.last_reload_successful)
        self.assertEqual(self.changes[-1], [spec("a:1", env="p"), spec("b:2", env="p"), spec("c:3", env="p")])

    def test_replaced_atomically_by_rename(self):
        self.write(sd((["a:1"], {})))
        w = self.watcher()
        w.start()
        tmp = self.path + ".tmp"
        self.write(sd((["b:2"], {})), path=tmp)
        os.replace(tmp, self.path)
        self.advance(1)
        self.assertEqual(self.changes, [[spec("a:1")], [spec("b:2")]])
        self.assertTrue(w.last_reload_successful)

    def test_on_change_only_on_real_change(self):
        self.write(sd((["a:1"], {"g": "1"}), (["b:2"], {"g": "2"})))
        w = self.watcher()
        w.start()
        self.clock.advance(5)
        touched_at = self.clock.seconds()
        self.write(sd((["a:1"], {"g": "1"}), (["b:2"], {"g": "2"})))  # touched, same content
        self.advance(2)
        self.write(sd((["b:2"], {"g": "2"}), (["a:1"], {"g": "1"})))  # only reordered
        self.advance(2)
        self.assertEqual(len(self.changes), 1)
        self.assertTrue(w.last_reload_successful)
        self.assertGreater(w.last_reload_success_time, touched_at)  # it was re-read
        self.write(sd((["a:1"], {"g": "1"}), (["b:2"], {"g": "3"})))  # a label changed
        self.advance(2)
        self.assertEqual(len(self.changes), 2)

    def test_reload_reads_even_when_stat_is_unchanged(self):
        self.write(sd((["a:1"], {})))
        w = self.watcher()
        w.start()
        before = os.stat(self.path)
        with open(self.path, "wb") as f:  # same size, same mtime: polling cannot see it
            f.write(sd((["b:1"], {})))
        os.utime(self.path, ns=(before.st_atime_ns, before.st_mtime_ns))
        self.advance(3)
        self.assertEqual(len(self.changes), 1)
        self.assertTrue(w.reload())
        self.assertEqual(self.changes[-1], [spec("b:1")])

    def test_on_change_failure_does_not_stop_polling(self):
        self.write(sd((["a:1"], {})))
        calls = []

        def boom(specs):
            calls.append(specs)
            raise RuntimeError("consumer broke")

        w = TargetsWatcher([], self.path, boom, clock=self.clock)
        self.addCleanup(w.stop)
        w.start()
        self.write(sd((["b:2"], {})))
        self.advance(1)
        self.assertEqual(len(calls), 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_stop_ends_polling_and_ignores_late_reload(self):
        self.write(sd((["a:1"], {})))
        w = self.watcher()
        w.start()
        w.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.write(sd((["b:2"], {})))
        w.reload()
        self.assertEqual(len(self.changes), 1)

    def test_set_static(self):
        self.write(sd((["a:1"], {})))
        w = self.watcher()
        w.start()
        w.set_static([spec("demo:8080")])
        self.assertEqual(self.changes[-1], [spec("demo:8080"), spec("a:1")])

    def test_set_source_merges_after_static_and_file(self):
        self.write(sd((["a:1"], {"pool": "x"})))
        w = self.watcher()
        w.start()
        w.set_source("dns", [spec("a:1"), spec("10.0.0.1:8080")])  # a:1 as the file says it wins
        self.assertEqual(self.changes[-1], [spec("a:1", pool="x"), spec("10.0.0.1:8080")])
        count = len(self.changes)
        w.set_source("dns", [spec("10.0.0.1:8080"), spec("a:1")])  # the same set: nothing reported
        self.assertEqual(len(self.changes), count)
        w.set_source("dns", [])
        self.assertEqual(self.changes[-1], [spec("a:1", pool="x")])


class FakeReactor:
    def __init__(self):
        self.calls = []

    def callFromThread(self, f, *args, **kwargs):
        self.calls.append((f, args, kwargs))


class SighupTests(unittest.TestCase):
    def setUp(self):
        original = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, original)

    def test_sighup_schedules_reload_and_chains_previous(self):
        seen = []
        signal.signal(signal.SIGHUP, lambda signum, frame: seen.append(signum))
        clock = task.Clock()
        changes = []
        watcher = TargetsWatcher([spec("s:9")], None, changes.append, clock=clock)
        reactor = FakeReactor()
        install_sighup(reactor, watcher)
        signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)
        self.assertEqual(seen, [signal.SIGHUP])
        self.assertEqual(reactor.calls, [(watcher.reload, (), {})])
        f, args, kwargs = reactor.calls[0]
        f(*args, **kwargs)  # what the reactor thread then runs
        self.assertEqual(changes, [[spec("s:9")]])

    def test_default_previous_handler_is_not_called(self):
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        reactor = FakeReactor()
        watcher = TargetsWatcher([], None, lambda specs: None, clock=task.Clock())
        self.assertEqual(install_sighup(reactor, watcher), signal.SIG_DFL)
        signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)
        self.assertEqual(len(reactor.calls), 1)


class ShardTests(unittest.TestCase):
    # Pinned: replicas of different versions must agree; changing the hash fails here.
    VECTORS = {
        "127.0.0.1:8080": [0, 1, 2, 1, 82],
        "node-1.example.com:8080": [0, 1, 2, 6, 2],
        "[::1]:8080": [0, 0, 2, 6, 86],
        "cadvisor:4194": [0, 1, 2, 4, 14],
    }

    def test_known_vectors(self):
        for name, expected in self.VECTORS.items():
            self.assertEqual([shard_of(name, n) for n in (2, 3, 4, 7, 100)], expected, name)

    def test_one_shard_takes_everything(self):
        self.assertEqual({shard_of(f"h{i}:1", 1) for i in range(100)}, {0})

    def test_distribution_roughly_even(self):
        counts = collections.Counter(shard_of(f"host-{i}.example.com:8080", 4) for i in range(10_000))
        self.assertEqual(set(counts), {0, 1, 2, 3})
        for shard, count in counts.items():
            self.assertTrue(2350 <= count <= 2650, f"shard {shard} has {count} of 10000")

    def test_shard_count_must_be_positive(self):
        self.assertRaises(ValueError, shard_of, "a:1", 0)

    def test_parse_shard(self):
        self.assertEqual(parse_shard("0/1"), (0, 1))
        self.assertEqual(parse_shard(" 2/3 "), (2, 3))

    def test_parse_shard_errors(self):
        cases = {
            "": "expected I/N", "3": "expected I/N", "a/b": "expected I/N",
            "1/2/3": "expected I/N", "1/": "expected I/N",
            "0/0": "at least 1", "1/-2": "at least 1",
            "3/3": "between 0 and 2", "-1/3": "between 0 and 2",
        }
        for text, phrase in cases.items():
            with self.assertRaises(ValueError) as caught:
                parse_shard(text)
            self.assertIn(phrase, str(caught.exception), text)
            self.assertIn(repr(text), str(caught.exception))
