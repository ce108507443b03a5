"""Tests for cadvisor_events.auth (hashes, auth file, checker, helper) and basic auth on the site."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import bcrypt
from treq.testing import StubTreq
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.trial import unittest

from cadvisor_events import auth
from cadvisor_events.auth import (
    AuthFileError,
    PasswordFileChecker,
    check_hash,
    hash_password,
    load_auth_file,
    verify_password,
)
from cadvisor_events.authgate import UNAUTHORIZED
from cadvisor_events.web import build_site

from .support import WebFixture

FAST = 10_000  # the least the file accepts: fast tests, same code path


def synchronous(calls):
    """A ``defer_to_thread`` that runs at once and records what it verified."""

    def run(function, *args):
        calls.append(args)
        return defer.maybeDeferred(function, *args)

    return run


class HashTests(unittest.TestCase):
    def test_round_trip(self):
        stored = hash_password("correct horse", iterations=FAST)
        self.assertTrue(stored.startswith(f"$pbkdf2-sha256${FAST}$"))
        check_hash(stored)
        self.assertTrue(verify_password("correct horse", stored))
        self.assertFalse(verify_password("correct horsf", stored))
        self.assertNotEqual(stored, hash_password("correct horse", iterations=FAST))  # fresh salt

    def test_passlib_hashes_verify(self):
        # passlib's own test vector for pbkdf2_sha256 ("adapted base64": "." for "+", no padding).
        stored = "$pbkdf2-sha256$1212$4vjV83LKPjQzk31VI4E0Vw$hsYF68OiOUPdDZ1Fg.fJPeq1h/gXXY7acBp9/6c.tmQ"
        self.assertTrue(verify_password("password", stored))
        self.assertFalse(verify_password("Password", stored))

    def test_non_ascii_password(self):
        stored = hash_password("p\u00e4ss \u2615", iterations=FAST)
        self.assertTrue(verify_password("p\u00e4ss \u2615", stored))

    def test_bad_hashes(self):
        for stored, words in [
            ("plain", "neither"),
            ("$pbkdf2-sha256$x$abc$def", "malformed"),
            ("$pbkdf2-sha256$20000$abc", "malformed"),
            ("$pbkdf2-sha256$20000$!!$abc", "malformed"),
            ("$pbkdf2-sha256$20000$YWJj$YWJj", "malformed"),
            (hash_password("x", iterations=1000), "too few"),
        ]:
            with self.assertRaises(ValueError, msg=stored) as e:
                check_hash(stored)
            self.assertIn(words, str(e.exception), stored)

    def test_bcrypt_without_the_package_is_a_clear_error(self):
        self.patch(auth, "bcrypt", None)
        with self.assertRaises(ValueError) as e:
            check_hash("$2b$12$" + "a" * 53)
        self.assertIn("bcrypt package is not installed", str(e.exception))

    def test_bcrypt_with_the_package(self):
        if auth.bcrypt is None:
            raise unittest.SkipTest("bcrypt is not installed (optional)")
        stored = auth.bcrypt.hashpw(b"pw", auth.bcrypt.gensalt(4)).decode()
        check_hash(stored)
        self.assertTrue(verify_password("pw", stored))
        self.assertFalse(verify_password("px", stored))


class AuthFileTests(unittest.TestCase):
    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_lines(self):
        alice, bob = hash_password("a", iterations=FAST), hash_password("b", iterations=FAST)
        path = self.write(f"# users\n\nalice:{alice}\n  bob:{bob}  \n")
        self.assertEqual(load_auth_file(path), {"alice": alice, "bob": bob})

    def test_errors_name_file_and_line_but_not_the_hash(self):
        good = hash_password("a", iterations=FAST)
        for text, words in [
            ("alice\n", ":1: expected user:hash"),
            (f":{good}\n", ":1: expected user:hash"),
            (f"alice:{good}\nalice:{good}\n", ":2: user 'alice' is listed twice"),
            ("# nobody\n", "lists no user"),
            ("alice:$1$md5crypt\n", ":1: user 'alice': hash is neither"),
        ]:
            path = self.write(text)
            with self.assertRaises(AuthFileError, msg=text) as e:
                load_auth_file(path)
            self.assertIn(words, str(e.exception))
            self.assertNotIn(good, str(e.exception))
        with self.assertRaises(AuthFileError) as e:
            load_auth_file(self.mktemp())
        self.assertIn("cannot read auth file", str(e.exception))


class CheckerTests(unittest.TestCase):
    def setUp(self):
        self.alice = hash_password("wonderland", iterations=FAST)
        self.calls = []
        self.checker = PasswordFileChecker({"alice": self.alice}, defer_to_thread=synchronous(self.calls))

    def login(self, user, password):
        return self.checker.requestAvatarId(UsernamePassword(user.encode(), password.encode()))

    def test_right_password(self):
        self.assertEqual(self.successResultOf(self.login("alice", "wonderland")), "alice")

    def test_unknown_user_and_wrong_password_are_indistinguishable(self):
        wrong = self.failureResultOf(self.login("alice", "nope"), UnauthorizedLogin)
        unknown = self.failureResultOf(self.login("mallory", "nope"), UnauthorizedLogin)
        self.assertEqual(str(wrong.value), str(unknown.value))
        self.assertEqual(type(wrong.value), type(unknown.value))
        # Both verified one hash of the same cost: the user's, or a dummy one for the unknown user.
        (wrong_args, unknown_args) = self.calls
        self.assertEqual(wrong_args, ("nope", self.alice))
        self.assertEqual(unknown_args[0], "nope")
        self.assertNotEqual(unknown_args[1], self.alice)
        self.assertTrue(unknown_args[1].startswith(f"$pbkdf2-sha256${FAST}$"))

    def test_unknown_user_with_the_dummy_password_still_fails(self):
        self.failureResultOf(self.login("mallory", ""), UnauthorizedLogin)

    def test_success_is_remembered_failure_is_not(self):
        self.successResultOf(self.login("alice", "wonderland"))
        self.successResultOf(self.login("alice", "wonderland"))
        self.failureResultOf(self.login("alice", "x"), UnauthorizedLogin)
        self.failureResultOf(self.login("alice", "x"), UnauthorizedLogin)
        self.assertEqual(len(self.calls), 3)

    @defer.inlineCallbacks
    def test_verifies_in_a_thread_by_default(self):
        checker = PasswordFileChecker({"alice": self.alice})
        name = yield checker.requestAvatarId(UsernamePassword(b"alice", b"wonderland"))
        self.assertEqual(name, "alice")
        with self.assertRaises(UnauthorizedLogin):
            yield checker.requestAvatarId(UsernamePassword(b"alice", b"x"))


class HelperTests(unittest.TestCase):
    def run_helper(self, *args, stdin="s3cret\n"):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        return subprocess.run(
            [sys.executable, "-m", "cadvisor_events.auth", *args],
            input=stdin, capture_output=True, text=True, timeout=60, env=env,
        )

    def test_prints_a_line_that_verifies(self):
        result = self.run_helper("alice", "--iterations", str(FAST))
        self.assertEqual(result.returncode, 0, result.stderr)
        user, _, stored = result.stdout.strip().partition(":")
        self.assertEqual(user, "alice")
        self.assertTrue(verify_password("s3cret", stored))
        self.assertNotIn("s3cret", result.stdout + result.stderr)

    def test_refuses_bad_input(self):
        for args, stdin in [(("a:b",), "x\n"), (("alice",), "\n"), (("alice", "--iterations", "10"), "x\n")]:
            result = self.run_helper(*args, stdin=stdin)
            self.assertEqual(result.returncode, 2, (args, result.stdout))
            self.assertEqual(result.stdout, "")


def basic(user: str, password: str) -> dict:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": [f"Basic {token}"]}


class SiteAuthTests(WebFixture):
    """Every path but /-/healthy behind basic auth, with one plain-text 401 for every failure."""

    def setUp(self):
        super().setUp()
        self.calls = []
        checker = PasswordFileChecker(
            {"alice": hash_password("wonderland", iterations=FAST)}, defer_to_thread=synchronous(self.calls)
        )
        self.site = build_site(self.root, checker=checker)
        self.http = StubTreq(self.site.resource)

    def test_paths_need_credentials(self):
        for path in ["/", "/metrics", "/targets", "/-/ready", "/proxy/a:1", "/nope", "/-/healthy/x"]:
            response, body = self.get(path)
            self.assertEqual(response.code, 401, path)
            self.assertEqual(body.decode(), UNAUTHORIZED + "\n", path)
            self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/plain; charset=utf-8"])
            self.assertEqual(
                response.headers.getRawHeaders("www-authenticate"), ["basic realm=\"cadvisor-events\""]
            )

    def test_right_credentials(self):
        for path, code in [("/", 200), ("/metrics", 200), ("/targets", 200), ("/-/ready", 200),
                           ("/proxy/a:1", 200), ("/nope", 404)]:
            response, body = self.get(path, headers=basic("alice", "wonderland"))
            self.assertEqual(response.code, code, path)
        self.assertEqual(self.get("/proxy/a:1", headers=basic("alice", "wonderland"))[1], b"proxy here")

    def test_healthy_needs_none(self):
        response, body = self.get("/-/healthy")
        self.assertEqual((response.code, body), (200, b"ok\n"))

    def test_every_failure_is_the_same_answer(self):
        answers = set()
        for headers in [None, basic("alice", "wrong"), basic("mallory", "wonderland"),
                        {"Authorization": ["Basic !!!"]}, {"Authorization": ["Digest x"]}]:
            response, body = self.get("/metrics", headers=headers)
            answers.add((response.code, body, tuple(response.headers.getRawHeaders("www-authenticate"))))
        self.assertEqual(len(answers), 1, answers)
        # The wrong password and the unknown user each cost one verification.
        self.assertEqual(len(self.calls), 2)

    def test_head(self):
        response, body = self.get("/metrics", method="HEAD")
        self.assertEqual((response.code, body), (401, b""))

    def test_no_user_name_costs_no_verification(self):
        # No auth file can list the empty name, so refusing it at once tells nobody anything.
        for headers in [basic("", ""), basic("", "wonderland")]:
            response, body = self.get("/metrics", headers=headers)
            self.assertEqual((response.code, body.decode()), (401, UNAUTHORIZED + "\n"))
        self.assertEqual(self.calls, [])

    def test_a_broken_checker_is_a_plain_500(self):
        def broken(function, *args):
            return defer.fail(RuntimeError("thread pool gone"))

        checker = PasswordFileChecker({"alice": hash_password("wonderland", iterations=FAST)}, defer_to_thread=broken)
        http = StubTreq(build_site(self.root, checker=checker).resource)
        response = self.successResultOf(http.get("http://x/metrics", headers=basic("alice", "wonderland")))
        body = self.successResultOf(response.content())
        self.assertEqual(response.code, 500)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/plain; charset=utf-8"])
        self.assertIn(b"see the exporter's log", body)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class LongBcryptPasswordTests(unittest.TestCase):
    """A password longer than bcrypt's 72 bytes is refused, never an exception (a 500)."""

    def test_over_72_bytes_is_refused(self) -> None:
        stored = bcrypt.hashpw(b"x" * 72, bcrypt.gensalt(4)).decode("ascii")
        self.assertTrue(verify_password("x" * 72, stored))
        self.assertFalse(verify_password("x" * 73, stored))
