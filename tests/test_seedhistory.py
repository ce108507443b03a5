"""Tests for cadvisor_events.seedhistory's whole-body path: seed_counts and SeedCounts.render
give what count_history and render_seed_counts give, for every body, by the fast way for
cAdvisor's own. (The Go decoding rules themselves are tested through /proxy in test_proxy.)"""

from __future__ import annotations

import json
import time

from hypothesis import given, settings, strategies as st
from twisted.internet.task import Clock
from twisted.trial import unittest

from cadvisor_events import seedhistory
from cadvisor_events.event import InvalidEvent
from cadvisor_events.exposition import render_seed_counts
from cadvisor_events.seedhistory import count_history, seed_counts
from cadvisor_events.simulator import Simulator

STAMP = "2026-11-24T17:25:55.873677656-03:00"


def event(name: str, kind: str, process=None, stamp: str = STAMP, **data) -> dict:
    if process is not None:
        data["oom"] = {"pid": 7, "process_name": process, "constraint": "CONSTRAINT_MEMCG"}
    return {"container_name": name, "timestamp": stamp, "event_type": kind, "event_data": data}


def go_json(events: list) -> bytes:
    """JSON as Go's encoding/json writes it (compact; <, >, & escaped), as cAdvisor sends it."""
    text = json.dumps(events, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def both_ways(body: bytes):
    """(seed_counts's counts and answer, count_history's and render_seed_counts's), or errors."""
    try:
        fast = seed_counts(body)
        fast_answer = (fast.as_dict(), fast.render())
    except InvalidEvent:
        fast_answer = "error"
    try:
        counts = count_history(body)
        exact_answer = (dict(counts), render_seed_counts(counts))
    except InvalidEvent:
        exact_answer = "error"
    return fast_answer, exact_answer


class FastPathTests(unittest.TestCase):
    """cAdvisor's own bodies never reach the batched path."""

    def setUp(self):
        def batched(body):
            raise AssertionError("took the batched path")

        self.patch(seedhistory, "count_history", batched)

    def test_labels_needing_escapes_in_process_names(self):
        self.patch(seedhistory, "CHUNK_BYTES", 200)
        events = [
            event("/a", "containerCreation"), event("/a", "oom"),
            event("/a", "oomKill", 'sh -c "sleep 1"'), event("/a", "oomKill", "tab\tnew\nline"),
            event("/a", "oomKill", "ctl\x01\x08\x0c\x1f\x7f"), event("/a", "oomKill", "<script>&amp;</script>"),
            event("/a", "oomKill", "🐳 whale"), event("/a", "oomKill", "back\\slash"),
            event("/a", "oomKill", ""), event("/b", "oomKill", "java"), event("/a", "oomKill", "java"),
            event("/a b", "containerDeletion", container_deletion={"exit_code": -1}),
        ] * 3
        counts = seed_counts(go_json(events))
        self.assertEqual(counts.as_dict()[("/a", "oomKill", "java")], 3)
        self.assertEqual(counts.as_dict()[("/a", "oomKill", "")], 3)
        self.patch(seedhistory, "count_history", count_history)  # the reference below
        self.assertEqual(both_ways(go_json(events))[0], both_ways(go_json(events))[1])

    def test_empty_array(self):
        self.assertEqual(seed_counts(b"[]").render(), b"")
        self.assertEqual(seed_counts(b"[]").as_dict(), {})

    def test_only_process_named_series(self):
        counts = seed_counts(go_json([event("/a", "oomKill", "java")]))
        self.assertEqual(counts.render().splitlines()[-1],
                         b'cadvisor_container_events_total{event_type="oomKill",id="/a",oom_process="java"} 1')

    def test_large_values_use_gos_number_format(self):
        self.patch(seedhistory, "count_history", count_history)
        counts = seedhistory.SeedCounts((["oom\0/a", "oom\0/b"], [1_000_000, 5000], {"oomKill\0/a\x01j": 2_500_000}))
        expected = render_seed_counts(counts.as_dict())
        answer = counts.render()
        self.assertEqual(answer, expected)
        self.assertIn(b"} 1e+06\n", answer)
        self.assertEqual(counts.render(), b"")  # once: the counts went with it


class SimulatedHistoryTests(unittest.TestCase):
    """The simulator's history (every label oddity it has) through both ways."""

    def test_same_counts_and_bytes(self):
        clock = Clock()
        clock.advance(time.time())
        simulator = Simulator(clock=clock, seed=5, containers=400)
        simulator.fill_history(3000)
        body = b"[%s]" % b",".join(e.to_json() for e in simulator.history())
        fast, exact = both_ways(body)
        self.assertEqual(fast, exact)
        self.assertEqual(fast[0], dict(simulator.history_counts()))
        self.assertEqual(sum(fast[0].values()), 3000)

    def test_cadvisors_own_bodies_take_the_whole_body_path(self):
        clock = Clock()
        clock.advance(time.time())
        simulator = Simulator(clock=clock, seed=6, containers=200)
        simulator.fill_history(1500)
        body = b"[%s]" % b",".join(e.to_json() for e in simulator.history())

        def batched(body):
            raise AssertionError("took the batched path")

        self.patch(seedhistory, "count_history", batched)
        self.assertEqual(seed_counts(body).as_dict(), dict(simulator.history_counts()))


class EquivalenceTests(unittest.TestCase):
    """Whatever the body, both ways agree: counts, bytes, and where Go's decode fails."""

    def check(self, body: bytes) -> None:
        fast, exact = both_ways(body)
        self.assertEqual(fast, exact, body[:300])

    def test_labels_the_whole_text_render_cannot_carry_fall_back(self):
        for name in ['/a"b', "/a\\b", "/a\nb", "/a\x00b", "/a\x01b", "caf\u00e9", "\U0001f433"]:
            for kind in ["oom", "oomKill"]:
                self.check(go_json([event(name, kind), event("/z", kind, "java"), event(name, kind, "p")]))
                self.check(go_json([event("/a", name), event("/a", name, "java")]))

    def test_timestamps_msgspec_would_take_but_go_refuses(self):
        for stamp in ["2026-11-24t17:25:55Z", "2026-11-24T17:25:55z", "2026-11-24 17:25:55Z",
                      "2026-11-24T17:25:55", "2026-11-24T17:25:55+0300", "2026-11-24T17:25:55\\u005a",
                      "2026-11-24T17:25:55.Z", "2026-02-29T00:00:00Z"]:
            body = go_json([event("/a", "oom"), event("/a", "oom", stamp="X")]).replace(b'"X"', b'"%s"' % stamp.encode())
            self.assertEqual(both_ways(body), ("error", "error"), stamp)
        for stamp in ["2028-02-29T00:00:00Z", "2026-11-24T7:25:55Z", "2026-11-24T17:25:55,5Z",
                      "2026-11-24T17:25:55+25:99", "0000-01-01T00:00:00Z", "2026-11-24T17:25:55-00:00"]:
            self.check(go_json([event("/a", "oom", stamp=stamp), event("/b", "oom")]))
        self.check(b'[{"container_name":"/a","timestamp":null,"event_type":"oom","event_data":{}}]')
        self.check(b'[{"container_name":"/a","event_type":"oom","event_data":{}}]')

    def test_a_cut_inside_a_nested_value_is_refused_and_counted_right(self):
        # The needle a chunk may end at, inside a raw field: the cut leaves brackets open.
        nested = {"exit_code": [{}, {"container_name": "/x"}]}
        self.patch(seedhistory, "CHUNK_BYTES", 1)
        body = go_json([event("/a", "containerDeletion", container_deletion=nested), event("/b", "oom")] * 3)
        self.assertIn(b'},{"container_name"', body.split(b"},{", 1)[1])
        self.check(body)
        self.check(body.replace(b"},{", b"}, {"))

    def test_what_follows_the_array_and_other_starts(self):
        body = go_json([event("/a", "oom")])
        for variant in [body + b" ", body + b" [1]", b" " + body, b"null", b"[] x", b"{}", b"", b"[1]", b"[null]"]:
            self.check(variant)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(
        st.text(alphabet=st.sampled_from(list('/ab_-.: "\\\n\t\x00\x01\x7f\u00e9\u2028\U0001f433')), max_size=6),
        st.sampled_from(["oom", "oomKill", "containerCreation", "containerDeletion", 'x"y', ""]),
        st.one_of(st.none(), st.text(alphabet=st.sampled_from(list('jav "\\\n\x00\x01<&\u00e9\U0001f433')), max_size=5)),
    ), max_size=40), st.integers(1, 400))
    def test_any_labels_any_chunking(self, events, chunk_bytes):
        self.patch(seedhistory, "CHUNK_BYTES", chunk_bytes)
        self.check(go_json([event(name, kind, process) for name, kind, process in events]))


