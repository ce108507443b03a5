"""Tests for cadvisor_events.options: the coercers both twistd plugins share.

The exporter's options read through them (command line and environment) are
tested in tests/test_tap.py; the simulator's ``--listen`` and ``--age-limit``
are checked here because they are the same coercers.
"""

import os

from twisted.python import usage
from twisted.trial import unittest

from cadvisor_events.options import seconds, server_endpoint
from cadvisor_events.simulator import tap as simulator_tap

from .support import self_signed

DAY = 86400.0


class SecondsTests(unittest.TestCase):
    coerce = staticmethod(seconds("series-ttl"))

    def assertRejected(self, text: str, *words: str) -> str:
        with self.assertRaises(ValueError, msg=text) as e:
            self.coerce(text)
        message = str(e.exception)
        self.assertTrue(message.startswith("--series-ttl "), message)
        for word in words:
            self.assertIn(word, message, text)
        return message

    def test_plain_seconds(self):
        for text, value in [("0", 0.0), ("90", 90.0), ("1.5", 1.5), ("0.25", 0.25), ("1e3", 1000.0),
                            (" 30 ", 30.0), ("+2", 2.0), ("-0", 0.0)]:
            self.assertEqual(self.coerce(text), value, text)
            self.assertIsInstance(self.coerce(text), float)

    def test_each_unit(self):
        for text, value in [("500ms", 0.5), ("90s", 90.0), ("5m", 300.0), ("2h", 7200.0), ("1d", DAY),
                            ("1w", 7 * DAY), ("1y", 365 * DAY), ("0s", 0.0), ("0ms", 0.0), ("1ms", 0.001)]:
            self.assertEqual(self.coerce(text), value, text)
            self.assertIsInstance(self.coerce(text), float)

    def test_combinations_in_decreasing_order(self):
        for text, value in [("1h30m", 5400.0), ("1m30s", 90.0), ("1s500ms", 1.5), ("1m5ms", 60.005),
                            ("1d12h", 1.5 * DAY), ("2w3d", 17 * DAY), ("1y2w", 379 * DAY),
                            ("1y1w1d1h1m1s1ms", 365 * DAY + 7 * DAY + DAY + 3600 + 60 + 1 + 0.001),
                            ("90m", 5400.0), ("0h1s", 1.0), ("007s", 7.0)]:
            self.assertEqual(self.coerce(text), value, text)

    def test_units_out_of_order_or_repeated(self):
        for text in ["5m1h", "1s1m", "500ms1s", "1d1w", "1h1y", "5m5m", "1s1s"]:
            message = self.assertRejected(text, "number of seconds", repr(text), "largest to the smallest")
            self.assertIn("y w d h m s ms", message)

    def test_negative(self):
        for text in ["-1", "-0.5", "-5m", "-1h30m", "-500ms"]:
            self.assertEqual(self.assertRejected(text), "--series-ttl cannot be negative", text)

    def test_empty(self):
        for text in ["", " ", "-"]:
            self.assertRejected(text, "number of seconds", repr(text))

    def test_garbage(self):
        for text in ["soon", "5x", "1.5h", "h", "m5", "5 m", "5M", "1H", "1h 30m", "1h-30m", "ms", "5mss",
                     "0x10", "1,5", "1_h"]:
            self.assertRejected(text, "number of seconds", "duration such as 90s, 5m", repr(text))

    def test_not_finite(self):
        for text in ["inf", "-inf", "nan", "1e400"]:
            self.assertRejected(text, "number of seconds", "finite")

    def test_too_long_a_duration(self):
        self.assertRejected("9" * 400 + "y", "too long")

    def test_help_says_durations_are_accepted(self):
        self.assertIn("duration", seconds("x").coerceDoc)


