"""HTTP basic auth for our own endpoints: the ``--auth-file``, its hashes and a twisted.cred checker.

An auth file holds lines ``user:hash`` (blank lines and ``#`` comments are
skipped). Hashes are ``$pbkdf2-sha256$<iterations>$<salt>$<digest>`` (the
stdlib's PBKDF2-HMAC-SHA256; salt and digest in passlib's base64, so
passlib's ``pbkdf2_sha256`` hashes work too) or bcrypt ``$2b$``/``$2a$``/
``$2y$`` when the ``bcrypt`` package is installed. ``python -m
cadvisor_events.auth USER`` prints a line. This module never logs, stores or
compares a password in plain text, and it answers an unknown user exactly as
a wrong password: the same exception and the same work (a verification
against a dummy hash of the same cost), so neither the answer nor its timing
tells which user names exist. Verification runs in the reactor's thread pool
(PBKDF2 at 600,000 iterations takes ~0.15 s; hashlib releases the GIL while
it works); successful checks are remembered, keyed by an HMAC of the
credentials, so a scraper every 15 s costs one verification, not one each.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import secrets
import sys
from typing import Callable, Dict, Optional

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, threads
from zope.interface import implementer

try:
    import bcrypt
except ImportError:  # optional: only for $2b$ lines
    bcrypt = None  # type: ignore[assignment]

PBKDF2_PREFIX = "$pbkdf2-sha256$"
BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
#: OWASP's 2023 figure for PBKDF2-HMAC-SHA256.
DEFAULT_ITERATIONS = 600_000
#: Below this a hash is refused when the file is loaded: it would be too cheap to brute-force.
MIN_ITERATIONS = 10_000
SALT_BYTES = 16
#: Successful verifications remembered (per process, never on disk).
CACHE_SIZE = 64


class AuthFileError(ValueError):
    """A bad ``--auth-file``: the message names the file and line, never a hash or password."""


def _b64encode(data: bytes) -> str:
    """passlib's "adapted base64": standard alphabet with ``.`` for ``+``, no padding."""
    return base64.b64encode(data).decode("ascii").rstrip("=").replace("+", ".")


def _b64decode(text: str) -> bytes:
    text = text.replace(".", "+")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str, iterations: int = DEFAULT_ITERATIONS, salt: Optional[bytes] = None) -> str:
    """A ``$pbkdf2-sha256$...`` hash of ``password`` with a fresh random salt."""
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{PBKDF2_PREFIX}{iterations}${_b64encode(salt)}${_b64encode(digest)}"


def check_hash(stored: str) -> None:
    """Check that ``stored`` is a hash this module can verify.

    :raises ValueError: saying what is wrong with it.
    """
    if stored.startswith(BCRYPT_PREFIXES):
        if bcrypt is None:
            raise ValueError(
                "is a bcrypt hash but the bcrypt package is not installed"
                " (pip install bcrypt, or make a pbkdf2-sha256 line with python -m cadvisor_events.auth USER)"
            )
        return
    if not stored.startswith(PBKDF2_PREFIX):
        raise ValueError("hash is neither $pbkdf2-sha256$ nor bcrypt ($2b$)")
    fields = stored[len(PBKDF2_PREFIX):].split("$")
    try:
        iterations, salt, digest = int(fields[0]), _b64decode(fields[1]), _b64decode(fields[2])
        if len(fields) != 3:
            raise ValueError
    except (ValueError, IndexError):
        raise ValueError("malformed $pbkdf2-sha256$<iterations>$<salt>$<hash>") from None
    if iterations < MIN_ITERATIONS:
        raise ValueError(f"{iterations} iterations is too few (at least {MIN_ITERATIONS})")
    if not salt or len(digest) != 32:
        raise ValueError("malformed $pbkdf2-sha256$ salt or hash")


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (a hash :func:`check_hash` accepts). Slow on purpose."""
    secret = password.encode("utf-8")
    if stored.startswith(BCRYPT_PREFIXES):
        if len(secret) > 72:
            # bcrypt reads at most 72 bytes and bcrypt >= 5 raises beyond: a refusal
            # (401), as with --web-config-file, rather than a 500 and a traceback.
            return False
        return bcrypt.checkpw(secret, stored.encode("ascii"))
    iterations, salt, digest = stored[len(PBKDF2_PREFIX):].split("$")
    computed = hashlib.pbkdf2_hmac("sha256", secret, _b64decode(salt), int(iterations))
    return hmac.compare_digest(computed, _b64decode(digest))


def load_auth_file(path: str) -> Dict[str, str]:
    """``{user: hash}`` from an auth file.

    :raises AuthFileError: for an unreadable file, a line without ``user:hash``,
        a user listed twice, an unknown or malformed hash, or no user at all.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AuthFileError(f"cannot read auth file {path!r}: {getattr(e, 'strerror', None) or e}") from None
    users: Dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, stored = line.partition(":")
        if not sep or not user or not stored:
            raise AuthFileError(f"{path}:{number}: expected user:hash")
        if user in users:
            raise AuthFileError(f"{path}:{number}: user {user!r} is listed twice")
        try:
            check_hash(stored)
        except ValueError as e:
            raise AuthFileError(f"{path}:{number}: user {user!r}: {e}") from None
        users[user] = stored
    if not users:
        raise AuthFileError(f"auth file {path!r} lists no user")
    return users


