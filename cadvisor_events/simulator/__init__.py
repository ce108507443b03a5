"""A fake cAdvisor to test against: its events API over real HTTP, and the ground truth.

What a user gets (as ``treq.testing`` gives a stub ``IResource``): a
:class:`Simulator` that answers cAdvisor's events API (history and
``stream=true`` watches) byte for byte as cAdvisor does, on any clock you
give it, and tells you what it emitted so you can check what a client
counted. Serve ``simulator.resource`` on a loopback port, or hand it to
``treq.testing.StubTreq`` for no network at all::

    from twisted.internet import reactor
    from twisted.web.server import Site
    from cadvisor_events.simulator import Simulator

    simulator = Simulator(seed=0)   # times from the reactor; clock=task.Clock() to drive them
    port = reactor.listenTCP(0, Site(simulator.resource), interface="127.0.0.1")
    url = "http://127.0.0.1:%d/api/v1.3/events" % port.getHost().port
    simulator.fill_history(100)                         # the past hour, before you connect
    simulator.emit("/docker/web", "containerCreation")  # into history and every open stream
    simulator.emit_oom("/docker/web", "java", 4242)     # an oom + oomKill pair
    ...                                                 # run your client against url
    assert counted == simulator.ground_truth()          # (container, type, process) -> events

It serves cAdvisor's spec API too (``/api/v2.0/spec``: who each cgroup is,
from the :class:`Cluster` of Kubernetes pods, docker containers and raw
cgroups it tracks; :meth:`Simulator.start_pod` starts a labelled pod). It also restarts like cAdvisor (:meth:`Simulator.restart`: streams cut,
history lost, OOMs replayed with a shifted date), emits at a rate
(:meth:`Simulator.start_emitting`, :class:`RandomEmitter`), writes benchmark
bursts (:class:`Burst`, over HTTP with :class:`ControlledSite`), and runs as
``twistd cadvisor-simulator`` (:mod:`.tap`). Go's wire rules it follows
(:func:`rfc3339nano`, :func:`parse_go_query`, ...) are exported for tests
that check them. This module only re-exports; it must never hold code.
"""

from .burst import Burst, ControlledSite, ControlResource
from .cluster import Cluster, SimContainer, SimPod, make_containers, make_pod
from .core import Simulator
from .generate import RandomEmitter, container_names
from .golang import (
    clean_go_path, go_duration_error, go_json_string, go_quote, parse_go_bool, parse_go_int, parse_go_query,
    parse_rfc3339, rfc3339nano,
)
from .query import EventQuery
from .store import EventStore, SimulatedEvent

__all__ = [
    "Burst",
    "Cluster",
    "ControlResource",
    "ControlledSite",
    "EventQuery",
    "EventStore",
    "RandomEmitter",
    "SimContainer",
    "SimPod",
    "SimulatedEvent",
    "Simulator",
    "clean_go_path",
    "container_names",
    "go_duration_error",
    "go_json_string",
    "go_quote",
    "make_containers",
    "make_pod",
    "parse_go_bool",
    "parse_go_int",
    "parse_go_query",
    "parse_rfc3339",
    "rfc3339nano",
]