class ServerEndpointTests(unittest.TestCase):
    coerce = staticmethod(server_endpoint("listen"))

    def assertRejected(self, text: str, *words: str) -> str:
        with self.assertRaises(ValueError, msg=text) as e:
            self.coerce(text)
        message = str(e.exception)
        self.assertTrue(message.startswith(f"--listen {text!r}"), message)
        for word in words:
            self.assertIn(word, message, text)
        return message

    def test_shorthands_are_tcp_endpoints(self):
        for text, description in [
            ("9100", "tcp:9100"),
            (":9100", "tcp:9100"),
            ("0", "tcp:0"),
            ("127.0.0.1:9100", "tcp:9100:interface=127.0.0.1"),
            ("0.0.0.0:9100", "tcp:9100:interface=0.0.0.0"),
            ("[::1]:9100", r"tcp6:9100:interface=\:\:1"),
            ("[::]:9100", r"tcp6:9100:interface=\:\:"),
            ("[2001:db8::5]:80", r"tcp6:80:interface=2001\:db8\:\:5"),
            ("[127.0.0.1]:80", "tcp:80:interface=127.0.0.1"),
            (" :9100 ", "tcp:9100"),
        ]:
            self.assertEqual(self.coerce(text), description, text)

    def test_endpoint_strings_are_unchanged(self):
        directory = self.mktemp()
        os.makedirs(directory)
        key, cert = self_signed(directory)
        for text in ["tcp:9100", "tcp:9100:interface=127.0.0.1", r"tcp6:9100:interface=\:\:1",
                     "tcp:port=9100:backlog=5", "unix:/tmp/x.sock", "unix:/tmp/x.sock:mode=660",
                     f"ssl:8443:privateKey={key}:certKey={cert}"]:
            self.assertEqual(self.coerce(text), text)

    def test_what_twisted_cannot_parse(self):
        for text, words in [
            ("carrier-pigeon:1", "Unknown endpoint type"),
            ("tcp:x", "invalid literal"),
            ("tcp:", "invalid literal"),
            ("tcp:9100:bogus=1", "bogus"),
            ("tcp:9100:interface=::1", "interface"),  # colons not escaped
            ("unix", "address"),
            ("", "Unknown endpoint type"),
            ("localhost:9100", "Unknown endpoint type: 'localhost'"),
            ("[::1]", "Unknown endpoint type"),
        ]:
            message = self.assertRejected(text, "is not a server endpoint", words)
            self.assertIn("IP:PORT", message)  # says what it takes

    def test_unreadable_tls_key(self):
        missing = os.path.abspath(self.mktemp())
        self.assertRejected(f"ssl:8443:privateKey={missing}", "is not a server endpoint", "No such file", missing)

    def test_bad_shorthands(self):
        self.assertRejected(":65536", "port must be 0 to 65535")
        self.assertRejected("99999", "port must be 0 to 65535")
        self.assertRejected("1.2.3:9100", "'1.2.3' is not an IP address")
        self.assertRejected("256.0.0.1:9100", "not an IP address")
        self.assertRejected("[::g]:9100", "not an IP address")
        self.assertRejected("[]:9100", "not an IP address")

    def test_nothing_listens(self):
        # Parsing happens on a reactor that never listens: the same port twice is fine.
        self.assertEqual([self.coerce(":1"), self.coerce(":1")], ["tcp:1", "tcp:1"])


class SimulatorOptionsTests(unittest.TestCase):
    """``twistd cadvisor-simulator`` takes the same shorthands and durations."""

    def parse(self, *argv):
        options = simulator_tap.Options()
        options.parseOptions(list(argv))
        return options

    def test_listen_shorthands(self):
        options = self.parse("--listen", ":8081", "--listen", "[::1]:8082", "--listen", "tcp:8083")
        self.assertEqual(options["listen"], ["tcp:8081", r"tcp6:8082:interface=\:\:1", "tcp:8083"])

    def test_bad_listen_names_the_option_and_value(self):
        with self.assertRaises(usage.UsageError) as e:
            self.parse("--listen", "carrier-pigeon:1")
        self.assertIn("--listen 'carrier-pigeon:1' is not a server endpoint", str(e.exception))

    def test_age_limit_duration(self):
        self.assertEqual(self.parse("--age-limit", "1h30m")["age-limit"], 5400.0)
        self.assertEqual(self.parse("--age-limit", "60")["age-limit"], 60.0)
        for value, words in [("5m1h", "largest to the smallest"), ("-1m", "negative"), ("soon", "number of seconds")]:
            with self.assertRaises(usage.UsageError) as e:
                self.parse("--age-limit", value)
            self.assertIn("--age-limit", str(e.exception))
            self.assertIn(words, str(e.exception))
