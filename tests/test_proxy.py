"""Tests for cadvisor_events.proxy: the Go seed's /proxy URLs, answers, errors and self-metrics."""

from __future__ import annotations

import base64
import json
from collections import Counter as Tally

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet import defer, reactor
from twisted.internet.error import CannotListenError, DNSLookupError
from twisted.internet.protocol import Protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import Clock, deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest
from twisted.web import resource, server
from twisted.web.client import Agent, HTTPConnectionPool

from hypothesis import given, settings, strategies as st

from cadvisor_events import seedhistory
from cadvisor_events.access import ProxyAccess, parse_allow
from cadvisor_events.cadvisor import CAdvisorClient, Target, TargetError
from cadvisor_events.event import InvalidEvent, count_events, decode_history
from cadvisor_events.exposition import _render_seed_counts_per_series, render_seed_counts
from cadvisor_events.proxy import ProxyResource, proxy_target
from cadvisor_events.seedhistory import count_history

DEFAULT = Target("127.0.0.1", 9094)
ALL_QUERY = b"/api/v1.3/events?subcontainers=true&max_events=-1&all_events=true"
OOM_QUERY = b"/api/v1.3/events?subcontainers=true&max_events=-1&oom_events=true&oom_kill_events=true"
HEADER = (
    b"# HELP cadvisor_container_events_total cadvisor events\n"
    b"# TYPE cadvisor_container_events_total counter\n"
)
TEXT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

SMALL_HISTORY = (
    b'[{"container_name":"/docker/a","timestamp":"2026-11-24T17:25:55.1Z","event_type":"oom","event_data":{}},'
    b'{"container_name":"/docker/a","timestamp":"2026-11-24T17:25:55.2Z","event_type":"oomKill",'
    b'"event_data":{"oom":{"pid":7,"process_name":"java","constraint":"CONSTRAINT_MEMCG"}}},'
    b'{"container_name":"/docker/a","timestamp":"2026-11-24T17:25:56Z","event_type":"oomKill",'
    b'"event_data":{"oom":{"pid":8,"process_name":"java"}}}]'
)
SMALL_ANSWER = HEADER + (
    b'cadvisor_container_events_total{event_type="oom",id="/docker/a",oom_process=""} 1\n'
    b'cadvisor_container_events_total{event_type="oomKill",id="/docker/a",oom_process="java"} 2\n'
)


class FakeCAdvisor(resource.Resource):
    """An upstream that records what it was asked and answers a canned history."""

    isLeaf = True

    def __init__(self, body: bytes = SMALL_HISTORY, code: int = 200) -> None:
        super().__init__()
        self.body = body
        self.code = code
        self.asked: list[tuple[bytes, bytes]] = []
        self.authorization: list = []

    def render_GET(self, request):
        self.asked.append((request.getHeader(b"host"), request.uri))
        self.authorization.append(request.getHeader(b"authorization"))
        request.setResponseCode(self.code)
        request.setHeader(b"Content-Type", b"application/json")
        return self.body


class SilentCAdvisor(resource.Resource):
    """An upstream that accepts the request, optionally starts a body, and never finishes."""

    isLeaf = True

    def __init__(self, first_bytes: bytes = b"") -> None:
        super().__init__()
        self.first_bytes = first_bytes
        self.arrived: defer.Deferred = defer.Deferred()
        self.dropped: defer.Deferred = defer.Deferred()

    def render_GET(self, request):
        request.notifyFinish().addErrback(lambda f: self.dropped.callback(f.type))
        if self.first_bytes:
            request.write(self.first_bytes)
        self.arrived.callback(request.uri)
        return server.NOT_DONE_YET


