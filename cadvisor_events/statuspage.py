"""The status page: ``/`` (the fleet at a glance), ``/host/<host:port>`` (one host in depth) and
``/status.json`` (the page's live parts).

What an operator reads first is a summary (targets up, down, connecting;
events per second; OOM kills in the last hour; gaps; series; version;
uptime), then charts (:mod:`cadvisor_events.charts`) of
:class:`~cadvisor_events.activity.Activity`, the recent OOM kills and the
targets, unhealthy first. Targets and kills are filtered by state and text
(``?state=down&q=eu``, :mod:`cadvisor_events.fleetquery`) and the target list is a bounded page with a count
("showing 1-100 of 10,000"), so the page for a fleet of 10,000 hosts stays
small and quick to render: only the rows shown are rendered, and no row is
rendered for a host it does not show. A small inline script refreshes the
live parts from ``/status.json`` every few seconds; without scripts the page
reloads itself (``<noscript>`` meta refresh), server-rendered either way.

Every value shown is escaped here, once, by :func:`html.escape`; nothing here
reads anything but the fleet's plain attributes, the counters and the
activity ring, and it never changes them.
"""

from __future__ import annotations

import html
import json
import time
from typing import Any, Dict, Optional, Sequence, Tuple
from urllib.parse import quote, unquote

from . import build_info
from .charts import events_chart, kills_chart
from .fleetquery import (DEFAULT_LIMIT, STATE_GROUPS, BadQuery, TargetQuery, group_of, kill_matches, label_text,
                         labels_of, select_targets)
from .plaintext import PlainTextResource, error_body

__all__ = ["StatusPage", "HostPage", "StatusJson", "REFRESH_SECONDS", "RELOAD_SECONDS"]

#: Seconds between live refreshes of the page (script), and between reloads without scripts.
REFRESH_SECONDS = 5
RELOAD_SECONDS = 30
#: Last events listed on a host page.
HOST_LAST_EVENTS = 20

# -- rendering --------------------------------------------------------------------------------

_e = html.escape


def when(seconds: Optional[float]) -> str:
    if seconds is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def host_link(name: str, prefix: str = "") -> str:
    """The relative URL of a host's page (from ``/``; ``prefix`` ``../`` from a host page)."""
    return f"{prefix}host/{quote(name, safe=':[]')}"


