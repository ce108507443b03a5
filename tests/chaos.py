"""The chaos engine of the soak: random breaks of simulator hosts, and the check of what was counted.

``tests/test_soak.py`` runs it for ~15 s in-process and ``benchmarks/soak.py``
for minutes against the real ``twistd cadvisor-events``. :class:`Chaos` cuts
or ends a random host's streams, or restarts it keeping or losing its history
(:data:`KINDS`); it records, per host (:class:`ChaosHost`), which events a
history-losing restart made unrecoverable, so that :meth:`Chaos.check` can
tell an honest loss (reported as a gap) from a counting bug. It only breaks
simulators and reads counts; it never touches the exporter.
"""

from __future__ import annotations

import collections
import random
from typing import Dict, List, Optional

from cadvisor_events.event import OOM_TYPES  # a restarted cAdvisor re-adds these from the kernel log

#: An exporter that reports a host "up" this long after its last break has noticed that break
#: and synced again since (state "up" only follows a complete backfill).
GRACE = 0.3
#: Events emitted this long before a break may still have been in flight (lost with the stream).
IN_FLIGHT = 0.25
KINDS = {"cut": 30, "end": 20, "restart_kept": 15, "restart_lost": 10, "cut_then_restart_lost": 25}
LOSSY = frozenset(("restart_lost", "cut_then_restart_lost"))
#: Hosts are dealt these fates in turn: never a history-losing restart (must end exact, with no
#: gap), exactly one lossy episode (so a loss without a gap cannot hide behind another gap), any.
FATES = ("no_loss", "one_loss", "any")


#: How far out of time order the simulator emits: OOMs are dated up to a second early.
DISORDER_NS = 1_000_000_000


def emitted_since(events, timestamp_ns: int):
    """The events dated at or after ``timestamp_ns``, of events emitted in time order
    but for OOMs dated up to :data:`DISORDER_NS` early (scanned from the newest)."""
    since = []
    for emitted_event in reversed(events):
        if emitted_event.timestamp_ns >= timestamp_ns:
            since.append(emitted_event)
        elif emitted_event.timestamp_ns < timestamp_ns - DISORDER_NS:
            break
    return since


class ChaosHost:
    """One simulator host under chaos and what the final check needs to know about it.

    ``window_start`` (ns) is the start of the events the exporter may not have
    counted yet: the last break it was seen to have recovered from (less
    :data:`IN_FLIGHT`). A history-losing restart makes every non-OOM event of
    that window up to the restart a *loss candidate*: no longer in history, so
    not recoverable, and the only events a host with gaps may be short of.
    """

    def __init__(self, name: str, sim, fate: str = "any") -> None:
        self.name, self.sim, self.fate = name, sim, fate
        self.kinds: collections.Counter = collections.Counter()
        self.last_break: Optional[float] = None
        self.recovered = True  # the first connect is its own sync
        self.window_start: Optional[int] = None
        self.candidates: collections.Counter = collections.Counter()

    def broken(self, now: float) -> None:
        if self.recovered:
            self.window_start = int((now - IN_FLIGHT) * 1e9)
        self.recovered = False
        self.last_break = now

    def history_lost(self, now: float) -> None:
        """The simulator is about to forget its history: record what that makes unrecoverable."""
        self.broken(now)  # the restart cuts the stream first
        for emitted_event in emitted_since(self.sim.emitted, self.window_start):
            if emitted_event.event_type not in OOM_TYPES:
                self.candidates[emitted_event.counting_key] += 1
        self.window_start = int(now * 1e9)  # those are counted as candidates once


class Chaos:
    """Random cuts, ends and restarts (history kept or lost) of simulator hosts, and the check.

    ``observe(states, now)`` must be fed the exporter's view of each host
    (``name -> state``) regularly; ``strike()`` breaks one random host.
    """

    def __init__(self, sims: Dict[str, object], clock, rng: random.Random,
                 restart_delay=(0.1, 0.8)) -> None:
        self.hosts = {name: ChaosHost(name, sim, FATES[i % len(FATES)])
                      for i, (name, sim) in enumerate(sorted(sims.items()))}
        self.clock, self.rng = clock, rng
        self.restart_delay = restart_delay
        self.pending: List = []

    def observe(self, states: Dict[str, str], now: float) -> None:
        for name, state in states.items():
            host = self.hosts[name]
            if state == "up" and (host.last_break is None or now >= host.last_break + GRACE):
                host.recovered = True

    def strike(self, name: Optional[str] = None, kind: Optional[str] = None) -> str:
        host = self.hosts[name or self.rng.choice(sorted(self.hosts))]
        while kind is None:
            kind = self.rng.choices(list(KINDS), list(KINDS.values()))[0]
            lossy_before = sum(host.kinds[k] for k in LOSSY)
            if kind in LOSSY and (host.fate == "no_loss" or (host.fate == "one_loss" and lossy_before)):
                kind = None
        host.kinds[kind] += 1
        now = self.clock.seconds()
        if kind == "cut":
            host.broken(now)
            host.sim.cut_streams()
        elif kind == "end":
            host.broken(now)
            host.sim.end_streams()
        elif kind == "restart_kept":
            host.broken(now)
            host.sim.restart(keep_history=True)
        elif kind == "restart_lost":
            host.history_lost(now)
            host.sim.restart(keep_history=False)
        else:  # a cut, then a history-losing restart while the exporter is still away
            host.broken(now)
            host.sim.cut_streams()
            self.pending.append(self.clock.callLater(self.rng.uniform(*self.restart_delay),
                                                     self._restart_lost, host))
        return kind

    def _restart_lost(self, host: ChaosHost) -> None:
        host.history_lost(self.clock.seconds())
        host.sim.restart(keep_history=False)

    def stop(self) -> None:
        for call in self.pending:
            if call.active():
                call.cancel()
        self.pending = []

    def check(self, counted: Dict[str, collections.Counter], gaps: Dict[str, int]) -> dict:
        """Compare the exporter's counts with ground truth; returns figures and ``problems``.

        Every host: nothing counted twice (no key above ground truth). A host
        whose ``gaps`` stayed 0: counts equal ground truth exactly. A host with
        gaps: what it is short of is made only of its loss candidates. A host
        whose history was never lost: no gap either (no false alarm).
        """
        problems: List[str] = []
        short_total = candidates_total = 0
        for name, host in sorted(self.hosts.items()):
            truth = host.sim.ground_truth()
            got = counted.get(name, collections.Counter())
            over = got - truth
            short = truth - got
            short_total += sum(short.values())
            candidates_total += sum(host.candidates.values())
            if over:
                problems.append(f"{name}: counted twice: {dict(over)}")
            if gaps.get(name) and not any(host.kinds[k] for k in LOSSY):
                problems.append(f"{name}: {gaps[name]} gaps, but its history was never lost")
            if short and not gaps.get(name):
                problems.append(f"{name}: short of {sum(short.values())} events with no gap: {dict(short)}")
            elif short - host.candidates:
                problems.append(f"{name}: short of events that were not loss candidates: "
                                f"{dict(short - host.candidates)}")
        kinds = sum((h.kinds for h in self.hosts.values()), collections.Counter())
        return {"problems": problems, "emitted": sum(len(h.sim.emitted) for h in self.hosts.values()),
                "counted": sum(sum(c.values()) for c in counted.values()), "short": short_total,
                "loss_candidates": candidates_total, "gaps": sum(gaps.values()),
                "hosts_with_gaps": sum(1 for n in gaps.values() if n), "kinds": dict(kinds),
                "hosts_short": sum(1 for h in self.hosts.values() if h.sim.ground_truth() - counted.get(h.name, {}))}
