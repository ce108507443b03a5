"""Self-metrics of the fleet: per-host follower statistics and global gauges.

Followers keep plain integer attributes (nothing from prometheus_client on the
per-event path); this module reads them at scrape time and renders the
``cadvisor_events_*`` families by hand, because a fleet of thousands of hosts
means a dozen samples per host, more than prometheus_client's
``generate_latest`` writes within a scrape's budget (benchmarks/scrape.py). It
only reads; it never changes a follower or a counter.
"""

from __future__ import annotations

from typing import Callable, Iterable, List, Optional, Tuple

from prometheus_client.utils import floatToGoString

from . import BuildInfo, build_info
from .exposition import escape_label_value
from .interfaces import FleetView

PREFIX = "cadvisor_events_"

# (name without _total, type, help, per-host value getter or None for special families)
HOST_FAMILIES: List[Tuple[str, str, str, Callable]] = [
    ("target_up", "gauge", "1 while the event stream of the host is open, else 0.",
     lambda f: 1 if f.up else 0),
    ("received", "counter", "Events parsed from the host's stream and history.",
     lambda f: f.received),
    ("invalid_lines", "counter", "Lines from the host that were not a valid event (skipped).",
     lambda f: f.invalid_lines),
    ("stream_connects", "counter", "Event streams opened to the host (200 received).",
     lambda f: f.connects),
    ("backfilled", "counter", "Events counted from the host's history after a (re)connect.",
     lambda f: f.backfilled),
    ("duplicates_dropped", "counter", "Events already counted, seen again and dropped.",
     lambda f: f.duplicates_dropped),
    ("gaps", "counter", "Reconnects whose history no longer held the last counted events "
     "(aged out or cAdvisor restarted): events may be lost.",
     lambda f: f.gaps),
    ("future_events", "counter", "Events dated over --max-clock-skew ahead of this process's clock: "
     "counted, but not trusted as the point to resume from after a break.",
     lambda f: f.future_events),
]