class TimestampTests(unittest.TestCase):
    """The checks of a chunk's timestamps at once agree with Go's rule stamp by stamp."""

    STAMPS = [
        STAMP, "2026-11-24T17:25:55Z", "2028-02-29T00:00:00Z", "2026-11-24T7:25:55Z", "2026-11-24T17:25:55,5Z",
        "2026-11-24T17:25:55.1234567891234Z", "2026-11-24T17:25:55+24:60", "0000-01-01T00:00:00Z",
        "2026-11-24T17:25:55-00:00", "", "yesterday", "2026-11-24t17:25:55Z", "2026-11-24T17:25:55z",
        "2026-11-24 17:25:55Z", "2026-11-24T17:25:55", "2026-02-29T00:00:00Z", "2026-04-31T00:00:00Z",
        "2026-11-24T24:00:00Z", "2026-11-24T17:60:00Z", "2026-11-24T17:25:60Z", "2026-11-24T17:25:55+3:00",
        "2026-11-24T17:25:55+0300", "2026-11-24T17:25:55.Z", "2026-11-24T17:25:55\\u005a",
        "2026-11-24T17:25:55+03:00:00", "2026-11-24T17:25:55Z+03:00",
    ]

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from(STAMPS + [None, "null"]), max_size=6))
    def test_same_verdict(self, stamps):
        import msgspec

        raw = [seedhistory._ABSENT if s is None else msgspec.Raw(b"null" if s == "null" else b'"%s"' % s.encode())
               for s in stamps]
        self.assertEqual(seedhistory._go_parses_times(raw), all(map(seedhistory._go_parses_time, raw)), stamps)
