"""Tests for cadvisor_events.event: decoding, counting key, nanosecond timestamps."""

import datetime

import msgspec
from hypothesis import given, settings, strategies as st
from twisted.trial import unittest

from cadvisor_events.event import (
    Event,
    InvalidEvent,
    count_events,
    decode_event,
    decode_history,
    parse_history,
    strict_timestamp_ns,
    timestamp_ns,
    timestamps_ns,
)
from cadvisor_events.testing import history_body

from .support import OOM_KILL, A, B


class DecodeEventTests(unittest.TestCase):
    def test_oom_kill(self):
        event = decode_event(OOM_KILL)
        self.assertEqual(event.container_name, "/kubepods/burstable/pod1f/3c9")
        self.assertEqual(event.timestamp, "2026-11-24T17:25:55.873677656-03:00")
        self.assertEqual(event.key, ("/kubepods/burstable/pod1f/3c9", "oomKill", "java"))
        self.assertEqual(event.event_data.oom.pid, 23081)

    def test_no_data_means_empty_oom_process(self):
        event = decode_event(
            b'{"container_name":"/docker/a","timestamp":"2026-11-24T17:25:55Z",'
            b'"event_type":"containerCreation","event_data":{}}'
        )
        self.assertEqual(event.key, ("/docker/a", "containerCreation", ""))

    def test_unknown_keys_and_types_are_kept(self):
        event = decode_event(
            b'{"container_name":"/","timestamp":"2026-11-24T17:25:55Z","event_type":"somethingNew",'
            b'"event_data":{"container_deletion":{"exit_code":-1},"new":[1,2]},"extra":{"a":null}}'
        )
        self.assertEqual(event.key, ("/", "somethingNew", ""))

    def test_go_escapes_and_non_ascii(self):
        event = decode_event(
            b'{"container_name":"/d","timestamp":"2026-11-24T17:25:55Z","event_type":"oomKill",'
            b'"event_data":{"oom":{"pid":1,"process_name":"a \\u003cb\\u003e \\u0026 \\"q\\" \\\\ \xc3\xa9\xe6\x97\xa5"}}}'
        )
        self.assertEqual(event.oom_process, 'a <b> & "q" \\ \u00e9\u65e5')

    def test_identity_is_the_value(self):
        self.assertEqual(decode_event(OOM_KILL), decode_event(OOM_KILL))
        self.assertEqual(len({decode_event(OOM_KILL), decode_event(OOM_KILL)}), 1)
        other = OOM_KILL.replace(b"23081", b"23082")
        self.assertNotEqual(decode_event(OOM_KILL), decode_event(other))

    def test_invalid_inputs(self):
        for bad in [
            b"",
            b"not json",
            b"null",
            b"[]",
            b"42",
            b'"string"',
            b"{}",
            b'{"container_name":"/","event_type":"oom"}',
            b'{"container_name":1,"timestamp":"t","event_type":"oom"}',
            b'{"container_name":"/","timestamp":"t","event_type":"oom","event_data":{"oom":{"pid":"x"}}}',
            b'{"container_name":"\xff","timestamp":"t","event_type":"oom"}',
            OOM_KILL[:-1],
        ]:
            with self.assertRaises(InvalidEvent, msg=bad):
                decode_event(bad)

    @given(st.binary(max_size=200))
    def test_arbitrary_bytes_raise_only_invalid_event(self, data):
        try:
            decode_event(data)
        except InvalidEvent:
            pass


class HistoryTests(unittest.TestCase):
    def test_decode_and_count(self):
        body = b"[" + b",".join([OOM_KILL, OOM_KILL, OOM_KILL.replace(b"java", b"node")]) + b"]"
        counts = count_events(decode_history(body))
        self.assertEqual(
            counts,
            {
                ("/kubepods/burstable/pod1f/3c9", "oomKill", "java"): 2,
                ("/kubepods/burstable/pod1f/3c9", "oomKill", "node"): 1,
            },
        )

    def test_empty(self):
        self.assertEqual(decode_history(b"[]"), [])

    def test_not_an_array(self):
        for bad in [b"{}", b"<html>", b"[1]", b"[" + OOM_KILL, b"null"]:
            with self.assertRaises(InvalidEvent):
                decode_history(bad)


class TimestampTests(unittest.TestCase):
    def test_nanoseconds_kept(self):
        self.assertEqual(
            timestamp_ns("2026-11-24T17:25:55.873677656-03:00"),
            timestamp_ns("2026-11-24T20:25:55.873677656Z"),
        )
        base = int(
            datetime.datetime(2026, 11, 24, 20, 25, 55, tzinfo=datetime.timezone.utc).timestamp()
        )
        self.assertEqual(timestamp_ns("2026-11-24T20:25:55.873677656Z"), base * 10**9 + 873677656)
        self.assertEqual(timestamp_ns("2026-11-24T20:25:55.8Z"), base * 10**9 + 800000000)
        self.assertEqual(timestamp_ns("2026-11-24T20:25:55Z"), base * 10**9)
        self.assertEqual(timestamp_ns("2026-11-24T23:55:55+03:30"), base * 10**9)

    def test_trimmed_fractions_order_correctly(self):
        # As strings "55.87Z" > "55.873Z"; as times it is the other way round.
        self.assertLess(
            timestamp_ns("2026-11-24T20:25:55.87Z"), timestamp_ns("2026-11-24T20:25:55.873Z")
        )

    def test_invalid(self):
        for bad in [
            "",
            "yesterday",
            "2026-11-24 20:25:55Z",
            "2026-11-24T20:25:55",
            "2026-11-24T20:25:55.Z",
            "2026-11-24T20:25:55.1234567890Z",
            "2026-13-24T20:25:55Z",
            "2026-11-24T20:25:55+0300",
            "2026-11-24T20:25:55.5+03",
        ]:
            with self.assertRaises(InvalidEvent, msg=bad):
                timestamp_ns(bad)