class FailingHTTP:
    """A treq-like client whose every request fails with ``error`` (e.g. DNS)."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.urls: list[str] = []

    def get(self, url, **kwargs):
        self.urls.append(url)
        return defer.fail(self.error)


def go_json(events) -> bytes:
    """A history body as Go's json.Marshal writes it (UTF-8, ``<>&`` escaped)."""
    text = json.dumps(events, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def samples(registry) -> dict:
    """{(sample name, sorted labels): value} of a registry's exposition."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class StubbedProxy:
    """A ProxyResource mounted under a plain root, both sides in memory."""

    def __init__(self, test: unittest.TestCase, upstream=None, http=None, **options) -> None:
        self.clock = Clock()
        self.upstream = upstream if upstream is not None else FakeCAdvisor()
        self.upstream_http = http if http is not None else StubTreq(self.upstream)
        self.registry = CollectorRegistry()
        self.resource = ProxyResource(
            CAdvisorClient(self.clock, http=self.upstream_http),
            default_target=options.pop("default_target", DEFAULT),
            clock=self.clock,
            registry=self.registry,
            **options,
        )
        root = resource.Resource()
        root.putChild(b"proxy", self.resource)
        self.front = StubTreq(root)
        self.test = test

    def request(self, path: str, method: str = "GET"):
        """(code, headers, body) of ``method path``, once the answer is complete."""
        d = self.front.request(method, "http://exporter.test" + path)
        self.flush()
        response = self.test.successResultOf(d)
        self.last_length = response.length  # Content-Length (twisted's client keeps it out of headers)
        body = self.front.content(response)
        self.flush()
        return response.code, response.headers, self.test.successResultOf(body)

    def flush(self) -> None:
        if isinstance(self.upstream_http, StubTreq):
            self.upstream_http.flush()
        self.clock.advance(0)  # the proxy decodes a reactor turn after the fetch
        self.front.flush()


class ProxyTargetTests(unittest.TestCase):
    """The pure parsing rule, form by form."""

    def target(self, path: bytes, url: bytes = None) -> Target:
        return proxy_target(path, {b"url": [url]} if url is not None else {}, DEFAULT)

    def test_path_forms(self):
        cases = {
            b"/proxy/10.0.0.7:8080": ("http", "10.0.0.7", 8080),
            b"/proxy/10.0.0.7:8080/": ("http", "10.0.0.7", 8080),
            b"/proxy/http://10.0.0.7:8080": ("http", "10.0.0.7", 8080),
            b"/proxy/https://10.0.0.7:8443": ("https", "10.0.0.7", 8443),
            b"/proxy/http%3A%2F%2Fnode%3A81": ("http", "node", 81),
            b"/proxy/[::1]:8080": ("http", "::1", 8080),
            b"/proxy/node7": ("http", "node7", 80),
            b"/proxy/https://node7": ("https", "node7", 443),
        }
        for path, expected in cases.items():
            t = self.target(path)
            self.assertEqual((t.scheme, t.host, t.port), expected, path)

    def test_query_forms(self):
        for url in [b"http://node:81", b"http://node:81/", b"node:81", b"node:81/"]:
            for path in [b"/proxy", b"/proxy/"]:
                t = self.target(path, url)
                self.assertEqual((t.scheme, t.host, t.port), ("http", "node", 81), (path, url))

    def test_query_wins_over_path(self):
        self.assertEqual(self.target(b"/proxy/a:1", b"b:2").name, "b:2")

    def test_empty_query_falls_back_to_path(self):
        self.assertEqual(self.target(b"/proxy/a:1", b"").name, "a:1")

    def test_default(self):
        for path in [b"/proxy", b"/proxy/"]:
            self.assertIs(self.target(path), DEFAULT)
            self.assertIs(self.target(path, b""), DEFAULT)

    def test_credentials_kept_for_the_request(self):
        t = self.target(b"/proxy/http://user:pw@node:81")
        self.assertEqual((t.username, t.password, t.base_url), ("user", "pw", "http://node:81"))

    def test_malformed(self):
        for path, url in [
            (b"/proxy/http://", None),
            (b"/proxy/node:99999", None),
            (b"/proxy/node:port", None),
            (b"/proxy", b"ftp://x"),
            (b"/proxy/https://", None),
            (b"/proxy/%20", None),
            (b"/proxy", b" "),
        ]:
            with self.assertRaises(TargetError, msg=(path, url)):
                self.target(path, url)


class UrlFormTests(unittest.TestCase):
    """Every URL form the Go seed accepts reaches the right upstream with the seed's query."""

    def check(self, path: str, host: bytes, query: bytes = ALL_QUERY, **options) -> None:
        proxy = StubbedProxy(self, **options)
        code, headers, body = proxy.request(path)
        self.assertEqual(code, 200, body)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [TEXT_TYPE])
        self.assertEqual(body, SMALL_ANSWER)
        self.assertEqual(proxy.upstream.asked, [(host, query)])

    def test_host_port(self):
        self.check("/proxy/10.0.0.7:8080", b"10.0.0.7:8080")

    def test_http_url_in_path(self):
        self.check("/proxy/http://10.0.0.7:8080", b"10.0.0.7:8080")

    def test_https_url_in_path(self):
        self.check("/proxy/https://10.0.0.7:8443", b"10.0.0.7:8443")

    def test_percent_encoded_url_in_path(self):
        self.check("/proxy/http%3A%2F%2F10.0.0.7%3A8080", b"10.0.0.7:8080")

    def test_query_after_slash(self):
        self.check("/proxy/?url=http://10.0.0.7:8080", b"10.0.0.7:8080")

    def test_query_url(self):
        self.check("/proxy?url=http://10.0.0.7:8080", b"10.0.0.7:8080")

    def test_query_url_with_slash(self):
        self.check("/proxy?url=http://10.0.0.7:8080/", b"10.0.0.7:8080")

    def test_query_host_port(self):
        self.check("/proxy?url=10.0.0.7:8080", b"10.0.0.7:8080")

    def test_query_host_port_with_slash(self):
        self.check("/proxy?url=10.0.0.7:8080/", b"10.0.0.7:8080")

    def test_bare(self):
        self.check("/proxy", b"127.0.0.1:9094")

    def test_bare_with_slash(self):
        self.check("/proxy/", b"127.0.0.1:9094")

    def test_configured_default(self):
        self.check("/proxy", b"cadvisor.local:8080", default_target=Target("cadvisor.local", 8080))

    def test_host_without_port_is_port_80_like_go(self):
        self.check("/proxy/cadvisor.local", b"cadvisor.local")

    def test_oom_only(self):
        self.check("/proxy/10.0.0.7:8080", b"10.0.0.7:8080", query=OOM_QUERY, oom_only=True)

    def test_credentials_sent_as_basic_auth(self):
        proxy = StubbedProxy(self)
        code, _, _ = proxy.request("/proxy/http://user:s3cret@10.0.0.7:8080")
        self.assertEqual(code, 200)
        self.assertEqual(proxy.upstream.asked, [(b"10.0.0.7:8080", ALL_QUERY)])
        self.assertEqual(proxy.upstream.authorization, [b"Basic " + base64.b64encode(b"user:s3cret")])


class AnswerTests(unittest.TestCase):
    """What /proxy answers for a given history: the seed's exposition, exactly."""

    def answer(self, history: bytes, path: str = "/proxy/10.0.0.7:8080", method: str = "GET"):
        self.proxy = StubbedProxy(self, upstream=FakeCAdvisor(history))
        return self.proxy.request(path, method)

    def test_empty_history_is_empty_200(self):
        code, headers, body = self.answer(b"[]")
        self.assertEqual((code, body), (200, b""))
        self.assertEqual(headers.getRawHeaders(b"content-type"), [TEXT_TYPE])
        self.assertEqual(self.proxy.last_length, 0)

    def test_head_is_get_without_body(self):
        code, headers, body = self.answer(SMALL_HISTORY, method="HEAD")
        self.assertEqual((code, body), (200, b""))
        self.assertEqual(headers.getRawHeaders(b"content-type"), [TEXT_TYPE])
        self.assertEqual(headers.getRawHeaders(b"content-length"), [b"%d" % len(SMALL_ANSWER)])

    def test_hostile_names(self):
        history = (
            r'[{"container_name":"/docker/a","timestamp":"2026-11-24T17:25:55.873677656-03:00",'
            r'"event_type":"oomKill","event_data":{"oom":{"pid":1,"process_name":"say \"hi\""}}},'
            r'{"container_name":"/docker/a","timestamp":"2026-11-24T17:25:56Z",'
            r'"event_type":"oomKill","event_data":{"oom":{"pid":2,"process_name":"say \"hi\"","constraint":"x"}}},'
            r'{"container_name":"/docker/a","timestamp":"2026-11-24T17:25:57Z","event_type":"oom","event_data":{}},'
            r'{"container_name":"/docker/a","timestamp":"2026-11-24T17:25:58Z","event_type":"containerCreation"},'
            r'{"container_name":"/kubepods/pod 1:x","timestamp":"2026-11-24T17:25:59Z",'
            r'"event_type":"oomKill","event_data":{"oom":{"pid":3,"process_name":"C:\\tmp\\x"}}},'
            r'{"container_name":"/docker/b","timestamp":"2026-11-24T17:26:00Z",'
            r'"event_type":"oomKill","event_data":{"oom":{"pid":4,"process_name":"a\nb"}}},'
            r'{"container_name":"/docker/b","timestamp":"2026-11-24T17:26:01Z",'
            r'"event_type":"oomKill","event_data":{"oom":{"pid":5,"process_name":"\u003cjava\u003e\u0026"}}},'
            '{"container_name":"/docker/\u00fc","timestamp":"2026-11-24T17:26:02Z",'
            '"event_type":"oomKill","event_data":{"oom":{"pid":6,"process_name":"j\u00e4va \u2615"}}},'
            r'{"container_name":"/docker/b","timestamp":"2026-11-24T17:26:03Z","event_type":"weirdType",'
            r'"event_data":{"container_deletion":{"exit_code":-1}}}]'
        ).encode("utf-8")
        expected = HEADER + (
            r'cadvisor_container_events_total{event_type="containerCreation",id="/docker/a",oom_process=""} 1' "\n"
            r'cadvisor_container_events_total{event_type="oom",id="/docker/a",oom_process=""} 1' "\n"
            r'cadvisor_container_events_total{event_type="oomKill",id="/docker/a",oom_process="say \"hi\""} 2' "\n"
            r'cadvisor_container_events_total{event_type="oomKill",id="/docker/b",oom_process="<java>&"} 1' "\n"
            r'cadvisor_container_events_total{event_type="oomKill",id="/docker/b",oom_process="a\nb"} 1' "\n"
            'cadvisor_container_events_total{event_type="oomKill",id="/docker/\u00fc",oom_process="j\u00e4va \u2615"} 1\n'
            r'cadvisor_container_events_total{event_type="oomKill",id="/kubepods/pod 1:x",oom_process="C:\\tmp\\x"} 1'
            "\n"
            r'cadvisor_container_events_total{event_type="weirdType",id="/docker/b",oom_process=""} 1' "\n"
        ).encode("utf-8")
        code, _, body = self.answer(history)
        self.assertEqual(code, 200)
        self.assertEqual(body, expected)

    def test_many_containers_exact_counts(self):
        events, expected = [], Tally()
        names = ["java", 'q"uote', "back\\slash", "new\nline", "<tag>&", "caf\u00e9", "sp ace:colon"]
        for i in range(3000):
            container = f"/kubepods/burstable/pod{i % 1200}/c{i % 7}"
            kind = ["oom", "oomKill", "containerCreation", "containerDeletion"][i % 4]
            process = names[i % len(names)] if kind == "oomKill" else ""
            data = {"oom": {"pid": i, "process_name": process}} if kind == "oomKill" else {}
            events.append({"container_name": container, "timestamp": f"2026-11-24T17:25:{i % 60:02d}Z",
                           "event_type": kind, "event_data": data})
            expected[(container, kind, process)] += 1
        code, _, body = self.answer(go_json(events))
        self.assertEqual(code, 200)
        got = {}
        for family in text_string_to_metric_families(body.decode("utf-8")):
            self.assertEqual(family.name, "cadvisor_container_events")
            for s in family.samples:
                key = (s.labels["id"], s.labels["event_type"], s.labels["oom_process"])
                self.assertNotIn(key, got)
                got[key] = s.value
        self.assertEqual(got, {k: float(v) for k, v in expected.items()})