@implementer(ICredentialsChecker)
class PasswordFileChecker:
    """A twisted.cred checker over ``{user: hash}``; the avatar id is the user name.

    ``defer_to_thread`` runs each verification (``threads.deferToThread`` by
    default; tests pass a synchronous one). Every login attempt, unknown user
    or not, verifies one hash: the user's, or a dummy one of the same kind and
    cost as the file's first entry.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, users: Dict[str, str], defer_to_thread: Callable = threads.deferToThread) -> None:
        self.users = dict(users)
        self._defer_to_thread = defer_to_thread
        self._dummy = _dummy_like(next(iter(self.users.values())))
        self._cache_key = secrets.token_bytes(32)
        self._verified: Dict[bytes, None] = {}

    def requestAvatarId(self, credentials) -> defer.Deferred:
        username = _text(credentials.username)
        password = _text(credentials.password)
        key = hmac.new(self._cache_key, f"{username}\0{password}".encode("utf-8"), "sha256").digest()
        if key in self._verified:
            return defer.succeed(username)
        stored = self.users.get(username)
        verifying = self._defer_to_thread(verify_password, password, stored if stored is not None else self._dummy)

        def decide(matched: bool) -> str:
            if not matched or stored is None:
                raise UnauthorizedLogin("unauthorized")
            if len(self._verified) >= CACHE_SIZE:
                self._verified.pop(next(iter(self._verified)))
            self._verified[key] = None
            return username

        return verifying.addCallback(decide)


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _dummy_like(stored: str) -> str:
    """A hash of a random password costing what ``stored`` costs to verify."""
    secret = secrets.token_urlsafe(16)
    if stored.startswith(BCRYPT_PREFIXES):
        rounds = int(stored.split("$")[2])
        return bcrypt.hashpw(secret.encode(), bcrypt.gensalt(rounds)).decode("ascii")
    return hash_password(secret, iterations=int(stored.split("$")[2]))


def main(argv=None) -> int:
    """``python -m cadvisor_events.auth USER [--iterations N]``: print an auth-file line.

    The password is read from standard input when it is not a terminal (one
    line), else asked twice without echo.
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m cadvisor_events.auth",
        description="Print a user:hash line for cadvisor-events --auth-file.",
    )
    parser.add_argument("user")
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS,
                        help=f"PBKDF2 iterations (default {DEFAULT_ITERATIONS})")
    args = parser.parse_args(argv)
    if ":" in args.user or not args.user.strip() or args.user != args.user.strip():
        parser.error("the user name must be non-empty, without ':' or surrounding spaces")
    if args.iterations < MIN_ITERATIONS:
        parser.error(f"--iterations must be at least {MIN_ITERATIONS}")
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            parser.error("the passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        parser.error("empty password")
    print(f"{args.user}:{hash_password(password, iterations=args.iterations)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