class StatusParts:
    """Renders the page's parts (summary, charts, kills, targets) for one request."""

    #: ``cadvisor-events 0.1.0 (Twisted ..., Python ...)``, as ``--version`` prints it.
    identity = build_info().describe()

    def __init__(self, fleet, oom_kills, counters, activity) -> None:
        self.fleet = fleet
        self.oom_kills = oom_kills
        self.counters = counters
        self.activity = activity

    def parts(self, query: TargetQuery) -> Dict[str, str]:
        selected, counts = select_targets(self.fleet, query)
        return {
            "summary": self.summary(counts),
            "charts": self.charts(),
            "kills": self.kills(query),
            "targets": self.targets(query, selected, counts),
        }

    def summary(self, counts: Dict[str, int]) -> str:
        activity = self.activity
        gaps = sum(f.gaps for f in self.fleet.followers.values())
        rate = activity.events_per_second() if activity is not None else 0.0
        kills = activity.oom_kills_last_hour() if activity is not None else 0
        series = self.counters.series_count if self.counters is not None else 0
        uptime = duration(activity.uptime()) if activity is not None else "?"
        tiles = [
            ("targets", f"{counts['up']:,} of {counts['total']:,} targets up: <b class='up'>{counts['up']:,} up</b> <b class='down'>{counts['down']:,} down</b> "
                        f"<b class='connecting'>{counts['connecting']:,} connecting</b>"),
            ("events per second (last minute)", f"<b class='n'>{rate:,.1f}</b>"),
            ("OOM kills (last hour)", f"<b class='{'down' if kills else 'up'}'>{kills:,}</b>"),
            ("gaps in history", f"<b class='{'down' if gaps else 'up'}'>{gaps:,}</b>"),
            ("series", f"<b class='n'>{series:,}</b>"),
            ("uptime", f"<b class='n'>{_e(uptime)}</b>"),
            ("version", _e(self.identity)),
        ]
        return "".join(f"<div class='tile'><span>{_e(name)}</span> {value}</div>" for name, value in tiles)

    def charts(self) -> str:
        if self.activity is None:
            return ""
        per_minute = self.activity.per_minute()
        kills = per_minute.get("oomKill", [0] * self.activity.minutes)
        return (events_chart(per_minute, self.activity.minutes) + kills_chart(kills))

    def kills(self, query: TargetQuery) -> str:
        if self.oom_kills is None:
            return "<p>OOM kills are not followed.</p>"
        recent = self.oom_kills.recent()
        shown = [kill for kill in recent if kill_matches(kill, query, self.fleet)]
        rows = "".join(kill_row(kill) for kill in shown)
        count = f"{len(shown):,} of the last {len(recent):,}" if len(shown) != len(recent) else f"{len(shown):,}"
        return (f"<p class='count'>{count} OOM kills</p><table><thead><tr><th>time</th><th>host</th>"
                "<th>namespace/pod/container or cgroup</th><th>process</th><th>pid</th></tr></thead>"
                f"<tbody>{rows or NO_KILLS}</tbody></table>")

    def targets(self, query: TargetQuery, selected: Sequence[Tuple[str, Any]], counts: Dict[str, int]) -> str:
        page = selected[query.offset:query.offset + query.limit]
        rows = "".join(self.target_row(name, follower) for name, follower in page)
        if not counts["total"]:
            rows = NO_TARGETS
        elif not page:
            rows = NO_MATCH
        first = query.offset + 1 if page else 0
        nav = []
        if query.offset > 0:
            nav.append(f"<a href='{_e(query.link(offset=max(0, query.offset - query.limit)))}'>previous</a>")
        if query.offset + query.limit < len(selected):
            nav.append(f"<a href='{_e(query.link(offset=query.offset + query.limit))}'>next</a>")
        filtered = f" matching, of {counts['total']:,}" if len(selected) != counts["total"] else ""
        return (f"<p class='count' id='showing'>showing {first:,}-{query.offset + len(page):,} of "
                f"{len(selected):,}{filtered} {' '.join(nav)}</p>"
                "<table><thead><tr><th>target</th><th>labels</th><th>state</th><th>since</th><th>last event</th>"
                "<th>events received</th><th>last error</th></tr></thead>"
                f"<tbody>{rows}</tbody></table>")

    def target_row(self, name: str, follower) -> str:
        group = group_of(follower.state)
        return (f"<tr class='{group}'><td><a href='{_e(host_link(name))}'>{_e(follower.target.base_url)}</a></td>"
                f"<td>{_e(label_text(labels_of(self.fleet, name)))}</td><td>{_e(follower.state)}</td>"
                f"<td>{when(follower.state_since)}</td><td>{when(follower.last_event_time)}</td>"
                f"<td>{follower.received:,}</td><td>{_e(follower.last_error or '')}</td></tr>")


def kill_row(kill) -> str:
    who = "/".join(p for p in (kill.namespace, kill.pod, kill.container) if p) or kill.cgroup
    return (f"<tr><td>{_e(kill.timestamp)}</td><td><a href='{_e(host_link(kill.host))}'>{_e(kill.host)}</a></td>"
            f"<td>{_e(who)}{' (node OOM)' if kill.node_oom else ''}</td><td>{_e(kill.process)}</td>"
            f"<td>{int(kill.pid)}</td></tr>")


NO_KILLS = "<tr><td colspan='5'>none seen</td></tr>"
NO_TARGETS = "<tr><td colspan='7'>no targets (check --target / --targets-file / --shard)</td></tr>"
NO_MATCH = "<tr><td colspan='7'>no target matches these filters</td></tr>"

# -- the resources ------------------------------------------------------------------------------

STYLE = """body{font-family:sans-serif;margin:1em;color:#222}
table{border-collapse:collapse;margin-bottom:1em}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
td:nth-child(4),td:nth-child(5),#kills td:first-child,#last-events td:first-child{white-space:nowrap}
.tile{display:inline-block;border:1px solid #ccc;border-radius:4px;padding:6px 10px;margin:0 6px 6px 0}
.tile span{display:block;font-size:80%;color:#555}
b.up,td.up{color:#070} b.down,td.down{color:#a00} b.connecting,td.connecting{color:#a60}
tr.down td:nth-child(3){color:#a00;font-weight:bold} tr.connecting td:nth-child(3){color:#a60}
tr.up td:nth-child(3){color:#070}
svg{border:1px solid #ddd;margin:0 8px 8px 0;background:#fff}
svg .t{font-size:12px;font-weight:bold} svg .a{font-size:10px;fill:#555} svg .l{font-size:11px}
svg .x{stroke:#999} #kills{max-height:20em;overflow:auto;display:inline-block}
form{margin:0.5em 0} .count{color:#555}"""