class FleetMetrics:
    """Renders the self-metric families from the live fleet state.

    ``fleet`` has ``followers`` (name -> follower) and ``targets_total``;
    ``counters`` is the :class:`~cadvisor_events.counters.EventCounters`;
    ``watcher`` (optional) has ``last_reload_successful`` and
    ``last_reload_success_time``; ``build`` is the identity written in
    ``cadvisor_events_build_info`` (this process's unless given).
    """

    def __init__(self, fleet: FleetView, counters, watcher=None, build: Optional[BuildInfo] = None,
                 web_config=None) -> None:
        self.fleet = fleet
        self.counters = counters
        self.watcher = watcher
        #: The --web-config-file's watcher (same attributes as ``watcher``, plus ``reload_failures``).
        self.web_config = web_config
        build = build or build_info()
        labels = ",".join(f'{name}="{escape_label_value(value)}"' for name, value in build.labels())
        self._build_info_line = f"{PREFIX}build_info{{{labels}}} 1"

    def render(self, openmetrics: bool = False) -> str:
        out: List[str] = []
        self_metric_family(out, "build_info", "gauge",
                "A metric with a constant '1' value labeled by the exporter's version "
                "and the Python and Twisted running it.",
                [self._build_info_line], openmetrics)
        followers = list(self.fleet.followers.values())
        hosts = [(f, f'host="{escape_label_value(f.target.name)}"') for f in followers]
        for name, kind, help_text, getter in HOST_FAMILIES:
            lines = [f"{PREFIX}{name}{_suffix(kind)}{{{label}}} {getter(f)}" for f, label in hosts]
            self_metric_family(out, name, kind, help_text, lines, openmetrics)
        failures = [
            f'{PREFIX}stream_failures_total{{{label},reason="{escape_label_value(reason)}"}} {n}'
            for f, label in hosts
            for reason, n in sorted(f.failures.items())
        ]
        self_metric_family(out, "stream_failures", "counter",
                "Stream attempts or streams that failed, by reason.", failures, openmetrics)
        evicted_state = [
            f'{PREFIX}dedup_evicted_total{{{label},state="{state}"}} {n}'
            for f, label in hosts
            for state, n in sorted(f.dedup_evicted.items())
        ]
        self_metric_family(out, "dedup_evicted", "counter",
                "Counted events forgotten early because de-duplication state is capped, by state: "
                "window (events of the backfill overlap), oom (OOMs kept to recognise replays).",
                evicted_state, openmetrics)
        last = [
            f"{PREFIX}last_event_timestamp_seconds{{{label}}} {floatToGoString(f.last_event_time)}"
            for f, label in hosts
            if f.last_event_time is not None
        ]
        self_metric_family(out, "last_event_timestamp_seconds", "gauge",
                "Timestamp of the newest event counted from the host.", last, openmetrics)
        self_metric_family(out, "series", "gauge", "Event series currently held.",
                [f"{PREFIX}series {self.counters.series_count}"], openmetrics)
        evicted = [
            f'{PREFIX}series_evicted_total{{reason="{reason}"}} {n}'
            for reason, n in sorted(self.counters.evicted.items())
        ]
        self_metric_family(out, "series_evicted", "counter",
                "Event series forgotten, by reason (ttl, max_series, target_removed).",
                evicted, openmetrics)
        self_metric_family(out, "targets", "gauge", "Targets followed by this process (after sharding).",
                [f"{PREFIX}targets {len(followers)}"], openmetrics)
        if self.watcher is not None:
            ok = 1 if self.watcher.last_reload_successful else 0
            self_metric_family(out, "config_last_reload_successful", "gauge",
                    "1 if the last targets file (re)load succeeded.",
                    [f"{PREFIX}config_last_reload_successful {ok}"], openmetrics)
            when = self.watcher.last_reload_success_time
            if when is not None:
                self_metric_family(out, "config_last_reload_success_timestamp_seconds", "gauge",
                        "Time of the last successful targets file (re)load.",
                        [f"{PREFIX}config_last_reload_success_timestamp_seconds "
                         f"{floatToGoString(when)}"], openmetrics)
        if self.web_config is not None:
            _web_config_families(out, self.web_config, openmetrics)
        return "".join(out)


def _web_config_families(out: List[str], web_config, openmetrics: bool) -> None:
    """The ``--web-config-file`` reload state (read after the scrape's own request re-checked the file)."""
    ok = 1 if web_config.last_reload_successful else 0
    self_metric_family(out, "web_config_last_reload_successful", "gauge",
            "1 if the last (re)load of the web config file and the files it names succeeded.",
            [f"{PREFIX}web_config_last_reload_successful {ok}"], openmetrics)
    self_metric_family(out, "web_config_last_reload_success_timestamp_seconds", "gauge",
            "Time of the last successful web config file (re)load.",
            [f"{PREFIX}web_config_last_reload_success_timestamp_seconds "
             f"{floatToGoString(web_config.last_reload_success_time)}"], openmetrics)
    self_metric_family(out, "web_config_reload_failures", "counter",
            "Changes of the web config file (or a file it names) that could not be loaded; the last "
            "good configuration stayed in use.",
            [f"{PREFIX}web_config_reload_failures_total {web_config.reload_failures}"], openmetrics)


def _suffix(kind: str) -> str:
    return "_total" if kind == "counter" else ""


def self_metric_family(out: List[str], name: str, kind: str, help_text: str,
                       lines: Iterable[str], openmetrics: bool) -> None:
    """Append one family: HELP and TYPE lines (named as each format wants) and samples."""
    family = PREFIX + name + ("" if openmetrics else _suffix(kind))
    out.append(f"# HELP {family} {help_text}\n# TYPE {family} {kind}\n")
    for line in lines:
        out.append(line + "\n")
