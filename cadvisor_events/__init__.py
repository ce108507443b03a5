"""cadvisor-events: Prometheus counters from cAdvisor container events.

``__version__`` below is the one place the exporter's version is written:
setup.py parses it out of this file's text (importing the package at build
time would need its dependencies), and ``twistd cadvisor-events --version``,
``cadvisor_events_build_info`` and the landing page read it through
:func:`build_info`. Importing the package must stay cheap and do nothing else.
"""

from __future__ import annotations

import platform
from typing import Tuple

import attrs

__version__ = "0.1.0"


@attrs.frozen
class BuildInfo:
    """The exporter's identity, as Go exporters give it in ``*_build_info``."""

    version: str
    python_version: str
    twisted_version: str

    def labels(self) -> Tuple[Tuple[str, str], ...]:
        """``(label name, value)`` pairs of ``cadvisor_events_build_info``, in field order."""
        return tuple((field.name, getattr(self, field.name)) for field in attrs.fields(BuildInfo))

    def describe(self) -> str:
        """One line for people: ``cadvisor-events 0.1.0 (Twisted 26.10.0, Python 3.11.7)``."""
        return f"cadvisor-events {self.version} (Twisted {self.twisted_version}, Python {self.python_version})"


def build_info() -> BuildInfo:
    """This process's :class:`BuildInfo`: our ``__version__``, and the running Twisted and Python."""
    import twisted

    return BuildInfo(
        version=__version__, python_version=platform.python_version(), twisted_version=twisted.__version__,
    )