SCRIPT = """(function(){
var ids=["summary","charts","kills","targets"];
function refresh(){
 fetch("status.json"+location.search,{credentials:"same-origin"}).then(function(r){
  if(!r.ok)throw new Error(r.status);return r.json();
 }).then(function(parts){
  ids.forEach(function(id){var el=document.getElementById(id);if(el&&id in parts)el.innerHTML=parts[id];});
  document.body.setAttribute("data-refreshed",String(Date.now()));
 }).catch(function(){});
}
setInterval(refresh,%d);
})();"""


def page(title: str, body: str, refresh: bool = True) -> bytes:
    reload = f"<noscript><meta http-equiv='refresh' content='{RELOAD_SECONDS}'></noscript>" if refresh else ""
    script = f"<script>{SCRIPT % (REFRESH_SECONDS * 1000)}</script>" if refresh else ""
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<meta name='viewport' content='width=device-width'>{reload}<style>{STYLE}</style></head>"
            f"<body>{body}{script}</body></html>\n").encode("utf-8")


NAV = ("<p><a href='/metrics'>/metrics</a> &middot; <a href='/targets'>/targets</a> &middot; "
       "<a href='/oom-kills'>/oom-kills</a> &middot; <a href='/-/healthy'>/-/healthy</a> &middot; "
       "<a href='/-/ready'>/-/ready</a> &middot; /proxy/&lt;host:port&gt;</p>")


def filter_form(query: TargetQuery, action: str = "") -> str:
    options = "".join(f"<option value='{s}'{' selected' if s == query.state else ''}>{s}</option>"
                      for s in ("all", "unhealthy") + STATE_GROUPS)
    limit = f"<input type='hidden' name='limit' value='{query.limit}'>" if query.limit != DEFAULT_LIMIT else ""
    return (f"<form method='get' action='{_e(action)}'>state <select name='state'>{options}</select> "
            f"<input type='search' name='q' placeholder='host, label, error, pod, process' size='32' "
            f"value='{_e(query.text)}'>{limit} <button type='submit'>filter</button> <a href='?'>clear</a></form>")


class _Page(PlainTextResource):
    isLeaf = True

    def __init__(self, fleet, oom_kills=None, counters=None, activity=None) -> None:
        super().__init__()
        self.fleet = fleet
        self.oom_kills = oom_kills
        self.counters = counters
        self.activity = activity

    def status_parts(self) -> StatusParts:
        return StatusParts(self.fleet, self.oom_kills, self.counters, self.activity)

    def query(self, request) -> TargetQuery:
        return TargetQuery.from_args(request.args)


class StatusPage(_Page):
    """``/``: summary, charts, recent OOM kills and the filtered targets, unhealthy first."""

    identity = StatusParts.identity

    def render_GET(self, request) -> bytes:
        try:
            query = self.query(request)
        except BadQuery as e:
            return error_body(request, 400, f"bad filter: {e}")
        parts = self.status_parts()
        parts.identity = self.identity
        p = parts.parts(query)
        body = (f"<h1>cadvisor-events</h1>{NAV}<section id='summary'>{p['summary']}</section>"
                f"<section id='charts'>{p['charts']}</section>{filter_form(query)}"
                f"<h2>Recent OOM kills</h2><section id='kills'>{p['kills']}</section>"
                f"<h2>Targets</h2><section id='targets'>{p['targets']}</section>"
                f"<footer><p>{_e(self.identity)}</p></footer>")
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return page("cadvisor-events", body)


class StatusJson(_Page):
    """``/status.json``: the page's live parts (summary, charts, kills, targets) as HTML fragments
    in JSON, for the page's refresh script; the same filters as ``/``."""

    def render_GET(self, request) -> bytes:
        try:
            query = self.query(request)
        except BadQuery as e:
            return error_body(request, 400, f"bad filter: {e}")
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        return json.dumps(self.status_parts().parts(query)).encode()


