"""Tests for the cadvisor_events.simulator package.

Each rule of CADVISOR-API.md (and each cAdvisor quirk the simulator copies
from the Go source) has a test here. History goes through treq's StubTreq;
streams go through a real loopback socket, read as raw bytes or with treq.
Simulated time is always a task.Clock; nothing sleeps.
"""

from __future__ import annotations

import json
import re
import time

from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web._newclient import ResponseFailed, ResponseNeverReceived
from twisted.web.server import Site

from cadvisor_events.simulator import (
    ControlledSite, EventQuery, Simulator, clean_go_path, container_names, go_duration_error, go_json_string,
    go_quote, parse_go_bool, parse_go_int, parse_go_query, parse_rfc3339, rfc3339nano,
)
from cadvisor_events.simulator import tap as simulator_tap

NS = 1_000_000_000
START = 1_764_000_000  # 2025-11-24T16:00:00Z
API = "http://cadvisor.test/api/v1.3/events"
ALL = "subcontainers=true&max_events=-1&all_events=true"
TRUE_SPELLINGS = ("1", "t", "T", "TRUE", "true", "True")
FALSE_SPELLINGS = ("0", "f", "F", "FALSE", "false", "False")
GARBAGE_BOOLS = ("yes", "on", "tRUE", "", " true", "true ", "2", "y")
WATCH_ERROR = b"for a call to watch, request.StartTime and request.EndTime must be uninitialized\n"


def make_simulator(**kwargs) -> Simulator:
    clock = task.Clock()
    clock.advance(START)
    return Simulator(clock=clock, **kwargs)


class HistoryMixin:
    """Ask a simulator's resource over StubTreq (in memory, synchronous)."""

    def get(self, simulator: Simulator, url: str):
        stub = StubTreq(simulator.resource)
        response = self.successResultOf(stub.get(url))
        return response, self.successResultOf(stub.content(response))

    def history(self, simulator: Simulator, query: str, path: str = "", version: str = "v1.3") -> list:
        response, body = self.get(simulator, f"http://cadvisor.test/api/{version}/events{path}?{query}")
        self.assertEqual((response.code, response.headers.getRawHeaders("content-type")),
                         (200, ["application/json"]), body)
        return json.loads(body)

    def names(self, simulator: Simulator, query: str, path: str = "") -> list[str]:
        return [event["container_name"] for event in self.history(simulator, query, path)]


# --- wire format -------------------------------------------------------------------


class GoJsonStringTests(unittest.TestCase):
    def test_html_characters_and_line_separators_are_escaped(self):
        self.assertEqual(go_json_string("a<b>&c\u2028\u2029"), '"a\\u003cb\\u003e\\u0026c\\u2028\\u2029"')

    def test_quotes_backslashes_and_control_characters(self):
        self.assertEqual(go_json_string('"\\\n\r\t\b\f\x00\x01\x1f\x7f'),
                         '"\\"\\\\\\n\\r\\t\\b\\f\\u0000\\u0001\\u001f\x7f"')

    def test_non_ascii_stays_raw(self):
        self.assertEqual(go_json_string("café 进程 🐳 ünï"), '"café 进程 🐳 ünï"')

    def test_invalid_utf8_becomes_escaped_replacement_rune(self):
        self.assertEqual(go_json_string(b"a\xffb".decode("utf-8", "surrogateescape")), '"a\\ufffdb"')


class TimestampFormatTests(unittest.TestCase):
    def test_whole_second_has_no_fraction(self):
        self.assertEqual(rfc3339nano(START * NS, -180), "2025-11-24T13:00:00-03:00")

    def test_utc_is_written_as_z(self):
        self.assertEqual(rfc3339nano(START * NS, 0), "2025-11-24T16:00:00Z")

    def test_trailing_zeros_are_trimmed(self):
        self.assertEqual(rfc3339nano(START * NS + 120_000_000, 0), "2025-11-24T16:00:00.12Z")
        self.assertEqual(rfc3339nano(START * NS + 1, 0), "2025-11-24T16:00:00.000000001Z")
        self.assertEqual(rfc3339nano(START * NS + 873677656, 0), "2025-11-24T16:00:00.873677656Z")

    def test_positive_offsets_with_minutes(self):
        self.assertEqual(rfc3339nano(START * NS + 5_000, 330), "2025-11-24T21:30:00.000005+05:30")


