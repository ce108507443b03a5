"""The fleet: one follower service per followed target, started and stopped as targets change.

Given each new desired target set, :class:`FleetService` keeps this replica's
shard of it, starts a follower for every new target (spreading first
connects over time so thousands of hosts do not connect in one burst),
stops and forgets followers of targets that went away, and replaces those
whose spec changed. It must never talk to a cAdvisor, count events or
decide what a follower does: followers come from an injected factory.
Shutdown waits for every follower, so streams are closed cleanly. While it
runs, the cyclic garbage collector runs less often and never scans the
long-lived objects again and again (:class:`CollectorPolicy`).
"""

from __future__ import annotations

import gc
import random
from typing import Any, Callable, Optional

from twisted.application.service import IService, MultiService, Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from .targets import TargetSpec, shard_of

log = Logger()

#: A batch of new targets smaller than this connects at once; a larger one is spread.
SMALL_BATCH = 50
#: Default spread of a large batch's first connects: this many per second (10,000 hosts
#: over 2.5 s), at most SPREAD_MAX seconds. The connect gate bounds the connects in
#: flight anyway; a fixed 10 s spread kept a 10,000-host fleet from being up in 10 s.
SPREAD_RATE = 4000.0
SPREAD_MAX = 10.0
#: Collector thresholds while a fleet runs (see :func:`tune_gc`): young collections rarer than
#: CPython's default (700, 10, 10), and no automatic full collection (:class:`CollectorPolicy`
#: makes them, over recent objects only).
GC_THRESHOLDS = (10_000, 10, 1 << 30)
#: Seconds between two collections of everything not frozen, after which all that survived is
#: frozen (:class:`CollectorPolicy`).
GC_PERIOD = 2.0
#: Seconds between two deep collections: frozen objects too, for cycles that died frozen.
GC_DEEP_PERIOD = 3600.0

MakeFollower = Callable[[TargetSpec, float], IService]


def _ignore_removed(spec: TargetSpec) -> None:
    """Default ``on_removed``: nothing to clean up."""


class FleetService(MultiService):
    """Starts, stops and replaces one follower per target of this shard.

    Read by others: ``followers`` (target name -> follower, insertion
    order), ``specs`` (target name -> :class:`TargetSpec`, same keys) and
    ``targets_total`` (distinct targets in the last set given, before
    sharding).
    """

    def __init__(
        self,
        make_follower: MakeFollower,
        *,
        shard: tuple[int, int] = (0, 1),
        clock,
        spread_seconds: Optional[float] = None,
        rng: Optional[random.Random] = None,
        on_removed: Callable[[TargetSpec], None] = _ignore_removed,
    ) -> None:
        super().__init__()
        index, count = shard
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"shard must be I/N with 0 <= I < N, not {index}/{count}")
        self.make_follower = make_follower
        self.shard = (index, count)
        self.clock = clock
        self.spread_seconds = spread_seconds
        self.rng = rng if rng is not None else random.Random()
        self.on_removed = on_removed
        # Services made by make_follower; the status page and self-metrics read them as HostStatus.
        self.followers: dict[str, Any] = {}
        self.specs: dict[str, TargetSpec] = {}
        self.targets_total = 0
        self._stopping: set[defer.Deferred] = set()
        self._shutting_down = False
        self._collector: Optional[CollectorPolicy] = None

    def mine(self, spec: TargetSpec) -> bool:
        """Whether this replica's shard follows ``spec``'s target."""
        index, count = self.shard
        return count == 1 or shard_of(spec.name, count) == index

    def set_targets(self, specs: list[TargetSpec]) -> None:
        """Make the running followers match ``specs`` (the full desired set, all shards).

        Followers of unchanged specs are left alone (their streams and
        counters go on); a changed spec (labels, scheme or credentials of the
        same ``host:port``) gets a new follower, because the labels of every
        series it writes change with it.
        """
        if self._shutting_down:
            log.info("ignoring a new target set during shutdown")
            return
        desired: dict[str, TargetSpec] = {}
        for spec in specs:
            desired.setdefault(spec.name, spec)
        self.targets_total = len(desired)
        wanted = {name: spec for name, spec in desired.items() if self.mine(spec)}

        gone = [name for name in self.specs if name not in wanted]
        changed = [name for name, spec in wanted.items()
                   if name in self.specs and self.specs[name] != spec]
        added = [name for name in wanted if name not in self.specs]

        self._detach([self.followers[name] for name in gone + changed])
        for name in gone:
            del self.followers[name]
            self._removed(self.specs.pop(name))
        for name in changed:
            self._removed(self.specs[name])

        first_delay = self._delays(len(changed) + len(added))
        started = 0
        for name in changed + added:
            spec = wanted[name]
            try:
                follower = self.make_follower(spec, next(first_delay))
            except Exception:
                log.failure("cannot create a follower for {name}", name=name)
                self.followers.pop(name, None)
                self.specs.pop(name, None)
                continue
            # Assigning to an existing key keeps a replaced target's position.
            self.followers[name] = follower
            self.specs[name] = spec
            follower.setServiceParent(self)
            started += 1
        if gone or changed or added:
            log.info(
                "targets: {total} known, {mine} in shard {index}/{count}; "
                "{added} added, {removed} removed, {replaced} replaced",
                total=self.targets_total, mine=len(self.followers), index=self.shard[0],
                count=self.shard[1], added=len(added), removed=len(gone), replaced=len(changed),
            )

    def _delays(self, count: int):
        """First-connect delays for ``count`` new followers: 0 for a small batch, else spread.

        A small batch (a small setup, or a few hosts added to a file)
        connects at once; a big one (a fleet starting, a relabelled file)
        gets delays uniform in ``[0, spread)`` so connects arrive at a steady
        rate instead of one burst: ``spread_seconds`` if given, else
        proportional to the batch (:data:`SPREAD_RATE` per second, at most
        :data:`SPREAD_MAX` seconds).
        """
        spread = self.spread_seconds
        if spread is None:
            spread = min(SPREAD_MAX, count / SPREAD_RATE)
        while True:
            if count < SMALL_BATCH or spread <= 0:
                yield 0.0
            else:
                delay = self.rng.random() * spread
                yield delay if delay < spread else 0.0

    def _detach(self, followers: list[IService]) -> None:
        """Remove ``followers`` from this service, stopping them if running.

        Done in bulk rather than by ``removeService`` one at a time, which is
        quadratic in the fleet size (``list.remove``) for a big removal.
        """
        if not followers:
            return
        doomed = {id(f) for f in followers}
        self.services = [s for s in self.services if id(s) not in doomed]
        for follower in followers:
            if follower.name:
                self.namedServices.pop(follower.name, None)
            follower.parent = None
            if self.running:
                self._track(defer.maybeDeferred(follower.stopService), follower)

    def _track(self, stopped: defer.Deferred, follower: IService) -> None:
        """Keep ``stopped`` until it fires so :meth:`stopService` can wait for it."""
        self._stopping.add(stopped)

        def done(result: object) -> None:
            self._stopping.discard(stopped)
            if isinstance(result, Failure):
                log.failure("follower {name} failed to stop", result,
                            name=follower.name or repr(follower))

        stopped.addBoth(done)

    def _removed(self, spec: TargetSpec) -> None:
        """Tell the owner a target's follower is gone, so its series can go too."""
        try:
            self.on_removed(spec)
        except Exception:
            log.failure("on_removed failed for {name}", name=spec.name)

    def startService(self) -> None:
        self._shutting_down = False
        if self._collector is None:
            self._collector = CollectorPolicy(self.clock)
            self._collector.start()
        super().startService()

    def stopService(self) -> defer.Deferred:
        """Stop every follower; the Deferred fires when all of them (and any still stopping) have.

        A follower that fails to stop is logged and does not cut the wait
        for the others short.
        """
        self._shutting_down = True
        if self.running:
            # Service.stopService only flips ``running``; the children are stopped here,
            # each tracked, instead of MultiService's DeferredList that drops failures.
            Service.stopService(self)
            for follower in reversed(list(self)):
                self._track(defer.maybeDeferred(follower.stopService), follower)
        pending = list(self._stopping)
        if self._collector is not None:
            self._collector.stop()
            self._collector = None
        return defer.gatherResults(pending, consumeErrors=True).addCallback(lambda _: None)


