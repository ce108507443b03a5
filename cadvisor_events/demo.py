"""``--demo``: the simulator in-process on a loopback port, followed like any cAdvisor.

Lets a newcomer see live counters on a machine without cAdvisor. The
simulator is served on an ephemeral 127.0.0.1 port (never reachable from
elsewhere) and emits a few events per second of every type; its target is
added to the watcher's static targets, so it goes through the very same
follower, counters and pages as a real host.
"""

from __future__ import annotations

from typing import Optional

from twisted.application import service
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web.server import Site

from .cadvisor import parse_target
from .simulator import Simulator
from .targets import TargetSpec

log = Logger()

DEMO_RATE = 3.0


class DemoService(service.Service):
    """Runs the demo simulator and registers it as a target while the service runs."""

    def __init__(self, watcher, reactor, rate: float = DEMO_RATE) -> None:
        self.watcher = watcher
        self.reactor = reactor
        self.rate = rate
        self.simulator = Simulator(clock=reactor, seed=0)
        self.port: Optional[IListeningPort] = None
        self.spec: Optional[TargetSpec] = None

    def startService(self) -> None:
        super().startService()
        port = self.port = self.reactor.listenTCP(
            0, Site(self.simulator.resource), interface="127.0.0.1"
        )
        address = port.getHost()
        self.spec = TargetSpec(target=parse_target(f"127.0.0.1:{address.port}"), labels=())
        # Some history first, so the first connect has something to seed from.
        self.simulator.emit_random(20)
        self.simulator.start_emitting(self.rate)
        log.info(
            "demo: cAdvisor simulator on http://127.0.0.1:{port} emitting ~{rate} events/s",
            port=address.port,
            rate=self.rate,
        )
        self.watcher.set_static(list(self.watcher.static) + [self.spec])

    def stopService(self):
        super().stopService()
        self.simulator.stop_emitting()
        self.simulator.end_streams()
        if self.port is not None:
            return self.port.stopListening()
        return None
