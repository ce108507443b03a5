"""Prometheus text exposition of the event family, byte-compatible with the Go seed.

The Go seed (client_golang) writes ``cadvisor_container_events_total`` with its
label names sorted (``event_type``, ``id``, ``oom_process``) and values in Go's
shortest ``%g`` form (``2``, not ``2.0``). prometheus_client's
``generate_latest`` is ten times too slow for hundreds of thousands of series
(see benchmarks/), so this module renders the one big family by hand. It must
never render anything else: self-metrics stay with prometheus_client.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence, Tuple

EVENTS_METRIC = "cadvisor_container_events_total"
EVENTS_HELP = "cadvisor events"

#: What Prometheus' text format 0.0.4 is served as (the Go seed's header).
TEXT_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def family_header(name: str = EVENTS_METRIC, help_text: str = EVENTS_HELP) -> bytes:
    """``# HELP`` and ``# TYPE counter`` lines of a counter family."""
    help_escaped = help_text.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {name} {help_escaped}\n# TYPE {name} counter\n".encode()


def escape_label_value(value: str) -> str:
    """Escape a label value for the text format (backslash, quote, newline)."""
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def label_text(pairs: Sequence[Tuple[str, str]]) -> str:
    """``{a="x",b="y"}`` for ``pairs`` already in the order to write them."""
    return "{" + ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs) + "}"


def format_value(value: int) -> str:
    """A counter value as client_golang writes it (``strconv.FormatFloat(v, 'g', -1, 64)``).

    Integers below one million print as themselves; from 1e6 on, Go switches
    to the exponent form (``1e+06``, ``1.234567e+06``).
    """
    if value < 1_000_000:
        return str(value)
    mantissa, _, exponent = repr(float(value)).partition("e")
    if not exponent:
        digits = str(int(float(value)))
        exponent_value = len(digits) - 1
        mantissa = (digits[0] + "." + digits[1:]).rstrip("0").rstrip(".")
    else:
        exponent_value = int(exponent)
        mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
    return f"{mantissa}e+{exponent_value:02d}"


def seed_series_prefix(container_name: str, event_type: str, oom_process: str) -> str:
    """``name{event_type=..,id=..,oom_process=..} `` in the Go seed's label order."""
    return (
        f'{EVENTS_METRIC}{{event_type="{escape_label_value(event_type)}",'
        f'id="{escape_label_value(container_name)}",'
        f'oom_process="{escape_label_value(oom_process)}"}} '
    )


def render_seed_counts(counts: Mapping[Tuple[str, str, str], int]) -> bytes:
    """The whole Go-seed answer for ``counts`` keyed by (id, event_type, oom_process).

    Series are sorted as client_golang sorts them (by label values in label
    name order), so the output is byte-identical to the Go seed's.
    """
    lines = [
        seed_series_prefix(container_name, event_type, oom_process) + format_value(n)
        for (event_type, container_name, oom_process), n in sorted(
            ((et, cn, op), n) for (cn, et, op), n in counts.items()
        )
    ]
    if not lines:
        return b""
    return family_header() + ("\n".join(lines) + "\n").encode()


def render_family(header: bytes, series: Iterable[str]) -> bytes:
    """Join pre-rendered ``name{labels} value`` lines under ``header``."""
    body = "\n".join(series)
    if not body:
        return b""
    return header + (body + "\n").encode()
