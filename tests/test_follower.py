"""Tests for cadvisor_events.follower (and its de-duplication state, cadvisor_events.dedup).

Time comes from ``task.Clock``; cAdvisor is the fake client of
``cadvisor_events.testing``, whose Deferreds the tests fire, plus one
end-to-end test against the simulator on a loopback port.
"""

from __future__ import annotations

import collections

from twisted.internet import defer, task
from twisted.internet.error import ConnectionRefusedError
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from cadvisor_events.cadvisor import Target, UpstreamError
from cadvisor_events.event import timestamp_ns
from cadvisor_events.ledger import MAX_OOMS
from cadvisor_events.backfills import BackfillQueue
from cadvisor_events.gate import ConnectGate
from cadvisor_events.follower import PARTNER_WAIT, Follower
from cadvisor_events.testing import CountingSink, FakeClient, FakeResponse, history_body

from .support import (
    NO_JITTER, A, B, C, D, E, F, G, FollowerTestCase, Turns, before, event, key, one_step_per_turn, ts, until,
)


class FirstConnectTests(FollowerTestCase):
    def test_starts_idle_and_connects_after_first_delay(self):
        f = self.make(first_delay=5)
        self.assertEqual((f.state, f.up, f.tried), ("idle", False, False))
        self.clock.advance(4.9)
        self.assertEqual(self.client.streams, [])
        self.clock.advance(0.1)
        self.assertEqual(len(self.client.streams), 1)
        self.assertEqual(f.state, "connecting")
        self.assertEqual(f.state_since, 5)

    def test_seeds_from_full_history(self):
        f = self.make()
        self.clock.advance(0)
        self.assertEqual(self.client.histories, [])  # the stream is opened first
        response = self.client.accept()
        self.assertEqual((f.state, f.up, f.connects, f.tried), ("backfilling", True, 1, False))
        self.assertEqual(self.client.last_start_time, None)
        self.client.answer_history(A, B, C)
        self.assertEqual((f.state, f.tried, f.retries), ("up", True, 0))
        self.assertEqual(self.counters.counts, collections.Counter(map(key, [A, B, C])))
        self.assertEqual((f.backfilled, f.received, f.duplicates_dropped), (3, 3, 0))
        self.assertEqual(f.last_event_time, timestamp_ns(ts(2, 500)) / 1e9)
        response.send(D, E)
        self.assertEqual(self.counters.total, 5)
        self.assertEqual(f.received, 5)
        self.assertEqual(f.last_event_time, timestamp_ns(ts(4, 1)) / 1e9)

    def test_no_seed_skips_history(self):
        f = self.make(seed_history=False)
        response = self.up()
        self.assertEqual(self.client.histories, [])
        self.assertEqual((f.backfilled, f.tried), (0, True))
        response.send(A, B)
        self.assertEqual(self.counters.total, 2)

    def test_no_seed_break_before_any_event_backfills_from_first_connect(self):
        self.make(seed_history=False)
        self.clock.advance(1000)
        response = self.up()
        response.end()
        self.clock.advance(1)
        self.client.accept()
        self.assertEqual(self.client.last_start_time, "1970-01-01T00:16:40.000000Z")

    def test_empty_history_then_break_fetches_everything_again(self):
        f = self.make()
        self.up()
        self.client.responses[-1].end()
        self.clock.advance(1)
        self.client.accept()
        self.assertIsNone(self.client.last_start_time)
        self.client.answer_history(A)
        self.assertEqual((self.counters.total, f.backfilled), (1, 1))

    def test_failed_seed_is_retried_as_a_seed(self):
        f = self.make()
        self.clock.advance(0)
        self.client.accept()
        self.client.histories[-1][1].errback(UpstreamError("timeout", "slow"))
        self.assertEqual(f.failures, {"history": 1})
        self.clock.advance(1)
        self.client.accept()
        self.assertIsNone(self.client.last_start_time)
        self.client.answer_history(A, B)
        self.assertEqual(self.counters.total, 2)