class CountHistoryTests(unittest.TestCase):
    """The batched decode+count gives what decoding the whole body at once gives."""

    def history(self, n: int) -> bytes:
        return go_json([
            {"container_name": f"/c{i % 4}", "timestamp": f"2026-11-24T17:25:{i % 60:02d}Z",
             "event_type": ["oom", "oomKill"][i % 2],
             "event_data": {"oom": {"pid": i, "process_name": f"p{i % 3}"}} if i % 2 else {}}
            for i in range(n)
        ])

    def test_batches_merge_to_the_whole_count(self):
        self.patch(seedhistory, "DECODE_BATCH", 3)
        for n in [0, 1, 3, 4, 10, 31]:
            body = self.history(n)
            self.assertEqual(count_history(body), count_events(decode_history(body)), n)

    def test_error_position_counts_from_the_start_of_the_array(self):
        self.patch(seedhistory, "DECODE_BATCH", 3)
        events = json.loads(self.history(10))
        events[7]["container_name"] = 1
        with self.assertRaises(InvalidEvent) as e:
            count_history(go_json(events))
        self.assertIn("$[7].container_name", str(e.exception))

    def test_not_json(self):
        # b"[] trailing" used to be here: the seed's json.Decoder never reads past
        # the first value, so it is an empty history (SeedDecodingTests.test_trailing_data_is_ignored).
        for body in [b"", b"[1,", b"{}"]:
            with self.assertRaises(InvalidEvent, msg=body):
                count_history(body)


#: The Go seed's own fixture (cmd/cadvisor-events-proxy/main_test.go): no timestamps, and a type
#: cAdvisor never sends. The seed decodes it to {ContainerName: "c1", EventType: "containerCreate"}.
SEED_FIXTURE = b'[{"container_name": "c1", "event_type": "containerCreate"}]'
SEED_FIXTURE_ANSWER = HEADER + b'cadvisor_container_events_total{event_type="containerCreate",id="c1",oom_process=""} 1\n'
STAMP = '"timestamp":"2026-11-24T17:25:55.873677656-03:00"'


#: Keys and values for SeedDecodingTests.test_fast_and_exact_paths_agree: mostly what cAdvisor
#: writes (so the fast path takes many), some of every kind it refuses.
SEED_KEYS = ["container_name", "event_type", "timestamp", "event_data"] * 6 + [
    "CONTAINER_NAME", "Event_Type", "unknown", "ev\u017fnt_type", "oom", "c\\u006fntainer_name"]
SEED_VALUES = [
    '"/a"', '"oom"', '"oomKill"', '"2026-11-24T17:25:55Z"', '"2026-11-24T17:25:55.1-03:00"', "{}",
    '{"oom":{"pid":1,"process_name":"java"}}', '{"oom":{"pid":1,"process_name":"oom","constraint":"x"}}',
    '{"container_deletion":{"exit_code":-1}}', '{"oom":{}}',
] * 4 + [
    "null", "5", '"2026-11-24t17:25:55Z"', '"2028-02-29T00:00:00Z"', '"\\u006fom"', '"o\\"oom"', "[]",
    '{"oom":null}', '{"oom":{"pid":2},"oom":{"process_name":"x"}}', '{"OOM":{"process_name":"oom"}}',
    '{"oom":{"pid":1.5}}', '{"oom" :{"process_name":"j"}}', '{"container_deletion":{"oom":1}}',
]


def counted(body: bytes):
    """count_history's answer as a plain dict, or "error" where the seed's Decode fails (it answers 500)."""
    try:
        return dict(count_history(body))
    except InvalidEvent:
        return "error"