def tune_gc() -> tuple:
    """Raise the cyclic collector's thresholds to :data:`GC_THRESHOLDS` (never lower them);
    the previous thresholds.

    A fleet keeps hundreds of thousands of long-lived objects (followers,
    connections, series) and allocates fast while it connects; with CPython's
    default (700, 10, 10) the collector re-scans the young ones over and over.
    Young collections still happen, less often; full ones only by
    :class:`CollectorPolicy`.
    """
    saved = gc.get_threshold()
    gc.set_threshold(*(max(old, new) for old, new in zip(saved, GC_THRESHOLDS)))
    return saved


class CollectorPolicy:
    """Full collections that only look at recent objects: collect, then freeze the survivors.

    CPython's cyclic collector makes a full collection whenever the objects
    that became old since the last one are a quarter of those it found then,
    and each one scans every old object: a million series with their
    followers, ledgers and identities are tens of millions of objects, and
    while a fleet's histories pour in such a collection stops the process
    for seconds at a time, over and over, as the heap grows. Instead, while a
    fleet runs, automatic full collections are off (:func:`tune_gc`) and
    every ``period`` seconds, in a reactor turn of its own, this collects
    everything not frozen and freezes (``gc.freeze``) whatever survived: from
    then on no collection scans those again, so a pause is as long as what
    the last period kept, whatever the heap's size. Objects that die by their
    reference counts are freed as ever, frozen or not; only a cycle that
    became garbage after it was frozen waits, for the deep collection every
    ``deep_period`` seconds (everything unfrozen, collected, frozen again: the
    one full-heap pause left, rare).
    """

    def __init__(self, clock, period: float = GC_PERIOD, deep_period: float = GC_DEEP_PERIOD) -> None:
        self.clock = clock
        self.period = period
        self.deep_period = deep_period
        self.collections = 0
        self.deep_collections = 0
        self._loop: Optional[LoopingCall] = None
        self._saved: Optional[tuple] = None
        self._last_deep = 0.0

    def start(self) -> None:
        """Raise the thresholds and collect every ``period`` seconds from now on."""
        if self._loop is not None:
            return
        self._saved = tune_gc()
        self._last_deep = self.clock.seconds()
        self._loop = LoopingCall(self.collect)
        self._loop.clock = self.clock
        self._loop.start(self.period, now=False).addErrback(
            lambda failure: log.failure("garbage collection policy stopped", failure))

    def collect(self) -> None:
        """Collect what is not frozen (everything, on a deep collection), then freeze the rest."""
        if self.clock.seconds() - self._last_deep >= self.deep_period:
            self._last_deep = self.clock.seconds()
            self.deep_collections += 1
            gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.collections += 1

    def stop(self) -> None:
        """Stop collecting, unfreeze everything and restore the thresholds found at :meth:`start`."""
        if self._loop is None:
            return
        if self._loop.running:
            self._loop.stop()
        self._loop = None
        gc.unfreeze()
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None