class HostPage(_Page):
    """``/host/<host:port>``: one host in depth: state, labels, resume point, gaps, failures by
    reason, the last state changes with their reasons, its last events and OOM kills."""

    def render_GET(self, request) -> bytes:
        name = unquote("/".join(segment.decode("utf-8", "replace") for segment in request.postpath))
        follower = self.fleet.followers.get(name)
        if follower is None:
            return error_body(request, 404, f"no followed target {name!r} (see /targets)")
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return page(f"{name} - cadvisor-events", self.body(name, follower))

    def body(self, name: str, follower) -> str:
        group = group_of(follower.state)
        labels = labels_of(self.fleet, name)
        facts = [
            ("URL", _e(follower.target.base_url)),
            ("state", f"<b class='{group}'>{_e(follower.state)}</b> since {when(follower.state_since)}"),
            ("labels", _e(label_text(labels)) or "none"),
            ("last event", when(follower.last_event_time)),
            ("resume point (next backfill's start_time)", _e(str(getattr(follower, "backfill_since", None) or
                                                                   "the whole history"))),
            ("gaps in history", f"{follower.gaps:,}"),
            ("events received", f"{follower.received:,}"),
            ("backfilled / duplicates dropped / invalid lines",
             f"{follower.backfilled:,} / {follower.duplicates_dropped:,} / {follower.invalid_lines:,}"),
            ("streams opened", f"{follower.connects:,}"),
            ("last error", _e(follower.last_error or "none")),
        ]
        facts_html = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in facts)
        failures = "".join(f"<tr><td>{_e(reason)}</td><td>{n:,}</td></tr>"
                           for reason, n in sorted(follower.failures.items(), key=lambda item: -item[1]))
        changes = "".join(
            f"<tr><td>{when(at)}</td><td class='{group_of(state)}'>{_e(state)}</td>"
            f"<td>{_e(reason or '')}</td></tr>"
            for at, state, reason in reversed(list(getattr(follower, "state_changes", ()))))
        events = "".join(
            f"<tr><td>{_e(event.timestamp)}</td><td>{_e(event.event_type)}</td><td>{_e(event.container_name)}</td></tr>"
            for event in list(getattr(follower, "last_events", ()))[:HOST_LAST_EVENTS])
        counted = self.counted_by_type(name)
        kills = ("" if self.oom_kills is None else
                 "".join(kill_row(kill) for kill in self.oom_kills.recent() if kill.host == name))
        return (f"<p><a href='../'>&larr; all targets</a></p><h1>{_e(name)}</h1>"
                f"<table id='facts'>{facts_html}</table>"
                f"<h2>Failures by reason</h2><table id='failures'><thead><tr><th>reason</th><th>count</th></tr>"
                f"</thead><tbody>{failures or '<tr><td colspan=2>none</td></tr>'}</tbody></table>"
                f"<h2>State changes (last 50, newest first)</h2><table id='state-changes'><thead><tr><th>time</th>"
                f"<th>state</th><th>reason</th></tr></thead><tbody>"
                f"{changes or '<tr><td colspan=3>none</td></tr>'}</tbody></table>"
                f"<h2>Events counted by type</h2><table id='counted'><thead><tr><th>type</th><th>events</th></tr>"
                f"</thead><tbody>{counted or '<tr><td colspan=2>none</td></tr>'}</tbody></table>"
                f"<h2>Last events</h2><table id='last-events'><thead><tr><th>time</th><th>type</th>"
                f"<th>container</th></tr></thead><tbody>{events or '<tr><td colspan=3>none</td></tr>'}</tbody></table>"
                f"<h2>Recent OOM kills</h2><table id='host-kills'><thead><tr><th>time</th><th>host</th>"
                f"<th>namespace/pod/container or cgroup</th><th>process</th><th>pid</th></tr></thead>"
                f"<tbody>{kills or NO_KILLS}</tbody></table>")

    def counted_by_type(self, name: str) -> str:
        host = None if self.counters is None else self.counters.hosts.get(name)
        if host is None:
            return ""
        by_type: Dict[str, int] = {}
        for (_, kind, _), count in host.values().items():
            by_type[kind] = by_type.get(kind, 0) + count
        return "".join(f"<tr><td>{_e(kind)}</td><td>{n:,}</td></tr>" for kind, n in sorted(by_type.items()))