class SeedDecodingTests(unittest.TestCase):
    """/proxy decodes a history as the seed does: Go's json.NewDecoder(body).Decode(&events)
    into cAdvisor v0.33.1's []info.Event, then one series per (container_name, event_type,
    event_data.oom.process_name). Each expectation is what that Go code gives."""

    def answer(self, history: bytes):
        proxy = StubbedProxy(self, upstream=FakeCAdvisor(history))
        code, _, body = proxy.request("/proxy/10.0.0.7:8080")
        return code, body

    def test_the_seeds_fixture(self):
        self.assertEqual(self.answer(SEED_FIXTURE), (200, SEED_FIXTURE_ANSWER))

    def test_missing_fields_are_zero(self):
        self.assertEqual(counted(b"[{}]"), {("", "", ""): 1})
        self.assertEqual(counted(b'[{"event_type":"oom"},{"container_name":"/a"}]'),
                         {("", "oom", ""): 1, ("/a", "", ""): 1})
        body = b'[{"container_name":"/a","event_type":"oomKill","event_data":{"oom":{"pid":1}}}]'
        self.assertEqual(counted(body), {("/a", "oomKill", ""): 1})

    def test_null_is_the_zero_value(self):
        self.assertEqual(
            counted(b'[{"container_name":null,"timestamp":null,"event_type":null,"event_data":null}]'),
            {("", "", ""): 1},
        )
        self.assertEqual(counted(b'[{"container_name":"/a","event_data":{"oom":null}}]'), {("/a", "", ""): 1})
        body = b'[{"container_name":"/a","event_data":{"oom":{"pid":null,"process_name":null}}}]'
        self.assertEqual(counted(body), {("/a", "", ""): 1})

    def test_a_null_element_is_a_zero_event(self):
        self.assertEqual(counted(b'[null,{"container_name":"/a"},null]'), {("", "", ""): 2, ("/a", "", ""): 1})

    def test_unknown_fields_are_ignored_whatever_they_hold(self):
        body = (
            b'[{"container_name":"/a","event_type":"oomKill","x":[1,{"y":null}],"event_type_2":5,'
            b'"event_data":{"oom":{"pid":1,"process_name":"java","constraint":5,"other":{}},'
            b'"container_deletion":"not an object","z":null},"":true}]'
        )
        self.assertEqual(counted(body), {("/a", "oomKill", "java"): 1})

    def test_any_event_type_counts_under_its_own_name(self):
        body = b'[{"container_name":"/a","event_type":"containerCreate"},{"container_name":"/a","event_type":""}]'
        self.assertEqual(counted(body), {("/a", "containerCreate", ""): 1, ("/a", "", ""): 1})

    def test_top_level_null_is_an_empty_history(self):
        for body in [b"null", b" \n\tnull", b"null garbage", b"null[1]"]:
            self.assertEqual(self.answer(body), (200, b""), body)

    def test_trailing_data_is_ignored(self):
        # The seed uses a json.Decoder: Decode reads the first value and nothing after it.
        for tail in [b" ", b"\n", b" trailing", b"[2]", b"]", b"{", b",", b'\xff\xfe', b'{"container_name":1}']:
            body = SEED_FIXTURE + tail
            self.assertEqual(self.answer(body), (200, SEED_FIXTURE_ANSWER), tail)
        self.assertEqual(counted(b"[] trailing"), {})
        self.assertEqual(counted(b"\r\n [ ] [1"), {})

    def test_keys_match_fields_case_insensitively(self):
        body = (
            b'[{"CONTAINER_NAME":"/a","Event_Type":"oomKill","TimeStamp":"2026-11-24T17:25:55Z",'
            b'"EVENT_DATA":{"Oom":{"PID":1,"Process_Name":"java"}}}]'
        )
        self.assertEqual(self.answer(body), (200, HEADER + (
            b'cadvisor_container_events_total{event_type="oomKill",id="/a",oom_process="java"} 1\n')))
        # Go folds keys with Unicode simple case folding: the long s (U+017F) is an "s" ...
        self.assertEqual(counted('[{"proceſs_name":"x","event_data":{"oom":{"proceſs_name":"java"}}}]'.encode()),
                         {("", "", "java"): 1})
        # ... but "ß" is not "ss" (Python's casefold would say it is), nor is a key with escapes
        # anything but the text it stands for.
        self.assertEqual(counted('[{"event_data":{"oom":{"proceß_name":"java"}}}]'.encode()), {("", "", ""): 1})
        self.assertEqual(counted(b'[{"\\u0063ontainer_name":"/a","EVENT_\\u0054YPE":"oom"}]'), {("/a", "oom", ""): 1})

    def test_repeated_keys_the_last_one_wins(self):
        self.assertEqual(counted(b'[{"container_name":"/a","container_name":"/b"}]'), {("/b", "", ""): 1})
        # The exact spelling is not preferred over an earlier one: both set the same field, in order.
        self.assertEqual(counted(b'[{"container_name":"/a","Container_Name":"/b"}]'), {("/b", "", ""): 1})
        self.assertEqual(counted(b'[{"CONTAINER_NAME":"/b","container_name":"/a"}]'), {("/a", "", ""): 1})
        # null for a string leaves what an earlier key set.
        self.assertEqual(counted(b'[{"container_name":"/a","container_name":null}]'), {("/a", "", ""): 1})

    def test_repeated_objects_merge(self):
        # Go decodes a repeated object into the same struct: fields the later one lacks stay.
        java = b'"event_data":{"oom":{"pid":1,"process_name":"java"}}'
        self.assertEqual(counted(b'[{%s,"event_data":{}}]' % java), {("", "", "java"): 1})
        self.assertEqual(counted(b'[{%s,"event_data":null}]' % java), {("", "", "java"): 1})
        self.assertEqual(counted(b'[{%s,"event_data":{"oom":{"pid":2}}}]' % java), {("", "", "java"): 1})
        self.assertEqual(counted(b'[{"event_data":{"oom":{"process_name":"java"},"oom":{"pid":2}}}]'),
                         {("", "", "java"): 1})
        # oom is a pointer: null makes it nil again, and a later object starts from zero.
        self.assertEqual(counted(b'[{%s,"event_data":{"oom":null}}]' % java), {("", "", ""): 1})
        self.assertEqual(counted(b'[{"event_data":{"oom":{"process_name":"java"},"oom":null,"oom":{}}}]'),
                         {("", "", ""): 1})

    def test_every_repeat_of_a_timestamp_is_parsed(self):
        good = b'"timestamp":"2026-11-24T17:25:55Z"'
        self.assertEqual(counted(b'[{%s,%s}]' % (good, good)), {("", "", ""): 1})
        self.assertEqual(counted(b'[{"timestamp":"yesterday",%s}]' % good), "error")
        self.assertEqual(counted(b'[{%s,"timestamp":5}]' % good), "error")

    def test_wrong_json_types_fail_like_the_seed(self):
        # Decode returns an UnmarshalTypeError, ListEvents returns it, the seed answers 500: we 502.
        for body in [
            b'[{"container_name":5}]',
            b'[{"event_type":true}]',
            b'[{"CONTAINER_NAME":["/a"]}]',
            b'[{"timestamp":5}]',
            b'[{"timestamp":{}}]',
            b'[{"event_data":"x"}]',
            b'[{"event_data":[]}]',
            b'[{"event_data":{"oom":1}}]',
            b'[{"event_data":{"oom":{"process_name":1}}}]',
            b'[{"event_data":{"oom":{"pid":"1"}}}]',
            b'[{"event_data":{"oom":{"pid":1.5}}}]',
            b'[{"event_data":{"oom":{"pid":1e3}}}]',
            b'[{"event_data":{"oom":{"pid":9223372036854775808}}}]',
            b'["/a"]',
            b"[1]",
            b"[[]]",
            b"[true]",
            b'[{"container_name":"/a"},{"container_name":"/b","container_name":2}]',
        ]:
            self.assertEqual(counted(body), "error", body)
        code, body = self.answer(b'[{"container_name":"/a"},{"container_name":5}]')
        self.assertEqual(code, 502)
        self.assertIn(b"cannot unmarshal number 5 into Go struct field Event.container_name of type string", body)
        self.assertIn(b"$[1].container_name", body)
        self.assertEqual(counted(b'[{"event_data":{"oom":{"pid":-9223372036854775808}}}]'), {("", "", ""): 1})

    def test_timestamps_are_what_go_time_parse_accepts(self):
        # Time.UnmarshalJSON: time.Parse(time.RFC3339, text between the quotes, escapes unresolved).
        for stamp in [
            "2026-11-24T17:25:55.873677656-03:00", "2026-11-24T17:25:55Z", "2028-02-29T00:00:00Z",
            "2026-11-24T7:25:55Z",  # a one-digit hour
            "2026-11-24T17:25:55,5Z",  # a comma before the fraction
            "2026-11-24T17:25:55.1234567891234Z",  # more than nine fractional digits
            "2026-11-24T17:25:55+24:60", "0000-01-01T00:00:00Z",
            "2026-11-24T17:25:55+25:99",  # refused by Go 1.20 and later, accepted before
        ]:
            self.assertEqual(counted(b'[{"timestamp":"%s"}]' % stamp.encode()), {("", "", ""): 1}, stamp)
        for stamp in [
            "", "yesterday", "2026-11-24t17:25:55Z", "2026-11-24T17:25:55z", "2026-11-24 17:25:55Z",
            "2026-11-24T17:25:55", "2026-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-11-24T24:00:00Z",
            "2026-11-24T17:60:00Z", "2026-11-24T17:25:60Z", "2026-11-24T17:25:55+3:00", "2026-11-24T17:25:55+0300",
            "2026-11-24T17:25:55.Z", "2026-13-01T00:00:00Z", "26-11-24T17:25:55Z",
            "2026-11-24T17:25:55\\u005a",  # "Z" written as an escape: Go parses the raw text
        ]:
            self.assertEqual(counted(b'[{"timestamp":"%s"}]' % stamp.encode()), "error", stamp)

    def test_invalid_utf8_and_lone_surrogates_become_replacement_characters(self):
        # Go's decoder turns each invalid byte and each unpaired surrogate escape into U+FFFD.
        body = b'[{"container_name":"/a\xff\xe2\x82","event_type":"\\ud800x\\udc00","x":"\xc0"}]'
        self.assertEqual(counted(body), {("/a\ufffd\ufffd\ufffd", "\ufffdx\ufffd", ""): 1})
        self.assertEqual(counted(b'[{"container_name":"\\ud83d\\udc33"}]'), {("\U0001f433", "", ""): 1})
        code, body = self.answer(b'[{"container_name":"\\ud800"}]')
        self.assertEqual((code, body), (200, HEADER + (
            'cadvisor_container_events_total{event_type="",id="\ufffd",oom_process=""} 1\n').encode()))

    def test_broken_json_is_still_502(self):
        for body in [b"", b" \n", b"nul", b"[", b"[{}", b'[{"container_name":"/a}]', b"[1,]", b"[01]",
                     b"[NaN]", b"\xef\xbb\xbf[]", b'["\x01"]', b"{]",
                     b"[" * 10001 + b"]" * 10001]:  # Go refuses nesting deeper than 10,000
            self.assertEqual(counted(body), "error", body[:20])
        self.assertEqual(counted(b'[{"x":%s}]' % (b"[" * 9998 + b"]" * 9998)), {("", "", ""): 1})
        code, body = self.answer(b"[{}")
        self.assertEqual(code, 502)
        self.assertIn(b"truncated", body)

    def test_cadvisors_own_bodies_take_the_fast_path(self):
        # Only what msgspec refuses goes through the exact (slow) decoder.
        def slow_path(*args, **kwargs):
            raise AssertionError("took the exact path")

        self.patch(seedhistory, "count_as_go", slow_path)
        self.patch(seedhistory, "DECODE_BATCH", 2)
        cadvisor = (
            b'[{"container_name":"/a",%s,"event_type":"oomKill",'
            b'"event_data":{"oom":{"pid":1,"process_name":"java","constraint":"CONSTRAINT_MEMCG"}}},'
            b'{"container_name":"/a",%s,"event_type":"oom","event_data":{}},'
            b'{"container_name":"/a",%s,"event_type":"containerDeletion","event_data":{"container_deletion":'
            b'{"exit_code":-1}}}] ' % (STAMP.encode(), STAMP.encode(), STAMP.encode())
        )
        self.assertEqual(count_history(cadvisor), {("/a", "oomKill", "java"): 1, ("/a", "oom", ""): 1,
                                                   ("/a", "containerDeletion", ""): 1})
        self.assertEqual(count_history(SEED_FIXTURE + b"\n"), {("c1", "containerCreate", ""): 1})
        self.assertEqual(len(count_history(SMALL_HISTORY)), 2)

    @settings(max_examples=400, deadline=None)
    @given(st.lists(st.one_of(st.none(), st.lists(st.tuples(st.sampled_from(SEED_KEYS), st.sampled_from(SEED_VALUES)),
                                                  max_size=5)), max_size=6),
           st.integers(1, 3), st.booleans())
    def test_fast_and_exact_paths_agree(self, events, batch, spaced):
        """Whatever mix of spellings, repeats, nulls and types: msgspec's way and Go's way give one answer."""
        colon = " : " if spaced else ":"
        body = "[%s]" % ",".join(
            "null" if pairs is None else "{%s}" % ",".join(f'"{key}"{colon}{value}' for key, value in pairs)
            for pairs in events
        )
        self.patch(seedhistory, "DECODE_BATCH", batch)
        try:
            exact = dict(seedhistory.count_as_go(body.encode()))
        except InvalidEvent:
            exact = "error"
        self.assertEqual(counted(body.encode()), exact, body)


