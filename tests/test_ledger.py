"""Tests for cadvisor_events.ledger: what counts as already counted, and the bounds of that state."""

from __future__ import annotations

import datetime
import random
import tracemalloc

import msgspec
from hypothesis import given, settings, strategies as st
from twisted.trial import unittest

from cadvisor_events import ledger as ledger_module

from cadvisor_events.event import NS_PER_SECOND, Event, decode_event, format_timestamp, timestamp_ns
from cadvisor_events.ledger import (
    MAX_OOMS, MAX_WINDOW_EVENTS, OOM_RETENTION, RECENT_SECONDS, RECENT_TAIL, EventFingerprints, Ledger, OomMemory, merge_backfill,
    merge_backfill_steps, oom_partner,
)

BASE = datetime.datetime(2026, 11, 24, 20, 0, 0, tzinfo=datetime.timezone.utc)


def at(seconds: float) -> int:
    """Nanoseconds of ``seconds`` after a base time."""
    return int(BASE.timestamp()) * NS_PER_SECOND + round(seconds * NS_PER_SECOND)


def make(container: str, event_type: str, ns: int, process: str = None, pid: int = None) -> Event:
    doc = {"container_name": container, "timestamp": format_timestamp(ns), "event_type": event_type,
           "event_data": {}}
    if process is not None:
        doc["event_data"] = {"oom": {"pid": pid, "process_name": process}}
    return decode_event(msgspec.json.encode(doc))


def kill(container: str, seconds: float, pid: int, process: str = "java") -> tuple:
    """One kernel OOM at ``seconds``: the (oom, oomKill) pair, timed."""
    ns = at(seconds)
    return (make(container, "oom", ns), ns), (make(container, "oomKill", ns, process, pid), ns)


def timed(event: Event) -> tuple:
    return event, timestamp_ns(event.timestamp)


class Counted(list):
    def __call__(self, event):
        self.append(event)