class ReconnectTests(FollowerTestCase):
    def test_backfills_from_one_overlap_before_the_newest_with_nanoseconds(self):
        f = self.make()
        response = self.up(A)
        newest = event("/docker/x", "containerDeletion", "2026-11-24T20:00:09.100000009+00:00")
        older = event("/docker/y", "containerCreation", "2026-11-24T16:00:00Z")  # out of order
        response.send(newest, older)
        self.assertEqual(self.counters.total, 3)
        response.end()
        self.assertEqual((f.state, f.up, f.failures), ("down", False, {"eof": 1}))
        self.assertEqual(f.backfill_since, "2026-11-24T20:00:08.100000009Z")  # one second before, in UTC
        self.clock.advance(1)
        self.client.accept()
        self.assertEqual(self.client.last_start_time, "2026-11-24T20:00:08.100000009Z")

    def test_inclusive_boundary_not_double_counted(self):
        f = self.make()
        response = self.up(A, B)
        response.cut()
        self.assertEqual(f.failures, {"cut": 1})
        self.clock.advance(1)
        self.client.accept()
        # B is an OOM, which a restarted cAdvisor re-adds: ask from a second before A (the
        # newest other event counted), so that finding A again tells history is whole (no gap).
        self.assertEqual(self.client.last_start_time, before(ts(1), 1))
        # A and B again (inclusive bound), C shares B's nanosecond but was never counted, D is new.
        self.client.answer_history(A, B, C, D)
        self.assertEqual(self.counters.counts, collections.Counter(map(key, [A, B, C, D])))
        self.assertEqual((f.backfilled, f.duplicates_dropped, f.gaps), (4, 2, 0))

    def test_tie_set_survives_a_break(self):
        f = self.make()
        self.up(A, B, C)
        self.client.responses[-1].reset()
        self.clock.advance(1)
        self.client.accept()
        self.client.answer_history(B, C, D)
        self.assertEqual(self.counters.total, 4)
        self.assertEqual(f.duplicates_dropped, 2)

    def test_stream_events_during_backfill_neither_lost_nor_double_counted(self):
        f = self.make()
        self.up(A)
        self.client.responses[-1].end()
        self.clock.advance(1)
        response = self.client.accept()
        self.assertEqual(f.state, "backfilling")
        # Emitted while backfilling: D and E reach the stream before the history
        # is read (so they are in both), F only after it.
        response.send(D, E)
        response.send(b"garbage")
        self.assertEqual(self.counters.total, 1)  # buffered, not counted yet
        response.send(F)
        self.client.answer_history(A, B, C, D, E)  # B, C happened while down
        self.assertEqual(f.state, "up")
        self.assertEqual(self.counters.counts, collections.Counter(map(key, [A, B, C, D, E, F])))
        self.assertEqual(f.duplicates_dropped, 3)  # A (boundary), D, E
        self.assertEqual(f.backfilled, 1 + 4)  # A (seed), then B, C, D, E from history
        self.assertEqual(f.invalid_lines, 1)
        self.assertIsNone(f._buffer)
        response.send(G)
        self.assertEqual(self.counters.total, 7)

    def test_history_event_repeated_late_on_the_stream_dropped(self):
        f = self.make()
        self.up(A)
        self.client.responses[-1].end()
        self.clock.advance(1)
        response = self.client.accept()
        self.client.answer_history(A, B, C, D)
        # The stream delivers D after the history answer (a slow stream).
        response.send(D, E)
        self.assertEqual(self.counters.counts, collections.Counter(map(key, [A, B, C, D, E])))
        self.assertEqual(f.duplicates_dropped, 2)

    def test_seed_race_with_the_stream(self):
        self.make()
        response = self.up(A, B, C)
        response.send(B, C, D)  # the newest history events again, on the stream
        self.assertEqual(self.counters.total, 4)

    def test_replayed_ooms_after_restart_dropped_then_old_creations_counted(self):
        f = self.make(settle_seconds=30)
        response = self.up(A, B, C)
        response.send(D, F, G)
        self.assertEqual(self.counters.total, 6)
        response.cut()  # cAdvisor restarts: history empty, then OOMs replayed from kmsg
        self.clock.advance(1)
        response = self.client.accept()
        response.send(B, C)  # replays on the new stream during the backfill
        new = event("/docker/d", "oom", ts(6))
        self.client.answer_history(B, C, F, G, new)  # restarted history: replays, one new OOM
        self.assertEqual(self.counters.total, 7)
        self.assertEqual(f.state, "up")
        # Replays that arrive after the backfill, within the settle window: dropped.
        response.send(F, G, B)
        self.assertEqual(self.counters.total, 7)
        self.assertEqual(f.duplicates_dropped, 9)
        # After the window an out-of-order (older) creation event is a real event.
        self.clock.advance(30)
        old_creation = event("/docker/late", "containerCreation", ts(1, 5))
        response.send(old_creation)
        self.assertEqual(self.counters.total, 8)
        self.assertEqual(self.counters.counts[key(old_creation)], 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_retries_reset_once_backfill_completed(self):
        f = self.make()
        self.clock.advance(0)
        for _ in range(3):
            self.client.streams[-1].errback(ConnectionRefusedError())
            self.clock.advance(self.reconnect_delay())
        self.assertEqual(f.retries, 3)
        self.client.accept()
        self.assertEqual(f.retries, 3)  # not healthy before the backfill
        self.client.answer_history()
        self.assertEqual(f.retries, 0)
        self.client.responses[-1].end()
        self.assertEqual(self.reconnect_delay(), 1.0)


class FailureTests(FollowerTestCase):
    def test_backoff_grows_is_capped_and_is_waited_for(self):
        f = self.make()
        self.clock.advance(0)
        for attempt, delay in enumerate([1, 2, 4, 8, 16, 30, 30, 30], start=1):
            self.client.streams[-1].errback(ConnectionRefusedError())
            self.assertEqual((f.state, f.up, f.tried), ("down", False, True))
            self.assertEqual(f.retries, attempt)
            self.assertAlmostEqual(self.reconnect_delay(), delay)
            self.clock.advance(delay - 0.001)
            self.assertEqual(len(self.client.streams), attempt)
            self.clock.advance(0.001)
            self.assertEqual(len(self.client.streams), attempt + 1)
        self.assertEqual(f.failures, {"refused": 8})
        self.assertIn("refused", f.last_error)

    def test_default_backoff_is_jittered_and_capped(self):
        f = self.make(backoff=Follower.__init__.__kwdefaults__["backoff"])
        self.clock.advance(0)
        delays = []
        for _ in range(10):
            self.client.streams[-1].errback(ConnectionRefusedError())
            delays.append(self.reconnect_delay())
            self.clock.advance(delays[-1])
        self.assertTrue(1 <= delays[0] < 2, delays)
        self.assertTrue(all(30 <= d < 31 for d in delays[6:]), delays)
        self.assertEqual(f.failures, {"refused": 10})

    def test_header_timeout(self):
        f = self.make(connect_timeout=10)
        self.clock.advance(0)
        request = self.client.streams[-1]
        self.clock.advance(9.9)
        self.assertEqual(f.state, "connecting")
        self.clock.advance(0.1)
        self.assertTrue(request.called)  # cancelled
        self.assertEqual((f.state, f.failures), ("down", {"timeout": 1}))
        self.clock.advance(self.reconnect_delay())
        self.assertEqual(len(self.client.streams), 2)

    def test_non_200(self):
        f = self.make()
        self.clock.advance(0)
        self.client.streams[-1].errback(UpstreamError("status", "http://cadvisor.example:8080 answered HTTP 500: x"))
        self.assertEqual(f.failures, {"status": 1})
        self.assertEqual(f.last_error, "http://cadvisor.example:8080 answered HTTP 500: x")
        self.assertEqual(f.connects, 0)

    def test_history_failure_closes_the_stream_and_retries(self):
        f = self.make()
        self.clock.advance(0)
        response = self.client.accept()
        self.client.histories[-1][1].errback(UpstreamError("status", "answered HTTP 500"))
        self.assertEqual((f.state, f.up, f.failures), ("down", False, {"history": 1}))
        self.assertTrue(response.transport.stopped)
        self.assertIn("backfill failed", f.last_error)
        self.clock.advance(1)
        self.up(A)
        self.assertEqual(self.counters.total, 1)

    def test_history_timeout(self):
        f = self.make(history_timeout=60)
        self.clock.advance(0)
        self.client.accept()
        self.clock.advance(60)
        self.assertTrue(self.client.histories[-1][1].called)
        self.assertEqual(f.failures, {"history": 1})

    def test_history_that_is_not_an_array(self):
        f = self.make()
        self.clock.advance(0)
        self.client.accept()
        self.client.histories[-1][1].callback(b"<html>")
        self.assertEqual(f.failures, {"history": 1})

    def test_history_with_a_bad_element_keeps_the_good_ones(self):
        f = self.make()
        self.clock.advance(0)
        self.client.accept()
        bad_ts = event("/docker/z", "oom", "yesterday")
        self.client.histories[-1][1].callback(history_body(A, b'{"nope":1}', bad_ts, B))
        self.assertEqual((self.counters.total, f.invalid_lines, f.state), (2, 2, "up"))

    def test_overflow(self):
        self.patch(Follower, "max_buffered", 5)
        f = self.make()
        self.clock.advance(0)
        response = self.client.accept()
        history_request = self.client.histories[-1][1]
        response.send(*[event("/docker/a", "oom", ts(i)) for i in range(7)])
        self.assertEqual((f.state, f.failures), ("down", {"overflow": 1}))
        self.assertTrue(response.transport.stopped)
        self.assertTrue(history_request.called)  # cancelled
        self.assertEqual(self.counters.total, 0)
        self.assertIsNone(f._buffer)
        self.clock.advance(1)
        self.up(A)
        self.assertEqual(self.counters.total, 1)

    def test_end_and_cut_reasons(self):
        f = self.make()
        for ending, reason in (("end", "eof"), ("cut", "cut"), ("reset", "cut")):
            response = self.up()
            getattr(response, ending)()
            self.assertEqual(f.failures.get(reason, 0) > 0, True)
            self.clock.advance(self.reconnect_delay())
        self.assertEqual(f.failures, {"eof": 1, "cut": 2})

    def test_bad_lines_never_stop_anything(self):
        f = self.make()
        response = self.up()
        response.send(b"{", A, b"null", event("/docker/q", "oom", "2026-13-45T99:00:00Z"), B)
        response.protocol.dataReceived(b"\xff" * 3_000_000 + b"\n")
        response.send(C)
        self.assertEqual((self.counters.total, f.invalid_lines, f.state), (3, 4, "up"))

    def test_connect_error_at_call_time(self):
        f = self.make()
        self.client.open_stream = lambda *a, **k: 1 / 0
        self.clock.advance(0)
        self.assertEqual(f.state, "down")
        self.assertEqual(sum(f.failures.values()), 1)

    def test_no_credentials_in_errors_or_logs(self):
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        f = self.make(target=Target("h", 1, username="admin", password="s3cret-pw"))
        self.clock.advance(0)
        self.client.streams[-1].errback(ConnectionRefusedError())
        self.clock.advance(1)
        self.client.accept().end()
        from twisted.logger import formatEvent
        text = " ".join(formatEvent(e) for e in logged) + repr(f) + str(f.last_error)
        self.assertNotIn("s3cret-pw", text)
        self.assertIn("h:1", text)

    def test_repeated_failures_logged_once(self):
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        self.make()
        self.clock.advance(0)
        for _ in range(5):
            self.client.streams[-1].errback(ConnectionRefusedError())
            self.clock.advance(self.reconnect_delay())
        downs = [e for e in logged if "down" in (e.get("log_format") or "")]
        self.assertEqual(len(downs), 1)


class GateTests(FollowerTestCase):
    def followers(self, n, gate):
        clock = task.Clock()
        clients = [FakeClient() for _ in range(n)]
        followers = [Follower(Target(f"h{i}", 1), client=c, counters=CountingSink(), clock=clock,
                              connect_gate=gate, backoff=NO_JITTER) for i, c in enumerate(clients)]
        for f in followers:
            f.startService()
        clock.advance(0)
        return clock, clients, followers

    def test_gate_bounds_attempts_in_flight(self):
        gate = ConnectGate(1)
        clock, clients, followers = self.followers(2, gate)
        self.assertEqual([len(c.streams) for c in clients], [1, 0])
        clients[0].streams[-1].errback(ConnectionRefusedError())  # failure releases
        self.assertEqual([len(c.streams) for c in clients], [1, 1])
        clock.advance(1)
        self.assertEqual([len(c.streams) for c in clients], [1, 1])  # h0 waits for h1's headers
        clients[1].accept()  # headers release; h0's stream goes before h1's history
        self.assertEqual([len(c.streams) for c in clients], [2, 1])
        self.assertEqual([len(c.histories) for c in clients], [0, 0])
        self.assertEqual((gate.held, followers[1].state), (1, "backfilling"))
        stops = [f.stopService() for f in followers]
        clients[1].responses[-1].reset()
        self.assertEqual(gate.held, 0)
        self.assertTrue(all(d.called for d in stops))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_streams_go_before_histories_and_a_history_holds_its_slot(self):
        gate = ConnectGate(1)
        clock, clients, followers = self.followers(3, gate)
        clients[0].accept()
        self.assertEqual([len(c.streams) for c in clients], [1, 1, 0])  # h1's stream, not h0's history
        clients[1].accept()
        clients[2].accept()  # every stream is open now: the histories, in order
        self.assertEqual([len(c.histories) for c in clients], [1, 0, 0])
        live = clients[0].responses[-1]
        live.send(event("/docker/a", "oom", ts(9)))  # buffered while waiting: nothing lost
        clients[0].answer_history(A)
        self.assertEqual([len(c.histories) for c in clients], [1, 1, 0])
        self.assertEqual((followers[0].state, followers[0]._counters.total), ("up", 2))
        clients[1].histories[-1][1].errback(ConnectionRefusedError())  # a failed history releases too
        self.assertEqual([len(c.histories) for c in clients], [1, 1, 1])
        clients[2].answer_history()
        self.assertEqual((gate.held, gate.waiting), (0, 0))
        for f in followers:
            f.stopService()
        for c in clients:
            for response in c.responses:
                if response.protocol is not None and not response.protocol.ended:
                    response.reset()

    def test_stop_while_waiting_for_the_gate(self):
        gate = ConnectGate(1)
        gate.acquire()
        f = self.make(connect_gate=gate)
        self.clock.advance(0)
        self.assertEqual(self.client.streams, [])
        f.stopService()
        gate.release()
        self.assertEqual((gate.held, self.client.streams), (0, []))


class QueuedBackfillTests(FollowerTestCase):
    """Histories counted through a BackfillQueue, one step per reactor turn."""

    HISTORY = [event(f"/docker/c{i % 40}", "containerCreation" if i % 2 else "containerDeletion",
                     ts(i // 100, nanos=i)) for i in range(1000)]

    def make_queued(self, **kwargs) -> Follower:
        self.turns = Turns()
        return self.make(backfills=BackfillQueue(self.turns, slice_seconds=0.5, now=one_step_per_turn()),
                         **kwargs)

    def count_until_up(self, f: Follower) -> int:
        turns = 0
        while f.state != "up":
            self.turns.turn()
            turns += 1
            self.assertLess(turns, 100)
        return turns

    def test_a_history_is_counted_over_several_turns_and_the_stream_waits(self):
        gate = ConnectGate(1)
        f = self.make_queued(connect_gate=gate)
        self.clock.advance(0)
        response = self.client.accept()
        self.client.answer_history(*self.HISTORY)
        self.assertEqual((f.state, self.counters.total, gate.held), ("backfilling", 0, 1))
        self.turns.turn()  # the decode
        self.turns.turn()  # a first slice
        self.assertTrue(0 < self.counters.total < 1000, self.counters.total)
        new = event("/docker/new", "containerCreation", ts(20))
        response.send(new, self.HISTORY[-1])  # buffered meanwhile: one new, one repeat
        self.assertEqual(self.count_until_up(f), 3)  # 1,000 events: four slices of 256, one taken
        self.assertEqual(self.counters.counts, collections.Counter(map(key, self.HISTORY + [new])))
        self.assertEqual((f.duplicates_dropped, gate.held), (1, 0))  # the slot was held until now

    def test_a_break_between_steps_resumes_from_what_was_counted(self):
        f = self.make_queued()
        self.clock.advance(0)
        response = self.client.accept()
        self.client.answer_history(*self.HISTORY)
        self.turns.turn()
        self.turns.turn()
        partial = self.counters.total
        response.cut()
        self.turns.turn()  # the backfill ends at its next step, counting nothing more
        self.assertEqual((f.state, self.counters.total), ("down", partial))
        self.clock.advance(1)
        self.client.accept()
        self.assertIsNotNone(self.client.last_start_time)  # not the whole history again
        self.client.answer_history(*self.HISTORY)  # as a cAdvisor ignoring start_time would
        self.count_until_up(f)
        self.assertEqual(self.counters.counts, collections.Counter(map(key, self.HISTORY)))

    def test_stopped_while_queued_nothing_is_decoded(self):
        f = self.make_queued()
        self.clock.advance(0)
        self.client.accept()
        self.client.answer_history(*self.HISTORY)
        f.stopService()
        self.turns.turn()
        self.turns.turn()
        self.assertEqual((self.counters.total, f.received, self.turns.scheduled), (0, 0, []))


class StopTests(FollowerTestCase):
    def test_stop_closes_the_stream_and_waits_for_it(self):
        f = self.make()
        response = self.up(A)
        stopped = f.stopService()
        self.assertTrue(response.transport.stopped)
        self.assertFalse(stopped.called)
        self.assertEqual((f.state, f.up), ("stopped", False))
        response.reset()
        self.assertTrue(stopped.called)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(f.failures, {})  # a stop is not a failure

    def test_stop_cancels_the_pending_reconnect(self):
        f = self.make()
        self.up().end()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        stopped = f.stopService()
        self.assertTrue(stopped.called)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(len(self.client.streams), 1)

    def test_stop_while_connecting_cancels_the_request(self):
        f = self.make()
        self.clock.advance(0)
        request = self.client.streams[-1]
        self.assertTrue(f.stopService().called)
        self.assertTrue(request.called)
        self.assertEqual(f.failures, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_while_backfilling(self):
        f = self.make()
        self.clock.advance(0)
        response = self.client.accept()
        stopped = f.stopService()
        self.assertTrue(self.client.histories[-1][1].called)
        response.cut()
        self.assertTrue(stopped.called)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_before_first_delay(self):
        f = self.make(first_delay=10)
        self.assertTrue(f.stopService().called)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_gives_up_waiting_eventually(self):
        f = self.make()
        self.up()
        stopped = f.stopService()
        self.clock.advance(10)
        self.assertTrue(stopped.called)

    def test_stream_answered_for_a_stale_attempt_is_dropped(self):
        f = self.make()
        self.clock.advance(0)
        stale = f._attempt
        f.stopService()
        response = FakeResponse()
        f._stream_opened(response, stale)  # a client that ignored the cancellation
        self.assertTrue(response.transport.stopped)
        self.assertEqual((f.connects, f.state), (0, "stopped"))


class BoundedStateTests(FollowerTestCase):
    def test_state_stays_small_after_many_live_events(self):
        f = self.make()
        response = self.up(A)
        response.cut()
        self.clock.advance(1)
        response = self.client.accept()
        self.client.answer_history(A)
        for i in range(50_000):
            stamp = ts(10 + i // 1000, (i % 1000) * 1000 + 1)
            response.protocol.dataReceived(
                event("/docker/a", "oom", stamp) + b"\n" + event("/docker/a", "oomKill", stamp, "java", i + 2) + b"\n")
        self.assertEqual(self.counters.total, 100_001)
        self.assertLessEqual(len(f._ledger), MAX_OOMS + 2)
        self.assertIsNone(f._buffer)
        self.clock.advance(30)
        self.assertIsNone(f._recent)
        self.assertEqual(response.protocol.buffered, 0)
        self.assertFalse(getattr(f, "__dict__", {}))  # everything in __slots__


class EarlyDatedTests(FollowerTestCase):
    """cAdvisor dates OOMs up to a second early: an OOM can sort before what was already counted."""

    def test_an_oom_dated_before_the_newest_event_is_recovered_after_each_break(self):
        f = self.make()
        response = self.up(A)
        for round_ in range(5):
            created = event(f"/docker/n{round_}", "containerCreation", ts(10 * round_ + 10))
            response.send(created)  # the newest counted event
            response.cut()
            self.clock.advance(f.retries and self.reconnect_delay())
            response = self.client.accept()
            # The kill happened after the cut, dated 0.3 s before the creation.
            oom = event(f"/docker/n{round_}", "oom", ts(10 * round_ + 9, 700_000_000))
            killed = event(f"/docker/n{round_}", "oomKill", ts(10 * round_ + 9, 700_000_000), "java", 100 + round_)
            self.assertEqual(self.client.last_start_time, before(ts(10 * round_ + 10), 1))
            self.client.answer_history(oom, killed, created)
        self.assertEqual(sum(self.counters.counts[key(event(f"/docker/n{r}", t, ts(0), *p))]
                             for r in range(5) for t, p in (("oom", ()), ("oomKill", ("java", 1)))), 10)
        self.assertEqual((self.counters.total, f.gaps, f.duplicates_dropped), (1 + 5 + 10, 0, 5))

    def test_the_overlap_is_an_option(self):
        f = self.make(backfill_overlap=0.25)
        self.up(A).cut()
        self.assertEqual(f.backfill_since, before(ts(1), 0.25))

    def test_the_settle_window_counts_a_live_event_dated_before_the_resume_point(self):
        f = self.make()
        response = self.up(A, D)
        response.cut()
        self.clock.advance(1)
        response = self.client.accept()
        self.client.answer_history(D, E)  # settling now
        self.assertIsNotNone(f._recent)
        early = event("/docker/b", "oom", ts(2)), event("/docker/b", "oomKill", ts(2), "java", 9)
        response.send(*early)  # dated before the resume point (E less a second)
        self.assertEqual(self.counters.counts[key(early[1])], 1)
        self.assertEqual(self.counters.counts[key(early[0])], 1)


class ReplayTests(FollowerTestCase):
    """A restarted cAdvisor re-adds the counted OOMs shifted by up to a second."""

    def kill(self, second: int, nanos: int, pid: int, container: str = "/docker/k"):
        stamp = ts(second, nanos)
        return event(container, "oom", stamp), event(container, "oomKill", stamp, "java", pid)

    def test_a_shifted_replay_in_history_is_dropped_and_a_downtime_oom_counted(self):
        f = self.make()
        response = self.up(A)
        response.send(*self.kill(5, 100_000_000, 42))  # the newest counted events are OOMs
        response.cut()  # cAdvisor restarts: history emptied, kernel log replayed shifted +0.9 s
        self.clock.advance(1)
        self.client.accept()
        self.assertEqual(self.client.last_start_time, before(ts(1), 1))
        self.client.answer_history(*self.kill(6, 0, 42), *self.kill(30, 500, 43))
        self.assertEqual(self.counters.counts[("/docker/k", "oomKill", "java")], 2)
        self.assertEqual(self.counters.counts[("/docker/k", "oom", "")], 2)
        self.assertEqual((f.duplicates_dropped, f.gaps), (2, 1))  # A is gone: the restart lost history

    def test_a_replay_on_the_new_stream_is_dropped_through_repeated_restarts(self):
        f = self.make()
        response = self.up(A)
        response.send(*self.kill(5, 500_000_000, 42))
        for nanos in (900_000_000, 0, 700_000_000):  # three restarts, shifts +0.4, -0.5, +0.2
            response.cut()
            self.clock.advance(self.reconnect_delay())
            response = self.client.accept()
            self.client.answer_history(A)
            response.send(*self.kill(5, nanos, 42))  # the replay, after the backfill
            self.clock.advance(30)  # and once the settle window is over
            response.send(*self.kill(5, nanos + 1, 42))
        self.assertEqual(self.counters.total, 3)
        self.assertEqual(f.duplicates_dropped, 3 + 12)

    def test_a_new_kill_in_the_same_second_is_counted(self):
        f = self.make()
        response = self.up(A)
        response.send(*self.kill(5, 0, 42))
        response.send(*self.kill(5, 300_000_000, 43))  # another process of the container
        response.send(*self.kill(7, 0, 42))  # the pid reused two seconds later
        self.assertEqual(self.counters.counts[("/docker/k", "oomKill", "java")], 3)
        self.assertEqual(self.counters.counts[("/docker/k", "oom", "")], 3)
        self.assertEqual(f.duplicates_dropped, 0)

    def test_an_oom_waits_for_its_partner_at_most_a_second(self):
        f = self.make()
        response = self.up(A)
        response.send(*self.kill(5, 0, 42))
        lone = event("/docker/k", "oom", ts(5, 500_000_000))
        response.send(lone)  # may be a replay: judged with the oomKill that follows it
        self.assertEqual(self.counters.counts[key(lone)], 1)
        self.clock.advance(PARTNER_WAIT)  # none came: judged alone (a counted oom is this close)
        self.assertEqual((self.counters.counts[key(lone)], f.duplicates_dropped), (1, 1))
        response.send(E)
        self.assertEqual(self.counters.counts[key(E)], 1)

    def test_a_held_oom_is_left_for_the_backfill_when_the_stream_breaks(self):
        f = self.make()
        response = self.up(A)
        response.send(*self.kill(5, 0, 42))
        oom, killed = self.kill(5, 400_000_000, 43)
        response.send(oom)
        response.cut()
        self.clock.advance(1)
        self.client.accept()
        self.client.answer_history(A, *self.kill(5, 0, 42), oom, killed)
        self.assertEqual(self.counters.counts[("/docker/k", "oom", "")], 2)
        self.assertEqual(self.counters.counts[("/docker/k", "oomKill", "java")], 2)
        self.assertIsNone(f._held)


class EndToEndTests(unittest.TestCase):
    """A follower with a real CAdvisorClient against the simulator on a loopback port."""

    timeout = 30

    def setUp(self):
        from twisted.internet import reactor
        from twisted.web.client import Agent, HTTPConnectionPool
        from twisted.web.server import Site
        from treq.client import HTTPClient

        from cadvisor_events.cadvisor import CAdvisorClient
        from cadvisor_events.simulator import Simulator

        self.reactor = reactor
        self.sim_clock = task.Clock()
        self.sim_clock.advance(1_764_000_000)
        self.sim = Simulator(clock=self.sim_clock, seed=0)
        self.site = Site(self.sim.resource)
        self.server_lost: list = []
        build = self.site.buildProtocol

        def tracked(addr):  # so tearDown can wait for every server connection to be gone
            protocol = build(addr)
            lost, original = defer.Deferred(), protocol.connectionLost

            def connectionLost(reason):
                original(reason)
                lost.callback(None)

            protocol.connectionLost = connectionLost
            self.server_lost.append(lost)
            return protocol

        self.site.buildProtocol = tracked
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        client = CAdvisorClient(reactor, http=HTTPClient(Agent(reactor, pool=self.pool)))
        self.counters = CountingSink()
        self.follower = Follower(
            Target("127.0.0.1", self.port.getHost().port), client=client, counters=self.counters,
            clock=reactor, backoff=lambda n: 0.05, connect_timeout=5, history_timeout=5)

    @defer.inlineCallbacks
    def tearDown(self):
        if self.follower.running:
            yield self.follower.stopService()
        yield self.pool.closeCachedConnections()
        yield defer.gatherResults(self.server_lost)
        yield self.port.stopListening()

    def progress(self) -> str:
        return (f"state={self.follower.state} failures={self.follower.failures} "
                f"counted={self.counters.total}")

    def emit(self, n):
        for _ in range(n):
            self.sim_clock.advance(0.001)
            self.sim.emit_random(1)
        self.sim_clock.advance(0.001)
        self.sim.emit_oom(self.sim.rng.choice(self.sim.container_pool), "java", self.sim.rng.randrange(2, 99999))

    def emit_during_backfill(self, n):
        """Emit ``n`` events when the next history request arrives, just before it is answered."""
        answer = self.sim.history

        def history(query, **kwargs):
            del self.sim.history
            if query.start_ns is not None or query.event_types:
                self.emit(n)
            return answer(query, **kwargs)

        self.sim.history = history

    def emit_on_stream_open(self, n):
        """Emit ``n`` events right after the next stream registers (they follow its headers)."""
        open_stream = self.sim.open_stream

        def opened(request, query):
            del self.sim.open_stream
            result = open_stream(request, query)
            self.emit(n)
            return result

        self.sim.open_stream = opened

    def caught_up(self):
        return self.follower.state == "up" and self.counters.counts == self.sim.ground_truth()

    @defer.inlineCallbacks
    def test_counts_equal_ground_truth_through_breaks(self):
        f = self.follower
        self.sim.fill_history(200)
        f.startService()
        yield until(self.caught_up, "the seed", detail=self.progress)
        self.assertEqual(f.backfilled, 200)
        for round in range(6):
            self.emit(20)  # live
            yield until(self.caught_up, "live events", detail=self.progress)
            if round % 2:
                self.sim.cut_streams()
            else:
                self.sim.end_streams()
            self.emit(15)  # while down: only history has them
            self.emit_on_stream_open(3)  # with the new stream's headers: buffered during the backfill
            self.emit_during_backfill(4)  # on the new stream and in the history answer
            yield until(lambda: self.sim.open_streams == 1, "a new stream", detail=self.progress)
            self.emit(5)  # on the new stream, during the backfill or just after it
            yield until(self.caught_up, "the backfill", detail=self.progress)
        self.assertEqual(f.failures, {"eof": 3, "cut": 3})
        # A cAdvisor restart: history emptied, old OOMs replayed with their timestamps.
        self.sim.restart(keep_history=False)
        yield until(lambda: self.sim.open_streams == 1 and f.state == "up", "a new stream", detail=self.progress)
        self.emit(10)
        yield until(self.caught_up, "events after the restart", detail=self.progress)
        self.assertGreater(len(self.sim.replayed), 0)
        self.assertEqual(self.counters.counts, self.sim.ground_truth())
        self.assertEqual(f.connects, 8)
        self.assertGreater(f.duplicates_dropped, 0)
        yield f.stopService()
        self.assertEqual(f.state, "stopped")
        yield until(lambda: self.sim.open_streams == 0, "the stream to close", detail=self.progress)


class SpecHooksDouble:
    """The follower's view of a host's specs: records what it was asked, listings answered by hand."""

    def __init__(self):
        self.listings = []
        self.announced = []
        self.caught = 0

    def listing(self):
        d = defer.Deferred()
        self.listings.append(d)
        return d

    def created(self, cgroup):
        self.announced.append(cgroup)

    def caught_up(self):
        self.caught += 1


class SpecHookTests(FollowerTestCase):
    """With ``specs``: a listing after every stream opens, before the backfill; creations announced."""

    def make_with_specs(self, **kwargs):
        self.specs = SpecHooksDouble()
        return self.make(specs=self.specs, **kwargs)

    def test_listing_after_the_stream_and_before_the_backfill(self):
        f = self.make_with_specs()
        self.clock.advance(0)
        self.assertEqual(self.specs.listings, [])  # not before the stream opens
        live = self.client.accept()
        self.assertEqual((len(self.specs.listings), self.client.histories), (1, []))
        live.send(event("/docker/new", "containerCreation", ts(9)))  # buffered: asked for at once
        self.assertEqual(self.specs.announced, ["/docker/new"])
        self.specs.listings[-1].callback(None)
        self.assertEqual((len(self.client.histories), self.specs.caught), (1, 0))
        self.client.answer_history(A)
        self.assertEqual((f.state, self.counters.total, self.specs.caught), ("up", 2, 1))
        live.send(event("/docker/live", "containerCreation", ts(10)), F)
        self.assertEqual(self.specs.announced, ["/docker/new", "/docker/live"])
        # A reconnect lists again.
        live.cut()
        self.clock.advance(self.reconnect_delay())
        self.client.accept()
        self.assertEqual((len(self.specs.listings), len(self.client.histories)), (2, 1))

    def test_the_listing_holds_the_gate_slot_into_the_backfill(self):
        gate = ConnectGate(1)
        self.make_with_specs(connect_gate=gate)
        self.clock.advance(0)
        self.client.accept()
        self.assertEqual(gate.held, 1)
        self.specs.listings[-1].callback(None)
        self.assertEqual((gate.held, len(self.client.histories)), (1, 1))
        self.client.answer_history()
        self.assertEqual(gate.held, 0)

    def test_a_break_during_the_listing_leaves_the_listing_alone(self):
        gate = ConnectGate(1)
        f = self.make_with_specs(connect_gate=gate)
        self.clock.advance(0)
        live = self.client.accept()
        listing = self.specs.listings[-1]
        live.cut()
        self.assertEqual((f.state, gate.held), ("down", 0))
        self.assertFalse(listing.called)  # others may wait for it: not cancelled
        listing.callback(None)  # late: the old attempt does nothing with it
        self.assertEqual(self.client.histories, [])
        self.clock.advance(self.reconnect_delay())
        self.client.accept()
        self.specs.listings[-1].callback(None)
        self.client.answer_history(A)
        self.assertEqual((f.state, self.counters.total, gate.held), ("up", 1, 0))

    def test_without_history_seed_the_listing_runs_beside_live_counting(self):
        gate = ConnectGate(1)
        f = self.make_with_specs(seed_history=False, connect_gate=gate)
        self.clock.advance(0)
        live = self.client.accept()
        self.assertEqual((f.state, len(self.specs.listings), gate.held), ("up", 1, 1))
        live.send(A)
        self.assertEqual((self.counters.total, self.specs.caught), (1, 0))
        self.specs.listings[-1].callback(None)
        self.assertEqual((gate.held, self.client.histories, self.specs.caught), (0, [], 1))
