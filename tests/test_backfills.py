"""The fleet's backfill queue: first come first served, a bounded slice of steps per reactor turn."""

from __future__ import annotations

from twisted.trial import unittest

from cadvisor_events.backfills import BackfillQueue

from .support import Turns


class Steps:
    """Fake time that each step advances by one: a slice of 2.5 runs three steps."""

    def __init__(self) -> None:
        self.time = 0.0
        self.done: list = []

    def now(self) -> float:
        return self.time

    def job(self, name: str, steps: int, fail_at: int = -1):
        for i in range(steps):
            if i == fail_at:
                raise RuntimeError(f"{name} broke")
            self.time += 1
            self.done.append(f"{name}{i}")
            yield None


class QueueTests(unittest.TestCase):
    def setUp(self):
        self.clock = Turns()
        self.steps = Steps()
        self.queue = BackfillQueue(self.clock, slice_seconds=2.5, now=self.steps.now)

    def turn(self) -> list:
        before = len(self.steps.done)
        self.clock.turn()
        return self.steps.done[before:]

    def test_one_backfill_after_the_other_a_slice_per_turn(self):
        self.queue.add(self.steps.job("a", 5))
        self.queue.add(self.steps.job("b", 4))
        self.assertEqual((self.steps.done, len(self.queue)), ([], 2))  # nothing within add()
        self.assertEqual(self.turn(), ["a0", "a1", "a2"])
        self.assertEqual(self.turn(), ["a3", "a4", "b0"])
        self.assertEqual(self.turn(), ["b1", "b2", "b3"])
        self.assertEqual((self.turn(), len(self.queue), self.clock.scheduled), ([], 0, []))

    def test_added_while_idle_or_while_the_last_one_ends(self):
        self.queue.add(self.steps.job("a", 1))
        self.assertEqual(self.turn(), ["a0"])
        self.turn()
        self.assertEqual((len(self.queue), self.clock.scheduled), (0, []))

        def then_more():
            yield None
            self.queue.add(self.steps.job("c", 2))

        self.queue.add(then_more())
        self.assertEqual(self.turn(), ["c0", "c1"])
        self.assertEqual(len(self.queue), 0)

    def test_a_failing_backfill_is_logged_and_the_next_runs(self):
        self.queue.add(self.steps.job("a", 3, fail_at=1))
        self.queue.add(self.steps.job("b", 1))
        self.assertEqual(self.turn() + self.turn(), ["a0", "b0"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
