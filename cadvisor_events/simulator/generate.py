"""Made-up but realistic load: container names, process names and random events over time.

Deterministic for a seed, so a test or benchmark run can be repeated:
cgroup names in the shapes docker, systemd and Kubernetes (both cgroup
drivers) give, OOM process names both common and hostile (quotes, control
characters, invalid-looking text), the random mix's shares, and
:class:`RandomEmitter`, a service that has the simulator emit at a rate on an
injected clock. It must never record or send events itself: the
:class:`~.core.Simulator` does that.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Dict, Optional

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .cluster import make_containers

if TYPE_CHECKING:
    from .core import Simulator

__all__ = ["COMMON_PROCESS_NAMES", "HOSTILE_PROCESS_NAMES", "RANDOM_TYPE_WEIGHTS", "RANDOM_TYPES", "RANDOM_WEIGHTS", "RandomEmitter",
           "container_names", "random_event_details"]

log = Logger()

#: Per draw; an "oom" draw is an OOM pair (oom + oomKill), so events come 40/40/10/10 %.
RANDOM_TYPE_WEIGHTS = (("containerCreation", 40), ("containerDeletion", 40), ("oom", 10))
RANDOM_TYPES = [event_type for event_type, _ in RANDOM_TYPE_WEIGHTS]
RANDOM_WEIGHTS = [weight for _, weight in RANDOM_TYPE_WEIGHTS]
COMMON_PROCESS_NAMES = ("java", "node", "python3", "postgres", "nginx", "ruby", "php-fpm", "dotnet",
                        "nginx: worker process", "kube-apiserver")
HOSTILE_PROCESS_NAMES = ('sh -c "sleep 1"', "C:\\app\\run.exe", "<script>&amp;</script>", "café-crème",
                         "进程-worker", "🐳 whale", "tab\tnew\nline", "ctl\x01\x08\x0c\x1f\x7f",
                         "sep\u2028\u2029", 'back\\slash "quote"', "", " java ")


def random_event_details(rng: random.Random, event_type: str, deletion_exit_codes: bool) -> Dict[str, Any]:
    """The event data a random event of ``event_type`` carries, drawn from ``rng``: an
    ``oomKill``'s process, pid and constraint, a deletion's exit code when
    ``deletion_exit_codes`` (newer cAdvisors), else nothing."""
    if event_type == "oomKill":
        names = HOSTILE_PROCESS_NAMES if rng.random() < 0.3 else COMMON_PROCESS_NAMES
        return {"process_name": rng.choice(names), "pid": rng.randrange(2, 4_194_304),
                "constraint": "CONSTRAINT_MEMCG" if rng.random() < 0.5 else None}
    if event_type == "containerDeletion" and deletion_exit_codes:
        return {"exit_code": rng.choice((0, 0, 0, 1, 137, 143, -1))}
    return {}


def container_names(count: int, rng: random.Random) -> list[str]:
    """``count`` realistic cgroup names (Kubernetes pods under both cgroup drivers and both
    runtimes with their pod-level cgroups and sandboxes, standalone docker containers,
    systemd services), deterministic for an ``rng``: the names of
    :func:`~.cluster.make_containers`."""
    return [container.name for container in make_containers(count, rng)]


class RandomEmitter(Service):
    """Emits about ``rate`` random events per second on the given clock, as a service."""

    def __init__(self, simulator: Simulator, rate: float, clock: Optional[IReactorTime] = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive, not %r" % (rate,))
        self.simulator, self.rate = simulator, rate
        self.clock: IReactorTime = clock or simulator.clock
        self._loop: Optional[LoopingCall] = None

    def startService(self) -> None:
        super().startService()
        self._last, self._carry = self.clock.seconds(), 0.0
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(min(0.1, 1.0 / self.rate), now=False).addErrback(
            lambda failure: log.failure("random emitter stopped", failure))

    def _tick(self) -> None:
        now = self.clock.seconds()
        self._carry += self.rate * (now - self._last)
        self._last = now
        due = int(self._carry)
        if due:
            self._carry -= due
            self.simulator.emit_random(due)

    def stopService(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return super().stopService()