LABEL_TEXT = st.text(
    alphabet=st.sampled_from(list('ab/_-.: "\\\n\t\x00\x01\x7f\u00e9\u00f5\u2028\u4e00\U0001f433'))
    | st.characters(codec="utf-8"),  # any character but lone surrogates, which msgspec never yields
    max_size=12,
)


class RenderEquivalenceTests(unittest.TestCase):
    """The whole-text render path is byte-identical to rendering series one by one."""

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(st.tuples(LABEL_TEXT, LABEL_TEXT, LABEL_TEXT),
                           st.integers(min_value=1, max_value=10**9), max_size=30))
    def test_same_bytes(self, counts):
        self.assertEqual(render_seed_counts(counts), _render_seed_counts_per_series(counts))

    def test_prefixes_sort_first(self):
        # "oom" < "oomKill", "/a" < "/a b" < "/a/b": the separators sort below any value byte.
        counts = {("/a/b", "oom", ""): 1, ("/a", "oomKill", ""): 2, ("/a b", "oom", "x"): 3,
                  ("/a", "oom", "\x01"): 4, ("/a", "oom", ""): 5, ("/a", "oom", "\x00"): 6}
        self.assertEqual(render_seed_counts(counts), _render_seed_counts_per_series(counts))
        lines = render_seed_counts(counts).decode().splitlines()[2:]
        self.assertEqual([line.rsplit(" ", 1)[1] for line in lines], ["5", "6", "4", "3", "1", "2"])


