"""Tests for cadvisor_events.protocol: NDJSON lines in, events out, whatever the bytes."""

from __future__ import annotations

import json

import msgspec
from hypothesis import given, settings, strategies as st
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss

from cadvisor_events.event import Event, InvalidEvent, decode_event
from cadvisor_events.protocol import MAX_LINE, EventStreamProtocol

from .support import OOM_KILL

CREATION = (
    b'{"container_name":"/docker/4cab","timestamp":"2026-11-24T17:25:56Z",'
    b'"event_type":"containerCreation","event_data":{}}'
)

SHORT = b'{"container_name":"/","timestamp":"2026-11-24T17:25:56Z","event_type":"oom"}'


class Recorder:
    """Collects what a protocol hands out."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.events: list[Event] = []
        self.invalid: list[str] = []
        self.ends: list[Failure] = []
        self.protocol = EventStreamProtocol(self.events.append, self.invalid.append, self.ends.append,
                                            max_line=max_line)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def feed(self, *chunks: bytes) -> "Recorder":
        for chunk in chunks:
            self.protocol.dataReceived(chunk)
        return self


class LineTests(unittest.TestCase):
    def test_one_line_per_chunk(self):
        r = Recorder().feed(OOM_KILL + b"\n", CREATION + b"\n")
        self.assertEqual(r.events, [decode_event(OOM_KILL), decode_event(CREATION)])
        self.assertEqual(r.invalid, [])
        self.assertEqual(r.protocol.buffered, 0)

    def test_several_lines_in_one_chunk(self):
        r = Recorder().feed(OOM_KILL + b"\n" + CREATION + b"\n" + OOM_KILL + b"\n")
        self.assertEqual(len(r.events), 3)

    def test_line_split_across_chunks(self):
        data = OOM_KILL + b"\n" + CREATION + b"\n"
        r = Recorder().feed(data[:10], data[10:150], data[150:151], data[151:])
        self.assertEqual(r.events, [decode_event(OOM_KILL), decode_event(CREATION)])

    def test_partial_line_waits_for_its_newline(self):
        r = Recorder().feed(OOM_KILL)
        self.assertEqual(r.events, [])
        self.assertEqual(r.protocol.buffered, len(OOM_KILL))
        r.feed(b"\n")
        self.assertEqual(len(r.events), 1)
        self.assertEqual(r.protocol.buffered, 0)

    def test_crlf(self):
        r = Recorder().feed(OOM_KILL + b"\r\n", CREATION + b"\r\n" + OOM_KILL + b"\r", b"\n")
        self.assertEqual(len(r.events), 3)
        self.assertEqual(r.invalid, [])

    def test_blank_lines_skipped(self):
        r = Recorder().feed(b"\n", b"\r\n", b"\n\n\r\n", b"   \n", OOM_KILL + b"\n\n\n", b"\t\r\n")
        self.assertEqual(len(r.events), 1)
        self.assertEqual(r.invalid, [])

    def test_unicode_and_escapes(self):
        line = json.dumps({"container_name": "/docker/é\n\"x\"", "timestamp": "2026-11-24T17:25:55Z",
                           "event_type": "oomKill", "event_data": {"oom": {"pid": 1, "process_name": "进程 \u2028"}}},
                          ensure_ascii=False).encode()
        r = Recorder().feed(line[:7], line[7:] + b"\n")
        self.assertEqual(r.events[0].oom_process, "进程 \u2028")
        self.assertEqual(r.events[0].container_name, '/docker/é\n"x"')


class InvalidLineTests(unittest.TestCase):
    BAD = [
        b"not json",
        b"{",
        b'{"container_name":"/"',
        b"[1, 2, 3]",
        b"null",
        b"42",
        b'"a string"',
        b"true",
        b"{}",
        b'{"timestamp":"2026-11-24T17:25:55Z","event_type":"oom"}',
        b'{"container_name":"/","event_type":"oom"}',
        b'{"container_name":"/","timestamp":"2026-11-24T17:25:55Z"}',
        b'{"container_name":1,"timestamp":"2026-11-24T17:25:55Z","event_type":"oom"}',
        b'{"container_name":"/","timestamp":5,"event_type":"oom"}',
        b'{"container_name":"/","timestamp":"2026-11-24T17:25:55Z","event_type":["oom"]}',
        b'{"container_name":"/","timestamp":"2026-11-24T17:25:55Z","event_type":"oom","event_data":3}',
        b'{"container_name":"/","timestamp":"2026-11-24T17:25:55Z","event_type":"oomKill",'
        b'"event_data":{"oom":{"pid":"x"}}}',
        b'{"container_name":"/\xff\xfe","timestamp":"2026-11-24T17:25:55Z","event_type":"oom"}',
        b"\xc3\x28",
        b"\x00\x01\x02",
        OOM_KILL + b" trailing",
        OOM_KILL + OOM_KILL,
    ]

    def test_every_kind_counted_and_skipped(self):
        for split in (False, True):
            r = Recorder()
            for bad in self.BAD:
                if split:  # the general path: several lines per chunk
                    r.feed(OOM_KILL + b"\n" + bad + b"\n" + CREATION + b"\n")
                else:  # the fast path: one line per chunk
                    r.feed(OOM_KILL + b"\n", bad + b"\n", CREATION + b"\n")
            self.assertEqual(len(r.invalid), len(self.BAD), (split, r.invalid))
            self.assertEqual(len(r.events), 2 * len(self.BAD))
            self.assertTrue(all(isinstance(reason, str) and reason for reason in r.invalid))
            self.assertFalse(r.transport.disconnecting)

    def test_decoder_surprises_do_not_escape(self):
        def explode(line):
            raise RuntimeError("boom")

        r = Recorder()
        self.patch(__import__("cadvisor_events.protocol").protocol, "decode_event", explode)
        r.feed(OOM_KILL + b"\n", OOM_KILL + b"\nxx\n")
        self.assertEqual(len(r.invalid), 3)
        self.assertIn("RuntimeError", r.invalid[0])

    def test_failing_event_handler_does_not_stop_the_stream(self):
        r = Recorder()
        calls = []

        def handler(event):
            calls.append(event)
            if len(calls) == 1:
                raise ValueError("bug downstream")

        r.protocol.on_event = handler
        r.feed(OOM_KILL + b"\n" + CREATION + b"\n")
        self.assertEqual(len(calls), 2)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class OverlongLineTests(unittest.TestCase):
    def test_overlong_line_in_small_chunks_keeps_memory_flat(self):
        max_line = 1024 * 1024
        r = Recorder(max_line=max_line).feed(OOM_KILL + b"\n", b'{"container_name":"')
        chunk = b"x" * (64 * 1024)
        for _ in range(64):  # 4 MiB in 64 KiB chunks
            r.feed(chunk)
            self.assertLessEqual(r.protocol.buffered, max_line)
            self.assertLessEqual(sum(map(len, r.protocol._parts)), max_line)
        r.feed(b'x"}\n' + CREATION + b"\n")
        self.assertEqual(r.events, [decode_event(OOM_KILL), decode_event(CREATION)])
        self.assertEqual(len(r.invalid), 1)
        self.assertIn("longer than", r.invalid[0])
        self.assertEqual(r.protocol.buffered, 0)
        self.assertFalse(r.transport.disconnecting)

    def test_overlong_line_in_one_chunk(self):
        r = Recorder(max_line=100).feed(b"y" * 500 + b"\n", SHORT + b"\n")
        self.assertEqual(len(r.invalid), 1)
        self.assertEqual(len(r.events), 1)
        r.feed(b"z" * 500 + b"\n" + SHORT + b"\n" + b"z" * 101 + b"\n")
        self.assertEqual(len(r.invalid), 3)
        self.assertEqual(len(r.events), 2)

    def test_overlong_tail_then_newline_later(self):
        r = Recorder(max_line=100).feed(SHORT[:10] + b"\n" + b"q" * 150, b"q" * 150, b"q\nq" + b"\n" + SHORT + b"\n")
        self.assertEqual(len(r.invalid), 3)  # SHORT[:10], the long one, "q"
        self.assertEqual(len(r.events), 1)

    def test_partial_growing_past_the_limit(self):
        r = Recorder(max_line=100).feed(b"a" * 60, b"a" * 60)
        self.assertEqual(len(r.invalid), 1)
        self.assertEqual(r.protocol.buffered, 0)
        r.feed(b"a" * 1000, b"\n" + SHORT + b"\n")
        self.assertEqual(len(r.invalid), 1)
        self.assertEqual(len(r.events), 1)

    def test_partial_plus_rest_past_the_limit(self):
        r = Recorder(max_line=100).feed(b"a" * 60, b"a" * 60 + b"\n" + SHORT + b"\n")
        self.assertEqual(len(r.invalid), 1)
        self.assertEqual(len(r.events), 1)

    def test_line_of_exactly_max_line_is_decoded(self):
        line = CREATION + b" " * 37
        r = Recorder(max_line=len(line)).feed(line + b"\n", line[:50], line[50:] + b"\n")
        self.assertEqual(len(r.events), 2)
        r = Recorder(max_line=len(line) - 1).feed(line + b"\n", line[:50], line[50:] + b"\n")
        self.assertEqual((len(r.events), len(r.invalid)), (0, 2))


class EndTests(unittest.TestCase):
    def test_clean_end(self):
        r = Recorder().feed(OOM_KILL + b"\n")
        r.protocol.connectionLost(Failure(ResponseDone()))
        self.assertEqual(len(r.ends), 1)
        self.assertTrue(r.ends[0].check(ResponseDone))
        self.assertEqual(r.invalid, [])

    def test_clean_end_decodes_a_last_line_without_newline(self):
        r = Recorder().feed(OOM_KILL + b"\n" + CREATION)
        r.protocol.connectionLost(Failure(ResponseDone()))
        self.assertEqual(len(r.events), 2)

    def test_cut_drops_the_partial_last_line(self):
        for reason in (PotentialDataLoss(), ResponseFailed([Failure(ConnectionLost())])):
            r = Recorder().feed(OOM_KILL + b"\n" + CREATION[:30])
            r.protocol.connectionLost(Failure(reason))
            self.assertEqual(len(r.events), 1)
            self.assertEqual(len(r.invalid), 1)
            self.assertEqual(len(r.ends), 1)
            self.assertIs(r.ends[0].value, reason)

    def test_cut_right_after_a_newline_loses_nothing(self):
        r = Recorder().feed(OOM_KILL + b"\n")
        r.protocol.connectionLost(Failure(PotentialDataLoss()))
        self.assertEqual((len(r.events), r.invalid), (1, []))

    def test_cut_in_discard_mode_counts_the_line_once(self):
        r = Recorder(max_line=10).feed(b"x" * 50)
        r.protocol.connectionLost(Failure(PotentialDataLoss()))
        self.assertEqual(len(r.invalid), 1)

    def test_on_end_called_once(self):
        r = Recorder()
        r.protocol.connectionLost(Failure(ResponseDone()))
        r.protocol.connectionLost(Failure(PotentialDataLoss()))
        self.assertEqual(len(r.ends), 1)


class TransportTests(unittest.TestCase):
    def test_pause_resume_close(self):
        r = Recorder()
        r.protocol.pause()
        self.assertEqual(r.transport.producerState, "paused")
        r.protocol.resume()
        self.assertEqual(r.transport.producerState, "producing")
        r.protocol.close()
        self.assertEqual(r.transport.producerState, "stopped")

    def test_callbacks_can_be_swapped_between_chunks(self):
        r = Recorder()
        other = []
        r.feed(OOM_KILL + b"\n")
        r.protocol.on_event = other.append
        r.feed(CREATION + b"\n")
        self.assertEqual((len(r.events), len(other)), (1, 1))


# -- property tests -------------------------------------------------------------------

SMALL_MAX = 300

timestamps = st.builds(
    lambda s, frac, zone: "2026-11-24T17:25:%02d%s%s" % (s, frac, zone),
    st.integers(0, 59),
    st.sampled_from(["", ".1", ".873677656", ".12345"]),
    st.sampled_from(["Z", "-03:00", "+05:30"]),
)
event_docs = st.fixed_dictionaries(
    {
        "container_name": st.text(max_size=20),
        "timestamp": timestamps,
        "event_type": st.sampled_from(["oom", "oomKill", "containerCreation", "containerDeletion", "new"]),
        "event_data": st.one_of(
            st.just({}),
            st.builds(lambda pid, name: {"oom": {"pid": pid, "process_name": name}},
                      st.integers(0, 2**31), st.text(max_size=10)),
        ),
    }
)
valid_lines = event_docs.map(lambda doc: msgspec.json.encode(doc))
invalid_lines = st.one_of(
    st.sampled_from(InvalidLineTests.BAD),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
)
overlong_lines = st.integers(SMALL_MAX + 1, 3 * SMALL_MAX).map(lambda n: b"x" * n)
blank_lines = st.sampled_from([b"", b"\r", b" ", b"\t \r"])
lines = st.lists(st.one_of(valid_lines, valid_lines, invalid_lines, overlong_lines, blank_lines), max_size=25)


def expected(raw_lines: list[bytes]) -> tuple[list[Event], int]:
    """What a correct line protocol yields for these lines (the model)."""
    events, invalid = [], 0
    for line in raw_lines:
        if len(line) > SMALL_MAX:
            invalid += 1
        elif line.strip():
            try:
                events.append(decode_event(line))
            except InvalidEvent:
                invalid += 1
    return events, invalid


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)])]


class PropertyTests(unittest.TestCase):
    @settings(max_examples=300, deadline=None)
    @given(lines, st.lists(st.booleans(), max_size=25), st.lists(st.integers(0, 10**6), max_size=30),
           st.booleans(), st.one_of(st.just(b""), valid_lines, invalid_lines, overlong_lines, blank_lines))
    def test_any_split_yields_the_same_events(self, raw_lines, crlf, cuts, clean, tail):
        endings = [b"\r\n" if i < len(crlf) and crlf[i] else b"\n" for i in range(len(raw_lines))]
        data = b"".join(line + end for line, end in zip(raw_lines, endings)) + tail
        whole = Recorder(max_line=SMALL_MAX).feed(data)
        pieces = Recorder(max_line=SMALL_MAX)
        for chunk in split(data, cuts):
            pieces.feed(chunk)
            self.assertLessEqual(pieces.protocol.buffered, SMALL_MAX)
        one_by_one = Recorder(max_line=SMALL_MAX).feed(*[data[i:i + 1] for i in range(len(data))])
        model_events, model_invalid = expected([
            line + (b"\r" if end == b"\r\n" else b"") for line, end in zip(raw_lines, endings)])
        if tail and clean:  # a last line without newline is decoded at a clean end...
            tail_events, tail_invalid = expected([tail])
            model_events += tail_events
            model_invalid += tail_invalid
        elif tail:  # ...and dropped (once) at a cut
            model_invalid += 1
        for r in (whole, pieces, one_by_one):
            r.protocol.connectionLost(Failure(ResponseDone() if clean else PotentialDataLoss()))
            self.assertEqual(r.events, model_events)
            self.assertEqual(len(r.invalid), model_invalid)
            self.assertEqual(len(r.ends), 1)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.binary(max_size=700), max_size=20), st.booleans())
    def test_arbitrary_bytes_never_raise(self, chunks, clean):
        r = Recorder(max_line=SMALL_MAX)
        for chunk in chunks:
            r.protocol.dataReceived(chunk)
            self.assertLessEqual(r.protocol.buffered, SMALL_MAX)
        r.protocol.connectionLost(Failure(ResponseDone() if clean else PotentialDataLoss()))
        self.assertEqual(len(r.ends), 1)
        self.assertFalse(r.transport.disconnecting)
        # Same result as one chunk, except a partial last line may decode at a clean end.
        whole = Recorder(max_line=SMALL_MAX).feed(b"".join(chunks))
        whole.protocol.connectionLost(Failure(ResponseDone() if clean else PotentialDataLoss()))
        self.assertEqual((r.events, len(r.invalid)), (whole.events, len(whole.invalid)))
