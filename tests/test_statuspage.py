"""The status page: filters, parts and pages over fake followers, then the real service's page in
headless Chromium (``BrowserTests``: thousands of targets, some broken; it also makes README's
screenshot)."""

import json
import os
import re
import shutil
import tempfile
import time

from prometheus_client import CollectorRegistry
from treq.testing import StubTreq
from twisted.internet import defer, protocol, reactor, utils
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web.server import Site

from cadvisor_events import tap
from cadvisor_events.activity import MINUTES, Activity
from cadvisor_events.counters import EventCounters
from cadvisor_events.event import Event
from cadvisor_events.fleetquery import DEFAULT_LIMIT
from cadvisor_events.oomkills import OomKills, RecentKill
from cadvisor_events.selfmetrics import FleetMetrics
from cadvisor_events.simulator import Simulator
from cadvisor_events.web import build_root

from .support import figures, fleet_of, free_port, http_client, track, transport_of, until


class PagesFixture(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.counters = EventCounters(self.clock)
        self.kills = OomKills(self.clock)
        self.activity = Activity(self.counters.counted, self.clock)
        self.fleet = fleet_of(up=250, down=3, connecting=2)
        broken = self.fleet.followers["down-00001:8080"]
        broken.last_error = "<img src=x onerror=alert(1)>"
        broken.state_changes = [(1_800_000_000.0, "connecting", None),
                                (1_800_000_001.0, "down", "http://down-00001:8080: connection refused")]
        broken.backfill_since = "2026-11-24T17:25:54.000000000Z"
        self.fleet.followers["up-00000:8080"].last_events = [
            Event(container_name="/docker/<x>", timestamp="2026-11-24T17:25:55Z", event_type="containerCreation")]
        host = self.kills.host("up-00003:8080")
        host.killed(RecentKill(ns=2 * 10**9, timestamp="2026-11-24T17:00:02Z", host="up-00003:8080",
                               namespace="payments", pod="checkout-7d9f", container="api", cgroup="/pod/c1",
                               limit_cgroup="/pod", process="java", pid=7), None, None)
        host = self.kills.host("down-00002:8080")
        host.killed(RecentKill(ns=3 * 10**9, timestamp="2026-11-24T17:00:03Z", host="down-00002:8080",
                               namespace="web", pod="front-1", container="nginx", cgroup="/pod/c2",
                               limit_cgroup="/pod/c2", process="nginx", pid=8), None, None)
        counters = self.counters.host("up-00000:8080")
        for kind, n in (("oomKill", 4), ("containerCreation", 9)):
            for i in range(n):
                counters.count(Event(container_name=f"/docker/{i}", timestamp="2026-11-24T17:25:55Z", event_type=kind))
        self.root = build_root(registry=CollectorRegistry(), counters=self.counters,
                               fleet_metrics=FleetMetrics(self.fleet, self.counters), fleet=self.fleet, proxy=None,
                               clock=self.clock, oom_kills=self.kills, activity=self.activity)
        self.http = StubTreq(self.root)

    def get(self, path):
        response = self.successResultOf(self.http.get("http://x" + path))
        return response.code, self.successResultOf(response.content()).decode()


class StatusPageTests(PagesFixture):
    def test_summary_counts_and_figures(self):
        code, page = self.get("/")
        self.assertEqual(code, 200)
        summary = page[page.index("<section id='summary'>"):page.index("</section>")]
        self.assertIn("250 up", summary)
        self.assertIn("3 down", summary)
        self.assertIn("2 connecting", summary)
        self.assertIn("OOM kills (last hour)</span> <b class='down'>4</b>", summary)
        self.assertIn("series</span> <b class='n'>13</b>", summary)
        self.assertIn("cadvisor-events", summary)

    def test_broken_first_bounded_with_a_count_and_a_next_link(self):
        _, page = self.get("/")
        rows = re.findall(r"<tr class='(\w+)'><td><a href='host/([^']+)'", page)
        self.assertEqual(len(rows), DEFAULT_LIMIT)
        self.assertEqual([state for state, _ in rows[:5]], ["down"] * 3 + ["connecting"] * 2)
        self.assertIn("showing 1-100 of 255", page)
        self.assertIn("href='?offset=100'>next</a>", page)
        _, page = self.get("/?offset=200")
        self.assertIn("showing 201-255 of 255", page)
        self.assertIn("href='?offset=100'>previous</a>", page)
        self.assertNotIn(">next</a>", page)

    def test_filters_apply_to_targets_and_kills(self):
        _, page = self.get("/?state=down")
        self.assertIn("showing 1-3 of 3 matching, of 255", page)
        self.assertIn("web/front-1/nginx", page)
        self.assertNotIn("payments/checkout-7d9f/api", page)  # its host is up
        _, page = self.get("/?q=checkout")
        self.assertIn("payments/checkout-7d9f/api", page)
        self.assertIn("1 of the last 2 OOM kills", page)
        self.assertIn("no target matches these filters", page)
        self.assertIn("value='checkout'", page)  # the form keeps the filter

    def test_every_value_is_escaped(self):
        _, page = self.get("/?state=down&q=" + "%3Cimg")
        self.assertIn("&lt;img src=x onerror=alert(1)&gt;", page)
        self.assertNotIn("<img", page)
        _, page = self.get("/?q=%27%3E%3Cscript%3E")
        self.assertNotIn("'><script>", page)
        self.assertIn("value='&#x27;&gt;&lt;script&gt;'", page)

    def test_bad_filter_is_a_400_with_the_reason(self):
        code, body = self.get("/?limit=lots")
        self.assertEqual(code, 400)
        self.assertIn("limit='lots': not a whole number", body)

    def test_charts_have_a_point_per_minute(self):
        self.activity.sample()
        _, page = self.get("/")
        lines = dict(re.findall(r"<polyline class='series' data-type='(\w+)'[^>]* points='([^']*)'", page))
        self.assertEqual(set(lines), {"containerCreation", "oomKill"})
        for points in lines.values():
            self.assertEqual(len(points.split()), MINUTES)
        self.assertEqual(page.count("<rect class='bar'"), MINUTES)
        self.assertNotIn("<link", page)
        self.assertIsNone(re.search(r"<[^>]+\s(src|href)=.?(https?:)?//", page))  # nothing external

    def test_reloads_itself_without_scripts(self):
        _, page = self.get("/")
        self.assertIn("<noscript><meta http-equiv='refresh' content='30'></noscript>", page)

    def test_live_parts_as_json(self):
        code, body = self.get("/status.json?state=down")
        self.assertEqual(code, 200)
        parts = json.loads(body)
        self.assertEqual(set(parts), {"summary", "charts", "kills", "targets"})
        self.assertIn("showing 1-3 of 3 matching", parts["targets"])


class TargetsJsonTests(PagesFixture):
    def test_without_filters_the_old_shape(self):
        _, body = self.get("/targets")
        answer = json.loads(body)
        self.assertEqual(list(answer), ["targets"])
        self.assertEqual(len(answer["targets"]), 255)
        self.assertEqual(answer["targets"][0]["host"], "up-00000:8080")  # the fleet's order

    def test_filters_page_and_counts(self):
        answer = json.loads(self.get("/targets?state=unhealthy&limit=4")[1])
        self.assertEqual([t["state"] for t in answer["targets"]], ["down", "down", "down", "connecting"])
        self.assertEqual((answer["matched"], answer["total"], answer["limit"], answer["offset"]), (5, 255, 4, 0))
        self.assertEqual(answer["counts"], {"down": 3, "connecting": 2, "up": 250})
        answer = json.loads(self.get("/targets?q=zone%3Deu&offset=120")[1])
        self.assertEqual(answer["matched"], 127)
        self.assertEqual(len(answer["targets"]), 7)
        self.assertEqual(self.get("/targets?state=nope")[0], 400)

    def test_oom_kills_take_the_same_filters(self):
        kills = json.loads(self.get("/oom-kills?q=nginx")[1])["oom_kills"]
        self.assertEqual([k["pod"] for k in kills], ["front-1"])
        kills = json.loads(self.get("/oom-kills?state=up")[1])["oom_kills"]
        self.assertEqual([k["pod"] for k in kills], ["checkout-7d9f"])
        self.assertEqual(len(json.loads(self.get("/oom-kills")[1])["oom_kills"]), 2)


class HostPageTests(PagesFixture):
    def test_a_host_in_depth(self):
        code, page = self.get("/host/down-00001:8080")
        self.assertEqual(code, 200)
        changes = page[page.index("id='state-changes'"):]
        self.assertLess(changes.index("connection refused"), changes.index("connecting"))  # newest first
        self.assertIn("2026-11-24T17:25:54.000000000Z", page)  # the resume point
        self.assertIn("refused</td><td>1", page)  # failures by reason
        self.assertIn("zone=eu", page)
        self.assertNotIn("<img", page)

    def test_counts_events_and_kills_of_the_host(self):
        _, page = self.get("/host/up-00000:8080")
        self.assertIn("<td>containerCreation</td><td>9</td>", page)
        self.assertIn("/docker/&lt;x&gt;", page)
        _, page = self.get("/host/up-00003:8080")
        self.assertIn("payments/checkout-7d9f/api", page)

    def test_unknown_host_is_a_404(self):
        code, body = self.get("/host/nowhere:1")
        self.assertEqual(code, 404)
        self.assertIn("nowhere:1", body)

    def test_rows_link_to_host_pages_that_exist(self):
        _, page = self.get("/?state=down")
        for link in re.findall(r"href='(host/[^']+)'", page):
            self.assertEqual(self.get("/" + link)[0], 200, link)




# -- the page in a real browser ------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Where the browser test also writes its screenshot, when set (README's picture:
#: ``CADVISOR_EVENTS_SCREENSHOT=docs/status-page.png python -m twisted.trial tests.test_statuspage``).
SCREENSHOT_ENV = "CADVISOR_EVENTS_SCREENSHOT"


class DevTools(protocol.ProcessProtocol):
    """Chromium driven over its DevTools protocol on a pipe (``--remote-debugging-pipe``: it reads
    NUL-separated JSON commands on descriptor 3 and answers on 4), for what ``--dump-dom`` cannot
    do: a page with scripts off (headless Chromium dumps nothing then)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.sent = 0
        self.answers: dict = {}
        self.awaited: list = []
        self.ended: defer.Deferred = defer.Deferred()

    @classmethod
    def start(cls, profile: str) -> "DevTools":
        devtools = cls()
        reactor.spawnProcess(devtools, CHROMIUM, [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                                                  "--no-first-run", "--remote-debugging-pipe",
                                                  f"--user-data-dir={profile}", "about:blank"],
                             env=os.environ, childFDs={0: "w", 1: "r", 2: "r", 3: "w", 4: "r"})
        return devtools

    def childDataReceived(self, fd, data):
        if fd != 4:
            return
        self.buffer += data
        while b"\0" in self.buffer:
            raw, self.buffer = self.buffer.split(b"\0", 1)
            message = json.loads(raw)
            if "id" in message:
                answer = self.answers.pop(message["id"])
                if "error" in message:
                    answer.errback(RuntimeError(f"DevTools: {message['error']}"))
                else:
                    answer.callback(message.get("result", {}))
            for method, waiting in list(self.awaited):
                if message.get("method") == method:
                    self.awaited.remove((method, waiting))
                    waiting.callback(message)

    def send(self, method: str, session=None, **params) -> defer.Deferred:
        self.sent += 1
        message = {"id": self.sent, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        answer = self.answers[self.sent] = defer.Deferred()
        self.transport.writeToChild(3, json.dumps(message).encode() + b"\0")
        return answer.addTimeout(30, reactor)

    def event(self, method: str) -> defer.Deferred:
        waiting: defer.Deferred = defer.Deferred()
        self.awaited.append((method, waiting))
        return waiting.addTimeout(30, reactor)

    def processEnded(self, reason):
        self.ended.callback(None)

    @defer.inlineCallbacks
    def open_without_scripts(self, url: str):
        """Load ``url`` with scripts off; the DOM's HTML, and whether ``<noscript>``'s reload applies."""
        targets = yield self.send("Target.getTargets")
        (page,) = [t for t in targets["targetInfos"] if t["type"] == "page"]
        session = (yield self.send("Target.attachToTarget", targetId=page["targetId"], flatten=True))["sessionId"]
        yield self.send("Emulation.setScriptExecutionDisabled", session, value=True)
        yield self.send("Page.enable", session)
        loaded = self.event("Page.loadEventFired")
        yield self.send("Page.navigate", session, url=url)
        yield loaded
        root = (yield self.send("DOM.getDocument", session))["root"]["nodeId"]
        dom = (yield self.send("DOM.getOuterHTML", session, nodeId=root))["outerHTML"]
        # scripts off, <noscript>'s content is parsed as elements: its meta refresh is live
        reload = (yield self.send("DOM.querySelector", session, nodeId=root,
                                  selector="noscript meta[http-equiv=refresh]"))["nodeId"]
        return dom, bool(reload)

    @defer.inlineCallbacks
    def close(self):
        if not self.ended.called:
            yield self.send("Browser.close").addErrback(lambda _: None)
            yield self.ended


class BrowserTests(unittest.TestCase):
    """The real service (makeService) following the simulator on 1,500 loopback ports, one
    host of its own and 500 closed ports, its page opened in headless Chromium."""

    timeout = 300
    LIVE = 1500
    BROKEN = 500

    def setUp(self):
        if CHROMIUM is None:
            raise unittest.SkipTest("SKIPPED LOUDLY: Debian's chromium is not installed (apt-get install chromium; "
                                    ".ci/run installs it): the status page was not tested in a browser")
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        self.addCleanup(shutil.rmtree, self.profile, True)
        return self.start_fleet()

    @defer.inlineCallbacks
    def start_fleet(self):
        shared = Simulator(clock=reactor, seed=5)
        shared.fill_history(20)
        site = Site(shared.resource)
        live = []
        for _ in range(self.LIVE):
            port = reactor.listenTCP(0, site, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            live.append(f"127.0.0.1:{port.getHost().port}")
        self.special = Simulator(clock=reactor, seed=6)
        self.pod = self.special.start_pod(namespace="payments", app="checkout", containers=1)
        special_site = Site(self.special.resource)
        self.special_connections = track(special_site, self)  # kept-alive ones outlive the port
        self.special_port = reactor.listenTCP(0, special_site, interface="127.0.0.1")
        self.special_name = f"127.0.0.1:{self.special_port.getHost().port}"
        self.addCleanup(lambda: self.special_port.connected and self.special_port.stopListening())
        closed: set = set()
        while len(closed) < self.BROKEN:  # nothing listens there
            closed.add(free_port())
        broken = [f"127.0.0.1:{port}" for port in sorted(closed)]
        targets = os.path.join(self.profile, "targets.json")
        with open(targets, "w") as f:
            json.dump([{"targets": live, "labels": {"zone": "live"}},
                       {"targets": broken, "labels": {"zone": "dead"}},
                       {"targets": [self.special_name], "labels": {"zone": "special"}}], f)
        self.port = free_port()
        options = tap.Options()
        options.parseOptions(["--listen", f"tcp:{self.port}:interface=127.0.0.1", "--targets-file", targets,
                              "--no-proxy"])
        service = tap.makeService(options, reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.base = f"http://127.0.0.1:{self.port}"
        total = self.LIVE + self.BROKEN + 1
        self.last_counts = None

        @defer.inlineCallbacks
        def settled():
            answer = yield self.json("/targets?limit=1")
            counts = self.last_counts = answer["counts"]
            # a broken target is "connecting" for the instant of each retry
            return (counts["up"] == self.LIVE + 1 and counts["down"] + counts["connecting"] == self.BROKEN
                    and counts["down"] > 0.9 * self.BROKEN and answer["total"] == total)

        yield until(settled, "every live target up and every broken one down", timeout=120, interval=0.5,
                    detail=lambda: repr(self.last_counts))
        self.special.emit_oom(self.pod[-1].name, "java", 4242)
        yield until(lambda: self.json("/oom-kills?q=java").addCallback(lambda a: a["oom_kills"]),
                    "the OOM kill counted", timeout=30, interval=0.2)

    @defer.inlineCallbacks
    def fetch(self, path):
        response = yield http_client().get(self.base + path)
        body = yield response.content()
        return response.code, body

    def json(self, path):
        return self.fetch(path).addCallback(lambda answer: json.loads(answer[1]))

    @defer.inlineCallbacks
    def chromium(self, path, *extra, budget=3000):
        """What Chromium renders of ``path`` (its DOM after ``budget`` ms of virtual time)."""
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={self.profile}/profile", f"--virtual-time-budget={budget}", *extra]
        if not any(arg.startswith("--screenshot") for arg in extra):
            args.append("--dump-dom")
        out, err, code = yield utils.getProcessOutputAndValue(CHROMIUM, args + [self.base + path], env=os.environ)
        self.assertEqual(code, 0, err[-2000:])
        return out.decode("utf-8")

    @staticmethod
    def rows(dom):
        return re.findall(r'<tr class="(\w+)"><td><a href="host/([^"]+)"', dom)

    @defer.inlineCallbacks
    def test_the_page_in_chromium(self):
        started = time.monotonic()
        dom = yield self.chromium("/", budget=6000)  # past one live refresh
        browser_seconds = time.monotonic() - started
        self.assertIn("<body data-refreshed=", dom)  # the refresh script ran and replaced the parts
        summary = dom[dom.index('id="summary"'):dom.index('id="charts"')]
        self.assertIn(f"{self.LIVE + 1:,} up", summary)
        self.assertIn(f"{self.BROKEN:,} down", summary)
        rows = self.rows(dom)
        self.assertEqual(len(rows), 100)
        self.assertEqual({state for state, _ in rows}, {"down"})  # broken first
        self.assertIn(f"showing 1-100 of {self.LIVE + self.BROKEN + 1:,}", dom)
        rows = self.rows((yield self.chromium("/?limit=1000")))
        self.assertLessEqual({state for state, _ in rows[:self.BROKEN]}, {"down", "connecting"})
        self.assertEqual({state for state, _ in rows[self.BROKEN:]}, {"up"})
        self.assertEqual(len(rows), 1000)

        # charts: a line of 60 points per event type counted, 60 bars of OOM kills
        lines = re.findall(r'<polyline class="series" data-type="(\w+)"[^>]* points="([^"]*)"', dom)
        self.assertIn("oomKill", {kind for kind, _ in lines})
        for kind, points in lines:
            self.assertEqual(len(points.split()), 60, kind)
        kills_chart = dom[dom.index('id="kills-chart"'):]
        self.assertEqual(kills_chart[:kills_chart.index("</svg>")].count('class="bar"'), 60)

        # filters, in the URL as the form sends them
        dom = yield self.chromium("/?state=up&q=special")
        self.assertEqual([name for _, name in self.rows(dom)], [self.special_name])
        dom = yield self.chromium("/?q=dead")
        rows = self.rows(dom)
        self.assertLessEqual({state for state, _ in rows}, {"down", "connecting"})
        self.assertIn(f"of {self.BROKEN:,} matching", dom)
        dom = yield self.chromium("/?q=payments")
        kills = dom[dom.index('id="kills"'):dom.index('id="targets"')]
        self.assertIn("java", kills)
        self.assertIn(self.special_name, kills)
        self.assertIn("no target matches these filters", dom)

        # with scripts off: the same page, server-rendered, reloading itself
        devtools = DevTools.start(os.path.join(self.profile, "devtools"))
        self.addCleanup(devtools.close)
        dom, reloads = yield devtools.open_without_scripts(self.base + "/?state=down")
        self.assertTrue(reloads)
        self.assertNotIn("<body data-refreshed=", dom)
        self.assertEqual(len(self.rows(dom)), 100)
        self.assertEqual(len(re.findall(r'<polyline class="series"', dom)), len(lines))
        yield devtools.close()

        # a state change the test causes shows on the host's page
        self.special.end_streams()
        yield self.special_port.stopListening()
        for connection, _ in list(self.special_connections.values()):  # no reconnect over a kept-alive one
            transport_of(connection).abortConnection()
        yield until(lambda: self.json(f"/targets?q={self.special_name}").addCallback(
            lambda a: a["targets"][0]["state"] == "down"), "the special host down", timeout=30, interval=0.2)
        dom = yield self.chromium(f"/host/{self.special_name}")
        changes = dom[dom.index('id="state-changes"'):]
        body = changes[changes.index("<tbody>"):]
        newest = body[:body.index("</tr>")]
        self.assertRegex(newest, f"<td class=\"down\">down</td><td>(stream cut: |)http://{re.escape(self.special_name)}: "
                                 "(stream ended by the server|response failed|connection refused)")
        self.assertIn('<td class="up">up</td><td></td>', body)  # before it, the stream was up
        self.assertIn("zone=special", dom)
        self.assertIn(self.pod[-1].name, dom[dom.index('id="last-events"'):])  # its creation, counted

        # size and time of the page, as a browser gets it
        started = time.monotonic()
        code, page = yield self.fetch("/")
        seconds = time.monotonic() - started
        self.assertEqual(code, 200)
        self.assertLess(len(page), 1_000_000)
        self.assertLess(seconds, 1.0)
        figures(self, targets=self.LIVE + self.BROKEN + 1, page_bytes=len(page), page_seconds=seconds,
                chromium_dump_seconds=browser_seconds)

        # the screenshot README shows
        shot = os.path.join(self.profile, "status-page.png")
        yield self.chromium("/", f"--screenshot={shot}", "--window-size=1280,1400", "--hide-scrollbars")
        with open(shot, "rb") as f:
            png = f.read()
        self.assertTrue(png.startswith(b"\x89PNG"))
        if os.environ.get(SCREENSHOT_ENV):
            shutil.copyfile(shot, os.environ[SCREENSHOT_ENV])