class ErrorTests(unittest.TestCase):
    """Every failure is a plain-text answer with the right status and a reason."""

    def assertPlainError(self, answer, code: int, *fragments: str) -> str:
        got_code, headers, body = answer
        text = body.decode("utf-8")
        self.assertEqual(got_code, code, text)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"text/plain; charset=utf-8"])
        self.assertTrue(text.endswith("\n") and text.count("\n") == 1, text)
        self.assertNotIn("Traceback", text)
        for fragment in fragments:
            self.assertIn(fragment, text)
        return text

    def test_malformed_targets_are_400_without_connecting(self):
        for path, reason in [
            ("/proxy/http://", "has no host"),
            ("/proxy/node:99999", "node:99999"),
            ("/proxy/node:port", "node:port"),
            ("/proxy?url=ftp://x", "scheme must be http or https"),
        ]:
            proxy = StubbedProxy(self)
            self.assertPlainError(proxy.request(path), 400, "malformed /proxy target", reason)
            self.assertEqual(proxy.upstream.asked, [])

    def test_malformed_target_hides_password(self):
        text = self.assertPlainError(
            StubbedProxy(self).request("/proxy/http://user:s3cret@node:port"), 400
        )
        self.assertNotIn("s3cret", text)

    def test_other_methods_are_405(self):
        proxy = StubbedProxy(self)
        self.assertPlainError(proxy.request("/proxy/node:1", "POST"), 405, "POST")
        self.assertEqual(proxy.upstream.asked, [])

    def test_upstream_status_is_502_with_excerpt(self):
        proxy = StubbedProxy(self, upstream=FakeCAdvisor(b"too many requests, slow down", code=500))
        self.assertPlainError(
            proxy.request("/proxy/node:1"), 502, "http://node:1", "HTTP 500", "too many requests, slow down"
        )

    def test_bodies_that_are_not_event_arrays_are_502(self):
        for body, fragment in [
            (b'{"not": "an array"}', "Expected `array`"),
            (b"<html>oops</html>", "<html>oops</html>"),
            (b'[{"container_name": 1}]', "container_name"),
            (b'[{"container_name":"/a","timestamp":"t","event_type":"oom"}', "truncated"),
            (b'["\xff\xfe"]', "not a JSON array"),
            (b"", "not a JSON array"),
        ]:
            proxy = StubbedProxy(self, upstream=FakeCAdvisor(body))
            self.assertPlainError(
                proxy.request("/proxy/node:1"), 502,
                "http://node:1", "not a JSON array of cAdvisor events", fragment,
            )

    def test_dns_failure_is_502(self):
        http = FailingHTTP(DNSLookupError("no.such.host.invalid"))
        proxy = StubbedProxy(self, http=http)
        self.assertPlainError(
            proxy.request("/proxy/no.such.host.invalid:8080"), 502,
            "http://no.such.host.invalid:8080", "does not resolve",
        )
        self.assertEqual(len(http.urls), 1)

    def test_timeout_waiting_for_headers_is_504(self):
        upstream = SilentCAdvisor()
        proxy = StubbedProxy(self, upstream=upstream, timeout=7.0)
        d = proxy.front.get("http://exporter.test/proxy/node:1")
        proxy.flush()
        self.assertEqual(self.successResultOf(upstream.arrived), ALL_QUERY)
        proxy.clock.advance(6.9)
        proxy.flush()
        self.assertNoResult(d)
        proxy.clock.advance(0.1)
        proxy.flush()
        response = self.successResultOf(d)
        body = self.successResultOf(proxy.front.content(response))
        self.assertPlainError(
            (response.code, response.headers, body), 504, "http://node:1 did not answer within 7 s"
        )

    def test_timeout_covers_the_body(self):
        upstream = SilentCAdvisor(first_bytes=b'[{"container_name":"/a",')
        proxy = StubbedProxy(self, upstream=upstream, timeout=5.0)
        d = proxy.front.get("http://exporter.test/proxy/node:1")
        proxy.flush()
        proxy.clock.advance(4)
        proxy.flush()
        self.assertNoResult(d)
        proxy.clock.advance(1)
        proxy.flush()
        response = self.successResultOf(d)
        body = self.successResultOf(proxy.front.content(response))
        self.assertPlainError(
            (response.code, response.headers, body), 504, "http://node:1 did not answer within 5 s"
        )

    def test_head_error_has_no_body(self):
        proxy = StubbedProxy(self, upstream=FakeCAdvisor(b"nope", code=404))
        code, headers, body = proxy.request("/proxy/node:1", "HEAD")
        self.assertEqual((code, body), (502, b""))
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"text/plain; charset=utf-8"])


class SelfMetricsTests(unittest.TestCase):
    def test_requests_and_durations(self):
        proxy = StubbedProxy(self)
        proxy.request("/proxy/node:1")
        proxy.request("/proxy/node:1", "HEAD")
        proxy.request("/proxy/node:port")
        proxy.request("/proxy/node:1", "DELETE")
        proxy.upstream.body = b"garbage"
        proxy.request("/proxy/node:1")

        silent = SilentCAdvisor()
        proxy.upstream_http = StubTreq(silent)
        proxy.resource.client = CAdvisorClient(proxy.clock, http=proxy.upstream_http)
        d = proxy.front.get("http://exporter.test/proxy/node:1")
        proxy.flush()
        proxy.clock.advance(30)
        proxy.flush()
        self.assertEqual(self.successResultOf(d).code, 504)

        got = samples(proxy.registry)
        codes = {
            dict(labels)["code"]: value
            for (name, labels), value in got.items()
            if name == "cadvisor_events_proxy_requests_total"
        }
        self.assertEqual(codes, {"200": 2.0, "400": 1.0, "405": 1.0, "502": 1.0, "504": 1.0})
        self.assertEqual(got[("cadvisor_events_proxy_request_duration_seconds_count", ())], 6.0)
        self.assertEqual(got[("cadvisor_events_proxy_request_duration_seconds_sum", ())], 30.0)
        self.assertEqual(
            got[("cadvisor_events_proxy_request_duration_seconds_bucket", (("le", "10.0"),))], 5.0
        )


