"""Tests for cadvisor_events.fleet: followers added, removed, replaced, sharded, stopped."""

from __future__ import annotations

import gc
import random
import time
import weakref
from typing import Optional

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.trial import unittest

from cadvisor_events.fleet import (
    GC_PERIOD, GC_THRESHOLDS, SMALL_BATCH, SPREAD_MAX, SPREAD_RATE, CollectorPolicy, FleetService, tune_gc,
)
from cadvisor_events.targets import TargetSpec, shard_of

from .support import spec


def many(count: int) -> list[TargetSpec]:
    return [spec(f"host-{i}.example.com:8080") for i in range(count)]


class FakeFollower(Service):
    """Records start and stop; ``stopService`` returns ``stop_result`` when one is set."""

    def __init__(self, spec: TargetSpec, first_delay: float) -> None:
        self.spec = spec
        self.target = spec.target
        self.first_delay = first_delay
        self.starts = 0
        self.stops = 0
        self.stop_result: Optional[defer.Deferred] = None

    def startService(self) -> None:
        super().startService()
        self.starts += 1

    def stopService(self):
        super().stopService()
        self.stops += 1
        return self.stop_result


class FleetTests(unittest.TestCase):
    def setUp(self):
        self.made: list[FakeFollower] = []
        self.removed: list[TargetSpec] = []

    def make(self, spec: TargetSpec, first_delay: float) -> FakeFollower:
        follower = FakeFollower(spec, first_delay)
        self.made.append(follower)
        return follower

    def fleet(self, start: bool = True, **kwargs) -> FleetService:
        kwargs.setdefault("clock", task.Clock())
        kwargs.setdefault("rng", random.Random(1234))
        fleet = FleetService(self.make, on_removed=self.removed.append, **kwargs)
        if start:
            fleet.startService()
        return fleet

    def test_adds_followers_in_order(self):
        fleet = self.fleet()
        fleet.set_targets([spec("a:1"), spec("b:2", env="p"), spec("c:3")])
        self.assertEqual(list(fleet.followers), ["a:1", "b:2", "c:3"])
        self.assertEqual(fleet.specs["b:2"], spec("b:2", env="p"))
        self.assertEqual(fleet.targets_total, 3)
        self.assertEqual([f.starts for f in self.made], [1, 1, 1])
        self.assertEqual([f.spec for f in self.made], [spec("a:1"), spec("b:2", env="p"), spec("c:3")])
        self.assertEqual(list(fleet), self.made)
        self.assertTrue(all(f.parent is fleet for f in self.made))

    def test_targets_given_before_start_start_with_the_fleet(self):
        fleet = self.fleet(start=False)
        fleet.set_targets([spec("a:1")])
        self.assertEqual(self.made[0].starts, 0)
        fleet.startService()
        self.assertEqual(self.made[0].starts, 1)

    def test_unchanged_set_leaves_followers_alone(self):
        fleet = self.fleet()
        fleet.set_targets([spec("a:1"), spec("b:2")])
        fleet.set_targets([spec("b:2"), spec("a:1")])
        self.assertEqual(len(self.made), 2)
        self.assertEqual([(f.starts, f.stops) for f in self.made], [(1, 0), (1, 0)])
        self.assertEqual(self.removed, [])

    def test_removes_followers_of_targets_gone(self):
        fleet = self.fleet()
        fleet.set_targets([spec("a:1"), spec("b:2"), spec("c:3")])
        a, b, c = self.made
        fleet.set_targets([spec("a:1"), spec("c:3")])
        self.assertEqual(fleet.followers, {"a:1": a, "c:3": c})
        self.assertEqual(list(fleet.specs), ["a:1", "c:3"])
        self.assertEqual((b.stops, b.running, b.parent), (1, 0, None))
        self.assertEqual((a.stops, c.stops), (0, 0))
        self.assertEqual(list(fleet), [a, c])
        self.assertEqual(self.removed, [spec("b:2")])
        self.assertEqual(fleet.targets_total, 2)

    def test_remove_all(self):
        fleet = self.fleet()
        fleet.set_targets(many(500))
        fleet.set_targets([])
        self.assertEqual((fleet.followers, fleet.specs, list(fleet)), ({}, {}, []))
        self.assertEqual(sum(f.stops for f in self.made), 500)
        self.assertEqual(len(self.removed), 500)

    def test_label_change_replaces_follower_in_place(self):
        fleet = self.fleet()
        fleet.set_targets([spec("a:1"), spec("b:2", env="old"), spec("c:3")])
        a, old, c = self.made
        fleet.set_targets([spec("a:1"), spec("b:2", env="new"), spec("c:3")])
        new = self.made[-1]
        self.assertEqual(len(self.made), 4)
        self.assertEqual((old.stops, old.parent), (1, None))
        self.assertEqual(self.removed, [spec("b:2", env="old")])
        self.assertEqual((new.spec, new.starts, new.parent), (spec("b:2", env="new"), 1, fleet))
        self.assertEqual(fleet.followers, {"a:1": a, "b:2": new, "c:3": c})
        self.assertEqual(list(fleet.followers), ["a:1", "b:2", "c:3"])
        self.assertEqual(fleet.specs["b:2"], spec("b:2", env="new"))

    def test_credentials_change_replaces_follower(self):
        fleet = self.fleet()
        fleet.set_targets([spec("http://u:one@a:1")])
        fleet.set_targets([spec("http://u:two@a:1")])
        self.assertEqual(len(self.made), 2)
        self.assertEqual(self.made[0].stops, 1)
        self.assertEqual(self.made[1].target.password, "two")

    def test_duplicate_names_in_input_followed_once(self):
        fleet = self.fleet()
        fleet.set_targets([spec("a:1", g="1"), spec("a:1", g="2")])
        self.assertEqual(len(self.made), 1)
        self.assertEqual(fleet.specs["a:1"], spec("a:1", g="1"))
        self.assertEqual(fleet.targets_total, 1)

    def test_respects_the_shard(self):
        specs = many(400)
        seen: list[str] = []
        for index in range(4):
            self.made = []
            fleet = self.fleet(shard=(index, 4))
            fleet.set_targets(specs)
            names = list(fleet.followers)
            self.assertTrue(all(shard_of(n, 4) == index for n in names))
            self.assertTrue(50 < len(names) < 150, len(names))
            self.assertEqual(fleet.targets_total, 400)
            seen.extend(names)
        self.assertEqual(sorted(seen), sorted(s.name for s in specs))

    def test_rejects_a_bad_shard(self):
        for shard in ((0, 0), (3, 3), (-1, 2)):
            self.assertRaises(ValueError, FleetService, self.make, shard=shard, clock=task.Clock())

    def test_small_first_set_connects_at_once(self):
        fleet = self.fleet()
        fleet.set_targets(many(SMALL_BATCH - 1))
        self.assertEqual({f.first_delay for f in self.made}, {0.0})

    def test_large_set_spreads_first_delays(self):
        fleet = self.fleet(spread_seconds=10.0)
        fleet.set_targets(many(2000))
        delays = [f.first_delay for f in self.made]
        self.assertTrue(all(0 <= d < 10.0 for d in delays))
        self.assertGreater(len(set(delays)), 1900)
        # Roughly uniform: every second of the spread gets its share of connects.
        per_second = [sum(1 for d in delays if s <= d < s + 1) for s in range(10)]
        self.assertTrue(all(120 < n < 280 for n in per_second), per_second)

    def test_later_batches_spread_by_size(self):
        fleet = self.fleet(spread_seconds=5.0)
        fleet.set_targets(many(10))
        fleet.set_targets(many(12))
        self.assertEqual([f.first_delay for f in self.made[10:]], [0.0, 0.0])
        fleet.set_targets(many(12 + 100))
        delays = [f.first_delay for f in self.made[12:]]
        self.assertEqual(len(delays), 100)
        self.assertTrue(all(0 <= d < 5.0 for d in delays))
        self.assertGreater(max(delays), 0)

    def test_default_spread_is_proportional_to_the_batch(self):
        fleet = self.fleet(spread_seconds=None)
        fleet.set_targets(many(2000))
        delays = [f.first_delay for f in self.made]
        spread = 2000 / SPREAD_RATE
        self.assertTrue(all(0 <= d < spread for d in delays))
        self.assertGreater(max(delays), spread * 0.9)
        del self.made[:]
        big = self.fleet(spread_seconds=None)
        big.set_targets(many(int(SPREAD_RATE * SPREAD_MAX * 2)))
        delays = [f.first_delay for f in self.made]
        self.assertTrue(all(0 <= d < SPREAD_MAX for d in delays))
        self.assertGreater(max(delays), SPREAD_MAX * 0.9)

    def test_gc_thresholds_raised_while_running_then_restored(self):
        saved = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *saved)
        self.addCleanup(gc.unfreeze)
        gc.set_threshold(700, 10, 10)
        fleet = self.fleet(start=False)
        fleet.startService()
        self.assertEqual(gc.get_threshold(), GC_THRESHOLDS)
        fleet.clock.advance(GC_PERIOD)  # the fleet's collector policy runs on its clock
        self.assertGreater(gc.get_freeze_count(), 0)
        self.successResultOf(fleet.stopService())
        self.assertEqual(gc.get_threshold(), (700, 10, 10))
        self.assertEqual(gc.get_freeze_count(), 0)
        gc.set_threshold(100_000, 10, 10)
        self.assertEqual(tune_gc(), (100_000, 10, 10))
        self.assertEqual(gc.get_threshold(), (100_000, 10, GC_THRESHOLDS[2]))  # never lowered

    def test_zero_spread_means_no_delay(self):
        fleet = self.fleet(spread_seconds=0)
        fleet.set_targets(many(200))
        self.assertEqual({f.first_delay for f in self.made}, {0.0})

    def test_stop_waits_for_every_follower(self):
        fleet = self.fleet()
        fleet.set_targets(many(3))
        for f in self.made:
            f.stop_result = defer.Deferred()
        stopped = fleet.stopService()
        self.assertEqual([f.stops for f in self.made], [1, 1, 1])
        self.assertNoResult(stopped)
        self.made[0].stop_result.callback(None)
        self.made[2].stop_result.callback(None)
        self.assertNoResult(stopped)
        self.made[1].stop_result.callback(None)
        self.assertIsNone(self.successResultOf(stopped))
        self.assertFalse(fleet.running)

    def test_stop_waits_for_followers_still_stopping_after_removal(self):
        fleet = self.fleet()
        fleet.set_targets([spec("a:1"), spec("b:2")])
        a, b = self.made
        a.stop_result = defer.Deferred()
        fleet.set_targets([spec("b:2")])
        stopped = fleet.stopService()
        self.assertEqual(a.stops, 1)  # not stopped a second time
        self.assertNoResult(stopped)
        a.stop_result.callback(None)
        self.successResultOf(stopped)

    def test_a_failing_stop_does_not_cut_the_wait_short(self):
        fleet = self.fleet()
        fleet.set_targets(many(2))
        self.made[0].stop_result = defer.fail(RuntimeError("stuck"))
        self.made[1].stop_result = defer.Deferred()
        stopped = fleet.stopService()
        self.assertNoResult(stopped)
        self.made[1].stop_result.callback(None)
        self.successResultOf(stopped)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_targets_ignored_during_shutdown(self):
        fleet = self.fleet()
        fleet.set_targets([spec("a:1")])
        fleet.stopService()
        fleet.set_targets([spec("b:2")])
        self.assertEqual(list(fleet.followers), ["a:1"])
        self.assertEqual(len(self.made), 1)

    def test_restart_restarts_followers(self):
        fleet = self.fleet()
        fleet.set_targets([spec("a:1")])
        self.successResultOf(fleet.stopService())
        fleet.startService()
        self.assertEqual(self.made[0].starts, 2)
        fleet.set_targets([spec("b:2")])
        self.assertEqual(list(fleet.followers), ["b:2"])

    def test_factory_failure_skips_only_that_target(self):
        def make(spec, first_delay):
            if spec.name == "bad:1":
                raise RuntimeError("cannot build")
            return self.make(spec, first_delay)

        fleet = FleetService(make, clock=task.Clock())
        fleet.startService()
        fleet.set_targets([spec("a:1"), spec("bad:1"), spec("c:3")])
        self.assertEqual(list(fleet.followers), ["a:1", "c:3"])
        self.assertEqual(list(fleet.specs), ["a:1", "c:3"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_on_removed_failure_is_logged(self):
        def on_removed(spec):
            raise RuntimeError("owner broke")

        fleet = FleetService(self.make, clock=task.Clock(), on_removed=on_removed)
        fleet.startService()
        fleet.set_targets([spec("a:1")])
        fleet.set_targets([])
        self.assertEqual(fleet.followers, {})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_named_followers_can_be_replaced(self):
        def make(spec, first_delay):
            follower = self.make(spec, first_delay)
            follower.setName(spec.name)
            return follower

        fleet = FleetService(make, clock=task.Clock())
        fleet.startService()
        fleet.set_targets([spec("a:1", v="1")])
        fleet.set_targets([spec("a:1", v="2")])
        self.assertIs(fleet.getServiceNamed("a:1"), self.made[1])
        fleet.set_targets([])
        self.assertEqual(fleet.namedServices, {})


class Node:
    """A container object the cyclic collector tracks, as a fleet's are."""

    __slots__ = ("other", "__weakref__")

    def __init__(self) -> None:
        self.other: object = None


class CollectorPolicyTests(unittest.TestCase):
    """Full collections only look at what the last period kept; the deep one at everything."""

    def setUp(self):
        self.clock = task.Clock()
        saved = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *saved)
        self.addCleanup(gc.unfreeze)
        self.policy = CollectorPolicy(self.clock, period=2.0, deep_period=60.0)
        self.policy.start()
        self.addCleanup(self.policy.stop)

    def test_long_lived_objects_are_frozen_and_no_longer_scanned(self):
        self.assertEqual(gc.get_threshold()[2], GC_THRESHOLDS[2])  # no automatic full collection
        fleet = [Node() for _ in range(300_000)]  # long-lived, like a fleet's series
        started = time.perf_counter()
        gc.collect()
        scanning_them = time.perf_counter() - started
        self.clock.advance(2.0)
        self.assertEqual(self.policy.collections, 1)
        self.assertGreaterEqual(gc.get_freeze_count(), len(fleet))
        self.assertLess(len(gc.get_objects(generation=2)), 50_000)  # they are not in any generation now
        started = time.perf_counter()
        gc.collect()
        frozen = time.perf_counter() - started
        # Scanning 300,000 more objects takes milliseconds; with them frozen a full collection
        # costs what the rest of the test process holds (generous margin: a noisy machine).
        self.assertLess(frozen, scanning_them * 0.8, (frozen, scanning_them))

    def test_a_cycle_that_died_frozen_waits_for_the_deep_collection(self):
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        self.clock.advance(2.0)  # frozen with everything else alive now
        del a, b
        self.clock.advance(2.0)
        gc.collect()
        self.assertIsNotNone(gone())  # frozen: not collected, not freed (a cycle)
        self.clock.advance(56.0)  # the deep collection
        self.assertEqual(self.policy.deep_collections, 1)
        self.assertIsNone(gone())

    def test_a_young_cycle_is_collected_at_the_next_period(self):
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        self.clock.advance(2.0)
        self.assertIsNone(gone())
        self.assertEqual(self.policy.deep_collections, 0)

    def test_stop_unfreezes_and_restores(self):
        self.clock.advance(2.0)
        self.assertGreater(gc.get_freeze_count(), 0)
        self.policy.stop()
        self.assertEqual(gc.get_freeze_count(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.policy.stop()  # twice: nothing more
