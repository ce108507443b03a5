"""cadvisor-events: Prometheus counters from cAdvisor container events."""

__version__ = "0.1.0"