class RealConnectionTests(unittest.TestCase):
    """Loopback sockets where the behaviour depends on real connections."""

    timeout = 20  # seconds; a missing cancellation shows as a hang, failed here

    def setUp(self):
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=self.pool))
        self.registry = CollectorRegistry()

    def listen(self, res: resource.Resource) -> int:
        port = reactor.listenTCP(0, server.Site(res), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def serve_proxy(self, clock=reactor) -> int:
        self.proxy = ProxyResource(
            CAdvisorClient(clock, http=self.http), default_target=DEFAULT, clock=clock, registry=self.registry
        )
        root = resource.Resource()
        root.putChild(b"proxy", self.proxy)
        return self.listen(root)

    @defer.inlineCallbacks
    def get(self, url: str):
        response = yield self.http.get(url)
        body = yield response.content()
        return response.code, body

    @defer.inlineCallbacks
    def test_real_upstream(self):
        upstream = FakeCAdvisor()
        upstream_port = self.listen(upstream)
        front = self.serve_proxy()
        code, body = yield self.get(f"http://127.0.0.1:{front}/proxy/http://127.0.0.1:{upstream_port}")
        self.assertEqual((code, body), (200, SMALL_ANSWER))
        self.assertEqual(upstream.asked, [(b"127.0.0.1:%d" % upstream_port, ALL_QUERY)])

    @defer.inlineCallbacks
    def test_v6_literal_upstream(self):
        # treq once failed on the literal (hyperlink's to_uri cannot IDNA-encode "::1").
        try:
            port = reactor.listenTCP(0, server.Site(FakeCAdvisor()), interface="::1")
        except CannotListenError:
            raise unittest.SkipTest("no IPv6 loopback on this machine")
        self.addCleanup(port.stopListening)
        front = self.serve_proxy()
        for path in [f"/proxy/[::1]:{port.getHost().port}", f"/proxy?url=http://[::1]:{port.getHost().port}"]:
            code, body = yield self.get(f"http://127.0.0.1:{front}{path}")
            self.assertEqual((code, body), (200, SMALL_ANSWER), path)

    @defer.inlineCallbacks
    def test_refused_is_502_naming_upstream(self):
        dead = reactor.listenTCP(0, server.Site(FakeCAdvisor()), interface="127.0.0.1")
        dead_port = dead.getHost().port
        yield dead.stopListening()
        front = self.serve_proxy()
        code, body = yield self.get(
            f"http://127.0.0.1:{front}/proxy/http://user:s3cret@127.0.0.1:{dead_port}"
        )
        self.assertEqual(code, 502)
        self.assertEqual(
            body, f"upstream cAdvisor failed: http://127.0.0.1:{dead_port}: connection refused\n".encode()
        )

    @defer.inlineCallbacks
    def test_bare_proxy_goes_to_default(self):
        dead = reactor.listenTCP(0, server.Site(FakeCAdvisor()), interface="127.0.0.1")
        dead_port = dead.getHost().port
        yield dead.stopListening()
        front = self.serve_proxy()
        self.proxy.default_target = Target("127.0.0.1", dead_port)
        for path in ["/proxy", "/proxy/"]:
            code, body = yield self.get(f"http://127.0.0.1:{front}{path}")
            self.assertEqual(code, 502)
            self.assertIn(f"127.0.0.1:{dead_port}: connection refused".encode(), body)

    @defer.inlineCallbacks
    def test_timeout_drops_upstream_connection(self):
        clock = Clock()
        upstream = SilentCAdvisor()
        upstream_port = self.listen(upstream)
        front = self.serve_proxy(clock)
        answer = self.get(f"http://127.0.0.1:{front}/proxy/127.0.0.1:{upstream_port}")
        yield upstream.arrived
        clock.advance(30)
        code, body = yield answer
        self.assertEqual(code, 504)
        self.assertIn(f"http://127.0.0.1:{upstream_port} did not answer within 30 s".encode(), body)
        yield upstream.dropped

    @defer.inlineCallbacks
    def test_client_disconnect_cancels_upstream(self):
        upstream = SilentCAdvisor()
        upstream_port = self.listen(upstream)
        front = self.serve_proxy()
        received = []

        class RawClient(Protocol):
            def dataReceived(self, data):
                received.append(data)

        client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", front), RawClient())
        client.transport.write(
            b"GET /proxy/127.0.0.1:%d HTTP/1.1\r\nHost: exporter\r\n\r\n" % upstream_port
        )
        yield upstream.arrived
        client.transport.loseConnection()
        yield upstream.dropped  # the upstream saw its connection go away
        yield deferLater(reactor, 0, lambda: None)  # one more turn: a wrong late write would show
        self.assertEqual(received, [])
        got = samples(self.registry)
        self.assertEqual(got[("cadvisor_events_proxy_requests_total", (("code", "499"),))], 1.0)



class ScriptedResolver:
    """``resolve(host, port)`` answering from a dict; names in ``hang`` never answer."""

    def __init__(self, answers=None, hang=()):
        self.answers = answers or {}
        self.hang = hang
        self.asked: list = []

    def __call__(self, host, port):
        self.asked.append(host)
        if host in self.hang:
            return defer.Deferred()
        return defer.succeed(self.answers.get(host, []))


class AccessTests(unittest.TestCase):
    """--proxy-allow: refused targets are 403 before anything connects; admitted ones are fetched."""

    def proxy(self, allow=("10.0.0.0/8", "cadvisor.allowed"), answers=None, hang=(), **options):
        self.resolve = ScriptedResolver(answers or {"inside.test": ["10.1.1.1"], "outside.test": ["10.1.1.1", "127.0.0.1"]}, hang)
        self.pinned: list = []
        proxy = None

        def pinned_client(addresses):
            self.pinned.append(addresses)
            return proxy.resource.client  # the same stub upstream: which address is recorded above

        access = ProxyAccess(parse_allow(allow), resolve=self.resolve, pinned_client=pinned_client)
        proxy = StubbedProxy(self, access=access, **options)
        return proxy

    def codes(self, proxy) -> dict:
        return {
            dict(labels)["code"]: value
            for (name, labels), value in samples(proxy.registry).items()
            if name == "cadvisor_events_proxy_requests_total"
        }

    def test_refused_literal_is_403_without_connecting(self):
        proxy = self.proxy()
        code, headers, body = proxy.request("/proxy/http://user:s3cret@127.0.0.1:8080")
        self.assertEqual(code, 403)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"text/plain; charset=utf-8"])
        self.assertEqual(
            body, b"/proxy refused: http://127.0.0.1:8080 is not allowed: 127.0.0.1 is outside --proxy-allow\n"
        )
        self.assertEqual(proxy.upstream.asked, [])
        self.assertEqual(self.codes(proxy), {"403": 1.0})

    def test_name_with_any_address_outside_is_403(self):
        proxy = self.proxy()
        code, _, body = proxy.request("/proxy/outside.test:8080")
        self.assertEqual(code, 403)
        self.assertIn(b"outside.test resolves to 127.0.0.1, outside --proxy-allow", body)
        self.assertEqual((self.resolve.asked, proxy.upstream.asked, self.pinned), (["outside.test"], [], []))

    def test_allowed_literal_is_fetched(self):
        proxy = self.proxy()
        self.assertEqual(proxy.request("/proxy/10.0.0.7:8080")[::2], (200, SMALL_ANSWER))
        self.assertEqual((self.resolve.asked, self.pinned), ([], []))

    def test_allowed_name_is_fetched_by_name(self):
        proxy = self.proxy()
        self.assertEqual(proxy.request("/proxy/CADVISOR.allowed:8080")[0], 200)
        self.assertEqual(proxy.upstream.asked, [(b"cadvisor.allowed:8080", ALL_QUERY)])
        self.assertEqual((self.resolve.asked, self.pinned), ([], []))

    def test_resolved_name_is_fetched_through_a_pinned_client_with_its_name(self):
        proxy = self.proxy()
        self.assertEqual(proxy.request("/proxy/inside.test:8080")[0], 200)
        self.assertEqual(self.pinned, [("10.1.1.1",)])
        self.assertEqual(proxy.upstream.asked, [(b"inside.test:8080", ALL_QUERY)])

    def test_unresolvable_name_is_502(self):
        proxy = self.proxy()
        code, _, body = proxy.request("/proxy/nowhere.test:8080")
        self.assertEqual(code, 502)
        self.assertIn(b"does not resolve", body)
        self.assertEqual(proxy.upstream.asked, [])

    def test_bare_proxy_goes_to_the_configured_default(self):
        proxy = self.proxy()
        self.assertEqual(proxy.request("/proxy")[0], 200)
        self.assertEqual(proxy.upstream.asked, [(b"127.0.0.1:9094", ALL_QUERY)])
        self.assertEqual(proxy.request("/proxy/127.0.0.1:9094")[0], 403)  # named explicitly: checked

    def test_resolution_counts_against_the_timeout(self):
        proxy = self.proxy(hang=("slow.test",), timeout=5.0)
        d = proxy.front.get("http://exporter.test/proxy/slow.test:8080")
        proxy.flush()
        proxy.clock.advance(5)
        proxy.flush()
        response = self.successResultOf(d)
        body = self.successResultOf(proxy.front.content(response))
        self.assertEqual(response.code, 504)
        self.assertIn(b"http://slow.test:8080 did not answer within 5 s", body)
        self.assertEqual(proxy.upstream.asked, [])
        self.assertEqual(proxy.resource.in_flight, 0)


