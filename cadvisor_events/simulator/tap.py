"""``twistd cadvisor-simulator``: command-line options and service wiring for the fake cAdvisor.

This module only parses options and composes services (listeners, a random
event source); it must never hold simulator logic, and it never starts
anything itself: twistd starts the returned service.
"""

from __future__ import annotations

from typing import Optional

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.server import Site

from ..options import number, seconds, server_endpoint
from .burst import ControlledSite
from .core import Simulator
from .generate import RandomEmitter

__all__ = ["EndpointListener", "Options", "makeService"]

log = Logger()


class Options(usage.Options):
    """Options of ``twistd cadvisor-simulator``."""

    synopsis = "[--listen ENDPOINT]... [--rate EVENTS_PER_S] [--history N] [--containers N]"
    optParameters = [
        ["rate", None, 2.0, "random events emitted per second (0: none)", number(float, "rate", 0)],
        ["history", None, 0, "pre-fill history with N events over the past hour", number(int, "history", 0)],
        ["containers", None, 50, "distinct containers random events use", number(int, "containers", 1)],
        ["tz-offset", None, -180, "timestamps' zone offset in minutes (0 writes Z)", number(int, "tz-offset", -1439)],
        ["event-limit", None, 100_000, "history per event type (-1: no limit, 0: none)", number(int, "event-limit", -1)],
        ["age-limit", None, 86400.0, "seconds of history kept", seconds("age-limit")],
        ["seed", None, 0, "seed of container names and random events", int],
    ]
    optFlags = [
        ["deletion-exit-codes", None, "containerDeletion events carry an exit code (newer cAdvisor)"],
        ["control", None, "also serve /_simulator/burst (benchmark bursts; not a cAdvisor path)"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """Where to serve the API: PORT, :PORT, IP:PORT, [IPv6]:PORT or a Twisted server endpoint
        string (repeatable; default tcp:8080)."""
        try:
            self["listen"].append(server_endpoint("listen")(description))
        except ValueError as error:
            raise usage.UsageError(str(error)) from None

    def postOptions(self) -> None:
        if self["tz-offset"] > 1439:
            raise usage.UsageError(f"--tz-offset must be within a day, not {self['tz-offset']}")
        if not self["listen"]:
            self["listen"] = ["tcp:8080"]


class EndpointListener(Service):
    """Listens on one endpoint while running; a port that cannot be bound fails startup."""

    def __init__(self, endpoint: IStreamServerEndpoint, factory) -> None:
        self.endpoint, self.factory = endpoint, factory
        self.port: Optional[IListeningPort] = None
        self._failure: Optional[Failure] = None

    def startService(self) -> None:
        super().startService()
        self.endpoint.listen(self.factory).addCallbacks(self._listening, self._failed)
        if self._failure is not None:  # synchronous (TCP): let twistd report it and exit
            self._failure.raiseException()

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        log.info("cAdvisor simulator listening on {address}", address=port.getHost())

    def _failed(self, failure: Failure) -> None:
        self._failure = failure
        log.failure("cAdvisor simulator cannot listen", failure)

    def stopService(self) -> Optional[Deferred]:
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


def makeService(config: Options, reactor=None) -> IService:
    """The simulator's service: one listener per ``--listen`` and a random event source.

    The returned ``MultiService`` has a ``simulator`` attribute, for tests and
    for embedding (the exporter's ``--demo``).
    """
    if reactor is None:
        from twisted.internet import reactor
    simulator = Simulator(clock=reactor, tz_offset_minutes=config["tz-offset"], event_limit=config["event-limit"],
                          age_limit=config["age-limit"], seed=config["seed"], containers=config["containers"],
                          deletion_exit_codes=bool(config["deletion-exit-codes"]))
    if config["history"]:
        simulator.fill_history(config["history"])
    top = MultiService()
    top.simulator = simulator  # type: ignore[attr-defined]
    site = Site(ControlledSite(simulator) if config["control"] else simulator.resource)
    for description in config["listen"]:
        EndpointListener(serverFromString(reactor, description), site).setServiceParent(top)
    if config["rate"] > 0:
        RandomEmitter(simulator, config["rate"], reactor).setServiceParent(top)
    return top