class HistoryAndCachedTimestampTests(unittest.TestCase):
    def test_parse_history_sorts_and_counts_bad_elements(self):
        timed, invalid = parse_history(history_body(B, A, b"3"))
        self.assertEqual([e for e, _ in timed], [decode_event(A), decode_event(B)])
        self.assertEqual(invalid, 1)
        self.assertEqual(parse_history(b"[]"), ([], 0))
        self.assertRaises(InvalidEvent, parse_history, b"{}")

    def test_a_sorted_history_across_minutes_and_zones(self):
        stamps = [f"2026-11-24T17:{m:02}:{s:02}.{s * 7:03}{z}"
                  for z in ("Z", "-03:00", "+05:30") for m in (58, 59) for s in range(60)]
        stamps += ["2026-11-24T18:00:00Z", "2026-11-24T17:59:60Z"]
        for stamp in stamps:
            try:
                want = strict_timestamp_ns(stamp)
            except InvalidEvent:
                self.assertRaises(InvalidEvent, timestamp_ns, stamp)
            else:
                self.assertEqual(timestamp_ns(stamp), want, stamp)

    @settings(max_examples=1500, deadline=None)
    @given(st.one_of(
        st.builds(lambda d, f, z: d + f + z,
                  st.one_of(
                      st.sampled_from(["2026-11-24T17:25:55", "1970-01-01T00:00:00", "2026-02-30T00:00:00",
                                       "2026-11-24t17:25:55", "9999-12-31T23:59:59", "2026-11-24T17:25"]),
                      # Other seconds of a minute seen before (the cached minute's path).
                      st.text("0123456789\u0663a", max_size=3).map(lambda s: "2026-11-24T17:25:" + s)),
                  st.one_of(st.just(""), st.text("0123456789", max_size=11).map(lambda s: "." + s),
                            st.text(max_size=4)),
                  st.sampled_from(["Z", "z", "-03:00", "+05:30", "+0530", "", "Zx", "-3:00", "+aa:bb"])),
        st.text(max_size=40)))
    def test_cached_timestamp_ns_agrees_with_the_strict_parser(self, text):
        timestamp_ns("2026-11-24T17:25:55.1-03:00")  # the minute cached for the zone's timestamps
        try:
            want = strict_timestamp_ns(text)
        except InvalidEvent:
            self.assertRaises(InvalidEvent, timestamp_ns, text)
        else:
            self.assertEqual(timestamp_ns(text), want)


    _STAMP = st.builds(
        lambda d, f, z: d + f + z,
        st.sampled_from(["2026-11-24T17:25:55", "2026-11-24T17:25:56", "1970-01-01T00:00:00",
                         "2026-02-30T00:00:00", "2026-11-24t17:25:55", "2026-11-24T17:25"]),
        st.one_of(st.text("0123456789", min_size=1, max_size=10).map(lambda s: "." + s),
                  st.sampled_from(["", ".", ".\u0663", ".1\n2026-11-24T17:25:55.1"])),
        st.sampled_from(["Z", "-03:00", "+05:30", "z", "+0530", ""]))

    @settings(max_examples=1500, deadline=None)
    @given(st.lists(_STAMP, max_size=6))
    def test_timestamps_ns_agrees_with_the_strict_parser_or_declines(self, stamps):
        """A whole list at once gives each timestamp's value, or None when one of them is not
        plainly valid (one zone for all, a dot and digits): never a wrong value."""
        got = timestamps_ns(stamps)
        if got is None:
            self.assertTrue(stamps)
            return
        self.assertEqual(got, [strict_timestamp_ns(stamp) for stamp in stamps])

    def test_timestamps_ns_takes_a_history_as_cadvisor_writes_it(self):
        stamps = [f"2026-11-24T17:{m:02}:{s:02}.{s * 7:09}-03:00" for m in (58, 59) for s in range(60)]
        stamps += ["2026-11-24T18:00:00.5-03:00", "2026-11-24T18:00:00.5"]
        self.assertEqual(timestamps_ns(stamps[:-1]), [strict_timestamp_ns(stamp) for stamp in stamps[:-1]])
        self.assertIsNone(timestamps_ns(stamps))  # the last has no zone
        self.assertIsNone(timestamps_ns(["2026-11-24T18:00:00.5Z", "2026-11-24T18:00:00.5-03:00"]))
        self.assertIsNone(timestamps_ns(["2026-11-24T18:00:00Z"]))  # no fraction: taken one by one
        self.assertEqual(timestamps_ns([]), [])

    def test_parse_history_values_one_way_or_the_other(self):
        """A history whose timestamps the whole-list path declines gets the same values one by one."""
        plain = [Event("/a", f"2026-11-24T17:25:{s:02}.{s + 1}Z", "containerCreation") for s in range(50)]
        mixed = plain + [Event("/a", "2026-11-24T17:26:00Z", "containerCreation"),
                         Event("/a", "2026-11-24T17:26:01.5+00:00", "containerCreation"),
                         Event("/a", "bad", "containerCreation")]
        timed, invalid = parse_history(msgspec.json.encode(mixed))
        self.assertEqual(invalid, 1)
        self.assertEqual([ns for _, ns in timed], sorted(strict_timestamp_ns(e.timestamp) for e in mixed[:-1]))
        timed, invalid = parse_history(msgspec.json.encode(plain[::-1]))
        self.assertEqual((invalid, [e for e, _ in timed]), (0, plain))
        self.assertEqual([ns for _, ns in timed], [strict_timestamp_ns(e.timestamp) for e in plain])