class NeverAnswers(resource.Resource):
    """An upstream that takes any number of requests and answers none."""

    isLeaf = True

    def render_GET(self, request):
        return server.NOT_DONE_YET


class LimitTests(unittest.TestCase):
    def test_concurrency_beyond_the_limit_is_503_with_retry_after(self):
        upstream = NeverAnswers()
        proxy = StubbedProxy(self, upstream=upstream, concurrency=2, timeout=10.0)
        pending = [proxy.front.get("http://exporter.test/proxy/node:1") for _ in range(2)]
        proxy.flush()
        code, headers, body = proxy.request("/proxy/node:1")
        self.assertEqual(code, 503)
        self.assertEqual(headers.getRawHeaders(b"retry-after"), [b"1"])
        self.assertIn(b"--proxy-concurrency", body)
        proxy.clock.advance(10)  # both pending fetches time out, freeing their slots
        proxy.flush()
        self.assertEqual([self.successResultOf(d).code for d in pending], [504, 504])
        self.assertEqual(proxy.resource.in_flight, 0)
        proxy.upstream_http = StubTreq(FakeCAdvisor())
        proxy.resource.client = CAdvisorClient(proxy.clock, http=proxy.upstream_http)
        self.assertEqual(proxy.request("/proxy/node:1")[0], 200)
        codes = {
            dict(labels)["code"]: value
            for (name, labels), value in samples(proxy.registry).items()
            if name == "cadvisor_events_proxy_requests_total"
        }
        self.assertEqual(codes, {"503": 1.0, "504": 2.0, "200": 1.0})

    def test_refused_and_malformed_requests_free_their_slot(self):
        access = ProxyAccess(parse_allow(["10.0.0.0/8"]), resolve=ScriptedResolver(), pinned_client=None)
        proxy = StubbedProxy(self, concurrency=1, access=access)
        for _ in range(3):
            self.assertEqual(proxy.request("/proxy/127.0.0.1:1")[0], 403)
            self.assertEqual(proxy.request("/proxy/x:port")[0], 400)
        self.assertEqual(proxy.resource.in_flight, 0)

    def test_history_over_the_limit_is_502_naming_it(self):
        proxy = StubbedProxy(self, max_history_bytes=100)
        code, _, body = proxy.request("/proxy/node:1")
        self.assertEqual(code, 502)
        self.assertIn(b"history larger than the limit of 100 bytes (--max-history-bytes)", body)


class CredentialTests(unittest.TestCase):
    """A timed-out or failing upstream named with credentials: neither answer nor log shows them."""

    def test_timeout_and_status_hide_the_password(self):
        events: list = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        proxy = StubbedProxy(self, upstream=NeverAnswers(), timeout=5.0)
        d = proxy.front.get("http://exporter.test/proxy/http://user:s3cret@node:1")
        proxy.flush()
        proxy.clock.advance(5)
        proxy.flush()
        response = self.successResultOf(d)
        timeout_body = self.successResultOf(proxy.front.content(response))
        self.assertEqual(response.code, 504)
        status = StubbedProxy(self, upstream=FakeCAdvisor(b"denied", code=401))
        code, _, status_body = status.request("/proxy/http://user:s3cret@node:1")
        self.assertEqual(code, 502)
        for body in (timeout_body, status_body):
            self.assertIn(b"http://node:1", body)
            self.assertNotIn(b"s3cret", body)
        logged = " ".join(formatEvent(e) + repr(e) for e in events)
        self.assertIn("/proxy upstream http://node:1 failed", logged)
        self.assertNotIn("s3cret", logged)

