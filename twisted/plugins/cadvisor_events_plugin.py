"""twistd plugins: ``cadvisor-events`` (the exporter) and ``cadvisor-simulator``.

Declarations only: options and wiring live in cadvisor_events.tap and
cadvisor_events.simulator.tap, imported by twistd only when used.
"""

from twisted.application.service import ServiceMaker

cadvisor_events = ServiceMaker(
    "cadvisor-events",
    "cadvisor_events.tap",
    "Prometheus counters from cAdvisor container events, for one host or a fleet.",
    "cadvisor-events",
)

cadvisor_simulator = ServiceMaker(
    "cadvisor-simulator",
    "cadvisor_events.simulator.tap",
    "A faithful cAdvisor events API (history and streams) for demos, tests and benchmarks.",
    "cadvisor-simulator",
)