class ReplayTests(unittest.TestCase):
    """A restarted cAdvisor re-adds counted OOMs shifted by one constant in (-1 s, +1 s)."""

    def counted_pair(self, ledger: Ledger, seconds: float, pid: int, container: str = "/docker/a"):
        oom, killed = kill(container, seconds, pid)
        self.assertTrue(ledger.offer(*oom, partner=killed[0]))
        self.assertTrue(ledger.offer(*killed))
        return oom, killed

    def test_replays_shifted_within_a_second_are_recognised_either_order(self):
        for shift in (0.9, -0.9, 0.0, 0.999, -0.999):
            ledger = Ledger()
            self.counted_pair(ledger, 10, pid=42)
            oom, killed = kill("/docker/a", 10 + shift, 42)
            if shift > 0:  # history order is free among equal timestamps: kill first
                self.assertFalse(ledger.offer(*killed), shift)
                self.assertFalse(ledger.offer(*oom, partner=killed[0]), shift)
            else:
                self.assertFalse(ledger.offer(*oom, partner=killed[0]), shift)
                self.assertFalse(ledger.offer(*killed), shift)

    def test_through_repeated_restarts(self):
        ledger = Ledger()
        self.counted_pair(ledger, 10.2, pid=42)
        for shift in (0.6, -0.4, 0.3, -0.7, 0.9):
            oom, killed = kill("/docker/a", 10.2 + shift, 42)
            self.assertFalse(ledger.offer(*oom, partner=killed[0]))
            self.assertFalse(ledger.offer(*killed))

    def test_an_oom_during_the_downtime_in_the_same_replay_counts_once(self):
        ledger = Ledger()
        self.counted_pair(ledger, 10, pid=42)
        replay = [kill("/docker/a", 10.5, 42), kill("/docker/a", 20.5, 43)]  # 43: while cAdvisor was down
        verdicts = [(ledger.offer(*oom, partner=killed[0]), ledger.offer(*killed)) for oom, killed in replay]
        self.assertEqual(verdicts, [(False, False), (True, True)])
        again = [kill("/docker/a", 9.8, 42), kill("/docker/a", 19.8, 43)]  # and the next restart
        self.assertEqual([(ledger.offer(*oom, partner=k[0]), ledger.offer(*k)) for oom, k in again],
                         [(False, False), (False, False)])

    def test_distinct_kills_are_never_merged(self):
        ledger = Ledger()
        self.counted_pair(ledger, 10, pid=42)
        oom, killed = kill("/docker/a", 10.3, 43)  # another process of the container, 0.3 s later
        self.assertTrue(ledger.offer(*oom, partner=killed[0]))
        self.assertTrue(ledger.offer(*killed))
        oom, killed = kill("/docker/a", 12, 42)  # the pid reused two seconds later: a new kill
        self.assertTrue(ledger.offer(*oom, partner=killed[0]))
        self.assertTrue(ledger.offer(*killed))
        oom, killed = kill("/docker/b", 10, 42)  # same pid and time, another container
        self.assertTrue(ledger.offer(*killed))

    def test_two_kills_within_a_second_replayed_are_told_apart_by_their_partners(self):
        ledger = Ledger()
        self.counted_pair(ledger, 10.0, pid=42)
        self.counted_pair(ledger, 10.4, pid=43)
        for seconds, pid in ((10.7, 42), (11.1, 43)):  # both shifted by +0.7
            oom, killed = kill("/docker/a", seconds, pid)
            self.assertFalse(ledger.offer(*oom, partner=killed[0]))
            self.assertFalse(ledger.offer(*killed))
        oom, killed = kill("/docker/a", 10.6, 44)  # a new kill among them
        self.assertTrue(ledger.offer(*oom, partner=killed[0]))
        self.assertTrue(ledger.offer(*killed))

    def test_an_oom_without_its_partner_is_judged_by_its_container(self):
        ledger = Ledger()
        self.counted_pair(ledger, 10, pid=42)
        oom, _ = kill("/docker/a", 10.5, 42)
        self.assertTrue(ledger.needs_partner(*oom))
        self.assertFalse(ledger.offer(*oom))
        oom, _ = kill("/docker/a", 11.5, 42)
        self.assertFalse(ledger.needs_partner(*oom))
        self.assertTrue(ledger.offer(*oom))

    def test_an_oom_older_than_what_is_remembered_is_a_replay(self):
        ledger = Ledger()
        self.counted_pair(ledger, 0, pid=1)
        self.counted_pair(ledger, OOM_RETENTION / NS_PER_SECOND + 10, pid=2)  # a day later
        self.assertEqual(len(ledger.ooms), 2)  # the first pair aged out
        oom, killed = kill("/docker/a", 0.2, 1)  # its replay, from a kernel log that kept it
        self.assertFalse(ledger.offer(*killed))
        self.assertFalse(ledger.offer(*oom, partner=killed[0]))

    def test_state_is_capped_and_evictions_counted(self):
        memory = OomMemory(max_ooms=10)
        for pid in range(20):
            (oom, ns), (killed, _) = kill("/docker/a", pid * 0.01, pid + 2)
            self.assertTrue(memory.offer(oom, ns, killed))
            self.assertTrue(memory.offer(killed, ns))
        self.assertEqual((len(memory), memory.evicted), (10, 30))
        (_, ns), (killed, _) = kill("/docker/a", 0.05, 7)  # forgotten, older than what is kept: a replay
        self.assertFalse(memory.offer(killed, ns))
        (_, ns), (killed, _) = kill("/docker/a", 0.2, 99)  # a new one after those kept counts
        self.assertTrue(memory.offer(killed, ns))

    def test_a_remembered_oom_costs_words_not_objects(self):
        # A fleet re-reading its histories remembers millions of OOMs: none may keep its event.
        memory = OomMemory()
        pairs = [kill(f"/kubepods/pod{i % 20:04}/{'c' * 64}", i * 0.5, 1000 + i) for i in range(MAX_OOMS // 2)]
        tracemalloc.start()
        try:
            for (oom, ns), (killed, _) in pairs:
                self.assertTrue(memory.offer(oom, ns, killed))
                self.assertTrue(memory.offer(killed, ns))
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertEqual(len(memory), MAX_OOMS)
        self.assertLess(held / MAX_OOMS, 30)  # three 8-byte words each, and the arrays' slack
        (oom, ns), (killed, _) = pairs[7]
        self.assertFalse(memory.offer(killed, ns + NS_PER_SECOND // 2))  # still recognised
        self.assertFalse(memory.offer(oom, ns + NS_PER_SECOND // 2, killed))

    def test_out_of_order_ooms_are_remembered_in_time_order(self):
        memory = OomMemory(max_ooms=3)
        for seconds, pid in ((5, 1), (1, 2), (3, 3), (9, 4)):
            (_, ns), (killed, _) = kill("/docker/a", seconds, pid)
            self.assertTrue(memory.offer(killed, ns))
        self.assertEqual((len(memory), memory.evicted), (3, 1))
        (_, ns), (killed, _) = kill("/docker/a", 0.6, 2)  # the oldest-dated went first: its replay
        self.assertFalse(memory.offer(killed, ns))  # is dated before the horizon, taken as one
        for seconds, pid in ((3.3, 3), (5.3, 1)):  # kept, the first one offered included:
            (_, ns), (killed, _) = kill("/docker/a", seconds, pid)
            self.assertFalse(memory.offer(killed, ns))  # recognised within the tolerance

    def test_a_tight_loop_of_kills_keeps_memory_bounded(self):
        ledger = Ledger()
        for pid in range(3 * MAX_OOMS):
            oom, killed = kill("/docker/a", pid * 0.2, pid + 2)
            ledger.offer(*oom, partner=killed[0])
            ledger.offer(*killed)
        self.assertEqual(len(ledger.ooms), MAX_OOMS)
        self.assertEqual(ledger.evicted, {"window": 0, "oom": 5 * MAX_OOMS})


class OverlapTests(unittest.TestCase):
    """Events dated up to the overlap before the newest counted are asked again and de-duplicated."""

    def test_resume_starts_one_overlap_before_the_newest_non_oom_event(self):
        ledger = Ledger(overlap=1.0)
        self.assertEqual(ledger.resume(), (None, set()))
        created = make("/docker/a", "containerCreation", at(10))
        ledger.offer(*timed(created))
        oom, killed = kill("/docker/a", 12, 42)  # OOMs later: the start stays with the creation
        ledger.offer(*oom, partner=killed[0])
        ledger.offer(*killed)
        self.assertEqual(ledger.resume(), (format_timestamp(at(9)), {created}))
        self.assertEqual(Ledger(overlap=0.25).resume()[0], None)
        only_ooms = Ledger(overlap=0.5)
        only_ooms.offer(*killed)
        self.assertEqual(only_ooms.resume(), (format_timestamp(at(11.5)), set()))

    def test_merge_counts_early_dated_events_once(self):
        ledger = Ledger()
        created = make("/docker/a", "containerCreation", at(10))
        ledger.offer(*timed(created))
        start = timestamp_ns(ledger.resume()[0])
        early_oom, early_kill = kill("/docker/a", 9.7, 42)  # happened after the break, dated before
        at_mark = make("/docker/b", "containerCreation", at(10))  # shares the newest's nanosecond
        later = make("/docker/b", "containerDeletion", at(15))
        before_start = make("/docker/c", "containerCreation", at(8.9))  # not asked for
        history = sorted([timed(before_start), early_oom, early_kill, timed(created), timed(at_mark),
                          timed(later)], key=lambda pair: pair[1])
        counted = Counted()
        result = merge_backfill(ledger, start, history, [], None, counted)
        self.assertEqual(sorted(e.event_type + e.container_name for e in counted),
                         ["containerCreation/docker/b", "containerDeletion/docker/b", "oom/docker/a",
                          "oomKill/docker/a"])
        self.assertEqual((result.backfilled, result.dropped), (4, 2))
        again = merge_backfill(ledger, timestamp_ns(ledger.resume()[0]), history, [], None, counted)
        self.assertEqual((again.backfilled, len(counted)), (0, 4))  # the same answer again: nothing new

    def test_early_dated_ooms_and_a_replay_in_one_merge(self):
        ledger = Ledger()
        first = kill("/docker/a", 9.5, 42)
        for event, ns in first:
            ledger.offer(event, ns, first[1][0] if event.event_type == "oom" else None)
        ledger.offer(*timed(make("/docker/a", "containerCreation", at(10))))
        replay = kill("/docker/a", 9.9, 42)  # cAdvisor restarted: the counted one, shifted +0.4
        new = kill("/docker/a", 9.8, 43)  # a new kill dated before the newest counted event
        history = sorted([*replay, *new], key=lambda pair: pair[1])
        counted = Counted()
        merge_backfill(ledger, timestamp_ns(ledger.resume()[0]), history, [], None, counted)
        self.assertEqual([(e.event_type, e.event_data.oom.pid if e.event_data.oom else None) for e in counted],
                         [("oom", None), ("oomKill", 43)])

    def test_buffered_events_repeating_history_are_dropped(self):
        ledger = Ledger()
        a = timed(make("/docker/a", "containerCreation", at(1)))
        b = timed(make("/docker/b", "containerCreation", at(2)))
        c = timed(make("/docker/c", "containerCreation", at(3)))
        counted = Counted()
        result = merge_backfill(ledger, None, [a, b], [b, c], b[1], counted)
        self.assertEqual(counted, [a[0], b[0], c[0]])
        self.assertEqual((result.backfilled, result.from_buffer, result.dropped), (2, 1, 1))

    def test_partners_are_found_among_equal_timestamps(self):
        (oom, ns), (killed, _) = kill("/docker/a", 1, 42)
        other = make("/docker/z", "containerCreation", ns)
        self.assertIs(oom_partner([(oom, ns), (other, ns), (killed, ns)], 0), killed)
        self.assertIs(oom_partner([(killed, ns), (oom, ns)], 1), killed)
        self.assertIsNone(oom_partner([(oom, ns), (make("/docker/a", "oomKill", ns + 1, "x", 1), ns + 1)], 0))

    def test_window_state_is_capped(self):
        ledger = Ledger()
        for index in range(3 * MAX_WINDOW_EVENTS):  # all within one window
            ledger.offer(make(f"/docker/{index}", "containerCreation", at(1) + index), at(1) + index)
        self.assertLessEqual(len(ledger), 2 * MAX_WINDOW_EVENTS)
        self.assertEqual(ledger.evicted["window"], 2 * MAX_WINDOW_EVENTS)

    def test_window_forgets_what_is_older_than_two_generations(self):
        ledger = Ledger(overlap=1.0)
        for second in range(100):
            for index in range(10):
                ledger.offer(make(f"/docker/{index}", "containerCreation", at(second)), at(second))
        self.assertLessEqual(len(ledger), 20)
        self.assertEqual(len(ledger.resume()[1]), 20)  # from 98 s, inclusive, to 99 s

    def test_recent_history_is_recognised_by_fingerprint(self):
        history = [timed(make(f"/docker/{i % 7}", "containerCreation", at(i))) for i in range(50)]
        result = merge_backfill(Ledger(), None, history, [], None, Counted())
        again = make("/docker/3", "containerCreation", at(45))  # decoded anew, as a stream delivers it
        self.assertIn(again, result.recent)
        self.assertNotIn(make("/docker/3", "containerCreation", at(45) + 1), result.recent)
        self.assertNotIn(make("/docker/3", "containerDeletion", at(45)), result.recent)
        self.assertEqual(len(EventFingerprints(event for event, _ in history + history)), 50)

    def test_recent_history_tail_is_bounded(self):
        """The newest events, at most RECENT_TAIL of them, within RECENT_SECONDS of the newest;
        and every one from the oldest buffered stream event on."""
        history = [timed(make("/docker/a", "containerCreation", at(i / 100))) for i in range(3000)]
        result = merge_backfill(Ledger(), None, history, [], None, Counted())
        self.assertEqual(len(result.recent), RECENT_TAIL)
        result = merge_backfill(Ledger(), None, history, [history[100]], history[100][1], Counted())
        self.assertEqual(len(result.recent), 2900)
        self.assertEqual(result.dropped, 1)

    def test_recent_history_is_the_last_minute_of_it(self):
        history = [timed(make("/docker/a", "containerCreation", at(i))) for i in range(3000)]
        result = merge_backfill(Ledger(), None, history, [], None, Counted())
        self.assertEqual(len(result.recent), RECENT_SECONDS + 1)
        self.assertIn(history[-RECENT_SECONDS - 1][0], result.recent)
        self.assertNotIn(history[-RECENT_SECONDS - 2][0], result.recent)
        result = merge_backfill(Ledger(), None, history, [history[100]], history[100][1], Counted())
        self.assertEqual(len(result.recent), 2900)


class NewestTests(unittest.TestCase):
    def test_the_newest_remembered_events_newest_first_without_ooms(self):
        ledger = Ledger(overlap=1.0)
        for i in range(30):
            ledger.offer(*timed(make(f"/docker/{i}", "containerCreation", at(i * 0.1))))
        oom, oom_kill = kill("/docker/x", 5.0, 7)
        ledger.offer(*oom_kill)
        newest = ledger.newest(3)
        self.assertEqual([event.container_name for event in newest], ["/docker/29", "/docker/28", "/docker/27"])
        self.assertEqual(len(ledger.newest(100)), len(ledger._window) + len(ledger._previous))
        self.assertEqual(Ledger().newest(5), [])


class OfferPlainTests(unittest.TestCase):
    """:meth:`Ledger.offer_plain` answers and leaves the ledger as :meth:`Ledger.offer` one by one."""

    @staticmethod
    def state(ledger):
        return (ledger.anchor_ns, ledger._next_window, set(ledger._window), set(ledger._previous),
                ledger.window_evicted, ledger.future_counted, dict(ledger.future))

    def check(self, before, run, overlap=1.0, now=None):
        one, many = (Ledger(overlap=overlap, now=now, max_skew=5.0 if now else 0.0) for _ in range(2))
        for ledger in (one, many):
            for event, ns in before:
                ledger.offer(event, ns)
        self.assertEqual(self.state(one), self.state(many))
        expected = [one.offer(event, ns) for event, ns in run]
        self.assertEqual(many.offer_plain(run), expected)
        self.assertEqual(self.state(many), self.state(one))

    @settings(max_examples=400, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3000)), max_size=40),
           st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3000)), max_size=60),
           st.sampled_from([0.0, 0.5, 1.0, 7.0]), st.booleans())
    def test_same_as_one_by_one(self, before, run, overlap, sort):
        def events(pairs):
            timed = [(make(f"/docker/{name}", "containerCreation", at(ms / 1000)), at(ms / 1000)) for name, ms in pairs]
            return sorted(timed, key=lambda pair: pair[1]) if sort else timed
        self.check(events(before), events(run), overlap)

    def test_a_sparse_history_and_a_dense_one(self):
        sparse = [timed(make(f"/docker/{i % 7}", "containerCreation", at(i * 1.5))) for i in range(300)]
        dense = [timed(make(f"/docker/{i % 7}", "containerDeletion", at(500 + i / 300))) for i in range(900)]
        # Bursts of events 0.4 s apart (several generations each), 10 s between bursts.
        bursts = [timed(make(f"/docker/{i % 7}", "containerDeletion", at(2000 + (i // 6) * 10 + (i % 6) * 0.4)))
                  for i in range(60)]
        for run in (sparse, dense, bursts, bursts[:-5], sparse + dense + bursts):
            self.check([], run)
            self.check(sparse[:3], run[3:])

    def test_window_caps(self):
        self.patch(ledger_module, "MAX_WINDOW_EVENTS", 3)
        run = [timed(make(f"/docker/{i}", "containerCreation", at(i // 10 + i / 1000))) for i in range(60)]
        self.check([], run)
        self.check(run[:5], run[5:])

    def test_future_events(self):
        clock = [BASE.timestamp() + 10]
        run = [timed(make(f"/docker/{i}", "containerCreation", at(i * 3))) for i in range(20)]
        self.check([], run, now=lambda: clock[0])


class MergeManyTests(unittest.TestCase):
    """A merge whose sink counts lists of events (``count_many``) offers and counts what a
    merge one event at a time does, in the same order, and leaves the ledger the same."""

    def test_same_as_one_by_one(self):
        rng = random.Random(5)
        kinds = ["containerCreation", "containerDeletion", "oom", "oomKill", "containerUpdate"]
        for trial in range(300):
            events = []
            for _ in range(rng.randrange(700)):
                kind = rng.choice(kinds)
                ms = rng.randrange(600_000)
                process = rng.choice(["java", "sh"]) if kind == "oomKill" else None
                events.append(timed(make(f"/docker/{rng.randrange(4)}", kind, at(ms / 1000), process, 7)))
                if rng.random() < 0.05:
                    events.append(events[-1])  # the same event twice
            events.sort(key=lambda pair: pair[1])
            start_ns = rng.choice([None, at(100)])
            before = [timed(make("/docker/0", "containerCreation", at(rng.randrange(200))))]
            results = []
            for many in (False, True):
                ledger = Ledger()
                for event, ns in before:
                    ledger.offer(event, ns)
                counted = []
                steps = merge_backfill_steps(ledger, start_ns, events, lambda: ([], None), counted.append,
                                             counted.extend if many else None)
                while True:
                    try:
                        next(steps)
                    except StopIteration as done:
                        result = done.value
                        break
                results.append((counted, result.backfilled, result.dropped, OfferPlainTests.state(ledger),
                                len(ledger.ooms)))
            self.assertEqual(results[1], results[0], f"trial {trial}")
