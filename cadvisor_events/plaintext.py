"""Plain-text HTTP answers: the one place error responses are made.

Every error this service sends is ``text/plain`` with one sentence a person
can act on (never HTML, never a traceback, never a credential). Resources
derive from :class:`PlainTextResource` so an unsupported method is a plain
405 too.
"""

from __future__ import annotations

from twisted.web import resource

ALLOWED_METHODS = (b"GET", b"HEAD")


def error_body(request, code: int, message: str) -> bytes:
    """Set ``code`` and a text/plain content type on ``request``; return the body.

    Use as ``return error_body(request, 400, "...")`` from ``render_*``, or
    ``request.write(error_body(...)); request.finish()`` for a deferred answer.
    """
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Cache-Control", b"no-store")
    body = (message.rstrip("\n") + "\n").encode("utf-8", "replace")
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


class PlainTextResource(resource.Resource):
    """A resource whose only methods are GET and HEAD, refusing others in plain text."""

    def render(self, request):
        if request.method not in ALLOWED_METHODS:
            request.setHeader(b"Allow", b"GET, HEAD")
            method = request.method.decode("ascii", "replace")
            return error_body(request, 405, f"method {method} not allowed: use GET or HEAD")
        return super().render(request)


class NotFound(PlainTextResource):
    """404 for any path nobody serves, naming the paths that exist."""

    isLeaf = True

    def render_GET(self, request):
        path = request.path.decode("utf-8", "replace")
        return error_body(
            request,
            404,
            f"no such path {path!r}: try /metrics, /proxy/<host:port>, /targets, / , /-/healthy, /-/ready",
        )
