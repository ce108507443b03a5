"""The status page's charts, drawn by the server as inline SVG: events per minute by type (a line
per type) and OOM kills per minute (a bar per minute).

Inline SVG needs no script, font or stylesheet from anywhere, so the page
works on an air-gapped network, and a browser with scripts off shows the same
picture. One point per minute, always: a chart's shape never depends on when
the exporter started. Every text drawn is escaped.
"""

from __future__ import annotations

import html
from typing import Dict, List

__all__ = ["events_chart", "kills_chart", "CHART_WIDTH", "CHART_HEIGHT"]

_e = html.escape

CHART_WIDTH = 600
CHART_HEIGHT = 160
_PAD = 30
#: The plot's top edge (title and legend above it).
_TOP = 48
#: Line colours by event type (others cycle through the rest).
COLOURS = {"containerCreation": "#1f77b4", "containerDeletion": "#7f7f7f", "oom": "#ff7f0e", "oomKill": "#d62728"}
OTHER_COLOURS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _axis(title: str, top: int, minutes: int) -> str:
    bottom = CHART_HEIGHT - 20
    return (f"<text x='{_PAD}' y='12' class='t'>{_e(title)}</text>"
            f"<text x='2' y='{bottom}' class='a'>0</text><text x='2' y='{_TOP + 4}' class='a'>{top:,}</text>"
            f"<line x1='{_PAD}' y1='{bottom}' x2='{CHART_WIDTH}' y2='{bottom}' class='x'/>"
            f"<text x='{_PAD}' y='{CHART_HEIGHT - 5}' class='a'>-{minutes} min</text>"
            f"<text x='{CHART_WIDTH - 30}' y='{CHART_HEIGHT - 5}' class='a'>now</text>")


def _x(i: int, minutes: int) -> float:
    return _PAD + (CHART_WIDTH - _PAD - 5) * (i / max(minutes - 1, 1))


def _y(value: int, top: int) -> float:
    bottom = CHART_HEIGHT - 20
    return bottom - (bottom - _TOP) * value / top


def events_chart(per_minute: Dict[str, List[int]], minutes: int) -> str:
    """Events per minute by type, one line (``minutes`` points) per type seen in the hour."""
    top = max([1] + [max(counts) for counts in per_minute.values()])
    lines = []
    legend = []
    others = iter(OTHER_COLOURS * 10)
    for n, (kind, counts) in enumerate(per_minute.items()):
        colour = COLOURS.get(kind) or next(others, "#000")
        points = " ".join(f"{_x(i, minutes):.1f},{_y(c, top):.1f}" for i, c in enumerate(counts))
        lines.append(f"<polyline class='series' data-type='{_e(kind)}' fill='none' stroke='{colour}' "
                     f"stroke-width='1.5' points='{points}'><title>{_e(kind)}</title></polyline>")
        legend.append(f"<text x='{_PAD + 200 * (n % 3)}' y='{25 + 11 * (n // 3)}' "
                      f"fill='{colour}' class='l'>{_e(kind)}: {sum(counts):,}</text>")
    if not lines:
        legend.append(f"<text x='{CHART_WIDTH // 2 - 60}' y='{CHART_HEIGHT // 2}' class='a'>no events counted yet</text>")
    return (f"<svg id='events-chart' xmlns='http://www.w3.org/2000/svg' role='img' width='{CHART_WIDTH}' "
            f"height='{CHART_HEIGHT}' viewBox='0 0 {CHART_WIDTH} {CHART_HEIGHT}' data-minutes='{minutes}'>"
            f"<title>events per minute by type, last {minutes} minutes</title>"
            f"{_axis('events per minute by type', top, minutes)}{''.join(lines)}{''.join(legend)}</svg>")


def kills_chart(kills: List[int]) -> str:
    """OOM kills per minute, one bar per minute."""
    minutes = len(kills)
    top = max([1] + kills)
    width = (CHART_WIDTH - _PAD - 5) / max(minutes, 1)
    bottom = CHART_HEIGHT - 20
    bars = "".join(
        f"<rect class='bar' x='{_PAD + i * width:.1f}' y='{_y(c, top):.1f}' width='{max(width - 1, 1):.1f}' "
        f"height='{bottom - _y(c, top):.1f}' fill='#d62728'><title>{c:,}</title></rect>"
        for i, c in enumerate(kills))
    return (f"<svg id='kills-chart' xmlns='http://www.w3.org/2000/svg' role='img' width='{CHART_WIDTH}' "
            f"height='{CHART_HEIGHT}' viewBox='0 0 {CHART_WIDTH} {CHART_HEIGHT}' data-minutes='{minutes}'>"
            f"<title>OOM kills per minute, last {minutes} minutes</title>"
            f"{_axis(f'OOM kills per minute ({sum(kills):,} in the last hour)', top, minutes)}{bars}</svg>")