class RFC3339ParseTests(unittest.TestCase):
    def test_same_instant_in_any_offset(self):
        expected = START * NS + 123456789
        for text in ("2025-11-24T16:00:00.123456789Z", "2025-11-24T13:00:00.123456789-03:00",
                     "2025-11-24T21:30:00.123456789+05:30", "2025-11-24T16:00:00,123456789Z",
                     "2025-11-24T16:00:00.1234567891234Z"):
            self.assertEqual(parse_rfc3339(text), expected, text)

    def test_go_leniency(self):
        self.assertEqual(parse_rfc3339("2025-11-24T6:00:00Z"), (START - 10 * 3600) * NS)
        self.assertEqual(parse_rfc3339("2025-11-24T16:00:00.5Z"), START * NS + NS // 2)
        self.assertEqual(parse_rfc3339("2024-02-29T00:00:00Z") is None, False)

    def test_rejections(self):
        for text in ("2025-11-24t16:00:00Z", "2025-11-24T16:00:00z", "2025-11-24 16:00:00Z", "2025-11-24T16:00:00",
                     "2025-11-24T16:00:60Z", "2025-02-29T00:00:00Z", "2025-04-31T00:00:00Z", "2025-13-01T00:00:00Z",
                     "2025-11-24T24:00:00Z", "2025-11-24T16:00:00+3:00", "2025-11-24T16:00:00+0300",
                     "2025-11-24T16:00:00 03:00", "2025-11-24T16:00:00.Z", "1764000000", ""):
            self.assertIsNone(parse_rfc3339(text), text)


class GoScalarParsingTests(unittest.TestCase):
    def test_parse_bool_table(self):
        for text in TRUE_SPELLINGS:
            self.assertIs(parse_go_bool(text), True)
        for text in FALSE_SPELLINGS:
            self.assertIs(parse_go_bool(text), False)
        for text in GARBAGE_BOOLS:
            self.assertIsNone(parse_go_bool(text), text)

    def test_atoi(self):
        self.assertEqual([parse_go_int(t) for t in ("5", "+5", "-1", "010", "9223372036854775807")],
                         [5, 5, -1, 10, 9223372036854775807])
        for text in (" 1", "1 ", "1_000", "1.0", "", "0x10", "9223372036854775808", "٣"):
            self.assertIsNone(parse_go_int(text), text)

    def test_query_parsing(self):
        self.assertEqual(parse_go_query(b"a=1&a=2&b=x+y%2Bz&&c&d;e=1&f=%zz&g=%E2%80%A8"),
                         {"a": ["1", "2"], "b": ["x y+z"], "c": [""], "g": ["\u2028"]})

    def test_clean_path(self):
        for raw, cleaned in (("/", "/"), ("//docker//a/", "/docker/a"), ("/docker/./a/../b", "/docker/b"),
                             ("/../..", "/"), ("/a/b/..", "/a")):
            self.assertEqual(clean_go_path(raw), cleaned)

    def test_go_quote(self):
        self.assertEqual(go_quote('a"b\\c\n\x01é\u2028'), '"a\\"b\\\\c\\n\\x01é\\u2028"')

    def test_duration_errors(self):
        self.assertIsNone(go_duration_error("1h30m"))
        self.assertIsNone(go_duration_error("-1.5µs"))
        self.assertIsNone(go_duration_error("0"))
        self.assertEqual(go_duration_error("5"), 'time: missing unit in duration "5"')
        self.assertEqual(go_duration_error("5x"), 'time: unknown unit "x" in duration "5x"')
        self.assertEqual(go_duration_error(".s"), 'time: invalid duration ".s"')


# --- event JSON -------------------------------------------------------------------------


class EventJsonTests(unittest.TestCase):
    def test_creation_event_bytes(self):
        sim = make_simulator()
        event = sim.emit("/docker/abc", "containerCreation", timestamp_ns=START * NS + 873677656)
        self.assertEqual(event.to_json(), b'{"container_name":"/docker/abc","timestamp":"2025-11-24T13:00:00.873677656'
                                          b'-03:00","event_type":"containerCreation","event_data":{}}')
        self.assertEqual(event.timestamp, "2025-11-24T13:00:00.873677656-03:00")

    def test_oom_kill_event_bytes_with_hostile_process_name(self):
        sim = make_simulator(tz_offset_minutes=0)
        event = sim.emit("/kubepods/burstable/pod1/c", "oomKill", timestamp_ns=START * NS, pid=23081,
                         process_name='a <b> & "c" \\ d\né', constraint="CONSTRAINT_MEMCG")
        self.assertEqual(event.to_json(), (
            '{"container_name":"/kubepods/burstable/pod1/c","timestamp":"2025-11-24T16:00:00Z",'
            '"event_type":"oomKill","event_data":{"oom":{"pid":23081,"process_name":'
            '"a \\u003cb\\u003e \\u0026 \\"c\\" \\\\ d\\né","constraint":"CONSTRAINT_MEMCG"}}}').encode())

    def test_oom_kill_always_carries_oom_data(self):
        event = make_simulator().emit("/", "oomKill")
        self.assertIn(b'"event_data":{"oom":{"pid":0,"process_name":""}}', event.to_json())
        self.assertEqual((event.pid, event.process_name), (0, ""))

    def test_deletion_exit_code(self):
        event = make_simulator().emit("/docker/a", "containerDeletion", exit_code=-1)
        self.assertTrue(event.to_json().endswith(b'"event_data":{"container_deletion":{"exit_code":-1}}}'))

    def test_automatic_timestamps_are_strictly_increasing(self):
        sim = make_simulator(tz_offset_minutes=0)
        stamps = [sim.emit("/a", "containerCreation").timestamp for _ in range(3)]
        self.assertEqual(stamps, ["2025-11-24T16:00:00Z", "2025-11-24T16:00:00.000000001Z",
                                  "2025-11-24T16:00:00.000000002Z"])
        sim.clock.advance(1.5)
        self.assertEqual(sim.emit("/a", "containerCreation").timestamp, "2025-11-24T16:00:01.5Z")

    def test_emit_random_names_survive_a_json_round_trip(self):
        sim = make_simulator()
        for event in sim.emit_random(400):
            decoded = json.loads(event.to_json())
            self.assertEqual(list(decoded), ["container_name", "timestamp", "event_type", "event_data"])
            if event.event_type == "oomKill":
                self.assertEqual(decoded["event_data"]["oom"]["process_name"], event.process_name)


# --- history over HTTP --------------------------------------------------------------


class HistoryResponseTests(HistoryMixin, unittest.TestCase):
    def test_empty_history_is_an_empty_array(self):
        response, body = self.get(make_simulator(), API + "?" + ALL)
        self.assertEqual((response.code, body), (200, b"[]"))

    def test_body_is_json_marshal_of_the_events_oldest_first(self):
        sim = make_simulator()
        late = sim.emit("/b", "oom", timestamp_ns=START * NS + 2)
        early = sim.emit("/a", "containerCreation", timestamp_ns=START * NS + 1)
        _, body = self.get(sim, API + "?" + ALL)
        self.assertEqual(body, b"[" + early.to_json() + b"," + late.to_json() + b"]")

    def test_served_under_v2_versions_too(self):
        sim = make_simulator()
        sim.emit_random(5)
        expected = self.history(sim, ALL)
        for version in ("v2.0", "v2.1"):
            self.assertEqual(self.history(sim, ALL, version=version), expected)

    def test_no_type_selected_means_no_events(self):
        sim = make_simulator()
        sim.emit_random(20)
        self.assertEqual(self.history(sim, "subcontainers=true&max_events=-1"), [])
        self.assertEqual(self.history(sim, "subcontainers=true&oom_events=false&all_events=false"), [])

    def test_all_events_overrides_per_type_flags(self):
        sim = make_simulator()
        for event_type in ("oom", "oomKill", "containerCreation", "containerDeletion"):
            sim.emit("/a", event_type)
        events = self.history(sim, "all_events=true&oom_events=false&deletion_events=0&max_events=-1", "/a")
        self.assertEqual(len(events), 4)

    def test_each_type_flag_selects_its_type(self):
        sim = make_simulator()
        for event_type in ("oom", "oomKill", "containerCreation", "containerDeletion"):
            sim.emit("/a", event_type)
        for flag, event_type in (("oom_events", "oom"), ("oom_kill_events", "oomKill"),
                                 ("creation_events", "containerCreation"), ("deletion_events", "containerDeletion")):
            events = self.history(sim, f"{flag}=true&subcontainers=true")
            self.assertEqual([e["event_type"] for e in events], [event_type])
        both = self.history(sim, "oom_events=true&oom_kill_events=true&subcontainers=true")
        self.assertEqual([e["event_type"] for e in both], ["oom", "oomKill"])

    def test_parse_bool_spellings_and_ignored_garbage(self):
        sim = make_simulator()
        sim.emit("/a", "oom")
        for text in TRUE_SPELLINGS:
            self.assertEqual(len(self.history(sim, f"oom_events={text}", "/a")), 1, text)
        for text in FALSE_SPELLINGS:
            self.assertEqual(self.history(sim, f"all_events=false&oom_events={text}", "/a"), [], text)
        for text in ("yes", "on", "tRUE", "2", ""):
            self.assertEqual(self.history(sim, f"oom_events={text}", "/a"), [], text)

    def test_first_value_of_a_repeated_parameter_wins(self):
        sim = make_simulator()
        sim.emit("/a", "oom")
        self.assertEqual(len(self.history(sim, "oom_events=true&oom_events=false", "/a")), 1)
        self.assertEqual(self.history(sim, "oom_events=false&oom_events=true", "/a"), [])

    def test_garbage_subcontainers_keeps_the_default(self):
        sim = make_simulator()
        sim.emit("/docker/a", "oom")
        self.assertEqual(self.history(sim, "oom_events=1&subcontainers=yes", "/docker"), [])
        self.assertEqual(len(self.history(sim, "oom_events=1&subcontainers=t", "/docker")), 1)


class MaxEventsTests(HistoryMixin, unittest.TestCase):
    def setUp(self):
        self.sim = make_simulator()
        self.events = [self.sim.emit("/c%d" % i, "containerCreation") for i in range(15)]

    def stamps(self, query):
        return [e["timestamp"] for e in self.history(self.sim, "creation_events=1&subcontainers=1&" + query)]

    def expected(self, events):
        return [e.timestamp for e in events]

    def test_default_is_newest_ten(self):
        self.assertEqual(self.stamps(""), self.expected(self.events[-10:]))

    def test_n_gives_newest_n_oldest_first(self):
        self.assertEqual(self.stamps("max_events=3"), self.expected(self.events[-3:]))
        self.assertEqual(self.stamps("max_events=%2B2"), self.expected(self.events[-2:]))

    def test_minus_one_gives_all(self):
        self.assertEqual(self.stamps("max_events=-1"), self.expected(self.events))
        self.assertEqual(self.stamps("max_events=100"), self.expected(self.events))

    def test_zero_gives_none_like_cadvisor(self):
        # cAdvisor's TimedStore.InTimeRange trims to maxResults unless it is -1:
        # max_events=0 yields [] (CADVISOR-API.md's "0 = all" is not what the Go code does).
        self.assertEqual(self.stamps("max_events=0"), [])

    def test_unparsable_is_ignored(self):
        for text in ("abc", "1.5", "%201", "1_0", "", "99999999999999999999"):
            self.assertEqual(self.stamps("max_events=" + text), self.expected(self.events[-10:]), text)

    def test_below_minus_one_panics_and_closes_the_connection(self):
        stub = StubTreq(self.sim.resource)
        failure = self.failureResultOf(stub.get(API + "?creation_events=1&subcontainers=1&max_events=-2"))
        failure.trap(ResponseNeverReceived)
        self.flushLoggedErrors()

    def test_limit_applies_per_type_before_the_container_filter(self):
        # GetEvents asks each type's store for its newest N first, then filters by container.
        sim = make_simulator()
        for _ in range(5):
            sim.emit("/a", "oom")
        for _ in range(5):
            sim.emit("/b", "oom")
        self.assertEqual(self.history(sim, "oom_events=1&max_events=3", "/a"), [])
        self.assertEqual(len(self.history(sim, "oom_events=1&max_events=-1", "/a")), 5)


class TimeBoundTests(HistoryMixin, unittest.TestCase):
    def setUp(self):
        self.sim = make_simulator(tz_offset_minutes=-180)
        base = START * NS + 123456789
        self.events = [self.sim.emit("/a", "oom", timestamp_ns=base + i) for i in range(5)]

    def stamps(self, query):
        return [e["timestamp"] for e in self.history(self.sim, "oom_events=1&max_events=-1&" + query, "/a")]

    def expected(self, events):
        return [e.timestamp for e in events]

    def test_start_time_is_inclusive_to_the_nanosecond(self):
        self.assertEqual(self.stamps("start_time=" + self.events[2].timestamp.replace("+", "%2B")),
                         self.expected(self.events[2:]))
        self.assertEqual(self.stamps("start_time=2025-11-24T16:00:00.123456791Z"), self.expected(self.events[2:]))
        self.assertEqual(self.stamps("start_time=2025-11-24T21:30:00.123456791%2B05:30"),
                         self.expected(self.events[2:]))

    def test_end_time_is_inclusive_to_the_nanosecond(self):
        self.assertEqual(self.stamps("end_time=2025-11-24T13:00:00.123456790-03:00"), self.expected(self.events[:2]))

    def test_equal_bounds_give_exactly_that_event(self):
        stamp = self.events[3].timestamp
        self.assertEqual(self.stamps(f"start_time={stamp}&end_time={stamp}"), [stamp])

    def test_bounds_do_not_lift_the_default_limit(self):
        sim = make_simulator(oom_clock_error=0)
        for _ in range(12):
            sim.emit("/a", "oom")
        self.assertEqual(len(self.history(sim, "oom_events=1&start_time=2025-11-24T16:00:00Z", "/a")), 10)

    def test_unparsable_bounds_are_ignored(self):
        for text in ("2025-11-24 16:00:00Z", "2025-11-24T16:00:00.123456791+05:30", "yesterday",
                     "2025-11-24T16:00:00.123456791z"):
            self.assertEqual(self.stamps("start_time=" + text), self.expected(self.events), text)

    def test_start_after_end_is_empty_or_a_panic_like_cadvisor(self):
        # TimedStore.InTimeRange: an empty slice when nothing lies strictly between
        # end and start, a negative slice length (a Go panic) otherwise.
        first, second = self.events[0].timestamp, self.events[1].timestamp
        self.assertEqual(self.stamps(f"start_time={second}&end_time={first}"), [])
        stub = StubTreq(self.sim.resource)
        inner, outer = self.events[3].timestamp, self.events[1].timestamp
        failure = self.failureResultOf(stub.get(f"{API}/a?oom_events=1&start_time={inner}&end_time={outer}"))
        failure.trap(ResponseNeverReceived)
        self.flushLoggedErrors()


class ContainerFilterTests(HistoryMixin, unittest.TestCase):
    def setUp(self):
        self.sim = make_simulator()
        for name in ("/", "/docker", "/docker/a", "/docker/a/b", "/docker/ab", "/system.slice/x.scope"):
            self.sim.emit(name, "containerCreation")

    def test_without_subcontainers_only_that_container(self):
        self.assertEqual(self.names(self.sim, "creation_events=1", "/docker/a"), ["/docker/a"])
        self.assertEqual(self.names(self.sim, "creation_events=1"), ["/"])

    def test_with_subcontainers_that_container_and_below(self):
        self.assertEqual(self.names(self.sim, "creation_events=1&subcontainers=1", "/docker/a"),
                         ["/docker/a", "/docker/a/b"])
        self.assertEqual(self.names(self.sim, "creation_events=1&subcontainers=1", "/docker"),
                         ["/docker", "/docker/a", "/docker/a/b", "/docker/ab"])

    def test_root_with_subcontainers_is_everything(self):
        self.assertEqual(len(self.names(self.sim, "creation_events=1&subcontainers=1")), 6)
        self.assertEqual(len(self.names(self.sim, "creation_events=1&subcontainers=1", "/")), 6)

    def test_path_is_cleaned_and_percent_decoded(self):
        for path in ("//docker/./a/", "/docker/a/b/..", "/docker/%61", "/x/../docker/a"):
            self.assertEqual(self.names(self.sim, "creation_events=1", path), ["/docker/a"], path)


class ErrorTests(HistoryMixin, unittest.TestCase):
    def assertPlainError(self, url, code, body, simulator=None):
        response, content = self.get(simulator or make_simulator(), url)
        self.assertEqual((response.code, content), (code, body))
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/plain; charset=utf-8"])
        self.assertEqual(response.headers.getRawHeaders("x-content-type-options"), ["nosniff"])

    def test_stream_with_start_or_end_time_is_500(self):
        self.assertPlainError(API + "?stream=true&start_time=2025-11-24T16:00:00Z", 500, WATCH_ERROR)
        self.assertPlainError(API + "?stream=1&all_events=1&end_time=2025-11-24T16:00:00.5-03:00", 500, WATCH_ERROR)

    def test_unparsable_or_zero_bound_on_a_stream_is_no_error(self):
        sim = make_simulator()
        for query in ("stream=true&start_time=garbage", "stream=true&end_time=0001-01-01T00:00:00Z"):
            stub = StubTreq(sim.resource)
            response = self.successResultOf(stub.get(API + "?" + query))
            self.assertEqual(response.code, 200, query)
        self.assertEqual(sim.open_streams, 2)
        sim.end_streams()

    def test_api_errors_like_cadvisor(self):
        base = "http://cadvisor.test"
        self.assertPlainError(base + "/api/", 400, b"Supported API versions: v1.0,v1.1,v1.2,v1.3,v2.0,v2.1\n")
        self.assertPlainError(base + "/api/v9/events", 500, b'unsupported API version "v9"\n')
        self.assertPlainError(base + "/api/v1.0/events", 500, b'unknown request type "events"\n')
        self.assertPlainError(base + "/api/v1.3/eventz", 500, b'unknown request type "eventz"\n')
        self.assertPlainError(base + "/api/v1.3/", 400,
                              b'Supported request types: "containers,docker,events,machine,subcontainers"\n')
        self.assertPlainError(base + "/api/v2.0/events?type=bogus", 500, b"unknown 'type' \"bogus\"\n")
        self.assertPlainError(base + "/api/v2.1/events?count=x", 500, b"failed to parse 'count' option: x\n")
        self.assertPlainError(base + "/api/v2.0/events?count=-2", 500,
                              b"invalid 'count' option: only -1 and larger values allowed, not -2\n")
        self.assertPlainError(base + "/api/v2.0/events?max_age=5", 500,
                              b"failed to parse 'max_age' option: time: missing unit in duration \"5\"\n")
        self.assertPlainError(base + "/nothing", 404, b"404 page not found\n")

    def test_healthz(self):
        response, body = self.get(make_simulator(), "http://cadvisor.test/healthz")
        self.assertEqual((response.code, body), (200, b"ok"))


# --- history storage, restart, ground truth -------------------------------------------


class StorageTests(HistoryMixin, unittest.TestCase):
    def test_event_limit_keeps_the_newest_per_type(self):
        sim = make_simulator(event_limit=3)
        creations = [sim.emit("/a", "containerCreation") for _ in range(5)]
        ooms = [sim.emit("/a", "oom") for _ in range(2)]
        self.assertEqual(sim.history(), sorted(creations[-3:] + ooms, key=lambda e: e.timestamp_ns))
        self.assertEqual(len(sim.emitted), 7)

    def test_event_limit_zero_disables_history_but_not_streams(self):
        sim = make_simulator(event_limit=0)
        sim.emit("/a", "oom")
        self.assertEqual(self.history(sim, ALL), [])

    def test_out_of_order_events_are_stored_in_order(self):
        # A full TimedStore drops its oldest entry first, then inserts, even an older one.
        sim = make_simulator(event_limit=3)
        for offset in (5, 1, 3, 4, 2):
            sim.emit("/a", "oom", timestamp_ns=START * NS + offset)
        self.assertEqual([e.timestamp_ns - START * NS for e in sim.history()], [2, 4, 5])

    def test_age_limit_trims_when_an_event_of_that_type_arrives(self):
        sim = make_simulator(age_limit=60)
        old = sim.emit("/a", "oom")
        sim.clock.advance(61)
        other_type = sim.emit("/a", "oomKill")
        self.assertEqual(sim.history(), [old, other_type])  # cAdvisor ages out on Add, per type
        new = sim.emit("/a", "oom")
        self.assertEqual(sim.history(), [other_type, new])
        self.assertEqual(len(sim.ground_truth()), 2)
        self.assertEqual(sum(sim.ground_truth().values()), 3)

    def test_fill_history_is_fast_and_spread_over_the_past_hour(self):
        sim = make_simulator()
        started = time.perf_counter()
        events = sim.fill_history(100_000, containers=50_000)
        elapsed = time.perf_counter() - started
        self.assertLess(elapsed, 2.0)
        self.assertEqual(len({e.container_name for e in events}), 50_000)
        stamps = [e.timestamp_ns for e in sim.history()]
        self.assertEqual(len(stamps), 100_000)
        self.assertEqual(stamps, sorted(stamps))
        pairs = [e for e in events if e.event_type in ("oom", "oomKill")]
        self.assertEqual([e.event_type for e in pairs[:4]], ["oom", "oomKill", "oom", "oomKill"])
        self.assertEqual(pairs[0].timestamp_ns, pairs[1].timestamp_ns)  # a kernel OOM: one timestamp
        self.assertGreaterEqual(stamps[0], (START - 3600) * NS)
        self.assertLess(stamps[-1], START * NS)
        self.assertLess(sim.emit("/a", "oom").timestamp_ns - stamps[-1], 3600 * NS)

    def test_history_answer_is_encoded_once_until_history_changes(self):
        sim = make_simulator(event_limit=3)
        sim.fill_history(3, containers=["/a"])
        first = self.get(sim, API + "?" + ALL)[1]
        self.assertIs(sim.history_answer(EventQuery.from_args(parse_go_query(ALL.encode()), "/")),
                      sim.history_answer(EventQuery.from_args(parse_go_query(ALL.encode()), "/")))
        for change in (lambda: sim.emit("/a", "containerCreation"), lambda: sim.fill_history(2, containers=["/b"]),
                       lambda: sim.restart(), lambda: sim.emit_oom("/a", "java", 7)):
            change()
            body = self.get(sim, API + "?" + ALL)[1]
            self.assertNotEqual(body, first)
            self.assertEqual(json.loads(body), json.loads(b"[" + b",".join(e.json for e in sim.history()) + b"]"))
            first = body
        self.assertEqual(sim.served_counts["history"], 7)  # 5 over HTTP, 2 direct
        self.assertEqual([kind for kind, _, _ in sim.served], ["history"] * 7)
        self.assertEqual(sim.served[-1], ("history", sim.clock.seconds(), len(first)))

    def test_ground_truth_and_history_counts(self):
        sim = make_simulator(event_limit=2)
        sim.emit_oom("/docker/a", "java", 10)
        sim.emit_oom("/docker/a", "java", 11)
        sim.emit_oom("/docker/a", "node", 12, victim_container="/docker/a/b")
        sim.emit("/docker/a", "containerCreation")
        truth = sim.ground_truth()
        self.assertEqual(truth[("/docker/a", "oom", "")], 3)
        self.assertEqual(truth[("/docker/a", "oomKill", "java")], 2)
        self.assertEqual(truth[("/docker/a/b", "oomKill", "node")], 1)
        self.assertEqual(truth[("/docker/a", "containerCreation", "")], 1)
        self.assertNotIn(("/docker/a", "containerCreation", ""), sim.ground_truth(oom_only=True))
        held = sim.history_counts()
        self.assertEqual((held[("/docker/a", "oom", "")], held[("/docker/a", "oomKill", "java")]), (2, 1))

    def test_ooms_are_dated_early_by_the_runs_clock_error(self):
        sim = make_simulator(oom_clock_error=0.4)
        created = sim.emit("/docker/a", "containerCreation")
        oom, kill = sim.emit_oom("/docker/a", "java", 42)
        self.assertEqual(oom.timestamp_ns, kill.timestamp_ns)
        self.assertEqual(created.timestamp_ns - oom.timestamp_ns, int(0.4 * NS) - 1)  # before its creation
        types = [e["event_type"] for e in self.history(sim, ALL)]
        self.assertEqual((sorted(types[:2]), types[2]), (["oom", "oomKill"], "containerCreation"))
        drawn = make_simulator(seed=5).oom_clock_error
        self.assertTrue(0 <= drawn < 1)
        self.assertEqual(drawn, make_simulator(seed=5).oom_clock_error)  # seeded

    def test_restart_replays_ooms_shifted_by_the_new_runs_clock_error(self):
        sim = make_simulator(oom_clock_error=0.3)
        oom, kill = sim.emit_oom("/docker/a", "java", 42)
        sim.emit("/docker/a", "containerCreation")
        sim.clock.advance(3600)
        sim.restart(oom_clock_error=0.9)
        replayed = self.history(sim, ALL)
        shift = oom.timestamp_ns - int(0.6 * NS)
        self.assertEqual([parse_rfc3339(e["timestamp"]) for e in replayed], [shift, shift])
        self.assertEqual(sorted((e["container_name"], e["event_type"]) for e in replayed),
                         [("/docker/a", "oom"), ("/docker/a", "oomKill")])  # one timestamp: either order
        (replayed_kill,) = [e for e in replayed if e["event_type"] == "oomKill"]
        self.assertEqual(replayed_kill["event_data"]["oom"], {"pid": 42, "process_name": "java"})
        self.assertEqual([e.timestamp_ns for e in sim.replayed], [shift, shift])
        self.assertEqual(sum(sim.ground_truth().values()), 3)  # replays are not new events
        sim.restart()  # each run draws its own error: the shift stays within a second
        again = [e.timestamp_ns for e in sim.replayed[2:]]
        self.assertTrue(all(abs(t - oom.timestamp_ns) < NS for t in again), again)

    def test_an_oom_while_cadvisor_is_down_is_new_in_the_replay(self):
        sim = make_simulator(oom_clock_error=0.2)
        sim.emit_oom("/docker/a", "java", 42)
        sim.clock.advance(10)
        sim.kernel_oom("/docker/a", "java", 43)
        self.assertEqual(sum(sim.ground_truth().values()), 2)  # nothing emitted yet
        sim.restart(oom_clock_error=0.7)
        self.assertEqual(sum(sim.ground_truth().values()), 4)
        self.assertEqual(sim.ground_truth()[("/docker/a", "oomKill", "java")], 2)
        self.assertEqual(len(sim.replayed), 2)
        self.assertEqual(len(self.history(sim, ALL)), 4)

    def test_restart_keeping_history_duplicates_the_ooms(self):
        sim = make_simulator()
        sim.emit_oom("/docker/a", "java", 42)
        sim.restart(keep_history=True)
        self.assertEqual(len(self.history(sim, ALL)), 4)


class SpecApiTests(HistoryMixin, unittest.TestCase):
    """``/api/v2.0/spec``: cAdvisor's ``GetContainerSpec`` over the simulator's cluster."""

    SPEC = "http://cadvisor.test/api/v2.0/spec"

    def specs(self, sim: Simulator, path: str = "/", query: str = "type=name", version: str = "v2.0") -> dict:
        response, body = self.get(sim, f"http://cadvisor.test/api/{version}/spec{path}?{query}")
        self.assertEqual((response.code, response.headers.getRawHeaders("content-type")),
                         (200, ["application/json"]), body)
        return json.loads(body)

    def assertPlainError(self, sim, url, code, body):
        response, content = self.get(sim, url)
        self.assertEqual((response.code, content), (code, body))
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/plain; charset=utf-8"])
        self.assertEqual(response.headers.getRawHeaders("x-content-type-options"), ["nosniff"])

    def test_one_container_is_an_object_of_one_spec(self):
        sim = make_simulator(seed=2)
        name = next(n for n, c in sim.cluster.known.items() if c.kind == "docker" and c.pod_cgroup)
        answer = self.specs(sim, name)
        self.assertEqual(list(answer), [name])
        spec = answer[name]
        labels = spec["labels"]
        self.assertEqual(set(labels) >= {"io.kubernetes.pod.name", "io.kubernetes.pod.namespace",
                                         "io.kubernetes.pod.uid", "io.kubernetes.container.name"}, True)
        self.assertEqual(spec["namespace"], "docker")
        self.assertEqual(spec["aliases"][0], "k8s_%s_%s_%s_%s_0" % (
            labels["io.kubernetes.container.name"], labels["io.kubernetes.pod.name"],
            labels["io.kubernetes.pod.namespace"], labels["io.kubernetes.pod.uid"]))
        self.assertIn(spec["aliases"][1], name)
        self.assertEqual(spec["creation_time"], "2025-11-24T12:00:00-03:00")  # an hour before the start
        self.assertTrue(spec["has_memory"] and spec["memory"]["limit"] > 0)
        self.assertEqual(self.specs(sim, name, version="v2.1"), answer)

    def test_go_json_marshal_bytes_of_a_raw_cgroup(self):
        sim = make_simulator()
        response, body = self.get(sim, self.SPEC + "/?type=name")
        self.assertEqual(body, b'{"/":{"creation_time":"2025-11-24T12:00:00-03:00","has_cpu":true,'
                               b'"cpu":{"limit":1024,"max_limit":0,"mask":"0-3","period":100000},"has_memory":true,'
                               b'"memory":{"limit":9223372036854771712,"reservation":9223372036854771712},'
                               b'"has_custom_metrics":false,"has_network":false,"has_filesystem":false,'
                               b'"has_diskio":true}}')
        self.assertEqual(self.specs(sim, "", query=""), json.loads(body))  # no type, no path: "/"

    def test_pods_of_both_runtimes_and_drivers(self):
        import random
        sim = make_simulator(containers=1)
        for runtime in ("docker", "containerd"):
            for driver in ("cgroupfs", "systemd"):
                pod = sim.start_pod(random.Random(runtime + driver), runtime=runtime, driver=driver, containers=1)
                answer = self.specs(sim, pod[0].name, "type=name&recursive=true")
                self.assertEqual(sorted(answer), sorted(c.name for c in pod))
                level, sandbox, container = (answer[c.name] for c in pod)
                self.assertNotIn("labels", level)  # a pod-level cgroup: no labels, aliases or image
                self.assertNotIn("aliases", level)
                self.assertNotIn("image", level)
                self.assertEqual(sandbox["image"], "registry.k8s.io/pause:3.9")
                self.assertIn("pod-template-hash", sandbox["labels"])  # every pod label, on the sandbox only
                self.assertNotIn("app", container["labels"])
                self.assertEqual(sandbox["namespace"], runtime)
                if runtime == "docker":
                    self.assertEqual(sandbox["labels"]["io.kubernetes.docker.type"], "podsandbox")
                    self.assertEqual(sandbox["labels"]["io.kubernetes.container.name"], "POD")
                    self.assertTrue(container["aliases"][0].startswith("k8s_"))
                    self.assertEqual(len(container["aliases"]), 2)
                else:
                    self.assertEqual(sandbox["labels"]["io.cri-containerd.kind"], "sandbox")
                    self.assertEqual(container["aliases"], [pod[2].name.rpartition("/")[2]
                                                            .replace("cri-containerd-", "").replace(".scope", ""),
                                                            pod[2].name])
                if driver == "systemd":
                    self.assertIn(".slice/", pod[2].name)
                    self.assertTrue(pod[2].name.endswith(".scope"))

    def test_recursive_listing_of_root_holds_every_cgroup_sorted(self):
        sim = make_simulator(containers=80)
        response, body = self.get(sim, self.SPEC + "/?type=name&recursive=true")
        answer = json.loads(body)
        keys = [key.decode() for key in re.findall(rb'(?:^\{|\}\},|\},)"(/[^"]*)":\{"creation_time"', body)]
        self.assertEqual(keys, sorted(answer))  # Go marshals map keys sorted
        self.assertIn("/", answer)
        self.assertLessEqual(set(sim.container_pool), set(answer))
        for ancestor in ("/kubepods", "/system.slice"):
            self.assertIn(ancestor, answer)
            self.assertNotIn("labels", answer[ancestor])
        raw = [n for n, c in sim.cluster.known.items() if c.kind == "raw"]
        self.assertTrue(raw and all("labels" not in answer[n] for n in raw))

    def test_recursive_listing_matches_by_prefix_like_cadvisor(self):
        sim = make_simulator(containers=1)
        sim.cluster.alive.clear()
        sim.cluster.known["/kubepods.slice/x"] = sim.cluster.spec("/kubepods.slice/x")
        sim.emit("/kubepods.slice/x", "containerCreation")
        sim.emit("/kubepods/y", "containerCreation")
        # path.Join(name, "/") adds no slash: /kubepods also matches /kubepods.slice/...
        self.assertEqual(sorted(self.specs(sim, "/kubepods", "type=name&recursive=true")),
                         ["/kubepods", "/kubepods.slice", "/kubepods.slice/x", "/kubepods/y"])
        self.assertEqual(list(self.specs(sim, "/kubepods", "type=name&recursive=1")), ["/kubepods"])  # "true" only

    def test_unknown_names(self):
        sim = make_simulator()
        self.assertPlainError(sim, self.SPEC + "/docker/gone?type=name", 500, b'unknown container "/docker/gone"\n')
        self.assertPlainError(sim, self.SPEC + "/docker/gone?type=name&recursive=true", 500,
                              b'unknown container: "/docker/gone"\n')
        self.assertPlainError(sim, "http://cadvisor.test/api/v1.3/spec/", 500, b'unknown request type "spec"\n')
        self.assertPlainError(sim, self.SPEC + "/?type=docker", 501,
                              b'the cAdvisor simulator answers specs by name only, not "docker"\n')

    def test_a_container_vanishing_mid_listing(self):
        sim = make_simulator()
        sim.cluster.fail_listings = 1
        response, body = self.get(sim, self.SPEC + "/?type=name&recursive=true")
        self.assertEqual(response.code, 500)
        self.assertRegex(body, rb'^partial failures: \["/[^"]*": GetInfo: unknown container "/[^"]*"\]\n$')
        self.assertIn("/", self.specs(sim, "/", "type=name&recursive=true"))

    def test_spec_stored_before_creation_and_gone_before_deletion(self):
        sim = make_simulator(containers=1)
        seen = []
        add = sim._add

        def recording(event):
            seen.append((event.event_type, event.container_name in sim.cluster.tracked()))
            add(event)

        sim._add = recording  # type: ignore[method-assign]
        sim.emit("/docker/web", "containerCreation")
        self.assertEqual(list(self.specs(sim, "/docker/web")), ["/docker/web"])
        sim.emit("/docker/web", "containerDeletion")
        self.assertPlainError(sim, self.SPEC + "/docker/web?type=name", 500, b'unknown container "/docker/web"\n')
        self.assertEqual(seen, [("containerCreation", True), ("containerDeletion", False)])

    def test_random_events_follow_container_lives(self):
        sim = make_simulator(seed=4)
        alive = set(sim.cluster.alive)
        for event in sim.emit_random(3000):
            if event.event_type == "containerCreation":
                self.assertNotIn(event.container_name, alive)
                alive.add(event.container_name)
            elif event.event_type == "containerDeletion":
                self.assertIn(event.container_name, alive)
                alive.discard(event.container_name)
        self.assertEqual(alive, set(sim.cluster.alive))

    def test_random_oom_kills_name_the_container_or_its_pod(self):
        sim = make_simulator(seed=6)
        events = sim.emit_random(3000)
        pairs = [(events[i - 1], e) for i, e in enumerate(events) if e.event_type == "oomKill"]
        at_pod = 0
        for oom, kill in pairs:
            self.assertEqual(oom.event_type, "oom")
            pod = sim.cluster.pod_cgroup_of(oom.container_name)
            self.assertIn(kill.container_name, (oom.container_name, pod or oom.container_name))
            at_pod += bool(pod) and kill.container_name == pod
            # a killed task never lives in a pod-level cgroup (only its containers' cgroups do)
            self.assertNotEqual(sim.cluster.known[oom.container_name].kind, "pod", oom.container_name)
        self.assertTrue(0 < at_pod < len(pairs) / 3, (at_pod, len(pairs)))

    def test_history_oom_pairs_name_one_cgroup(self):
        sim = make_simulator(seed=7)
        events = sim.fill_history(2000)
        pairs = [(events[i - 1], e) for i, e in enumerate(events) if e.event_type == "oomKill"]
        self.assertGreater(len(pairs), 50)
        for oom, kill in pairs:
            self.assertEqual((oom.event_type, oom.timestamp_ns), ("oom", kill.timestamp_ns))
            self.assertEqual(oom.container_name, kill.container_name)


class GeneratorTests(unittest.TestCase):
    PATTERNS = [re.compile(p) for p in (
        r"/docker/[0-9a-f]{64}",
        r"/system\.slice/docker-[0-9a-f]{64}\.scope",
        r"/kubepods(/(burstable|besteffort))?/pod[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
        r"(/[0-9a-f]{64})?",
        r"/kubepods\.slice(/kubepods-(burstable|besteffort)\.slice)?/kubepods(-(burstable|besteffort))?-pod"
        r"[0-9a-f]{8}(_[0-9a-f]{4}){3}_[0-9a-f]{12}\.slice(/(cri-containerd|docker)-[0-9a-f]{64}\.scope)?",
        r"/system\.slice/[a-z-]+\.service",
    )]

    def test_names_are_realistic_and_deterministic(self):
        import random
        names = container_names(500, random.Random(7))
        self.assertEqual(names, container_names(500, random.Random(7)))
        self.assertEqual(len(set(names)), 500)
        for name in names:
            self.assertTrue(any(p.fullmatch(name) for p in self.PATTERNS), name)
        for pattern in self.PATTERNS:
            self.assertTrue(any(pattern.fullmatch(name) for name in names), pattern.pattern)

    def test_emit_random_mix_is_deterministic_and_hostile(self):
        first, second = make_simulator(seed=3), make_simulator(seed=3)
        events = first.emit_random(2000)
        self.assertEqual([e.to_json() for e in events], [e.to_json() for e in second.emit_random(2000)])
        self.assertEqual(len(events), 2000)
        kills = [i for i, e in enumerate(events) if e.event_type == "oomKill"]
        self.assertTrue(all(events[i - 1].event_type == "oom" and events[i - 1].timestamp == events[i].timestamp
                            for i in kills))  # OOMs come in pairs, as from a kernel
        shares = {t: sum(e.event_type == t for e in events) / 2000 for t in
                  ("containerCreation", "containerDeletion", "oom", "oomKill")}
        self.assertLess(abs(shares["containerCreation"] - 0.4), 0.05, shares)
        self.assertLess(abs(shares["oomKill"] - 0.1), 0.03, shares)
        names = {e.process_name for e in events if e.event_type == "oomKill"}
        self.assertTrue(any("<" in n for n in names) and any('"' in n for n in names)
                        and any(not n.isascii() for n in names) and any("\\" in n for n in names))
        self.assertLessEqual({e.container_name for e in events}, set(first.container_pool))

    def test_deletion_exit_codes_option(self):
        sim = make_simulator(deletion_exit_codes=True)
        deletions = [e for e in sim.emit_random(200) if e.event_type == "containerDeletion"]
        self.assertTrue(deletions and all(b'"container_deletion":{"exit_code":' in e.to_json() for e in deletions))

    def test_random_emitter_follows_the_rate_on_the_clock(self):
        sim = make_simulator()
        sim.start_emitting(16)
        sim.clock.pump([1 / 16] * 32)  # exact binary fractions: no float drift
        self.assertEqual(len(sim.emitted), 32)
        sim.stop_emitting()
        sim.clock.advance(10)
        self.assertEqual(len(sim.emitted), 32)
        self.assertEqual(sim.clock.getDelayedCalls(), [])


# --- streams over a loopback socket --------------------------------------------------


class RawClient(Protocol):
    """Collects raw response bytes; ``wait_for`` fires once a predicate holds."""

    def __init__(self):
        self.data = b""
        self.lost = defer.Deferred()
        self._waiting: list = []

    def dataReceived(self, data):
        self.data += data
        for predicate, waiter in list(self._waiting):
            if predicate(self.data):
                self._waiting.remove((predicate, waiter))
                waiter.callback(self.data)

    def connectionLost(self, reason):
        self.reason = reason
        self.lost.callback(None)

    def wait_for(self, predicate):
        if predicate(self.data):
            return defer.succeed(self.data)
        waiter = defer.Deferred()
        self._waiting.append((predicate, waiter))
        return waiter


class TrackingSite(Site):
    """A Site that tells when each of its connections is gone (for a clean reactor)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.connections_lost: list = []

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        lost = defer.Deferred()
        self.connections_lost.append(lost)
        original = protocol.connectionLost

        def connectionLost(reason):
            original(reason)
            lost.callback(None)

        protocol.connectionLost = connectionLost
        return protocol


class BodyCollector(Protocol):
    def __init__(self):
        self.data = b""
        self.done = defer.Deferred()
        self.arrived = None

    def dataReceived(self, data):
        self.data += data
        if self.arrived is not None:
            arrived, self.arrived = self.arrived, None
            arrived.callback(data)

    def connectionLost(self, reason):
        self.reason = reason
        self.done.callback(None)


def chunk(event) -> bytes:
    line = event.to_json() + b"\n"
    return b"%x\r\n%s\r\n" % (len(line), line)


class LoopbackMixin:
    """A simulator on a loopback port, raw and treq clients; everything closed at the end."""

    timeout = 15

    def setUp(self):
        self.sim = make_simulator()
        self.site = TrackingSite(self.sim.resource)
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.client = HTTPClient(Agent(reactor, pool=self.pool))
        self.raw_clients: list = []

    @defer.inlineCallbacks
    def tearDown(self):
        for client in self.raw_clients:
            client.transport.loseConnection()
        yield defer.gatherResults([c.lost for c in self.raw_clients])
        yield self.pool.closeCachedConnections()
        yield defer.gatherResults(self.site.connections_lost)
        yield self.port.stopListening()

    @defer.inlineCallbacks
    def open_raw(self, target: bytes):
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        client = yield connectProtocol(endpoint, RawClient())
        self.raw_clients.append(client)
        client.transport.write(b"GET " + target + b" HTTP/1.1\r\nHost: cadvisor.test\r\n\r\n")
        yield client.wait_for(lambda data: b"\r\n\r\n" in data)
        return client

    def url(self, query: str) -> str:
        return "http://127.0.0.1:%d/api/v1.3/events?%s" % (self.port.getHost().port, query)


class StreamTests(LoopbackMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def test_idle_stream_has_headers_and_no_body(self):
        client = yield self.open_raw(b"/api/v1.3/events?stream=true&all_events=true&subcontainers=true")
        head = client.data
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"), head)
        self.assertTrue(head.endswith(b"\r\n\r\n"), head)
        headers = head.lower()
        self.assertIn(b"\r\ntransfer-encoding: chunked\r\n", headers)
        self.assertNotIn(b"content-type", headers)
        self.assertNotIn(b"content-length", headers)
        self.assertEqual(self.sim.open_streams, 1)

    @defer.inlineCallbacks
    def test_only_events_after_registration_one_chunk_each(self):
        self.sim.emit("/docker/a", "oom")
        client = yield self.open_raw(b"/api/v1.3/events?stream=true&all_events=true&subcontainers=true")
        head = client.data
        first = self.sim.emit("/docker/a", "containerCreation")
        second = self.sim.emit("/docker/b", "oomKill", process_name="a <b>", pid=3)
        expected = head + chunk(first) + chunk(second)
        data = yield client.wait_for(lambda data: len(data) >= len(expected))
        self.assertEqual(data, expected)

    @defer.inlineCallbacks
    def test_streams_filter_by_type_and_container(self):
        kills = yield self.open_raw(b"/api/v1.3/events/docker/a?stream=1&oom_kill_events=1&subcontainers=1")
        nothing = yield self.open_raw(b"/api/v1.3/events?stream=1&subcontainers=1")
        everything = yield self.open_raw(b"/api/v1.3/events?stream=1&all_events=1&subcontainers=1")
        heads = (kills.data, nothing.data, everything.data)
        emitted = [self.sim.emit("/docker/a/x", "oomKill"), self.sim.emit("/docker/ab", "oomKill"),
                   self.sim.emit("/docker/a", "oom"), self.sim.emit("/docker/a", "oomKill")]
        expected_all = heads[2] + b"".join(chunk(e) for e in emitted)
        yield everything.wait_for(lambda data: len(data) >= len(expected_all))
        expected_kills = heads[0] + chunk(emitted[0]) + chunk(emitted[3])
        data = yield kills.wait_for(lambda data: len(data) >= len(expected_kills))
        self.assertEqual(data, expected_kills)
        self.assertEqual(nothing.data, heads[1])

    @defer.inlineCallbacks
    def test_end_streams_ends_cleanly(self):
        response = yield self.client.get(self.url("stream=true&all_events=true&subcontainers=true"), unbuffered=True)
        self.assertEqual(response.code, 200)
        body = BodyCollector()
        response.deliverBody(body)
        event = self.sim.emit("/docker/a", "oom")
        self.sim.end_streams()
        yield body.done
        self.assertIsInstance(body.reason.value, ResponseDone)
        self.assertEqual(body.data, event.to_json() + b"\n")
        self.assertEqual(self.sim.open_streams, 0)

    @defer.inlineCallbacks
    def test_cut_streams_ends_uncleanly(self):
        response = yield self.client.get(self.url("stream=true&all_events=true&subcontainers=true"), unbuffered=True)
        body = BodyCollector()
        response.deliverBody(body)
        self.sim.cut_streams()
        yield body.done
        self.assertIsInstance(body.reason.value, (PotentialDataLoss, ResponseFailed))
        self.assertEqual(self.sim.open_streams, 0)

    @defer.inlineCallbacks
    def test_client_disconnect_removes_the_watch(self):
        client = yield self.open_raw(b"/api/v1.3/events?stream=true&all_events=true")
        self.assertEqual(self.sim.open_streams, 1)
        client.transport.loseConnection()
        yield self.site.connections_lost[0]
        self.assertEqual(self.sim.open_streams, 0)
        self.sim.emit("/", "oom")  # writes to nobody

    @defer.inlineCallbacks
    def test_restart_cuts_streams_and_replays_to_streams_opened_meanwhile(self):
        self.sim.emit_oom("/docker/a", "java", 7)
        before = yield self.open_raw(b"/api/v1.3/events?stream=true&all_events=true&subcontainers=true")
        self.sim.restart(replay_delay=5)
        yield before.lost
        self.assertEqual(self.sim.open_streams, 0)
        after = yield self.open_raw(b"/api/v1.3/events?stream=true&oom_kill_events=true&subcontainers=true")
        headers = after.data
        self.sim.clock.advance(5)
        oom, kill = self.sim.replayed
        expected = headers + chunk(kill)
        data = yield after.wait_for(lambda data: len(data) >= len(expected))
        self.assertEqual(data, expected)
        self.assertEqual([e.timestamp for e in self.sim.history()], [oom.timestamp, kill.timestamp])


class BurstTests(LoopbackMixin, unittest.TestCase):
    """The benchmark burst: pre-encoded events, one chunk each, paced by the reader."""

    ALL_STREAM = b"/api/v1.3/events?stream=true&all_events=true&subcontainers=true"

    @staticmethod
    def dechunk(data: bytes) -> list:
        body = data.partition(b"\r\n\r\n")[2]
        chunks = []
        while body:
            size, crlf, rest = body.partition(b"\r\n")
            length = int(size, 16) if crlf else 0
            if not crlf or len(rest) < length + 2:
                break  # a partial chunk: wait for the rest
            chunks.append(rest[:length])
            assert rest[length:length + 2] == b"\r\n"
            body = rest[length + 2:]
        return chunks

    @defer.inlineCallbacks
    def test_burst_writes_each_stream_its_events_one_chunk_each(self):
        everything = yield self.open_raw(self.ALL_STREAM)
        kills = yield self.open_raw(b"/api/v1.3/events?stream=true&oom_kill_events=true&subcontainers=true")
        before = self.sim.emit("/docker/a", "containerCreation")
        burst = self.sim.start_burst(1000, keys=16, batch=50)
        self.sim.clock.advance(0)
        yield burst.done
        self.assertEqual(burst.written, [1000, 1000])
        after = self.sim.emit("/docker/a", "containerDeletion")
        yield everything.wait_for(lambda data: after.to_json() in data)
        yield kills.wait_for(lambda data: len(self.dechunk(data)) >= 1000)
        events = [json.loads(c) for c in self.dechunk(everything.data)]
        self.assertEqual(len(events), 1002)
        self.assertEqual((events[0], events[-1]), (json.loads(before.to_json()), json.loads(after.to_json())))
        burst_events = events[1:-1]
        stamps = [parse_rfc3339(e["timestamp"]) for e in events]
        self.assertEqual(stamps, sorted(stamps))
        for index, e in enumerate(burst_events):  # a kill shares its oom's timestamp, with a new pid
            if e["event_type"] == "oomKill":
                self.assertEqual((burst_events[index - 1]["event_type"], burst_events[index - 1]["timestamp"]),
                                 ("oom", e["timestamp"]))
        self.assertEqual(len(set(stamps)), len(stamps) - sum(e["event_type"] == "oomKill" for e in burst_events))
        pids = [e["event_data"]["oom"]["pid"] for e in burst_events if e["event_type"] == "oomKill"]
        self.assertEqual(len(set(pids)), len(pids))
        def key(e):
            return (e["container_name"], e["event_type"], (e["event_data"].get("oom") or {}).get("process_name", ""))
        import collections
        self.assertEqual(collections.Counter(map(key, burst_events)), burst.counts())
        self.assertEqual(len(burst.counts()), 16)
        self.assertEqual(sum(burst.counts().values()), 1000)
        kill_events = [json.loads(c) for c in self.dechunk(kills.data)]
        self.assertEqual(collections.Counter(map(key, kill_events)),
                         burst.counts(EventQuery.from_args({"oom_kill_events": ["true"], "subcontainers": ["true"]}, "/")))
        self.assertEqual({e["event_type"] for e in kill_events}, {"oomKill"})
        self.assertEqual(len(self.sim.history()), 2)  # bursts are stream-only
        again = self.sim.start_burst(10, keys=8)
        self.assertEqual(set(again.counts()) | set(burst.counts()), set(burst.counts()))  # same keys

    @defer.inlineCallbacks
    def test_burst_stops_when_the_reader_does_not_read(self):
        client = yield self.open_raw(self.ALL_STREAM)
        client.transport.pauseProducing()
        burst = self.sim.start_burst(200_000, keys=4, batch=100)
        for _ in range(30):
            self.sim.clock.advance(0)
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertTrue(burst.running)
        self.assertLess(burst.written[0], 100_000)  # paused by the full transport, not all in memory
        channel = burst.writers[0].request.channel
        self.assertLess(len(channel.transport._tempDataBuffer) + channel.transport._tempDataLen, 1 << 20)
        burst.stop()
        self.assertFalse(burst.running)
        client.transport.resumeProducing()

    @defer.inlineCallbacks
    def test_paced_burst_follows_the_rate_on_the_clock(self):
        client = yield self.open_raw(self.ALL_STREAM)
        burst = self.sim.start_burst(100, keys=4, rate=200)
        self.sim.clock.advance(0)
        self.assertEqual(burst.written, [0])
        for _ in range(5):
            self.sim.clock.advance(0.051)  # 0.05 s ticks; 1.7e9 + 0.05 is not exact in floats
        self.assertEqual(burst.written, [50])
        for _ in range(10):
            self.sim.clock.advance(0.051)
        yield burst.done
        yield client.wait_for(lambda data: len(self.dechunk(data)) >= 100)

    @defer.inlineCallbacks
    def test_client_leaving_ends_its_share(self):
        client = yield self.open_raw(self.ALL_STREAM)
        client.transport.pauseProducing()
        burst = self.sim.start_burst(1_000_000, keys=4)
        self.sim.clock.advance(0)
        client.transport.abortConnection()
        yield burst.done
        self.assertLess(burst.written[0], 1_000_000)

    def test_the_spec_api_knows_the_burst_containers(self):
        burst = self.sim.start_burst(10, keys=16)
        names = {template.container_name for template in burst.templates}
        for name in names:  # as a real cAdvisor: a container's spec exists when its events come
            status, body = self.sim.cluster.spec_answer(name, False)
            self.assertEqual(status, 200, name)
        status, body = self.sim.cluster.spec_answer("/", True)
        listing = json.loads(body)
        self.assertLessEqual(names, set(listing))
        self.assertTrue(any("io.kubernetes.pod.name" in listing[name].get("labels", {}) for name in names))

    @defer.inlineCallbacks
    def test_control_resource_over_http(self):
        self.site.resource = ControlledSite(self.sim)
        client = yield self.open_raw(self.ALL_STREAM)
        base = "http://127.0.0.1:%d/_simulator/burst" % self.port.getHost().port
        response = yield self.client.post(base + "?events=10&keys=4")
        answer = json.loads((yield response.content()))
        self.assertEqual((answer["streams"], answer["events_per_stream"]), (1, 10))
        self.assertEqual(sorted(n for *_, n in answer["counts"]), [2, 2, 3, 3])
        self.sim.clock.advance(0)
        yield client.wait_for(lambda data: len(self.dechunk(data)) >= 10)
        response = yield self.client.get(base)
        self.assertEqual(json.loads((yield response.content()))["written"], [10])
        response = yield self.client.get(base.replace("burst", "status"))
        self.assertEqual(json.loads((yield response.content())),
                         {"open_streams": 1, "emitted": 0, "served": {"stream": 1}})
        response = yield self.client.get(base.replace("burst", "served"))
        self.assertEqual(json.loads((yield response.content())), [["stream", self.sim.clock.seconds(), 0]])
        response = yield self.client.post(base + "?events=x")
        self.assertEqual(response.code, 400)
        yield response.content()
        response = yield self.client.get("http://127.0.0.1:%d/healthz" % self.port.getHost().port)
        self.assertEqual((yield response.content()), b"ok")


# --- twistd plugin module ------------------------------------------------------------------


class TapTests(unittest.TestCase):
    def parse(self, *argv):
        options = simulator_tap.Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults(self):
        options = self.parse()
        self.assertEqual((options["listen"], options["rate"], options["history"], options["containers"]),
                         (["tcp:8080"], 2.0, 0, 50))

    def test_values_and_repeated_listen(self):
        options = self.parse("--listen", "tcp:1", "--listen", "unix:/tmp/x.sock", "--rate", "0.5",
                             "--history", "7", "--containers", "3")
        self.assertEqual((options["listen"], options["rate"], options["history"], options["containers"]),
                         (["tcp:1", "unix:/tmp/x.sock"], 0.5, 7, 3))

    def test_bad_values_are_usage_errors(self):
        for argv in (["--rate", "fast"], ["--rate", "-1"], ["--history", "1.5"], ["--containers", "0"],
                     ["--listen", "carrier-pigeon:1"], ["--tz-offset", "1440"]):
            self.assertRaises(usage.UsageError, self.parse, *argv)

    def test_make_service_wires_listeners_and_emitter(self):
        clock = MemoryReactorClock()
        options = self.parse("--listen", "tcp:8081", "--listen", "tcp:8082", "--rate", "10", "--history", "5")
        service = simulator_tap.makeService(options, reactor=clock)
        self.assertEqual(len(service.simulator.history()), 5)
        service.startService()
        self.assertEqual([port for port, *_ in clock.tcpServers], [8081, 8082])
        clock.advance(1)
        clock.advance(0.1)
        self.assertGreaterEqual(len(service.simulator.emitted), 15)
        self.successResultOf(defer.maybeDeferred(service.stopService))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_control_flag_adds_the_burst_endpoint(self):
        clock = MemoryReactorClock()
        for argv, expected in (((), "CadvisorResource"), (("--control",), "ControlledSite")):
            service = simulator_tap.makeService(self.parse("--listen", "tcp:8081", *argv), reactor=clock)
            listener = next(iter(service))
            self.assertEqual(type(listener.factory.resource).__name__, expected)

    @defer.inlineCallbacks
    def test_started_service_listens_on_the_given_endpoint(self):
        options = self.parse("--listen", "tcp:0:interface=127.0.0.1", "--rate", "0", "--history", "3")
        service = simulator_tap.makeService(options)
        service.startService()
        self.addCleanup(service.stopService)
        listener = next(iter(service))
        pool = HTTPConnectionPool(reactor, persistent=False)
        client = HTTPClient(Agent(reactor, pool=pool))
        base = "http://127.0.0.1:%d" % listener.port.getHost().port
        response = yield client.get(base + "/healthz")
        self.assertEqual((yield response.content()), b"ok")
        response = yield client.get(base + "/api/v1.3/events?" + ALL)
        self.assertEqual(len(json.loads((yield response.content()))), 3)
        yield pool.closeCachedConnections()
