"""HTTP basic auth in front of the resource tree, on twisted.cred's public API.

:class:`AuthGate` reads the request's basic credentials
(``request.getUser()``/``getPassword()``), asks a ``Portal`` for the tree
(the checker, :class:`cadvisor_events.auth.PasswordFileChecker`, verifies in
a thread) and lets the request through or answers one plain-text 401. It
must never tell a missing header, an unknown user and a wrong password
apart, neither by the answer nor by its timing: every name that could be a
user costs the checker the same verification, and only a request without a
user name (none can be in an auth file) is answered without one. It never
sees, logs or stores a password itself, and it leaves ``/-/healthy`` open.
"""

from __future__ import annotations

from typing import Mapping, Optional

from twisted.cred import error
from twisted.cred.credentials import UsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource
from twisted.web.util import DeferredResource
from zope.interface import implementer

from .plaintext import error_body

log = Logger()

REALM = b"cadvisor-events"
#: The challenge of every 401 (the scheme in lower case, as clients have always seen it).
CHALLENGE = b'basic realm="' + REALM + b'"'
UNAUTHORIZED = "unauthorized: this exporter needs HTTP basic auth (a user of its --auth-file)"


class AuthGate(resource.Resource):
    """Everything behind basic auth but ``/-/healthy`` (``healthy``), which liveness
    probes ask without credentials (it tells nothing but that the process serves)."""

    def __init__(self, root: resource.IResource, checker, *, healthy: resource.IResource) -> None:
        super().__init__()
        self.portal = Portal(WholeTree(root), [checker])
        self.healthy = healthy

    def getChildWithDefault(self, path: bytes, request):
        if path == b"-" and request.postpath == [b"healthy"]:
            return self.healthy
        # The gate takes no path segment: the tree is looked up from the top again.
        request.postpath.insert(0, request.prepath.pop())
        return self.authorized(request)

    def render(self, request):
        return self.authorized(request).render(request)

    def authorized(self, request) -> resource.IResource:
        """The tree once the request's credentials check out, else the 401 (or a 500)."""
        user = request.getUser()
        if not user:
            return DENIED
        login = self.portal.login(UsernamePassword(user, request.getPassword()), None, resource.IResource)
        login.addCallbacks(lambda granted: granted[1], self.refused)
        return DeferredResource(login)

    @staticmethod
    def refused(failure: Failure) -> resource.IResource:
        if failure.check(error.Unauthorized, error.LoginFailed):
            return DENIED
        log.failure("checking credentials failed", failure)
        return Answer(500, "checking credentials failed; see the exporter's log")


class Answer(resource.Resource):
    """A plain-text answer to any method and path below it."""

    isLeaf = True

    def __init__(self, code: int, message: str, headers: Optional[Mapping[bytes, bytes]] = None) -> None:
        super().__init__()
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def render(self, request) -> bytes:
        for name, value in self.headers.items():
            request.setHeader(name, value)
        return error_body(request, self.code, self.message)


#: The one answer to a missing, malformed or refused credential.
DENIED = Answer(401, UNAUTHORIZED, {b"WWW-Authenticate": CHALLENGE})


@implementer(IRealm)
class WholeTree:
    """Every authenticated user gets the whole tree; nothing is kept per login, so logout does nothing."""

    def __init__(self, root: resource.IResource) -> None:
        self.root = root

    def requestAvatar(self, avatar_id, mind, *interfaces):
        if resource.IResource in interfaces:
            return resource.IResource, self.root, lambda: None
        raise NotImplementedError("only web resources here")
